"""Parameter counts: exact counts on the meta device, and the paper's formulas.

Eq. (4), NetVLAD before the classifier: N × K × (H + 2) per stream.
Eq. (9), NeXtVLAD before the classifier: λN (N + G + K (G + (H + 1) / G)) per stream.
Eq. (10), SE context gating: 2 F² / r.
The formulas ignore biases, batch norm and the classifier, so they sit below the exact count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nextvlad.models._registry import build_model, get_config, get_preset
from nextvlad.models.config import FrameModelConfig, MixtureConfig, ModelConfig


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_config_parameters(config: ModelConfig) -> int:
    """Trainable parameters of a configuration, counted on the meta device (nothing is
    allocated, so the paper's 237M-parameter mixture costs nothing)."""
    with torch.device("meta"):
        model = build_model(config)
    return count_parameters(model)


def _frame_formula(config: FrameModelConfig) -> tuple[str, int] | None:
    h = config.hidden_size
    total = 0.0
    if config.aggregator == "nextvlad":
        equation = "Eq. (9)"
        for s in config.streams:
            n, g, k, lam = s.dim, s.groups, s.num_clusters, s.expansion
            total += lam * n * (n + g + k * (g + (h + 1) / g))
    elif config.aggregator == "netvlad":
        equation = "Eq. (4)"
        for s in config.streams:
            total += (s.reduce_dim or s.dim) * s.num_clusters * (h + 2)
    else:
        return None
    if config.gating == "se":
        equation += " + Eq. (10)"
        total += 2 * h * h / config.gating_reduction
    return equation + " summed over streams", round(total)


def paper_formula(config: ModelConfig) -> tuple[str, int] | None:
    """(which equations, their value) for NeXtVLAD and NetVLAD models, else None."""
    if isinstance(config, MixtureConfig):
        branch = _frame_formula(config.branch)
        if branch is None:
            return None
        return f"{config.num_branches} × ({branch[0]})", config.num_branches * branch[1]
    if isinstance(config, FrameModelConfig):
        return _frame_formula(config)
    return None


@dataclass(frozen=True)
class ParameterReport:
    name: str
    trainable_params: int
    paper_params: int | None
    paper_label: str | None
    formula: str | None
    formula_params: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable_params": self.trainable_params,
            "paper_params": self.paper_params,
            "paper_label": self.paper_label,
            "relative_to_paper": (
                None
                if self.paper_params is None
                else round(self.trainable_params / self.paper_params - 1.0, 5)
            ),
            "formula": self.formula,
            "formula_params": self.formula_params,
        }


def parameter_report(name: str, **overrides: Any) -> ParameterReport:
    """Exact count, paper figure and paper formula of preset ``name``."""
    preset = get_preset(name)
    config = get_config(name, **overrides)
    formula = paper_formula(config)
    return ParameterReport(
        name=name,
        trainable_params=count_config_parameters(config),
        paper_params=preset.paper_params if not overrides else None,
        paper_label=preset.paper_label,
        formula=None if formula is None else formula[0],
        formula_params=None if formula is None else formula[1],
    )
