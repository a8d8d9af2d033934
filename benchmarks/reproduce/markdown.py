"""The one renderer of docs/results.md: paragraphs, tables and cells as Python builds them, and
the page that holds both parts (the main run's sections, then the segment part's section between
two marker comments, so that rerunning either part leaves the other's text as it was)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

BEGIN = "<!-- segments:begin -->"
END = "<!-- segments:end -->"

Block = str | list[str] | None  # a paragraph, the lines of a table or list, or nothing


def join(*blocks: Block) -> str:
    """The blocks one blank line apart; ``None`` and empty blocks take no line."""
    texts = ["\n".join(b) if isinstance(b, list) else b for b in blocks]
    return "\n\n".join(t for t in texts if t)


def table(header: Iterable[str], align: str, rows: Iterable[str]) -> list[str]:
    """A Markdown table: its header cells, one of ``l``/``r`` a column, its body rows (each
    already ``| a | b |``)."""
    rule = "".join("---|" if a == "l" else "---:|" for a in align)
    return [f"| {' | '.join(header)} |", f"|{rule}", *rows]


def row(*cells: object) -> str:
    """One table row of ``str(cell)`` each."""
    return f"| {' | '.join(map(str, cells))} |"


def code(lines: str | list[str]) -> str:
    """A fenced block of shell commands."""
    body = lines if isinstance(lines, str) else "\n".join(lines)
    return f"```bash\n{body}\n```"


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


def pm(s: dict[str, float] | None) -> str:
    """A spread over seeds: its mean, ± its standard deviation when there are several."""
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def source(summary: dict[str, Any]) -> str | None:
    """The line naming the commit a summary was made at (none when it was not recorded)."""
    commit = summary.get("source")
    return f"Library: `nextvlad` at commit {commit}." if commit else None


def insert_section(page: str, section: str) -> str:
    """``page`` with the text between the markers (markers included) replaced by ``section``;
    without markers, ``section`` is added at the end after one blank line."""
    start, stop = page.find(BEGIN), page.find(END)
    if start >= 0 and stop > start:
        return page[:start] + section + page[stop + len(END) :]
    if start >= 0 or stop >= 0:
        raise ValueError(f"results.md has one of {BEGIN} and {END} without the other")
    return page.rstrip("\n") + "\n\n" + section + "\n"


def extract_section(page: str) -> str | None:
    """The segment section of ``page`` (markers included), None when it has none."""
    start, stop = page.find(BEGIN), page.find(END)
    return page[start : stop + len(END)] if 0 <= start < stop else None


def compose(old: str | None, *, main: str | None = None, section: str | None = None) -> str:
    """The page from the old one (None: no page yet) with either part replaced: ``main`` (the
    whole page but the segment section, which is kept) or ``section`` (markers included)."""
    if main is not None:
        kept = extract_section(old) if old else None
        return main if kept is None else insert_section(main, kept)
    if section is None:
        raise ValueError("compose: give main or section")
    return section + "\n" if old is None else insert_section(old, section)


def write_page(path: Path, *, main: str | None = None, section: str | None = None) -> None:
    """Rewrites one part of the page at ``path`` (see :func:`compose`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    path.write_text(compose(old, main=main, section=section), encoding="utf-8")
