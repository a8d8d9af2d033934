"""Loader throughput: examples/s of read + CRC + parse + batch to uint8 tensors.

Writes a synthetic frame-level set (60-300 frames a video, mean ~180) to a temporary folder,
then times full passes of ``VideoDataset(...).loader(...)`` in one process and with DataLoader
workers. Prints a report, or one JSON object with ``--json``.

    python benchmarks/data_throughput.py --json            # the figures in docs/data.md
    python benchmarks/data_throughput.py --quick --json    # a seconds-long smoke run for CI
    python benchmarks/data_throughput.py --compare-parsers # protobuf (upb) vs our decoder
    python benchmarks/data_throughput.py --source s3 --json   # local vs a loopback S3 bucket

``--source s3`` (moto's server) or ``--source http`` (a Range-capable file server) serves the
same shards on 127.0.0.1 and times, in one run, the local files and the same files read through
``nextvlad.data.remote`` (one process, workers, and with a cache folder: epoch 1 fills it,
epoch 2 reads it), with MB/s beside examples/s (loopback is not a real link: compare the MB/s
with your bandwidth) and the ratios remote / local.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextvlad.data import VideoDataset, decode_video, iter_records, resolve_files, write_synthetic
from nextvlad.data.remote import RemoteSettings, configure
from nextvlad.data.tfrecord import RawRecord


def _time_loader(
    files: list[str], batch_size: int, workers: int, passes: int, *, per_pass: bool = False
) -> dict[str, Any]:
    """The best of ``passes`` full passes (epochs) through one loader: examples/s over the whole
    pass (shuffle-buffer filling included; the persistent workers start in the first pass),
    examples/s after the first batch (steady state), and the CPU an example cost in the main
    process and in the workers (CPU time is what other load on the machine changes least).
    With ``per_pass``, also the examples/s of every pass, in order."""
    dataset = VideoDataset(files, num_classes=25, shuffle=True, seed=0)
    loader = dataset.loader(batch_size, num_workers=workers)  # persistent workers
    best: dict[str, Any] = {}
    first_pass = 0.0
    rates: list[float] = []
    for epoch in range(passes):
        dataset.set_epoch(epoch)
        iterator = iter(loader)
        pids = [w.pid for w in getattr(iterator, "_workers", [])]
        before = os.times()
        workers_before = sum(_cpu_seconds(pid) for pid in pids)
        start = time.perf_counter()
        first = 0.0
        first_count = 0
        count = 0
        frames = 0
        for batch in iterator:
            assert batch.frames is not None and batch.frames.dtype == torch.uint8
            assert batch.num_frames is not None
            if not count:
                first = time.perf_counter() - start
                first_count = len(batch)
            count += len(batch)
            frames += int(batch.num_frames.sum())
        elapsed = time.perf_counter() - start
        after = os.times()
        worker_cpu = sum(_cpu_seconds(pid) for pid in pids) - workers_before
        main_cpu = after.user + after.system - before.user - before.system
        rates.append(round(count / elapsed, 1))
        if epoch == 0:
            first_pass = round(count / elapsed, 1)  # includes starting the workers
        if count / elapsed > best.get("examples_per_s", 0.0):
            best = {
                "examples_per_s": round(count / elapsed, 1),
                "steady_examples_per_s": (
                    round((count - first_count) / (elapsed - first), 1)
                    if count > first_count
                    else None
                ),
                "first_batch_s": round(first, 3),
                "examples": count,
                "mean_frames": round(frames / count, 1),
                "main_cpu_us_per_example": round(main_cpu / count * 1e6, 1),
                "worker_cpu_us_per_example": round(worker_cpu / count * 1e6, 1),
            }
    best["first_pass_examples_per_s"] = first_pass
    if per_pass:
        best["passes_examples_per_s"] = rates
    return best


def _with_rate(result: dict[str, Any], bytes_per_example: float) -> dict[str, Any]:
    """``result`` with MB/s (10^6 bytes) beside each examples/s: every pass reads every shard
    once, whole, so bytes/s is examples/s times the shards' bytes an example."""
    out = dict(result)
    for key in ("examples_per_s", "first_pass_examples_per_s"):
        out[key.replace("examples", "mb")] = round(result[key] * bytes_per_example / 1e6, 1)
    if "passes_examples_per_s" in result:
        out["passes_mb_per_s"] = [
            round(r * bytes_per_example / 1e6, 1) for r in result["passes_examples_per_s"]
        ]
    return out


@contextmanager
def _serve(source: str, files: list[str], folder: str) -> Iterator[list[str]]:
    """The URLs of ``files`` on a loopback server of ``source`` (s3, http), while it runs."""
    from _loopback import http_files, s3_bucket

    names = [Path(f).name for f in files]
    if source == "s3":
        with s3_bucket(files) as base:
            yield resolve_files(f"{base}*.tfrecord")  # a listed glob, as users give it
    else:
        with http_files(folder) as base:
            yield [base + name for name in names]  # https: a list, no glob


def _compare_remote(
    source: str, files: list[str], folder: str, batch_size: int, workers: int, passes: int
) -> dict[str, Any]:
    """Local and remote reads of the same shards in one run, with the ratios remote / local."""
    total = sum(os.path.getsize(f) for f in files)
    videos = sum(1 for f in files for _ in iter_records(f))
    per_example = total / videos
    wide = f"workers_{workers}"
    out: dict[str, Any] = {
        "source": source,
        "bytes": total,
        "bytes_per_example": round(per_example),
    }
    local = {
        "one_process": _time_loader(files, batch_size, 0, passes),
        wide: _time_loader(files, batch_size, workers, passes),
    }
    out["local"] = {k: _with_rate(v, per_example) for k, v in local.items()}
    configure(cache_dir=None)
    with _serve(source, files, folder) as urls:
        start = time.perf_counter()
        remote = {
            "one_process": _time_loader(urls, batch_size, 0, passes),
            wide: _time_loader(urls, batch_size, workers, passes),
        }
        with tempfile.TemporaryDirectory(prefix="nextvlad-bench-cache-") as cache:
            configure(cache_dir=cache)  # what --cache-dir does
            try:
                cached = _time_loader(urls, batch_size, workers, 2, per_pass=True)
            finally:
                configure(cache_dir=None)
            cached_files = len([n for n in os.listdir(cache) if n.endswith(".json")])
        out["remote_s"] = round(time.perf_counter() - start, 1)
    out["remote"] = {k: _with_rate(v, per_example) for k, v in remote.items()}
    epoch_1, epoch_2 = cached["passes_examples_per_s"]
    out["remote"][f"cache_{wide}"] = {
        "epoch_1_examples_per_s": epoch_1,  # filling the cache
        "epoch_2_examples_per_s": epoch_2,  # from the cache
        "epoch_1_mb_per_s": round(epoch_1 * per_example / 1e6, 1),
        "epoch_2_mb_per_s": round(epoch_2 * per_example / 1e6, 1),
        "examples": cached["examples"],
        "cached_shards": cached_files,
    }
    out["settings"] = asdict(RemoteSettings.from_env())
    best_local = local[wide]["examples_per_s"]
    out["ratios"] = {  # remote / local, examples/s
        "one_process": _ratio(remote["one_process"]["examples_per_s"], local["one_process"]),
        wide: _ratio(remote[wide]["examples_per_s"], local[wide]),
        f"cache_{wide}_epoch_1": round(epoch_1 / best_local, 3),
        f"cache_{wide}_epoch_2": round(epoch_2 / best_local, 3),
    }
    return out


def _ratio(remote: float, local: dict[str, Any]) -> float:
    return round(remote / local["examples_per_s"], 3)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a live process (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _protobuf_decoder() -> Callable[[bytes], Any]:
    """tf.train.SequenceExample parsed by the protobuf package (message classes built at run
    time from hand-written descriptors), frames joined into uint8 arrays."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="nextvlad_bench_example.proto", package="nvbench", syntax="proto3"
    )
    rep, opt = field.LABEL_REPEATED, field.LABEL_OPTIONAL

    def message(name: str, fields: Sequence[tuple[str, int, int, int, str]], oneof: bool = False):
        msg = proto.message_type.add(name=name)
        if oneof:
            msg.oneof_decl.add(name="kind")
        for fname, number, ftype, label, tname in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = tname
            if oneof:
                f.oneof_index = 0
        return msg

    def map_of(msg: Any, entry: str, value: str) -> None:
        nested = msg.nested_type.add(name=entry)
        nested.options.map_entry = True
        nested.field.add(name="key", number=1, type=field.TYPE_STRING, label=opt)
        nested.field.add(
            name="value", number=2, type=field.TYPE_MESSAGE, label=opt, type_name=value
        )

    message("BytesList", [("value", 1, field.TYPE_BYTES, rep, "")])
    message("FloatList", [("value", 1, field.TYPE_FLOAT, rep, "")])
    message("Int64List", [("value", 1, field.TYPE_INT64, rep, "")])
    message(
        "Feature",
        [
            ("bytes_list", 1, field.TYPE_MESSAGE, opt, ".nvbench.BytesList"),
            ("float_list", 2, field.TYPE_MESSAGE, opt, ".nvbench.FloatList"),
            ("int64_list", 3, field.TYPE_MESSAGE, opt, ".nvbench.Int64List"),
        ],
        oneof=True,
    )
    features = message(
        "Features",
        [("feature", 1, field.TYPE_MESSAGE, rep, ".nvbench.Features.FeatureEntry")],
    )
    map_of(features, "FeatureEntry", ".nvbench.Feature")
    message("FeatureList", [("feature", 1, field.TYPE_MESSAGE, rep, ".nvbench.Feature")])
    lists = message(
        "FeatureLists",
        [("feature_list", 1, field.TYPE_MESSAGE, rep, ".nvbench.FeatureLists.FeatureListEntry")],
    )
    map_of(lists, "FeatureListEntry", ".nvbench.FeatureList")
    message(
        "SequenceExample",
        [
            ("context", 1, field.TYPE_MESSAGE, opt, ".nvbench.Features"),
            ("feature_lists", 2, field.TYPE_MESSAGE, opt, ".nvbench.FeatureLists"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("nvbench.SequenceExample"))

    def decode(data: bytes) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
        msg = cls.FromString(data)
        ctx = msg.context.feature
        labels = np.array(ctx["labels"].int64_list.value, np.int64)
        out = {}
        for name, dim in (("rgb", 1024), ("audio", 128)):
            steps = msg.feature_lists.feature_list[name].feature
            joined = b"".join([step.bytes_list.value[0] for step in steps])
            out[name] = np.frombuffer(joined, np.uint8).reshape(-1, dim)
        return ctx["id"].bytes_list.value[0].decode(), labels, out

    return decode


def _compare_parsers(files: list[str], repeat: int) -> dict[str, Any]:
    records = [
        bytes(r.data)
        for path in files
        for r in iter_records(path)
        if isinstance(r, RawRecord) and r.data is not None
    ]
    pb = _protobuf_decoder()
    for data in records[:5]:  # same output
        ours = decode_video(data)
        _, labels, frames = pb(data)
        assert np.array_equal(ours.labels, labels)
        assert all(np.array_equal(ours.features[k], frames[k]) for k in frames)
    result: dict[str, Any] = {"records": len(records)}
    for name, fn in (("protobuf_upb", pb), ("nextvlad_decoder", decode_video)):
        best = 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            for data in records:
                fn(data)
            best = max(best, len(records) / (time.perf_counter() - start))
        result[f"{name}_records_per_s"] = round(best, 1)
    from google.protobuf.internal import api_implementation

    result["protobuf_backend"] = api_implementation.Type()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny run (CI smoke test)")
    parser.add_argument("--videos", type=int, default=2000, help="synthetic videos (2000)")
    parser.add_argument("--shards", type=int, default=8, help="files (8)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (2)")
    parser.add_argument("--passes", type=int, default=3, help="passes; the best is reported")
    parser.add_argument("--compare-parsers", action="store_true", help="protobuf vs ours")
    parser.add_argument(
        "--source",
        choices=("local", "s3", "http"),
        default="local",
        help="local files (default), or also the same files from a loopback S3 or HTTP server",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.shards, args.passes = 64, 4, 1

    torch.set_num_threads(1)
    report: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "videos": args.videos,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="nextvlad-bench-") as tmp:
        start = time.perf_counter()
        paths = write_synthetic(Path(tmp), videos=args.videos, shards=args.shards, seed=1)
        report["synth_write_s"] = round(time.perf_counter() - start, 2)
        files = [str(p) for p in paths]
        if args.source != "local":
            report.update(
                _compare_remote(args.source, files, tmp, args.batch_size, args.workers, args.passes)
            )
            report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            return _print(report, args.json)
        report["one_process"] = _time_loader(files, args.batch_size, 0, args.passes)
        report[f"workers_{args.workers}"] = _time_loader(
            files, args.batch_size, args.workers, args.passes
        )
        report["mean_frames"] = report["one_process"]["mean_frames"]
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        if args.compare_parsers:
            report["parsers"] = _compare_parsers(files, 1 if args.quick else 3)
    return _print(report, args.json)


def _print(report: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
