"""Data the tests read, carried in the repository (tests/data/README.md says where each file comes from)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
MTL_AQA_DIR = DATA_DIR / "mtl-aqa"
MTL_AQA_ANNOTATIONS = MTL_AQA_DIR / "final_annotations_dict_with_dive_number.pkl"
