"""benchmarks/reproduce.py: the summaries, the checks and the Markdown writer on fake numbers
(the runs themselves are exercised by `.ci/run`, which calls its --quick mode)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reproduce_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _fake_results(reproduce: ModuleType) -> list[dict[str, Any]]:
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
    plan = reproduce.FULL
    per_epoch = plan.steps_per_epoch
    results = []
    for row in (*reproduce.TABLE1, *reproduce.MIXTURES, *(r for r, _ in reproduce.REAL)):
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


def _summary(reproduce: ModuleType) -> dict[str, Any]:
    from dataclasses import asdict

    rows = reproduce.summarize(_fake_results(reproduce))
    checks = reproduce.findings(rows)
    plan = reproduce.FULL
    return {
        "command": "python benchmarks/reproduce.py",
        "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "CPU", "cores": 2, "system": "Linux", "python": "3", "torch": "2"},
        "jobs": 2,
        "threads": 1,
        "plan": {**asdict(plan), "steps": plan.steps},
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
        "closing_note": reproduce.closing_note(rows, checks),
        "wall_seconds": 1234.0,
    }


def test_spread(reproduce: ModuleType) -> None:
    s = reproduce.spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and (s["min"], s["max"], s["n"]) == (1.0, 3.0, 3)
    assert reproduce.spread([0.5])["std"] == 0.0


def test_summary_and_findings(reproduce: ModuleType) -> None:
    summary = _summary(reproduce)
    rows = summary["rows"]
    assert rows["nextvlad-8g"]["gap"]["mean"] == pytest.approx(0.961)
    assert rows["nextvlad-8g"]["gap"]["n"] == 3
    assert rows["mix3-t3"]["branch_gap"]["mean"] == pytest.approx(0.951)
    curve = rows["netvlad"]["curves"]["eval/gap"]
    assert curve[0][0] == reproduce.FULL.steps_per_epoch and curve[0][2] == pytest.approx(0.62)
    verdicts = {sentence.split(":")[0]: verdict for sentence, verdict in summary["findings"]}
    assert verdicts["NeXtVLAD (8G) beats NetVLAD with a fraction of its parameters"] == "holds"
    assert verdicts["NeXtVLAD (8G) beats the mean-pool baseline"] == "holds"
    assert verdicts["NeXtVLAD converges faster (Fig. 6)"] == "holds"
    assert verdicts["GAP falls as the groups grow (paper"] == "holds"
    assert verdicts["Mixture with distillation (T = 3) against without (λ = 0)"] == (
        reproduce.REPORTED
    )
    assert "Of the 9 claims judged, 9 hold clearly" in summary["closing_note"]


def test_compare(reproduce: ModuleType) -> None:
    a = reproduce.spread([0.90, 0.91, 0.92])
    assert reproduce._compare(a, reproduce.spread([0.80, 0.81, 0.82])) == reproduce.HOLDS
    assert reproduce._compare(a, reproduce.spread([0.89, 0.90, 0.91])) == reproduce.WITHIN
    assert reproduce._compare(a, reproduce.spread([0.92, 0.93, 0.94])) == reproduce.FAILS


def test_render_markdown(reproduce: ModuleType) -> None:
    text = reproduce.render_markdown(_summary(reproduce))
    assert "20 min 34 s" in text  # the wall time
    assert "python benchmarks/reproduce.py" in text
    assert "| NeXtVLAD (8G, 0.5drop, 32K, 512H) | 400 | 0.9610 ± 0.0010 |" in text
    assert reproduce.FIGURE in text
    assert "0.8723" in text and "0.88722" in text  # the paper's Table 1 and 2 figures
    assert "88,889,378" in text
    assert "| video-moe (2 mixtures) | 400 |" in text
    assert "## Where the synthetic set cannot stand in for YouTube-8M" in text


def test_render_without_real_data(reproduce: ModuleType) -> None:
    summary = _summary(reproduce)
    for key in ("video-logistic", "video-moe"):
        del summary["rows"][key]
    summary["real_data_note"] = "no YouTube-8M video-level records in /nowhere"
    assert "Skipped: no YouTube-8M video-level records in /nowhere." in (
        reproduce.render_markdown(summary)
    )


def test_plot(reproduce: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / reproduce.FIGURE
    assert reproduce.plot_fig6(_summary(reproduce), path)
    assert path.stat().st_size > 10_000


def test_render_only_from_json(reproduce: ModuleType, tmp_path: Path) -> None:
    """`--render-only` rewrites results.md from results.json (tuples come back as lists)."""
    import json

    summary = _summary(reproduce)
    summary["cpu_seconds"] = 2000.0
    (tmp_path / "results.json").write_text(json.dumps(summary))
    docs = tmp_path / "docs"
    argv = ["--render-only", "--out-dir", str(tmp_path), "--docs-dir", str(docs)]
    assert reproduce.main(argv) == 0
    text = (docs / "results.md").read_text()
    assert "NeXtVLAD converges faster (Fig. 6)" in text
    assert "CPU time of the runs: 33 min 20 s" in text
