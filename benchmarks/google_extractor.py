"""Google's own way of extracting YouTube-8M rgb features, for parity checks and speed figures.

Runs in the TensorFlow venv, not in the project's environment::

    ~/tfenv/bin/python benchmarks/google_extractor.py --graph classify_image_graph_def.pb \
        --pca PCA_DIR --frames frames.npy --out tf.npz
    ~/tfenv/bin/python benchmarks/google_extractor.py --graph G.pb --pca PCA_DIR \
        --videos a.mp4 b.mp4 [--fps 1 --max-frames 300]  # prints JSON: frames/s

What it does is google/youtube-8m's ``feature_extractor/``, written again here (that code is
TensorFlow 1 and Python 2 in places): ``tf.compat.v1`` imports the GraphDef, the PCA becomes
float32 constants (``mean.npy[:, 0]``, ``eigenvals.npy[:1024, 0]``, ``eigenvecs.npy.T[:, :1024]``)
and ``pca_final_feature = ((pool_3/_reshape[0] - mean) @ eigenvecs) / sqrt(eigenvals + 1e-4)``
in the graph; one ``session.run`` per frame feeding ``DecodeJpeg:0``; each frame quantized as
``extract_tfrecords_main.quantize`` (clip to [-2, 2], ``int(round((f + 2) * 255/4))``), the
video's ``mean_rgb`` summed frame by frame in float32 and divided by the count. Videos are read
by that file's ``frame_iterator`` (OpenCV, ``CAP_PROP_POS_MSEC``), BGR frames reversed to RGB.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CAP_PROP_POS_MSEC = 0


def load_pca(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if os.path.isfile(path):  # yt8m_pca.tgz: Google extracts it and reads the folder
        folder = tempfile.mkdtemp(prefix="yt8m_pca_")
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(folder, filter="data")
        path = folder
    mean = np.load(os.path.join(path, "mean.npy"))[:, 0]
    eigenvals = np.load(os.path.join(path, "eigenvals.npy"))[:1024, 0]
    eigenvecs = np.load(os.path.join(path, "eigenvecs.npy")).T[:, :1024]
    return mean, eigenvals, eigenvecs


def read_graph_bytes(path: str) -> bytes:
    if path.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                if os.path.basename(member.name) == "classify_image_graph_def.pb":
                    return tar.extractfile(member).read()
        raise SystemExit(f"{path}: no classify_image_graph_def.pb")
    with open(path, "rb") as f:
        return f.read()


class GoogleExtractor:
    """feature_extractor.YouTube8MFeatureExtractor, without the downloads."""

    def __init__(self, graph_path: str, pca_path: str) -> None:
        import tensorflow as tf

        tf1 = tf.compat.v1
        tf1.disable_eager_execution()
        mean, eigenvals, eigenvecs = load_pca(pca_path)
        graph_def = tf1.GraphDef.FromString(read_graph_bytes(graph_path))
        self.graph = tf1.Graph()
        with self.graph.as_default():
            tf1.import_graph_def(graph_def, name="")
            self.session = tf1.Session(graph=self.graph)
            frame_features = self.graph.get_tensor_by_name("pool_3/_reshape:0")
            pca_mean = tf1.constant(value=mean, dtype=tf.float32)
            pca_eigenvecs = tf1.constant(value=eigenvecs, dtype=tf.float32)
            pca_eigenvals = tf1.constant(value=eigenvals, dtype=tf.float32)
            feats = frame_features[0] - pca_mean
            feats = tf1.reshape(tf1.matmul(tf1.reshape(feats, [1, 2048]), pca_eigenvecs), [1024])
            tf1.divide(feats, tf1.sqrt(pca_eigenvals + 1e-4), name="pca_final_feature")

    def extract(self, frame_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One (H, W, 3) uint8 RGB frame -> (pca features (1024,), pool_3 (2048,)), one call."""
        feats, pool3 = self.session.run(
            ["pca_final_feature:0", "pool_3/_reshape:0"], feed_dict={"DecodeJpeg:0": frame_rgb}
        )
        return feats, pool3[0]


def quantize(features: np.ndarray, lo: float = -2.0, hi: float = 2.0) -> bytes:
    """extract_tfrecords_main.quantize."""
    assert features.dtype == "float32"
    features = np.clip(features, lo, hi)
    features = (features - lo) * (255.0 / (hi - lo))
    return bytes([int(round(f)) for f in features])  # noqa: RUF046 (Google's code)


def frame_iterator(filename: str, every_ms: float = 1000.0, max_num_frames: int = 300):
    """extract_tfrecords_main.frame_iterator (yields OpenCV's BGR frames)."""
    import cv2

    video_capture = cv2.VideoCapture()
    if not video_capture.open(filename):
        return
    last_ts = -99999
    num_retrieved = 0
    while num_retrieved < max_num_frames:
        while video_capture.get(CAP_PROP_POS_MSEC) < every_ms + last_ts:
            if not video_capture.read()[0]:
                return
        last_ts = video_capture.get(CAP_PROP_POS_MSEC)
        has_frames, frame = video_capture.read()
        if not has_frames:
            break
        yield frame
        num_retrieved += 1


def run_frames(extractor: GoogleExtractor, frames: np.ndarray) -> dict[str, np.ndarray]:
    rgb, feats, pool3 = [], [], []
    for frame in frames:
        f, p = extractor.extract(frame)
        feats.append(f)
        pool3.append(p)
        rgb.append(np.frombuffer(quantize(f), np.uint8))
    return {"rgb": np.stack(rgb), "features": np.stack(feats), "pool3": np.stack(pool3)}


def mean_rgb(features: list[np.ndarray]) -> np.ndarray:
    """extract_tfrecords_main's running float32 sum divided by the number of frames."""
    total = None
    for f in features:
        total = f.copy() if total is None else total + f
    return total / len(features)


def run_videos(
    extractor: GoogleExtractor, videos: list[str], fps: float, max_frames: int, out: str | None
) -> dict:
    per_video = []
    arrays = {}
    start = time.perf_counter()
    frames_total = 0
    for path in videos:
        t0 = time.perf_counter()
        feats, rgb = [], []
        for bgr in frame_iterator(path, every_ms=1000.0 / fps, max_num_frames=max_frames):
            f, _ = extractor.extract(bgr[:, :, ::-1])
            feats.append(f)
            rgb.append(quantize(f))
        seconds = time.perf_counter() - t0
        frames_total += len(feats)
        if out and feats:
            arrays[f"rgb_{len(per_video)}"] = np.stack([np.frombuffer(r, np.uint8) for r in rgb])
            arrays[f"mean_rgb_{len(per_video)}"] = mean_rgb(feats)
        per_video.append(
            {
                "video": path,
                "frames": len(feats),
                "seconds": seconds,
                "mean_rgb_head": [float(v) for v in mean_rgb(feats)[:4]] if feats else [],
            }
        )
    elapsed = time.perf_counter() - start
    if out:
        np.savez(out, **arrays)
    return {
        "way": "google (OpenCV frame_iterator + TF graph, one frame per session.run)",
        "videos": len(videos),
        "frames": frames_total,
        "seconds": elapsed,
        "frames_per_second": frames_total / elapsed if elapsed else 0.0,
        "videos_per_second": len(videos) / elapsed if elapsed else 0.0,
        "per_video": per_video,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", required=True, help="classify_image_graph_def.pb or the .tgz")
    parser.add_argument("--pca", required=True, help="yt8m_pca folder or yt8m_pca.tgz")
    parser.add_argument(
        "--frames", nargs="+", help=".npy files of (N, H, W, 3) uint8 RGB frames (sizes may differ)"
    )
    parser.add_argument(
        "--out",
        help=".npz to write: with --frames rgb, features, pool3, mean_rgb (one row a file); "
        "with --videos rgb_I and mean_rgb_I for the I-th video",
    )
    parser.add_argument("--videos", nargs="+", help="video files: times Google's whole way")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second (default 1)")
    parser.add_argument("--max-frames", type=int, default=300, help="per video (default 300)")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF's)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed session calls before timing (default 1)"
    )
    args = parser.parse_args(argv)
    if not args.frames and not args.videos:
        parser.error("give --frames or --videos")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    t0 = time.perf_counter()
    extractor = GoogleExtractor(args.graph, args.pca)
    load_seconds = time.perf_counter() - t0
    for _ in range(args.warmup):
        extractor.extract(np.zeros((240, 320, 3), np.uint8))
    if args.frames and args.videos and args.out:
        parser.error("--out with both --frames and --videos: run them separately")
    if args.frames:
        parts = []
        t0 = time.perf_counter()
        for name in args.frames:
            frames = np.load(name)
            parts.append(run_frames(extractor, frames[None] if frames.ndim == 3 else frames))
        seconds = time.perf_counter() - t0
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        # mean_rgb of each file as one video (extract_tfrecords_main's arithmetic)
        out["mean_rgb"] = np.stack([mean_rgb(list(p["features"])) for p in parts])
        if args.out:
            np.savez(args.out, **out)
        n = len(out["rgb"])
        print(json.dumps({"frames": n, "load_seconds": load_seconds, "seconds": seconds}))
    if args.videos:
        report = run_videos(extractor, args.videos, args.fps, args.max_frames, args.out)
        report["load_seconds"] = load_seconds
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
