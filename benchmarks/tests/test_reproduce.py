"""benchmarks/reproduce: the summaries, the checks and the Markdown writer on fake numbers and on
the stored summary of a quick run (the runs themselves are exercised by `.ci/run`, which calls
its --quick mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from _structure import (
    check_layout,
    check_markers,
    check_sections,
    main_sections,
    segment_sections,
)

from reproduce.cli import COMMAND, main
from reproduce.markdown import join, table
from reproduce.plan import FULL, MIXTURES, REAL, TABLE1, make_jobs
from reproduce.plots import plot_fig6
from reproduce.report import FIGURE, render_markdown
from reproduce.runner import nextvlad, run_all
from reproduce.summary import (
    FAILS,
    HOLDS,
    REPORTED,
    WITHIN,
    closing_note,
    compare,
    findings,
    spread,
    summarize,
)

BENCHMARKS = Path(__file__).resolve().parents[1]
# A --quick run's results.json (its Markdown is checked for structure, not against a copy).
QUICK_SUMMARY = Path(__file__).resolve().parent / "data" / "results.json"
RESULTS_MD = BENCHMARKS.parent / "docs" / "results.md"


def _fake_results() -> list[dict[str, Any]]:
    """Three seeds of every row, GAPs chosen so that the paper's claims hold."""
    gaps = {
        "netvlad": 0.90,
        "netvlad-random": 0.88,
        "netvlad-small": 0.93,
        "nextvlad-32g": 0.94,
        "nextvlad-16g": 0.95,
        "nextvlad-8g": 0.96,
        "meanpool": 0.20,
        "mix3-t3": 0.97,
        "mix3-t0": 0.975,
        "video-logistic": 0.68,
        "video-moe": 0.67,
    }
    plan = FULL
    per_epoch = plan.steps_per_epoch
    results = []
    for row in (*TABLE1, *MIXTURES, *(r for r, _ in REAL)):
        seeds = 1 if row.key.startswith("video") else 3
        for seed in range(seeds):
            gap = gaps[row.key] + 0.001 * seed
            result: dict[str, Any] = {
                "row": row.key,
                "seed": seed,
                "parameters": 1000 if row.key == "netvlad" else 400,
                "steps": plan.steps,
                "epochs": plan.epochs,
                "train_seconds": 60.0,
                "examples_per_second": 100.0,
                "metrics": {"gap": gap, "map": gap - 0.01, "hit_at_one": gap + 0.01},
                "curves": {},
            }
            if row.curve:
                first = {"nextvlad-8g": 0.8, "netvlad": 0.6}.get(row.key, 0.5)
                result["curves"] = {
                    "train/gap": [(s, min(1.0, 0.1 + s / plan.steps)) for s in range(1, 81)],
                    "eval/gap": [
                        (per_epoch * e, first + 0.02 * e + 0.001 * seed)
                        for e in range(1, plan.epochs + 1)
                    ],
                }
            if row.branches:
                result["branch_parameters"] = 300
                result["branch_metrics"] = [
                    {"gap": gap - 0.02, "map": gap - 0.03, "hit_at_one": gap}
                ] * row.branches
            results.append(result)
    return results


def _summary() -> dict[str, Any]:
    rows = summarize(_fake_results())
    checks = findings(rows)
    return {
        "command": COMMAND,
        "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "CPU", "cores": 2, "system": "Linux", "python": "3", "torch": "2"},
        "jobs": 2,
        "threads": 1,
        "plan": {**asdict(FULL), "steps": FULL.steps},
        "rows": rows,
        "parameters": [
            {
                "name": "nextvlad-8g-128k-2048h",
                "paper_label": "Table 1",
                "trainable_params": 88_889_378,
                "paper_params": 89_000_000,
                "relative_to_paper": -0.00125,
                "formula_params": 80_890_000,
            }
        ],
        "findings": checks,
        "closing_note": closing_note(rows, checks),
        "wall_seconds": 1234.0,
    }


def test_spread() -> None:
    s = spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and (s["min"], s["max"], s["n"]) == (1.0, 3.0, 3)
    assert spread([0.5])["std"] == 0.0


def test_summary_and_findings() -> None:
    summary = _summary()
    rows = summary["rows"]
    assert rows["nextvlad-8g"]["gap"]["mean"] == pytest.approx(0.961)
    assert rows["nextvlad-8g"]["gap"]["n"] == 3
    assert rows["mix3-t3"]["branch_gap"]["mean"] == pytest.approx(0.951)
    curve = rows["netvlad"]["curves"]["eval/gap"]
    assert curve[0][0] == FULL.steps_per_epoch and curve[0][2] == pytest.approx(0.62)
    verdicts = {sentence.split(":")[0]: verdict for sentence, verdict in summary["findings"]}
    assert verdicts["NeXtVLAD (8G) beats NetVLAD with a fraction of its parameters"] == "holds"
    assert verdicts["NeXtVLAD (8G) beats the mean-pool baseline"] == "holds"
    assert verdicts["NeXtVLAD converges faster (Fig. 6)"] == "holds"
    assert verdicts["GAP falls as the groups grow (paper"] == "holds"
    assert verdicts["Mixture with distillation (T = 3) against without (λ = 0)"] == REPORTED
    assert "Of the 9 claims judged, 9 hold clearly" in summary["closing_note"]


def test_findings_in_the_papers_order() -> None:
    """Table 1's claims, then the curves', then the mixtures'; none without their rows."""
    starts = [sentence.split(" ")[:2] for sentence, _ in _summary()["findings"]]
    assert starts == [
        ["NeXtVLAD", "(8G)"],
        ["NeXtVLAD", "(16G)"],
        ["NeXtVLAD", "(32G)"],
        ["NeXtVLAD", "(8G)"],
        ["NetVLAD_small", "beats"],
        ["GAP", "falls"],
        ["NeXtVLAD", "converges"],
        ["NetVLAD", "remembers"],
        ["Mixture", "with"],
        ["The", "mixture"],
    ]
    assert findings({}) == []


def test_compare() -> None:
    a = spread([0.90, 0.91, 0.92])
    assert compare(a, spread([0.80, 0.81, 0.82])) == HOLDS
    assert compare(a, spread([0.89, 0.90, 0.91])) == WITHIN
    assert compare(a, spread([0.92, 0.93, 0.94])) == FAILS


def test_render_markdown() -> None:
    text = render_markdown(_summary())
    assert "20 min 34 s" in text  # the wall time
    assert f"```bash\n{COMMAND}\n```" in text
    assert "| NeXtVLAD (8G, 0.5drop, 32K, 512H) | 400 | 0.9610 ± 0.0010 |" in text
    assert FIGURE in text
    assert "0.8723" in text and "0.88722" in text  # the paper's Table 1 and 2 figures
    assert "88,889,378" in text
    assert "| video-moe (2 mixtures) | 400 |" in text
    assert "1 of these 1 rows match the paper within 0.5%" in text
    assert "Library:" not in text and "CPU time" not in text and "smoke run" not in text


def test_render_structure() -> None:
    """The sections in order, one blank line around each heading, every table's columns, rows
    and figures; the findings as a list."""
    summary = _summary()
    text = render_markdown(summary)
    assert text.startswith("# Results: ") and text.endswith(".\n")
    check_layout(text)
    check_sections(text, main_sections(epochs=FULL.epochs, params=1))
    verdicts = [f"- {s}: **{v}**." for s, v in summary["findings"]]
    assert f"## Findings\n\n{chr(10).join(verdicts)}\n\nA comparison" in text


def test_render_structure_fails_on_a_wrong_table() -> None:
    """The structure check catches a missing row, a renamed column and a figure not a number."""
    text = render_markdown(_summary())
    expected = main_sections(epochs=FULL.epochs, params=1)
    broken = [
        text.replace("| mean pool (512H, SE gating) |", "| x |\n| y |"),  # a row too many
        text.replace("| paper's formula |", "| formula |"),
        text.replace("| 88,889,378 |", "| 88889378.0 |"),
        text.replace("## Findings", "## Results"),
    ]
    for page in broken:
        with pytest.raises(AssertionError):
            check_sections(page, expected)


def test_render_optional_paragraphs() -> None:
    summary = _summary()
    summary.update(source="0123456789", cpu_seconds=2000.0, closing_note="")
    summary["plan"] = {**summary["plan"], "name": "quick"}
    text = render_markdown(summary)
    assert "\n\nLibrary: `nextvlad` at commit 0123456789.\n\nCPU time of the runs: 33 min 20 s" in (
        text
    )
    assert "(1.62 cores busy on average); on 2 otherwise idle cores" in text
    assert "**This is a `--quick` smoke run**" in text
    assert "\n\n_(closing note: see the findings above)_\n\n" in text
    check_layout(text)


def test_render_without_curves_or_findings() -> None:
    """Without the curves the Fig. 6 table goes, with its note; without findings, the list."""
    summary = _summary()
    for entry in summary["rows"].values():
        entry.pop("curves", None)
    summary["findings"] = []
    text = render_markdown(summary)
    assert "(Training GAP: mean over" not in text
    check_layout(text)
    check_sections(text, main_sections(epochs=None, params=1))
    assert "`eval/gap`).\n\n## Tables 2 and 3" in text
    assert "## Findings\n\nA comparison of two models" in text


def test_render_without_real_data() -> None:
    summary = _summary()
    for key in ("video-logistic", "video-moe"):
        del summary["rows"][key]
    summary["real_data_note"] = "no YouTube-8M video-level records in /nowhere"
    text = render_markdown(summary)
    assert "Skipped: no YouTube-8M video-level records in /nowhere." in text
    check_sections(text, main_sections(epochs=FULL.epochs, params=1, real=0))


def test_markdown_blocks() -> None:
    """Blocks one blank line apart, none for an empty one; a table's rule from its alignment."""
    assert join("a", None, [], "", ["b", "c"]) == "a\n\nb\nc"
    assert table(["x", "y"], "lr", ["| 1 | 2 |"]) == ["| x | y |", "|---|---:|", "| 1 | 2 |"]


def _quick_page() -> str:
    summary = json.loads(QUICK_SUMMARY.read_text())
    summary["findings"] = findings(summary["rows"])
    summary["closing_note"] = closing_note(summary["rows"], summary["findings"])
    return render_markdown(summary)


def test_quick_run_renders_deterministically() -> None:
    """The stored quick run renders the same page twice, with the page's structure."""
    text = _quick_page()
    assert text == _quick_page()
    check_layout(text)
    check_sections(text, main_sections(epochs=2))
    assert "**This is a `--quick` smoke run**" in text


def test_committed_page_structure() -> None:
    """docs/results.md has the structure the renderer writes: the main sections, then the
    segment part's between its markers."""
    page = RESULTS_MD.read_text(encoding="utf-8")
    check_layout(page)
    section = check_markers(page)
    main, _, rest = page.partition(section)
    assert main.endswith("\n\n") and rest == "\n"
    check_sections(main[:-1], main_sections())
    check_sections(section, segment_sections())


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / FIGURE
    assert plot_fig6(_summary(), path)
    assert path.stat().st_size > 10_000


def test_render_only_from_json(tmp_path: Path) -> None:
    """`--render-only` rewrites results.md from results.json (tuples come back as lists)."""
    summary = _summary()
    summary["cpu_seconds"] = 2000.0
    (tmp_path / "results.json").write_text(json.dumps(summary))
    docs = tmp_path / "docs"
    argv = ["--render-only", "--out-dir", str(tmp_path), "--docs-dir", str(docs)]
    assert main(argv) == 0
    text = (docs / "results.md").read_text()
    assert "NeXtVLAD converges faster (Fig. 6)" in text
    assert "CPU time of the runs: 33 min 20 s" in text


def test_command_runs_from_any_folder(tmp_path: Path) -> None:
    """`python benchmarks/reproduce` from another folder, and `python -m benchmarks.reproduce`
    from the repository's root."""
    (tmp_path / "results.json").write_text(QUICK_SUMMARY.read_text())
    run = [sys.executable, str(BENCHMARKS / "reproduce"), "--render-only"]
    run += ["--out-dir", str(tmp_path), "--docs-dir", "docs"]
    subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    assert (tmp_path / "docs" / "results.md").read_text() == _quick_page()
    helped = subprocess.run(
        [sys.executable, "-m", "benchmarks.reproduce", "--help"],
        cwd=BENCHMARKS.parent,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.stdout.startswith(f"usage: {COMMAND} ")


def test_job_commands_are_the_runs_options(tmp_path: Path) -> None:
    """Each job's `nextvlad train` command, parsed by nextvlad's own parser, gives the options
    the rows and the plan call for (the in-process runs of before took these as TrainOptions)."""
    from nextvlad.cli import build_parser
    from nextvlad.cli.train import train_options

    data = {"train": "T/*.tfrecord", "eval": "E/*.tfrecord"}
    real = tmp_path / "real"
    jobs = make_jobs(FULL, tmp_path, data, real)
    assert len(jobs) == FULL.seeds * (len(TABLE1) + len(MIXTURES)) + len(REAL)
    by = {(j.row.key, j.seed): j for j in jobs}
    for job in jobs:
        options = train_options(build_parser().parse_args(job.command))
        assert options.preset == job.row.preset and options.out == str(job.out)
        assert options.eval_data == [job.eval_data] and options.batch_size == job.batch_size
        assert (options.device, options.num_workers, options.progress) == ("cpu", 0, False)
        assert options.checkpoint_every == 10**9 and options.seed == job.seed
    random = train_options(build_parser().parse_args(by[("netvlad-random", 2)].command))
    assert random.model_overrides == {
        "num_clusters": 64,
        "hidden_size": 256,
        "num_classes": FULL.classes,
        "sample_frames": FULL.max_frames,
    }
    assert (random.epochs, random.learning_rate, random.eigenvals) == (5, 1e-3, "none")
    assert random.eval_every == FULL.steps_per_epoch and random.log_every == 1
    assert train_options(build_parser().parse_args(by[("mix3-t0", 0)].command)).distill_weight == 0
    assert train_options(build_parser().parse_args(by[("mix3-t3", 0)].command)).eval_every == 0
    moe = train_options(build_parser().parse_args(by[("video-moe", 0)].command))
    assert moe.train_data == [str(real / FULL.real_train)] and moe.eigenvals is None
    assert (moe.batch_size, moe.learning_rate, moe.l2_penalty) == (128, 0.03, 1e-8)
    assert (moe.lr_decay, moe.lr_decay_examples, moe.log_every) == (0.95, 4_000_000, 10)


def test_run_all_costliest_first_results_in_order() -> None:
    """One worker: the tasks start costliest first; the results come back in the given order."""
    started: list[str] = []

    def task(name: str) -> str:
        started.append(name)
        return name.upper()

    work = [(1.0, partial(task, "a")), (3.0, partial(task, "b")), (2.0, partial(task, "c"))]
    lines: list[str] = []
    assert run_all(work, 1, lines.append, str) == ["A", "B", "C"]
    assert started == ["b", "c", "a"]
    assert lines[0].startswith("[1/3] B; ") and lines[-1].startswith("[3/3] A; ")


def test_run_all_stops_at_a_failure() -> None:
    """A failed task is raised; the tasks queued behind it never start."""
    started: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        if i == 0:
            raise RuntimeError("`nextvlad train` exited 1")
        return i

    work = [(10.0 - i, partial(task, i)) for i in range(4)]
    with pytest.raises(RuntimeError, match="exited 1"):
        run_all(work, 1, lambda _: None, str)
    assert started == [0]


def test_nextvlad_failure_names_the_command(tmp_path: Path) -> None:
    """A `nextvlad` command that fails stops the part with its command line and its log's end."""
    log = tmp_path / "run.log"
    args = ["eval", "--checkpoint", str(tmp_path / "none"), "--data", "x.tfrecord"]
    with pytest.raises(RuntimeError, match=r"`nextvlad eval --checkpoint .*` exited 2") as err:
        nextvlad(args, 1, log)
    assert log.read_text().strip().splitlines()[-1] in str(err.value)
