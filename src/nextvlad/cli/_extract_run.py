"""The run of `nextvlad extract`: inputs, this rank's share, what DIR holds already, the
records, failures.csv, progress and the summary."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from nextvlad.errors import NextVLADError, UsageError


def _world() -> tuple[int, int]:
    """(rank, world size) of torchrun's ``RANK`` / ``WORLD_SIZE`` (0, 1 without)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise UsageError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK {rank} does not fit WORLD_SIZE {world}")
    return rank, world


class Progress:
    """Videos done of all, frames/s and ETA on stderr: one updating line on a terminal, a plain
    line a video otherwise."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.tty = _isatty(stream)
        self.start = time.perf_counter()
        self.done = self.failed = self.frames = 0

    def update(self, frames: int, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self.frames += frames
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        eta = elapsed / self.done * (self.total - self.done)
        failed_text = f" ({self.failed} failed)" if self.failed else ""
        line = (
            f"extract: {self.done}/{self.total} videos{failed_text}, {self.frames} frames, "
            f"{self.frames / elapsed:.1f} frames/s, ETA {_clock(eta)}"
        )
        if self.tty:
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r{line}\x1b[K{end}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _items(args: argparse.Namespace) -> list[Any]:
    from nextvlad.extract._sources import expand_inputs, parse_labels

    labels = parse_labels(args.labels, "--labels") if args.labels else ()
    if args.decode_workers < 0:
        raise UsageError("--decode-workers must be 0 or more")
    return expand_inputs(args.inputs, labels)


def run_extract(args: argparse.Namespace) -> int:
    items = _items(args)
    rank, world = _world()
    items = items[rank::world]
    if args.fit_pca:
        return fit_pca(args, items)
    if not args.pca:
        raise UsageError("--pca is required (or --fit-pca DIR to make one)")
    from nextvlad.cli.extract import build_extractor
    from nextvlad.extract.pipeline import video_id
    from nextvlad.extract.writer import ShardWriter, encode_extracted

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    extractor = build_extractor(args)
    failures: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    todo: list[tuple[str, str, tuple[int, ...]]] = []
    seen: dict[str, str] = {}  # id -> the input that has it
    skipped = 0
    with ShardWriter(out, shard_size=args.shard_size, rank=None if world == 1 else rank) as writer:
        for item in items:
            vid = video_id(item.source, args.id)
            if vid in writer.done:
                skipped += 1
            elif vid in seen:
                failures.append((item.source, f"id {vid!r} is also {seen[vid]}'s: try --id path"))
            else:
                seen[vid] = item.source
                todo.append((item.source, vid, item.labels))
        progress = Progress(len(todo), sys.stderr, enabled=not args.no_progress)
        frames = 0
        for source, result in extractor.extract_many(todo, workers=args.decode_workers):
            if isinstance(result, NextVLADError):
                failures.append((str(source), str(result)))
                progress.update(0, True)
                continue
            writer.write(result.id, encode_extracted(result, video_level=args.video_level))
            frames += result.num_frames
            if result.note:
                notes.append((str(source), result.note))
            progress.update(result.num_frames, False)
    _write_failures(out, failures, None if world == 1 else rank)
    _summary(out, writer.records, frames, skipped, failures, notes, rank if world > 1 else None)
    return 1 if failures else 0


def _write_failures(out: Path, failures: Sequence[tuple[str, str]], rank: int | None) -> None:
    """DIR/failures.csv (failures-rR.csv under torchrun): path,reason of this run's failures;
    removed when there are none."""
    from nextvlad._atomic import atomic_write_bytes

    path = out / ("failures.csv" if rank is None else f"failures-r{rank}.csv")
    if not failures:
        path.unlink(missing_ok=True)
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(failures)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def _summary(
    out: Path,
    written: int,
    frames: int,
    skipped: int,
    failures: Sequence[tuple[str, str]],
    notes: Sequence[tuple[str, str]],
    rank: int | None,
) -> None:
    who = "nextvlad extract" + (f" (rank {rank})" if rank is not None else "")
    parts = [f"{who}: wrote {written} videos ({frames} frames) to {out}"]
    if skipped:
        parts.append(f"skipped {skipped} already there")
    if failures:
        name = "failures.csv" if rank is None else f"failures-r{rank}.csv"
        parts.append(f"{len(failures)} failed ({out / name})")
    print("; ".join(parts), file=sys.stderr)
    for source, reason in failures:
        print(f"  failed: {source}: {reason}", file=sys.stderr)
    for source, note in notes:
        print(f"  note: {source}: {note}", file=sys.stderr)


class _Unused:
    """The PCA of a --fit-pca run, which stops at pool_3."""

    def project(self, x: Any) -> Any:
        raise AssertionError("no PCA in a --fit-pca run")


def fit_pca(args: argparse.Namespace, items: Sequence[Any]) -> int:
    """--fit-pca DIR: pool_3 of every input's frames, a PCA fitted on them, saved in DIR."""
    import numpy as np

    from nextvlad.cli.extract import _device
    from nextvlad.extract import Extractor
    from nextvlad.extract._sources import local_copy
    from nextvlad.extract.inception import load_inception
    from nextvlad.extract.pca import fit_pca as fit

    device = _device(args.device)
    extractor = Extractor(
        load_inception(args.inception).to(device),
        _Unused(),
        fps=args.fps,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        device=device,
    )
    pools, failures = [], []
    progress = Progress(len(items), sys.stderr, enabled=not args.no_progress)
    for item in items:
        try:
            with local_copy(item.source) as path:
                pool = extractor.pool3(extractor.frames(path))
        except NextVLADError as err:
            failures.append((item.source, str(err)))
            progress.update(0, True)
            continue
        pools.append(pool)
        progress.update(len(pool), False)
    features = np.concatenate(pools) if pools else np.empty((0, 2048), np.float32)
    if len(features) < 2:
        raise NextVLADError(f"--fit-pca needs at least 2 frames; the inputs gave {len(features)}")
    fit(features).save(args.fit_pca)
    print(
        f"nextvlad extract: fitted a PCA on {len(features)} frames of {len(pools)} videos, "
        f"saved in {args.fit_pca}",
        file=sys.stderr,
    )
    for source, reason in failures:
        print(f"  failed: {source}: {reason}", file=sys.stderr)
    return 1 if failures else 0
