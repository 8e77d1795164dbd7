"""Shared fixtures that make real video files once per test session (makers live in tests/media.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import write_h264

pytest_plugins = ["tests.browser"]  # the browser tests' fixtures and their --screenshots option


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder for generated media."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip_854x480(media_dir: Path) -> Path:
    """4 s of 854x480 H.264 at 30 fps (120 frames), each frame's colour encoding its index."""
    return write_h264(media_dir / "clip_854x480.mp4", frames=120, width=854, height=480, fps=30)


@pytest.fixture(scope="session")
def clip_2s(media_dir: Path) -> Path:
    """2 s of 160x120 H.264 at 25 fps (50 frames), index-coded: small and fast for error cases."""
    return write_h264(media_dir / "clip_2s.mp4", frames=50, width=160, height=120, fps=25)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic dives at 160x120 in the folder + CSV layout (seconds to render)."""
    from training.synth.generate import generate_dataset

    folder = tmp_path_factory.mktemp("tiny-dives")
    generate_dataset(folder, n=24, seed=3, width=160, height=120, progress=False)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory made by our own training code with the ``tiny`` profile."""
    from training.pipeline import train_model
    from training.profiles import PROFILES

    out = tmp_path_factory.mktemp("tiny-model") / "model"
    train_model(tiny_dataset, out, PROFILES["tiny"], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return out


@pytest.fixture(scope="session")
def head_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature cache shared by the TPT and PCLN model fixtures (same profile, same features)."""
    return tmp_path_factory.mktemp("head-cache")


@pytest.fixture(scope="session")
def tpt_model_dir(tiny_dataset: Path, head_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TPT model directory made by our training code with the ``tiny-tpt`` profile."""
    from training.pipeline import train_model
    from training.profiles import PROFILES

    out = tmp_path_factory.mktemp("tpt") / "tpt"
    train_model(tiny_dataset, out, PROFILES["tiny-tpt"], cache_dir=head_cache_dir, progress=False, head="tpt")
    return out


@pytest.fixture(scope="session")
def pcln_model_dir(tiny_dataset: Path, head_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PCLN model directory (exemplar-free at test time) made with the ``tiny-tpt`` profile."""
    from training.pipeline import train_model
    from training.profiles import PROFILES

    out = tmp_path_factory.mktemp("pcln") / "pcln"
    train_model(tiny_dataset, out, PROFILES["tiny-tpt"], cache_dir=head_cache_dir, progress=False, head="pcln")
    return out
