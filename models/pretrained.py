"""Where the bundled model lives."""

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo"
