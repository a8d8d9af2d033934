"""Extraction throughput: frames/s and videos/s of `nextvlad extract`'s whole pipeline (decode,
choose, Inception-v3, PCA, quantize, write), with a breakdown, beside Google's way in one run.

Generates H.264 videos (720p, 30 fps by default) in a work folder (kept for reruns), writes a
random-weight Inception GraphDef with inception-2015-12-05's node names and a PCA (the test
factories; or give Google's files with --inception/--pca), then times:

* ours: ``Extractor.from_files`` -> ``extract_many`` (the next video decoded in a CPU thread
  while the network runs, as `nextvlad extract --decode-workers 1`) -> ``encode_extracted`` ->
  ``ShardWriter``: the production path, with the seconds of each stage;
* decode and choice alone: PyAV (threads, only kept frames converted) vs OpenCV's
  ``frame_iterator`` (Google's reader);
* Google's: ``benchmarks/google_extractor.py --videos`` in the TensorFlow venv (OpenCV's
  iterator, the TF graph, one frame a ``session.run``), on the same graph and PCA.

    python benchmarks/extract_throughput.py --videos 2 --seconds 60 --json
    python benchmarks/extract_throughput.py --quick --json          # seconds, for CI
    python benchmarks/extract_throughput.py --device cuda --decode-workers 4 --batch-size 64

``--device cuda``: the network batched on the GPU, videos decoded in ``--decode-workers`` CPU
threads meanwhile (Google's way stays on the CPU: its figure is the CPU baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = Path.home() / "tfenv" / "bin" / "python"


def make_videos(
    folder: Path, count: int, seconds: float, size: tuple[int, int], fps: int
) -> list[Path]:
    """``count`` H.264 yuv420p videos of moving noise-and-gradient frames (reused if there)."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for i in range(count):
        path = folder / f"video{i}-{width}x{height}-{fps}fps-{seconds:g}s.mp4"
        paths.append(path)
        if path.exists():
            continue
        tmp = path.with_suffix(".tmp.mp4")
        rng = np.random.default_rng(i)
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        base = base.repeat(8, axis=0).repeat(8, axis=1)
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast"}
            for n in range(int(seconds * fps)):
                img = np.roll(base, shift=4 * n, axis=1)
                img[: height // 6, : width // 6] = (n * 7) % 256
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        tmp.rename(path)
    return paths


def make_weights(folder: Path) -> tuple[Path, Path]:
    """The random-weight GraphDef (inception-2015-12-05's names) and a PCA, from the factories."""
    sys.path.insert(0, str(ROOT))
    from tests.extract.factories import write_inception_graphdef, write_pca

    graph, pca = folder / "classify_image_graph_def.pb", folder / "pca"
    if not graph.exists():
        write_inception_graphdef(graph)
    if not (pca / "eigenvecs.npy").exists():
        write_pca(pca)
    return graph, pca


def time_ours(
    args: argparse.Namespace, videos: list[Path], graph: Path, pca: Path
) -> dict[str, Any]:
    """The production path, timed by stage."""
    import torch

    from nextvlad.extract import Extractor
    from nextvlad.extract.writer import ShardWriter, encode_extracted

    t0 = time.perf_counter()
    extractor = Extractor.from_files(
        graph,
        pca,
        fps=args.fps,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        device=args.device,
    )
    load = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    write = 0.0
    frames = 0
    try:
        t0 = time.perf_counter()
        items = [(v, None, ()) for v in videos]
        with ShardWriter(out, shard_size=100) as writer:
            for _source, result in extractor.extract_many(items, workers=args.decode_workers):
                if isinstance(result, Exception):
                    raise result
                t1 = time.perf_counter()
                writer.write(result.id, encode_extracted(result))
                write += time.perf_counter() - t1
                frames += result.num_frames
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    t = extractor.timings
    return {
        "way": "nextvlad (PyAV threaded decode, Inception batched, PCA, quantize, write)",
        "device": args.device,
        "batch_size": args.batch_size,
        "decode_workers": args.decode_workers,
        "torch_threads": torch.get_num_threads(),
        "videos": len(videos),
        "frames": frames,
        "seconds": wall,
        "frames_per_second": frames / wall,
        "videos_per_second": len(videos) / wall,
        "load_seconds": load,
        "breakdown_seconds": {
            "decode_and_choose": t.decode,  # in the decode threads when decode_workers > 0
            "network": t.network,
            "pca_and_quantize": t.pca,
            "write": write,
        },
        "decode_overlapped": args.decode_workers > 0,
    }


def time_decoders(videos: list[Path], fps: float, max_frames: int) -> dict[str, Any]:
    """Decode + choice alone: PyAV (ours) vs OpenCV's frame_iterator (Google's)."""
    from nextvlad.extract.frames import iter_video_frames

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    ours = sum(1 for v in videos for _ in iter_video_frames(v, fps, max_frames))
    out["pyav_seconds"] = time.perf_counter() - t0
    out["frames"] = ours
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from google_extractor import frame_iterator
    except ImportError:
        return out
    try:
        t0 = time.perf_counter()
        theirs = sum(1 for v in videos for _ in frame_iterator(str(v), 1000.0 / fps, max_frames))
        out["opencv_seconds"] = time.perf_counter() - t0
        out["opencv_frames"] = theirs
    except ImportError:  # no cv2
        pass
    return out


def time_google(
    args: argparse.Namespace, videos: list[Path], graph: Path, pca: Path
) -> dict[str, Any]:
    """benchmarks/google_extractor.py in the TF venv (None figures if it is missing)."""
    python = Path(args.tf_python)
    if not python.exists():
        return {"skipped": f"no TensorFlow venv at {python}"}
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "google_extractor.py"),
        "--graph",
        str(graph),
        "--pca",
        str(pca),
        "--videos",
        *map(str, videos),
        "--fps",
        str(args.fps),
        "--max-frames",
        str(args.max_frames),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.google_timeout)
    if done.returncode != 0:
        return {"skipped": f"google_extractor.py failed: {done.stderr.strip()[-500:]}"}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report.pop("per_video", None)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=2, help="videos (2)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each video (60)")
    p.add_argument("--size", default="1280x720", help="WxH (1280x720)")
    p.add_argument("--video-fps", type=int, default=30, help="frame rate of the videos (30)")
    p.add_argument("--fps", type=float, default=1.0, help="frames kept a second (1)")
    p.add_argument("--max-frames", type=int, default=300, help="frames kept a video (300)")
    p.add_argument("--batch-size", type=int, default=32, help="frames a network call (32)")
    p.add_argument("--decode-workers", type=int, default=1, help="decode threads (1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    p.add_argument("--inception", help="Inception weights (default: a random-weight GraphDef)")
    p.add_argument("--pca", help="PCA folder or tgz (default: a random PCA)")
    p.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "nextvlad-extract-bench")
    )
    p.add_argument("--no-google", action="store_true", help="skip Google's way")
    p.add_argument("--tf-python", default=str(TF_PYTHON), help="the TF venv's python")
    p.add_argument("--google-timeout", type=float, default=3600.0, help="seconds (3600)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each way, alternating (1)")
    p.add_argument("--quick", action="store_true", help="1 video of 3 s at 320x180, 2 frames")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.size, args.max_frames = 1, 3.0, "320x180", 2
        args.no_google = True
    width, height = (int(v) for v in args.size.lower().split("x"))
    work = Path(args.workdir)
    videos = make_videos(
        work / "videos", args.videos, args.seconds, (width, height), args.video_fps
    )
    graph, pca = make_weights(work)
    graph = Path(args.inception) if args.inception else graph
    pca = Path(args.pca) if args.pca else pca
    report: dict[str, Any] = {
        "videos": [v.name for v in videos],
        "video": {"size": f"{width}x{height}", "fps": args.video_fps, "seconds": args.seconds},
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "decode_alone": time_decoders(videos, args.fps, args.max_frames),
    }
    # The machine may be shared: the two ways alternate, --repeats times, and the best run of
    # each is compared (every run is in the report, with the load average before it).
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "google": []}
    for _ in range(args.repeats):
        load = os.getloadavg()[0]
        runs["ours"].append({**time_ours(args, videos, graph, pca), "load_before": load})
        if not args.no_google:
            load = os.getloadavg()[0]
            runs["google"].append({**time_google(args, videos, graph, pca), "load_before": load})
    report["ours"] = max(runs["ours"], key=lambda r: r["frames_per_second"])
    report["ours_runs"] = [r["frames_per_second"] for r in runs["ours"]]
    if not args.no_google:
        timed = [r for r in runs["google"] if "frames_per_second" in r]
        report["google"] = (
            max(timed, key=lambda r: r["frames_per_second"]) if timed else runs["google"][0]
        )
        report["google_runs"] = [r.get("frames_per_second") for r in runs["google"]]
        google_fps = report["google"].get("frames_per_second")
        if google_fps:
            report["speedup_frames_per_second"] = report["ours"]["frames_per_second"] / google_fps
    report["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        ours = report["ours"]
        print(
            f"ours: {ours['frames']} frames in {ours['seconds']:.1f} s = "
            f"{ours['frames_per_second']:.2f} frames/s, {ours['videos_per_second']:.3f} videos/s"
        )
        print(f"  breakdown (s): {ours['breakdown_seconds']}")
        print(f"  decode alone: {report['decode_alone']}")
        if "google" in report:
            print(f"google: {report['google']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
