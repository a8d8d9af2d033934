"""The structure of docs/results.md, as the tests check it on rendered pages and on the committed
page: the headings in order, each table's columns and number of rows, the figures in each
column formatted as numbers, and the segment section's markers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reproduce.markdown import BEGIN, END

INT = r"\d{1,3}(,\d{3})*"  # 20,474,562
SPREAD = r"\d\.\d{4}( ± \d\.\d{4})?"  # a mean over seeds, ± their standard deviation
GAP4 = r"\d\.\d{4}"
CELL3 = r"(\d\.\d{3}|-)"  # Fig. 6's table: a GAP, or none that epoch
DURATION = r"(\d+ min \d{2} s|\d+ s)"
MILLIONS = r"(\d+\.\d{2}M|-)"
SIGNED = r"[+-]\d\.\d{4}( ± \d\.\d{4})?"
METRIC_COLUMNS = ["model (scaled)", "parameters", "GAP", "mAP", "Hit@1"]
PAPER_COLUMNS = ["paper row", "paper params", "paper GAP"]


@dataclass
class Table:
    columns: list[str]
    rows: int
    numbers: dict[int, str] = field(default_factory=dict)  # column -> pattern of its cells


@dataclass
class Section:
    heading: str
    tables: list[Table]


def main_sections(*, table1: int = 7, epochs: int | None = 5, params: int = 8, real: int = 2):
    """The main run's sections (``epochs=None``: no Fig. 6 table; ``real=0``: skipped)."""
    metrics = {2: SPREAD, 3: SPREAD, 4: SPREAD}
    fig6 = ["NetVLAD", "NetVLAD_random", "NeXtVLAD"]
    fig6_columns = ["epoch", *(f"{m} {w}" for m in fig6 for w in ("train", "held-out"))]
    return [
        Section("## The set, the models, the recipe", []),
        Section(
            "## Table 1: single aggregation models (synthetic set)",
            [
                Table(
                    [*METRIC_COLUMNS, "train ex/s", *PAPER_COLUMNS],
                    table1,
                    {1: INT, **metrics, 5: r"\d+", 8: f"({GAP4}|-)"},
                )
            ],
        ),
        Section(
            "## Fig. 6: GAP against steps",
            []
            if epochs is None
            else [Table(fig6_columns, epochs, {0: r"\d+", **{i: CELL3 for i in range(1, 7)}})],
        ),
        Section(
            "## Tables 2 and 3: the mixture, distillation and a single branch (synthetic set)",
            [
                Table(
                    [*METRIC_COLUMNS, *PAPER_COLUMNS],
                    4,
                    {1: INT, **metrics},
                )
            ],
        ),
        Section(
            "## Parameter counts at the paper's sizes (`nextvlad params`)",
            [
                Table(
                    ["preset", "paper row", "ours", "paper", "difference", "paper's formula"],
                    params,
                    {2: INT, 3: MILLIONS, 4: r"([+-]\d+\.\d{2}%)?", 5: MILLIONS},
                )
            ],
        ),
        Section(
            "## Real YouTube-8M data: video-level models",
            [
                Table(
                    [
                        "model",
                        "parameters",
                        "recipe",
                        "GAP",
                        "mAP",
                        "Hit@1",
                        "train time",
                        "docs/real-data.md",
                    ],
                    real,
                    {1: INT, 3: SPREAD, 4: SPREAD, 5: SPREAD, 6: DURATION, 7: GAP4},
                )
            ]
            if real
            else [],
        ),
        Section("## Findings", []),
        Section("## Where the synthetic set cannot stand in for YouTube-8M", []),
        Section(
            "## What to expect on the real data (from the paper)",
            [
                Table(["model", "parameters", "GAP", "preset"], 6, {1: r"\d+M", 2: GAP4}),
                Table(
                    ["model", "parameters", "private GAP", "public GAP"],
                    3,
                    {1: r"\d+M", 2: r"\d\.\d{5}", 3: r"\d\.\d{5}"},
                ),
            ],
        ),
    ]


def segment_sections(*, arms: int = 4, differences: int = 3):
    return [
        Section(
            "## The 2019 segment task: fine-tuning on segment labels (synthetic segment-rated set)",
            [
                Table(
                    [
                        "model (scaled)",
                        "parameters",
                        "labels",
                        "MAP@100K",
                        "per seed",
                        "train time a run",
                    ],
                    arms,
                    {1: INT, 3: SPREAD, 4: rf"{GAP4}(, {GAP4})*", 5: DURATION},
                ),
                Table(
                    ["difference", "MAP@100K", "per seed"],
                    differences,
                    {1: SIGNED, 2: r"[+-]\d\.\d{4}(, [+-]\d\.\d{4})*"},
                ),
            ],
        ),
        Section(
            "### What to expect on YouTube-8M (reported by the 2019 teams, not measured here)", []
        ),
    ]


def split_sections(text: str) -> list[tuple[str, str]]:
    """(heading, text up to the next heading) for every ``##``/``###`` heading, in order."""
    parts = re.split(r"(?m)^(#{2,3} .*)$", text)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def tables_of(text: str) -> list[list[list[str]]]:
    """Each Markdown table of ``text``: its header's cells, then each row's (the rule checked)."""
    found = []
    for block in re.findall(r"(?m)(?:^\|.*\|\n?)+", text):
        lines = block.splitlines()
        assert re.fullmatch(r"\|(-{3}:?\|)+", lines[1]), lines[1]
        cells = [line[2:-2].split(" | ") for line in (lines[0], *lines[2:])]
        assert lines[1].count("|") - 1 == len(cells[0]), lines
        found.append(cells)
    return found


def check_sections(text: str, expected: list[Section]) -> None:
    """``text`` has exactly these headings in order, and in each section these tables."""
    got = split_sections(text)
    assert [h for h, _ in got] == [s.heading for s in expected]
    for (heading, body), section in zip(got, expected, strict=True):
        tables = tables_of(body)
        assert len(tables) == len(section.tables), heading
        for cells, spec in zip(tables, section.tables, strict=True):
            header, *rows = cells
            assert header == spec.columns, heading
            assert len(rows) == spec.rows, (heading, header)
            for r in rows:
                assert len(r) == len(header), (heading, r)
                for column, pattern in spec.numbers.items():
                    assert re.fullmatch(pattern, r[column]), (heading, header[column], r)


def check_layout(text: str) -> None:
    """One blank line around each heading, none doubled, one newline at the end at most."""
    assert "\n\n\n" not in text
    for heading, _ in split_sections(text):
        assert f"\n\n{heading}\n\n" in text, heading
    assert "{" not in text.replace("{validate,test}", "")  # no unfilled f-string field


def check_markers(page: str) -> str:
    """The page's segment section (markers included): one of each marker, in order."""
    assert page.count(BEGIN) == 1 and page.count(END) == 1
    start, stop = page.index(BEGIN), page.index(END)
    assert start < stop and page[start - 2 : start] == "\n\n"
    section = page[start : stop + len(END)]
    assert section.startswith(BEGIN + "\n\n## The 2019 segment task")
    assert section.endswith("\n\n" + END)
    return section
