"""docs/results.md from a summary: the tables are made here, the prose is in results.md.tmpl."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from .plan import MIXTURES, REAL, TABLE1, Row
from .summary import epoch_mean

FIGURE = "fig6_gap_vs_steps.png"
TEMPLATE = Path(__file__).with_name("results.md.tmpl")
_BLOCK_LINE = re.compile(r"\$(\w+)")  # a template line that takes a block of lines


@cache
def template_blocks(path: Path = TEMPLATE) -> dict[str, tuple[str, ...]]:
    """The named blocks of the template file (each starts with a line ``@@ name``)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("@@ "):
            current = blocks.setdefault(line[3:].strip(), [])
        elif current is not None:  # the lines above the first block are the file's own note
            current.append(line)
    for lines in blocks.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return {name: tuple(lines) for name, lines in blocks.items()}


def fill(block: str, **values: Any) -> list[str]:
    """The lines of a template block with ``values`` in. A line that is only ``$name`` takes
    the lines of a list value (none when it is empty); any other ``$name`` takes ``str(value)``;
    a name without a value is an error."""
    out: list[str] = []
    for line in template_blocks()[block]:
        whole = _BLOCK_LINE.fullmatch(line)
        if whole and isinstance(values.get(whole.group(1)), list):
            out.extend(values[whole.group(1)])
        else:
            out.append(Template(line).substitute(values))
    return out


def _paragraph(block: str, **values: Any) -> list[str]:
    """An optional paragraph: a blank line, then the block."""
    return ["", *fill(block, **values)]


def render_markdown(summary: dict[str, Any]) -> str:
    """docs/results.md from the summary that ``results.json`` holds."""
    plan, rows = summary["plan"], summary["rows"]
    epochs = epoch_table(rows, plan)
    params = summary["parameters"]
    lines = fill(
        "page",
        command=summary["command"],
        **_machine_fields(summary),
        source=_paragraph("source", source=summary["source"]) if summary.get("source") else [],
        cpu_time=_cpu_time(summary),
        smoke_run=[] if plan["name"] == "full" else _paragraph("smoke_run", plan_name=plan["name"]),
        **_plan_fields(plan),
        table1=table1(rows),
        figure=FIGURE,
        epoch_table=_paragraph("epoch_table", table=epochs) if epochs else [],
        mixture_table=mixture_table(rows),
        parameter_table=parameter_table(params),
        params_close=sum(1 for r in params if abs(r["relative_to_paper"] or 1.0) < 0.005),
        params_rows=len(params),
        real_data=_real_data(summary),
        findings=[f"- {sentence}: **{verdict}**." for sentence, verdict in summary["findings"]],
        closing_note=summary.get("closing_note", "").strip() or fill("no_closing_note"),
        paper_table1=paper_table1(),
    )
    return "\n".join(lines) + "\n"


def _machine_fields(summary: dict[str, Any]) -> dict[str, Any]:
    mach = summary["machine"]
    return {
        "cpu": mach["cpu"],
        "cores": mach["cores"],
        "system": mach["system"],
        "python": mach["python"],
        "torch": mach["torch"],
        "jobs": summary["jobs"],
        "threads": summary["threads"],
        "load_at_start": mach.get("load_average_at_start"),
        "load_at_end": mach.get("load_average"),
        "wall_time": _duration(summary["wall_seconds"]),
        "date": summary["date"],
    }


def _plan_fields(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: plan[k] for k in ("min_frames", "max_frames", "min_run", "max_run", "epochs")},
        **{k: plan[k] for k in ("steps", "batch_size", "seeds")},
        "train_videos": f"{plan['train_videos']:,}",
        "eval_videos": f"{plan['eval_videos']:,}",
        "learning_rate": f"{plan['learning_rate']:g}",
    }


def _cpu_time(summary: dict[str, Any]) -> list[str]:
    cpu, cores = summary.get("cpu_seconds"), summary["machine"]["cores"]
    if not cpu:
        return []
    return _paragraph(
        "cpu_time",
        cpu_time=_duration(cpu),
        cores_busy=f"{cpu / summary['wall_seconds']:.2f}",
        cores=cores,
        idle_time=_duration(cpu / cores),
    )


def _real_data(summary: dict[str, Any]) -> list[str]:
    plan, rows = summary["plan"], summary["rows"]
    real_rows = [(row, recipe) for row, recipe in REAL if row.key in rows]
    if not real_rows:
        return fill("real_data_skipped", note=summary.get("real_data_note", "no real data"))
    return fill(
        "real_data",
        real_train=plan["real_train"],
        real_eval=plan["real_eval"],
        table=real_table(rows, plan, real_rows),
    )


# --------------------------------------------------------------------------------------------
# Tables (header and rows together, so that their columns stay in step)
# --------------------------------------------------------------------------------------------


def table1(rows: dict[str, Any]) -> list[str]:
    """Table 1, scaled: our figures beside the paper's row."""
    lines = [
        "| model (scaled) | parameters | GAP | mAP | Hit@1 | train ex/s | paper row | "
        "paper params | paper GAP |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in TABLE1:
        e = rows.get(row.key)
        if e is None:
            continue
        paper_gap = "-" if row.paper_gap is None else f"{row.paper_gap:.4f}"
        lines.append(
            f"| {row.label} | {e['parameters']:,} | {_metrics(e)} | "
            f"{e['examples_per_second']:.0f} | {row.paper} | {row.paper_params or '-'} | "
            f"{paper_gap} |"
        )
    return lines


def epoch_table(rows: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Fig. 6 in numbers: training and held-out GAP by epoch (none without the curves)."""
    keys = [k for k in ("netvlad", "netvlad-random", "nextvlad-8g") if k in rows]
    if not keys or not all("curves" in rows[k] for k in keys):
        return []
    header = " | ".join(
        f"{rows[k]['label'].split(' (')[0]} {w}" for k in keys for w in ("train", "held-out")
    )
    lines = [f"| epoch | {header} |", "|---:|" + "---:|" * (2 * len(keys))]
    per_epoch = plan["steps"] // plan["epochs"]
    for epoch in range(1, plan["epochs"] + 1):
        cells = []
        for k in keys:
            curves = rows[k]["curves"]
            train = epoch_mean(curves.get("train/gap", []), epoch, per_epoch)
            held = {s: m for s, m, _, _ in curves.get("eval/gap", [])}.get(epoch * per_epoch)
            cells += [_cell(train), _cell(held)]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines


def mixture_table(rows: dict[str, Any]) -> list[str]:
    """Tables 2 and 3, scaled: both mixtures, then one branch of each."""
    lines = [
        "| model (scaled) | parameters | GAP | mAP | Hit@1 | paper row | paper params | paper GAP |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in MIXTURES:
        e = rows.get(row.key)
        if e is None:
            continue
        lines.append(
            f"| {row.label} | {e['parameters']:,} | {_metrics(e)} | Table 3: {row.paper} | "
            f"{row.paper_params} | {row.paper_gap:.4f} |"
        )
    for row in MIXTURES:
        e = rows.get(row.key)
        if e is None or "branch_gap" not in e:
            continue
        which = "T = 3" if row.distill_weight is None else "λ = 0"
        paper = (
            "Table 2: single NeXtVLAD (one branch of the final mixture) | 79M | 0.8785 (private LB)"
            if row.distill_weight is None
            else "- | - | -"
        )
        lines.append(
            f"| one branch of the {which} mixture (mean over its 3) | "
            f"{e['branch_parameters']:,} | {_metrics(e, 'branch_')} | {paper} |"
        )
    return lines


def parameter_table(params: list[dict[str, Any]]) -> list[str]:
    """`nextvlad params` of the paper-sized presets against the paper's figures."""
    lines = [
        "| preset | paper row | ours | paper | difference | paper's formula |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in params:
        diff = "" if r["relative_to_paper"] is None else f"{100 * r['relative_to_paper']:+.2f}%"
        lines.append(
            f"| `{r['name']}` | {r['paper_label'] or '-'} | {r['trainable_params']:,} | "
            f"{_millions(r['paper_params'])} | {diff} | {_millions(r['formula_params'])} |"
        )
    return lines


# docs/real-data.md's GAPs for the same recipes, quoted beside ours.
REAL_DATA_MD = {"video-logistic": "0.6814", "video-moe": "0.6798"}


def real_table(
    rows: dict[str, Any], plan: dict[str, Any], real_rows: list[tuple[Row, dict[str, Any]]]
) -> list[str]:
    """The video-level models on real YouTube-8M records."""
    lines = [
        "| model | parameters | recipe | GAP | mAP | Hit@1 | train time | docs/real-data.md |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row, recipe in real_rows:
        e = rows[row.key]
        epochs = plan["real_epochs"] or recipe["epochs"]
        text = (
            f"batch {recipe['batch_size']}, lr {recipe['learning_rate']:g}, "
            f"L2 {recipe['l2_penalty']:.0e}, {epochs} epoch{'s' if epochs > 1 else ''}"
        ).replace("e-0", "e-")
        lines.append(
            f"| {row.label} | {e['parameters']:,} | {text} | {_metrics(e)} | "
            f"{_duration(e['train_seconds'])} | {REAL_DATA_MD[row.key]} |"
        )
    return lines


def paper_table1() -> list[str]:
    """The paper's Table 1 with the preset of each row."""
    lines = ["| model | parameters | GAP | preset |", "|---|---:|---:|---|"]
    for row in TABLE1:
        if row.paper_gap is not None:
            lines.append(
                f"| {row.paper} | {row.paper_params} | {row.paper_gap:.4f} | `{row.preset}` |"
            )
    return lines


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


def _metrics(entry: dict[str, Any], prefix: str = "") -> str:
    """GAP, mAP and Hit@1 cells of a row (``prefix="branch_"``: of its branches)."""
    return " | ".join(_pm(entry.get(f"{prefix}{m}")) for m in ("gap", "map", "hit_at_one"))


def _pm(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"
