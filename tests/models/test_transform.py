"""Input transform: dequantisation and reverse whitening, against the reference fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.errors import ConfigError
from nextvlad.models import InputTransform, load_eigenvalues
from tests.conftest import shared_path


def test_matches_the_reference_inputs() -> None:
    fixture = np.load(shared_path("fixtures/tf_reference/nextvlad_single_infer.npz"))
    eigenvalues = load_eigenvalues(shared_path("data/yt8m_pca/eigenvals.npy"))
    q = torch.from_numpy(fixture["quantized"])
    n = torch.from_numpy(fixture["num_frames"]).long()
    dequantized = InputTransform((1024, 128))(q, n)
    np.testing.assert_array_equal(dequantized.numpy(), fixture["dequantized"])
    model_input = InputTransform((1024, 128), eigenvalues)(q, n)
    np.testing.assert_allclose(model_input.numpy(), fixture["model_input"], rtol=0, atol=1e-6)


def test_padding_value_is_the_whitened_zero() -> None:
    e = torch.full((4,), 4.0)
    transform = InputTransform((4, 2), e)
    out = transform(torch.full((1, 3, 6), 200, dtype=torch.uint8), torch.tensor([1]))
    expected = torch.tensor([-4 / 512 * (2 + 1e-4)] * 4 + [0.0, 0.0])
    torch.testing.assert_close(out[0, 2], expected)


def test_eigenvalue_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_eigenvalues(tmp_path / "missing.npy")
    np.save(tmp_path / "short.npy", np.ones((100, 1), np.float32))
    with pytest.raises(ConfigError, match="at least 1024"):
        load_eigenvalues(tmp_path / "short.npy")
    np.save(tmp_path / "negative.npy", -np.ones(1024, np.float32))
    with pytest.raises(ConfigError, match="non-negative"):
        load_eigenvalues(tmp_path / "negative.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ConfigError, match="not a readable"):
        load_eigenvalues(tmp_path / "text.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a readable"):
        load_eigenvalues(tmp_path / "empty.npy")
    with pytest.raises(ValueError, match="1152 features"):
        InputTransform()(torch.zeros(1, 2, 100, dtype=torch.uint8))
