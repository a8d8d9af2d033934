"""The segment part's section of docs/results.md (prose in results.md.tmpl, blocks ``segments``
and after), and its place in the page: between two marker comments, so that rerunning either
part leaves the other's text as it was."""

from __future__ import annotations

from typing import Any

from .report import _duration, _pm, fill
from .segments import ARMS
from .summary import FAILS, HOLDS, WITHIN, compare

BEGIN = "<!-- segments:begin -->"
END = "<!-- segments:end -->"
_LABELS = {a.key: a.label for a in ARMS}
_SHORT = {
    "video": "NeXtVLAD as is",
    "finetune": "NeXtVLAD fine-tuned",
    "mix-video": "mixture as is",
    "mix-finetune": "mixture fine-tuned",
}

_VERDICT = {
    HOLDS: "clearly: by more than twice the spread over seeds, every fine-tuned seed above every seed as is",
    WITHIN: "within the spread over seeds",
    FAILS: "no gain",
}


def render_section(summary: dict[str, Any]) -> str:
    """The section, markers included (no trailing newline), from ``OUT/segments.json``."""
    plan, mach = summary["plan"], summary["machine"]
    lines = fill(
        "segments",
        begin=BEGIN,
        end=END,
        command=summary["command"],
        cpu=mach["cpu"],
        cores=mach["cores"],
        system=mach["system"],
        python=mach["python"],
        torch=mach["torch"],
        jobs=summary["jobs"],
        threads=summary["threads"],
        load_at_start=mach.get("load_average_at_start"),
        load_at_end=mach.get("load_average"),
        wall_time=_duration(summary["wall_seconds"]),
        date=summary["date"],
        source=["", *fill("source", source=summary["source"])] if summary.get("source") else [],
        smoke_run=(
            [] if plan["name"] == "full" else ["", *fill("smoke_run", plan_name=plan["name"])]
        ),
        train_videos=f"{plan['train_videos']:,}",
        eval_videos=f"{plan['eval_videos']:,}",
        train_seed=plan["train_seed"],
        eval_seed=plan["eval_seed"],
        epochs=_count(plan["epochs"], "epoch"),
        batch_size=plan["batch_size"],
        learning_rate=f"{plan['learning_rate']:g}",
        finetune_epochs=_count(plan["finetune_epochs"], "epoch"),
        finetune_batch_size=plan["finetune_batch_size"],
        finetune_learning_rate=f"{plan['finetune_learning_rate']:g}",
        distillation=_distillation(plan),
        seeds=plan["seeds"],
        table=arm_table(summary["arms"]),
        differences=difference_table(summary["differences"]),
        reading=reading(summary["arms"], summary["differences"]),
        commands=[f"{c}" for c in plan["commands"]],
    )
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _distillation(plan: dict[str, Any]) -> str:
    t, w = plan.get("finetune_temperature"), plan.get("finetune_distill_weight")
    if t is None and w is None:
        return "the preset's T 3, λ 9 (as in its pre-training)"
    return f"T {t if t is not None else 3:g}, λ {w if w is not None else 9:g}"


def arm_table(arms: dict[str, Any]) -> list[str]:
    """MAP@100K of every arm: mean ± std over seeds, and each seed's."""
    lines = [
        "| model (scaled) | parameters | labels | MAP@100K | per seed | train time a run |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for arm in ARMS:
        e = arms.get(arm.key)
        if e is None:
            continue
        labels = "video" if e["init_from"] is None else "video, then segment"
        seeds = ", ".join(f"{v:.4f}" for v in e["per_seed"])
        lines.append(
            f"| {e['label']} | {e['parameters']:,} | {labels} | {_pm(e['map'])} | {seeds} | "
            f"{_duration(e['train_seconds'])} |"
        )
    return lines


def difference_table(diffs: list[dict[str, Any]]) -> list[str]:
    """The per-seed differences of MAP@100K (fine-tuned minus as is)."""
    lines = ["| difference | MAP@100K | per seed |", "|---|---:|---:|"]
    for d in diffs:
        mean = f"{d['mean']:+.4f}" if d["n"] == 1 else f"{d['mean']:+.4f} ± {d['std']:.4f}"
        seeds = ", ".join(f"{v:+.4f}" for v in d["per_seed"])
        lines.append(f"| {_SHORT[d['arm']]} − {_SHORT[d['baseline']]} | {mean} | {seeds} |")
    return lines


def reading(arms: dict[str, Any], diffs: list[dict[str, Any]]) -> str:
    """The figures in words: each fine-tuning against its own model as is (with the verdict of
    summary.compare over seeds), and whether the fine-tuned runs hit the ceiling of 1."""
    parts = []
    for d in diffs:
        a, b = arms[d["arm"]], arms[d["baseline"]]
        if a["init_from"] != d["baseline"]:
            continue
        gains = sum(1 for v in d["per_seed"] if v > 0)
        name = {"video": "NeXtVLAD's", "mix-video": "the mixture's"}[d["baseline"]]
        parts.append(
            f"fine-tuning changes {name} MAP@100K by {d['mean']:+.4f}, up on {gains} of "
            f"{d['n']} seeds ({_VERDICT[compare(a['map'], b['map'])]})"
        )
    text = "; ".join(parts)
    text = f"{text[:1].upper()}{text[1:]}." if text else ""
    top = [arms[k] for k in arms if arms[k]["map"]["min"] >= 0.99995]
    if top:
        text += (
            f" {len(top)} of the {len(arms)} models score MAP@100K 1 on every seed, the "
            "ceiling: the differences say how far below 1 the others are, not how much "
            "fine-tuning could add."
        )
    return text.strip()


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


def carry_section(old: str | None, new: str) -> str:
    """The new page with the old page's segment section kept (a rerun of the main part)."""
    section = extract_section(old) if old else None
    return new if section is None else insert_section(new, section)
