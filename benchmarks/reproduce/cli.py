"""The command line: ``python benchmarks/reproduce [--quick] [--out-dir DIR] ...``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .markdown import write_page
from .paper_runs import run_jobs, write_data
from .plan import FULL, QUICK, REAL_DATA, REPO, Plan, make_jobs
from .plots import plot_fig6
from .report import FIGURE, render_markdown
from .runner import children_cpu_seconds, load_average, machine, source_version
from .segments import SEGMENTS_FULL, SEGMENTS_QUICK, plan_record, run_part
from .segments import summarize as summarize_segments
from .segments_report import render_section
from .summary import closing_note, findings, parameter_table, summarize

COMMAND = "python benchmarks/reproduce"  # how it is started, as results.md records it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Reproduce the paper's Table 1, Fig. 6, Tables 2-3 and parameter counts on "
        "the synthetic set and real video-level data; write results.md and the Fig. 6 PNG.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI)")
    parser.add_argument(
        "--part",
        choices=("main", "segments"),
        default="main",
        help="main (default): the paper's comparisons, results.json and the whole results.md; "
        "segments: the 2019 segment task (video-trained against fine-tuned on segment labels), "
        "segments.json and only the section between results.md's segment markers "
        "(its wall time is in that section)",
    )
    parser.add_argument(
        "--out-dir",
        default=str(REPO / "runs" / "reproduce"),
        help="data, run folders (TensorBoard), results.json (default: runs/reproduce)",
    )
    parser.add_argument(
        "--docs-dir",
        help="where results.md and the PNG go (default: docs/ for the full run, the out dir "
        "with --quick)",
    )
    parser.add_argument("--seeds", type=int, help="seeds a row (default: 3; --quick: 1)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument(
        "--threads", type=int, help="torch threads a run (default: cores // jobs, at least 1)"
    )
    parser.add_argument(
        "--real-data",
        default=str(REAL_DATA),
        help="folder of YouTube-8M 2018 video-level validate*.tfrecord ('none': skip)",
    )
    parser.add_argument("--json", action="store_true", help="print results.json on stdout")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite results.md and the PNG from OUT/results.json (--part segments: its "
        "section from OUT/segments.json) without training",
    )
    return parser


def write_outputs(summary: dict[str, Any], docs: Path, say: Callable[[str], None]) -> None:
    """results.md and the PNG in ``docs``, from a summary (fresh, or read back from JSON)."""
    summary["findings"] = findings(summary["rows"])
    summary["closing_note"] = closing_note(summary["rows"], summary["findings"])
    figure = docs / FIGURE
    if plot_fig6(summary, figure):
        say(f"wrote {figure}")
    else:
        say("matplotlib is not installed: no PNG (pip install 'nextvlad[plots]')")
    write_page(docs / "results.md", main=render_markdown(summary))  # its segment section kept
    say(f"wrote {docs / 'results.md'}")
    for sentence, verdict in summary["findings"]:
        say(f"{sentence}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.part == "segments":
        return segments_main(args, argv)
    started = time.perf_counter()
    plan = QUICK if args.quick else FULL
    if args.seeds is not None:
        if args.seeds < 1:
            raise SystemExit("--seeds must be at least 1")
        plan = Plan(**{**asdict(plan), "seeds": args.seeds})
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    load_at_start = load_average()
    source = source_version()  # before the runs: what they import
    out = Path(args.out_dir).resolve()
    docs = Path(args.docs_dir) if args.docs_dir else (out if args.quick else REPO / "docs")
    say = _progress(started)
    if args.render_only:
        write_outputs(_read_summary(out / "results.json"), docs, say)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    real, real_note = _find_real_data(args.real_data, plan, say)
    data = write_data(plan, out, say)
    jobs = make_jobs(plan, out, data, real)
    say(f"{len(jobs)} runs, {args.jobs} at a time with {threads} thread(s) each")
    try:
        results = run_jobs(jobs, args.jobs, threads, say)
    except RuntimeError as err:  # a `nextvlad` command failed: its command line and log's end
        print(f"reproduce: {err}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "command": _command(argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine(), "load_average_at_start": load_at_start},
        "source": source,
        "jobs": args.jobs,
        "threads": threads,
        "plan": {**asdict(plan), "steps": plan.steps},
        "rows": summarize(results),
        "parameters": parameter_table(),
        "real_data_note": real_note,
        "runs": [{k: v for k, v in r.items() if k != "curves"} for r in results],
        "cpu_seconds": children_cpu_seconds(),
        "wall_seconds": time.perf_counter() - started,
    }
    write_outputs(summary, docs, say)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    say(f"wrote {out / 'results.json'}")
    if args.json:
        print(json.dumps(summary))
    return 0


def segments_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``--part segments``: OUT/segments.json and the segment section of results.md."""
    started = time.perf_counter()
    plan = SEGMENTS_QUICK if args.quick else SEGMENTS_FULL
    if args.seeds is not None:
        if args.seeds < 1:
            raise SystemExit("--seeds must be at least 1")
        plan = replace(plan, seeds=args.seeds)
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    out = Path(args.out_dir).resolve()
    docs = Path(args.docs_dir) if args.docs_dir else (out if args.quick else REPO / "docs")
    say = _progress(started)
    if args.render_only:
        write_section(_read_summary(out / "segments.json"), docs, say)
        return 0
    load_at_start = load_average()
    source = source_version()
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = run_part(plan, out, args.jobs, threads, say)
    except RuntimeError as err:
        print(f"reproduce: {err}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "command": _command(argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine(), "load_average_at_start": load_at_start},
        "source": source,
        "jobs": args.jobs,
        "threads": threads,
        "plan": plan_record(plan),
        **summarize_segments(results),
        "runs": results,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "segments.json").write_text(json.dumps(summary, indent=1))
    say(f"wrote {out / 'segments.json'}")
    write_section(summary, docs, say)
    if args.json:
        print(json.dumps(summary))
    return 0


def write_section(summary: dict[str, Any], docs: Path, say: Callable[[str], None]) -> None:
    """The segment section into ``docs``/results.md, the rest of the page as it was."""
    page = docs / "results.md"
    write_page(page, section=render_section(summary))
    say(f"wrote the segment section of {page}")
    for d in summary["differences"]:
        say(f"MAP@100K {d['arm']} - {d['baseline']}: {d['mean']:+.4f} (std {d['std']:.4f})")


def _command(argv: list[str] | None) -> str:
    """The command line as results.md records it."""
    args = argv if argv is not None else sys.argv[1:]
    return f"{COMMAND} {' '.join(shlex.quote(a) for a in args)}".strip()


def _progress(started: float) -> Callable[[str], None]:
    """Progress lines on stderr, with the seconds since ``started``."""

    def say(message: str) -> None:
        print(f"[reproduce {time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr)
        sys.stderr.flush()

    return say


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--render-only: cannot read {path}: {err}") from None
    return summary


def _find_real_data(folder: str, plan: Plan, say: Callable[[str], None]) -> tuple[Path | None, str]:
    """The real video-level records' folder (None: skipped) and why they were skipped."""
    if folder == "none":
        return None, "--real-data none"
    candidate = Path(folder)
    if sorted(candidate.glob(plan.real_train)) and sorted(candidate.glob(plan.real_eval)):
        return candidate, ""
    note = f"no YouTube-8M video-level records in {candidate}"
    say(f"skipping the real-data runs: {note}")
    return None, note
