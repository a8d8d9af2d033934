"""Google's PCA and quantization arithmetic, PCA files and fitting one's own PCA."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from nextvlad.errors import UsageError
from nextvlad.extract.pca import PCA, PCAError, fit_pca, quantize
from tests.extract import factories


def google_features(x: np.ndarray, folder) -> np.ndarray:
    """feature_extractor.py's PCA, transcribed in float64 from the files as Google loads them."""
    mean = np.load(folder / "mean.npy")[:, 0].astype(np.float64)
    vals = np.load(folder / "eigenvals.npy")[:1024, 0].astype(np.float64)
    vecs = np.load(folder / "eigenvecs.npy").T[:, :1024].astype(np.float64)
    return ((x.astype(np.float64) - mean) @ vecs) / np.sqrt(vals + 1e-4)


def google_quantize(features: np.ndarray) -> bytes:
    """extract_tfrecords_main.quantize, as written there (float32, Python's round)."""
    assert features.dtype == "float32"
    features = np.clip(features, -2.0, 2.0)
    features = (features - -2.0) * (255.0 / 4.0)
    return bytes([int(round(f)) for f in features])  # noqa: RUF046


def test_project_is_googles_formula(pca_dir):
    pca = PCA.load(pca_dir)
    rng = np.random.default_rng(0)
    x = (factories.POOL3_MEAN + rng.standard_normal((16, 2048)) * factories.POOL3_SCALE).astype(
        np.float32
    )
    got = pca.project(x)
    assert got.dtype == np.float32
    assert got.shape == (16, 1024)
    ref = google_features(x, pca_dir)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)
    inside = np.abs(ref) < 2
    assert inside.mean() > 0.8  # the default random PCA spreads features over [-2, 2]
    assert (np.abs(ref) > 1).mean() > 0.1


def test_quantize_matches_google_including_ties():
    rng = np.random.default_rng(1)
    values = [rng.uniform(-2.5, 2.5, 4000).astype(np.float32)]
    # float32 values whose (f + 2) * 63.75 lands exactly on k + 0.5: round half to even
    ties = []
    for k in range(0, 255):
        f = np.float32((k + 0.5) / 63.75 - 2.0)
        for _ in range(8):
            if (f + np.float32(2)) * np.float32(63.75) == np.float32(k + 0.5):
                ties.append(f)
                break
            f = np.nextafter(
                f, np.float32(np.inf) if (f + 2) * 63.75 < k + 0.5 else np.float32(-np.inf)
            )
    assert len(ties) > 20
    values += [np.array(ties, np.float32), np.array([-2, 2, -3, 3, 0, -0.0], np.float32)]
    features = np.concatenate(values)
    got = quantize(features)
    assert got.dtype == np.uint8
    assert got.tobytes() == google_quantize(features)
    assert quantize(np.array([0.0], np.float32))[0] == 128  # 127.5 -> 128 (even)
    tie_bytes = quantize(np.array(ties, np.float32)).astype(int)
    assert (tie_bytes % 2 == 0).all()  # every tie went to the even neighbour
    assert quantize(np.zeros((3, 1024), np.float32)).shape == (3, 1024)


def test_tgz_and_folder_give_the_same_pca(pca_dir, pca_tgz):
    a, b = PCA.load(pca_dir), PCA.load(pca_tgz)
    for name in ("mean", "eigenvals", "eigenvecs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.mean.shape == (2048,)
    assert a.eigenvecs.dtype == np.float32


def test_save_load_round_trip_in_googles_layout(tmp_path, pca_dir):
    pca = PCA.load(pca_dir)
    pca.save(tmp_path / "out")
    assert np.load(tmp_path / "out" / "mean.npy").shape == (2048, 1)
    assert np.load(tmp_path / "out" / "eigenvals.npy").shape == (2048, 1)
    assert np.load(tmp_path / "out" / "eigenvecs.npy").shape == (2048, 2048)
    again = PCA.load(tmp_path / "out")
    np.testing.assert_array_equal(again.eigenvecs, pca.eigenvecs)


def test_missing_files_and_wrong_shapes_are_refused(tmp_path, pca_dir):
    folder = factories.write_pca(tmp_path / "p")
    (folder / "eigenvals.npy").unlink()
    with pytest.raises(PCAError, match=r"p: no eigenvals\.npy in this PCA folder") as err:
        PCA.load(folder)
    assert isinstance(err.value, UsageError)
    np.save(folder / "eigenvals.npy", np.ones((1024, 1), np.float32))
    with pytest.raises(
        PCAError, match=r"eigenvals\.npy has shape \(1024, 1\), expected \(2048, 1\)"
    ):
        PCA.load(folder)
    np.save(folder / "eigenvals.npy", np.ones((2048, 1), np.float32))
    np.save(folder / "eigenvecs.npy", np.ones((2048, 1024), np.float32))
    with pytest.raises(PCAError, match=r"eigenvecs\.npy has shape \(2048, 1024\)"):
        PCA.load(folder)
    tgz = tmp_path / "partial.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(pca_dir / "mean.npy", arcname="mean.npy")
    with pytest.raises(PCAError, match=r"partial\.tgz: no eigenvals\.npy in this archive"):
        PCA.load(tgz)
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(PCAError, match=r"junk\.tgz: not a PCA folder or \.tgz"):
        PCA.load(junk)
    with pytest.raises(PCAError, match=r"no such PCA file or folder"):
        PCA.load(tmp_path / "absent")


def test_fit_pca_recovers_the_covariance_in_googles_layout(tmp_path):
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((2048, 8)))[0].T  # (8, 2048) orthonormal rows
    scales = np.array([5, 4, 3, 2, 1.5, 1, 0.5, 0.25])
    coeffs = rng.standard_normal((600, 8)) * scales
    features = (0.3 + coeffs @ basis + rng.standard_normal((600, 2048)) * 1e-3).astype(np.float32)
    pca = fit_pca(features)
    np.testing.assert_allclose(pca.mean, features.mean(axis=0), atol=1e-5)
    assert (np.diff(pca.eigenvals) <= 1e-6).all()  # largest first
    sample_var = (coeffs - coeffs.mean(0)).var(axis=0, ddof=1)
    np.testing.assert_allclose(pca.eigenvals[:8], np.sort(sample_var)[::-1], rtol=0.05)
    rows = pca.eigenvecs[::97].astype(np.float64)  # a sample of rows: orthonormal to all
    np.testing.assert_allclose(rows @ pca.eigenvecs.T, np.eye(2048)[::97], atol=1e-4)
    # the leading eigenvectors span the generating subspace
    overlap = np.linalg.svd(pca.eigenvecs[:8] @ basis.T, compute_uv=False)
    np.testing.assert_allclose(overlap, 1, atol=1e-3)
    whitened = pca.project(features)
    np.testing.assert_allclose(whitened[:, :8].std(axis=0, ddof=1), 1, atol=0.02)
    pca.save(tmp_path / "mine")
    assert np.load(tmp_path / "mine" / "eigenvals.npy").shape == (2048, 1)
    with pytest.raises(ValueError, match=r"at least 2"):
        fit_pca(features[:1])
    with pytest.raises(ValueError, match=r"\(n, 2048\)"):
        fit_pca(features[:, :100])
