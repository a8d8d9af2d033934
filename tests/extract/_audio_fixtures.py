"""Session-scoped fixtures of the audio tests: one random-weight VGGish checkpoint (real shapes,
~290 MB, written once a session however many test modules import the fixture) and its PCA."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.extract.audio_factories import write_audio_pca, write_vggish_checkpoint

_MADE: dict[str, Path] = {}


def _once(name: str, factory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if name not in _MADE:
        folder = tmp_path_factory.mktemp("audio")
        _MADE[name] = factory(folder / name, seed=0)
    return _MADE[name]


@pytest.fixture(scope="session")
def vggish_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vggish_model.ckpt`` of random weights, in Google's format (a V1 checkpoint)."""
    return _once("vggish_model.ckpt", write_vggish_checkpoint, tmp_path_factory)


@pytest.fixture(scope="session")
def vggish_pca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vggish_pca_params.npz`` of a random orthogonal PCA."""
    return _once("vggish_pca_params.npz", write_audio_pca, tmp_path_factory)
