"""Model subcommands: `list-models`, `params`, `import-tf`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nextvlad.cli._common import check_out
from nextvlad.errors import ConfigError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list-models",
        help="list the model presets",
        description=(
            "List the registered model presets with a one-line description each: the paper's "
            "models first, then the baselines, then the small presets for CPU demos and tests."
        ),
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_list_models)

    p = subparsers.add_parser(
        "params",
        help="parameter counts of the presets next to the paper's",
        description=(
            "Count the trainable parameters of presets on the meta device (nothing is "
            "allocated) and show the paper's figure (Table 1, Table 2) and formula "
            "(Eq. (4), (9), (10)) next to each."
        ),
    )
    p.add_argument(
        "--preset", action="append", metavar="NAME", help="only this preset (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.set_defaults(func=_params)

    p = subparsers.add_parser(
        "import-tf",
        help="convert weights of the original TensorFlow code into a native checkpoint",
        description=(
            "Convert a checkpoint of the original TensorFlow implementation "
            "(linrongc/youtube-8m: NeXtVLADModel or MixNeXtVladModel with LogisticModel) into a "
            "nextvlad checkpoint folder. SOURCE is an .npz of variable name -> array, or a TF "
            "checkpoint prefix (needs TensorFlow: pip install -e '.[tf]'). The "
            "hyper-parameters are read off the variable shapes unless --config is given. The "
            "model is saved in reference-compatible mode (see docs/models.md)."
        ),
    )
    p.add_argument("source", help=".npz file or TF checkpoint prefix (e.g. model.ckpt-310001)")
    p.add_argument("--out", required=True, help="folder to write the checkpoint into")
    p.add_argument(
        "--config",
        help="JSON file with the reference's flags (model, groups, nextvlad_cluster_size, ...)",
    )
    p.set_defaults(func=_import_tf)


# The presets sized for CPU demos and tests (`nextvlad demo`, the test suite), not results.
SMALL_PRESETS = frozenset({"nextvlad-8g-16k-256h", "meanpool-256h"})
_GROUPS = (
    ("paper", "The paper's models (Table 1, Table 2):"),
    ("baseline", "Baselines (mean pooling, the starter code's video-level models):"),
    ("small", "Small presets for CPU demos and tests (not for results):"),
)


def _group(preset: Any) -> str:
    """The preset's group: paper (the paper gives its size), small (demos, tests), baseline."""
    if preset.name in SMALL_PRESETS:
        return "small"
    return "paper" if preset.paper_params is not None else "baseline"


def _list_models(args: argparse.Namespace) -> int:
    from nextvlad.models import get_preset, list_models

    presets = [get_preset(n) for n in list_models()]
    order = [g for g, _ in _GROUPS]
    presets.sort(key=lambda p: order.index(_group(p)))  # stable: registration order within
    if args.json:
        rows = [{"name": p.name, "description": p.description, "group": _group(p)} for p in presets]
        print(json.dumps(rows))
        return 0
    width = max(len(p.name) for p in presets)
    blocks = [(t, [p for p in presets if _group(p) == g]) for g, t in _GROUPS]
    for i, (title, members) in enumerate(b for b in blocks if b[1]):
        print(("\n" if i else "") + title)
        for p in members:
            print(f"  {p.name:<{width}}  {p.description}")
    return 0


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _params(args: argparse.Namespace) -> int:
    from nextvlad.models import list_models, parameter_report

    names = args.preset or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise UsageError(
            f"unknown model preset {unknown[0]!r}; `nextvlad list-models` lists the presets"
        )
    reports = [parameter_report(n).to_dict() for n in names]
    if args.json:
        print(json.dumps(reports, indent=1))
        return 0
    header = f"{'preset':<29} {'trainable':>12} {'paper':>7} {'diff':>8} {'formula':>9}"
    print(header)
    print("-" * len(header))
    for r in reports:
        diff = "" if r["relative_to_paper"] is None else f"{100 * r['relative_to_paper']:+.2f}%"
        print(
            f"{r['name']:<29} {r['trainable_params']:>12,} {_millions(r['paper_params']):>7} "
            f"{diff:>8} {_millions(r['formula_params']):>9}"
        )
    print("\nformula: the paper's Eq. (9) (NeXtVLAD) or Eq. (4) (NetVLAD), plus Eq. (10) for SE")
    print("gating, summed over the rgb and audio streams; it leaves out biases, batch norm and the")
    print("classifier. Where the paper's figure is not reproduced, docs/models.md says why.")
    return 0


def _import_tf(args: argparse.Namespace) -> int:
    from nextvlad.checkpoint import save_model
    from nextvlad.convert import from_tf, infer_tf_config, model_config_from_tf, read_tf_variables

    check_out(args.out, folder=True)
    variables = read_tf_variables(args.source)
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UsageError(f"--config {args.config}: {err}") from None
        if not isinstance(config, dict):
            raise UsageError(
                f"--config {args.config}: expected a JSON object of the reference's flags "
                '(e.g. {"model": "NeXtVLADModel", "groups": 8}), found '
                f"{type(config).__name__}"
            )
        try:
            model_config_from_tf(config)
        except (ConfigError, TypeError, ValueError) as err:
            raise UsageError(f"--config {args.config}: {err}") from None
    else:
        config = infer_tf_config(variables)
    model = from_tf(variables, config)
    save_model(args.out, model, model.config, metadata={"source": str(args.source)})
    print(f"wrote {args.out} ({type(model).__name__}, reference-compatible)")
    return 0
