"""Input transform: dequantisation and reverse whitening, against the reference fixture."""

from __future__ import annotations

import pickle
from collections.abc import Callable
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
    with pytest.raises(ValueError, match="1152 features"):
        InputTransform()(torch.zeros(1, 2, 100, dtype=torch.uint8))


def _write_pickle(path: Path) -> None:
    np.save(path, np.array([{"a": 1}] * 1024, dtype=object), allow_pickle=True)


def _write_npz(path: Path) -> None:
    with path.open("wb") as f:  # a file object: np.savez would add .npz to a path
        np.savez(f, e=np.ones(1024))


def _write_truncated(path: Path) -> None:
    np.save(path, np.ones((1024, 1), np.float32))
    path.write_bytes(path.read_bytes()[:500])


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_text("not numpy"), "(no .npy header)"),
        (lambda p: p.write_bytes(b""), "(an empty file)"),
        (lambda p: p.write_bytes(pickle.dumps([1.0] * 1024)), "(no .npy header)"),
        (_write_pickle, "(it holds Python objects)"),
        (_write_npz, "(a zip archive"),
        (_write_truncated, "(damaged or truncated"),
        (lambda p: np.save(p, np.array(["1.0"] * 1024)), "(it holds <U3 values"),
        (lambda p: np.save(p, np.ones(1024, np.complex64)), "(it holds complex64 values"),
    ],
)
def test_a_file_that_is_not_a_float_npy_array_says_so(
    tmp_path: Path, write: Callable[[Path], object], reason: str
) -> None:
    path = tmp_path / "eigenvals.npy"
    write(path)
    with pytest.raises(ConfigError) as err:
        load_eigenvalues(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not a float .npy array {reason}")
    assert "pickle" not in message  # never the advice to unpickle a file


def test_eigenvalues_of_the_wrong_shape_say_which(tmp_path: Path) -> None:
    path = tmp_path / "eigenvals.npy"
    np.save(path, np.ones((1024, 2), np.float32))
    with pytest.raises(ConfigError, match=r"of shape \(n,\) or \(n, 1\), got shape \(1024, 2\)"):
        load_eigenvalues(path)
    np.save(path, np.arange(1024, dtype=np.int64))  # whole numbers are numbers: accepted
    assert load_eigenvalues(path).dtype == torch.float32
