"""Parity of our Inception + PCA + quantization with Google's TensorFlow way, on the seed-0
random graph of ``factories``.

``tests/extract/data/tf_inception_parity.npz`` holds what ``benchmarks/google_extractor.py``
computed in TensorFlow from that graph for :func:`parity_videos`, with a PCA whose mean and
eigenvalues were calibrated on :func:`calibration_videos` (so that frame-to-frame differences
are not whitened away), and the PCA's mean, eigenvalues and eigenvector order. Regenerate it
(needs ~/tfenv) with::

    PYTHONPATH=$PWD/src:$PWD python -m tests.extract.parity
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.extract import factories

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "tf_inception_parity.npz"
TF_PYTHON = Path.home() / "tfenv" / "bin" / "python"
GOOGLE_SCRIPT = REPO / "benchmarks" / "google_extractor.py"


def parity_videos() -> list[np.ndarray]:
    """Three 'videos' of three frames: up- and down-scaled to 299 on each axis, and square."""
    return [
        factories.make_frames(3, 180, 320, seed=10),
        factories.make_frames(3, 360, 480, seed=11),
        factories.make_frames(3, 240, 240, seed=12),
    ]


def calibration_videos() -> list[np.ndarray]:
    return [
        factories.make_frames(4, 180, 320, seed=20),
        factories.make_frames(4, 360, 480, seed=21),
    ]


def pool3(model, videos: list[np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(v)).numpy() for v in videos])


def ours(model, pca, videos: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Our pool_3, PCA features, bytes and per-video mean_rgb (mean of unquantized features)."""
    from nextvlad.extract.pca import quantize

    p3 = pool3(model, videos)
    feats = pca.project(p3)
    bounds = np.cumsum([0] + [len(v) for v in videos])
    means = np.stack([feats[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])
    return {"pool3": p3, "features": feats, "rgb": quantize(feats), "mean_rgb": means}


def run_google(graph: Path, pca_dir: Path, videos: list[np.ndarray], workdir: Path) -> dict:
    """Google's way in the TF venv (one session.run per frame) -> rgb, features, pool3, mean_rgb."""
    names = []
    for i, v in enumerate(videos):
        names.append(str(workdir / f"video{i}.npy"))
        np.save(names[-1], v)
    out = workdir / "google.npz"
    cmd = [str(TF_PYTHON), str(GOOGLE_SCRIPT), "--graph", str(graph), "--pca", str(pca_dir)]
    subprocess.run([*cmd, "--frames", *names, "--out", str(out)], check=True, timeout=900)
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def agreement(mine: dict, google: dict) -> dict[str, float]:
    diff = mine["rgb"].astype(np.int64) - google["rgb"].astype(np.int64)
    inside = (google["rgb"] > 0) & (google["rgb"] < 255)
    return {
        "bytes": int(diff.size),
        "identical": float((diff == 0).mean()),
        "max_abs_byte_diff": int(np.abs(diff).max()),
        "unclipped_fraction": float(inside.mean()),
        "mean_rgb_max_diff": float(np.abs(mine["mean_rgb"] - google["mean_rgb"]).max()),
        "pool3_max_diff": float(np.abs(mine["pool3"] - google["pool3"]).max()),
        "features_max_diff": float(np.abs(mine["features"] - google["features"]).max()),
    }


def fixture_pca():
    """The PCA the fixture was made with."""
    from nextvlad.extract.pca import PCA

    with np.load(FIXTURE) as z:
        vecs = factories.pca_arrays(0)[2][z["pca_order"]]
        return PCA(z["pca_mean"], z["pca_eigenvals"], vecs)


def main() -> int:
    from nextvlad.extract.inception import load_inception

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        graph = factories.write_inception_graphdef(work / "classify_image_graph_def.pb")
        model = load_inception(graph)
        mean, vals, vecs, order = factories.calibrated_pca_arrays(
            pool3(model, calibration_videos())
        )
        pca_dir = factories.write_pca(work / "pca", arrays=(mean, vals, vecs))
        videos = parity_videos()
        google = run_google(graph, pca_dir, videos, work)
        FIXTURE.parent.mkdir(exist_ok=True)
        np.savez_compressed(
            FIXTURE,
            pca_mean=mean,
            pca_eigenvals=vals,
            pca_order=order.astype(np.int16),
            **{k: google[k] for k in ("rgb", "features", "pool3", "mean_rgb")},
        )
        from nextvlad.extract.pca import PCA

        report = agreement(ours(model, PCA(mean, vals, vecs), videos), google)
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
