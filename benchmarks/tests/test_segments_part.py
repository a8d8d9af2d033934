"""benchmarks/reproduce --part segments: the commands it runs, its summary, its section of
results.md and the markers that keep the rest of the page as it was (the runs themselves are
exercised by `python benchmarks/reproduce --part segments --quick`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _structure import check_layout, check_markers, check_sections, segment_sections

from reproduce.cli import main
from reproduce.markdown import BEGIN, END, compose, extract_section, insert_section
from reproduce.report import render_markdown
from reproduce.segments import (
    ARMS,
    SEGMENTS_FULL,
    SEGMENTS_QUICK,
    chains,
    plan_record,
    summarize,
    train_command,
)
from reproduce.segments_report import render_section
from reproduce.summary import closing_note, findings

DATA = Path(__file__).resolve().parent / "data"


def _main_page() -> str:
    """The main part's page of the stored quick run."""
    summary = json.loads((DATA / "results.json").read_text())
    summary["findings"] = findings(summary["rows"])
    summary["closing_note"] = closing_note(summary["rows"], summary["findings"])
    return render_markdown(summary)


MAPS = {"video": 0.90, "finetune": 0.95, "mix-video": 0.91, "mix-finetune": 0.97}


def _results(seeds: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "arm": arm.key,
            "seed": seed,
            "map": MAPS[arm.key] + 0.01 * seed * (arm.init_from is None),
            "train_seconds": 30.0,
            "eval_seconds": 5.0,
            "eval": {"num_rated_pairs": 1280},
        }
        for arm in ARMS
        for seed in range(seeds)
    ]


def _summary(seeds: int = 3) -> dict[str, Any]:
    results = _results(seeds)
    return {
        "command": "python benchmarks/reproduce --part segments",
        "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "CPU", "cores": 2, "system": "Linux", "python": "3", "torch": "2"},
        "source": None,
        "jobs": 2,
        "threads": 1,
        "plan": plan_record(SEGMENTS_FULL),
        **summarize(results),
        "runs": results,
        "wall_seconds": 754.0,
    }


def test_chains_and_commands() -> None:
    """Each fine-tuned arm runs after, and starts from, the same seed's pre-trained run."""
    assert [[a.key for a in c] for c in chains(SEGMENTS_FULL)] == [
        ["video", "finetune"],
        ["mix-video", "mix-finetune"],
    ]
    finetune = {a.key: a for a in ARMS}["mix-finetune"]
    command = train_command(SEGMENTS_FULL, finetune, 2, Path("D"), Path("R"))
    text = " ".join(command)
    assert "--task segments --init-from R/mix-video-s2" in text
    assert "--out R/mix-finetune-s2 --seed 2" in text
    assert "--set num_clusters=28 --set hidden_size=512 --set num_classes=25" in text
    assert "--temperature" not in text  # the preset's distillation unless the plan says
    video = train_command(SEGMENTS_QUICK, ARMS[0], 0, Path("D"), Path("R"))
    assert "--task" not in video and video[video.index("--epochs") + 1] == "1"


def test_summary_and_differences() -> None:
    summary = _summary()
    assert summary["arms"]["video"]["map"]["mean"] == pytest.approx(0.91)
    assert summary["arms"]["finetune"]["map"]["std"] == 0.0
    first = summary["differences"][0]
    assert (first["arm"], first["baseline"]) == ("finetune", "video")
    assert first["per_seed"] == pytest.approx([0.05, 0.04, 0.03])
    assert first["mean"] == pytest.approx(0.04)


def test_render_section() -> None:
    text = render_section(_summary())
    assert text.startswith(BEGIN + "\n\n## The 2019 segment task") and text.endswith(END)
    check_layout(text)
    assert check_markers("x\n\n" + text) == text
    check_sections(text, segment_sections())
    assert "| NeXtVLAD fine-tuned − NeXtVLAD as is | +0.0400 ± 0.0100 |" in text
    assert "| 0.9100 ± 0.0100 | 0.9000, 0.9100, 0.9200 |" in text
    assert "12 min 34 s" in text
    assert "nextvlad train --task segments --init-from runs/mix3-video" in text
    assert "--segment-classes segment_label_ids.csv --top-k 1000 --out submission.csv" in text
    assert "not measured here" in text and "0.77-0.80" in text
    assert "Fine-tuning changes NeXtVLAD's MAP@100K by +0.0400, up on 3 of 3 seeds" in text
    one = render_section(_summary(seeds=1))
    assert "| +0.0500 | +0.0500 |" in one  # one seed: no spread
    check_sections(one, segment_sections())


def test_markers_replace_only_the_section() -> None:
    page = _main_page()
    first = insert_section(page, render_section(_summary()))
    assert first.startswith(page) and first.endswith(END + "\n")  # added after a blank line
    assert first[len(page) :].startswith("\n" + BEGIN)
    again = insert_section(first, render_section(_summary(seeds=1)))
    assert again.startswith(page) and again != first  # only the section changed
    assert extract_section(again) == render_section(_summary(seeds=1))
    # a rerun of the main part keeps the section; a page without one is left as it comes
    assert compose(first, main=page) == first
    assert compose(page, main=page) == page and compose(None, main=page) == page
    assert compose(None, section="s") == "s\n"
    with pytest.raises(ValueError):
        insert_section(page + BEGIN, "x")


def test_render_only_keeps_the_page(tmp_path: Path) -> None:
    """`--part segments --render-only` rewrites only the section; the main part's
    `--render-only` rewrites its page and keeps the section."""
    (tmp_path / "segments.json").write_text(json.dumps(_summary()))
    (tmp_path / "results.json").write_text((DATA / "results.json").read_text())
    page = _main_page()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(page)
    common = ["--render-only", "--out-dir", str(tmp_path), "--docs-dir", str(docs)]
    assert main(["--part", "segments", *common]) == 0
    with_section = (docs / "results.md").read_text()
    assert with_section == insert_section(page, render_section(_summary()))
    assert main(common) == 0
    assert (docs / "results.md").read_text() == with_section
