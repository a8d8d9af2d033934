"""Fig. 6's counterpart as a PNG (matplotlib is optional: ``pip install 'nextvlad[plots]'``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (as TensorBoard's smoothing, without its bias)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_fig6(summary: dict[str, Any], path: Path) -> bool:
    """Fig. 6's counterpart as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = summary["rows"]
    plan = summary["plan"]
    per_epoch = plan["steps"] // plan["epochs"]
    window = max(1, per_epoch // (4 * plan["log_every"]))  # a quarter of an epoch
    styles = {
        "netvlad": ("tab:red", "-"),
        "netvlad-random": ("tab:orange", "-"),
        "netvlad-small": ("tab:brown", ":"),
        "nextvlad-8g": ("tab:blue", "-"),
        "meanpool": ("tab:gray", "--"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for key, (color, style) in styles.items():
        entry = rows.get(key)
        if entry is None or "curves" not in entry:
            continue
        label = entry["label"]
        train = entry["curves"].get("train/gap", [])
        if train:
            steps = [s for s, *_ in train]
            axes[0].plot(
                steps, _smooth([m for _, m, *_ in train], window), style, color=color, label=label
            )
            axes[0].fill_between(
                steps,
                _smooth([lo for _, _, lo, _ in train], window),
                _smooth([hi for _, _, _, hi in train], window),
                color=color,
                alpha=0.12,
            )
        held = entry["curves"].get("eval/gap", [])
        if held:
            steps = [s for s, *_ in held]
            axes[1].plot(
                steps, [m for _, m, *_ in held], style, color=color, marker="o", label=label
            )
            axes[1].fill_between(
                steps, [lo for *_, lo, _ in held], [hi for *_, hi in held], color=color, alpha=0.12
            )
    ticks = [per_epoch * e for e in range(1, plan["epochs"] + 1)]
    for ax, title in zip(
        axes,
        (
            "Training GAP (batch GAP, mean of the last quarter epoch)",
            "Held-out GAP at the end of each epoch",
        ),
        strict=True,
    ):
        ax.set_xticks(ticks)
        ax.set_xlabel(f"step (ticks: end of each epoch, {per_epoch} steps of {plan['batch_size']})")
        ax.set_ylabel("GAP")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    seeds = plan["seeds"]
    fig.suptitle(
        f"Fig. 6 counterpart: synthetic set, scaled models, mean over {seeds} seed(s)", fontsize=11
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
