"""`nextvlad export`: a checkpoint as one ONNX or TorchScript file for serving."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nextvlad.cli._common import (
    add_branch_argument,
    add_loader_arguments,
    check_out,
    evaluation_loader,
)
from nextvlad.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (uint8 frames in, probabilities out)",
        description=(
            "Export a run's newest checkpoint (or a checkpoint folder) as one file that takes "
            "uint8 frames (batch, frames, 1152) and frame counts (batch,) int64, any batch size "
            "and frame count, and returns probabilities (batch, classes): the input transform "
            "(dequantisation, reverse whitening) is part of it. Video-level models take "
            "features (batch, 1152) float32. Prints the file size against the 2018 challenge's "
            "1 GB budget and the largest difference from PyTorch on generated inputs; with "
            "--eval-data also the GAP of both. See docs/export.md."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    p.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript"),
        help="onnx (ONNX Runtime, `nextvlad predict`) or torchscript (torch.jit.load)",
    )
    p.add_argument("--out", required=True, help="file to write (e.g. model.onnx, model.pt)")
    add_branch_argument(p, verb="export")
    p.add_argument(
        "--dtype",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp16: store the weight matrices in float16 (half the file; computed in float32)",
    )
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: dynamic int8 quantisation of the linear layers (about a quarter of the file)",
    )
    p.add_argument(
        "--legacy-onnx",
        action="store_true",
        help="ONNX through the TorchScript-based exporter (torch.onnx.export dynamo=False), "
        "the fallback for a model the default exporter (dynamo=True) cannot take",
    )
    p.add_argument(
        "--eval-data",
        nargs="+",
        metavar="GLOB",
        help="TFRecords: also report the GAP of the exported file and of PyTorch on them",
    )
    add_loader_arguments(p, scope="--eval-data: ")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from nextvlad import export as ex
    from nextvlad.checkpoint import load_for_inference, read_config

    if not Path(args.checkpoint).exists():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file or folder")
    check_out(args.out)
    if args.dtype == "fp16" and args.quantize == "int8":
        raise UsageError("--dtype fp16 and --quantize int8 are alternatives: choose one")
    if args.legacy_onnx and args.format != "onnx":
        raise UsageError("--legacy-onnx applies to --format onnx only")
    model, transform, _, model_dir = load_for_inference(args.checkpoint)
    _, document = read_config(model_dir)
    serving = ex.ServingModel(transform, model, args.branch)
    loader = None  # the data is checked before the export, which takes a while
    if args.eval_data:
        source = f"the checkpoint {model_dir}"
        loader = evaluation_loader(
            args, serving.config, model=source, patterns=args.eval_data, what="--eval-data"
        )
    provenance: dict[str, Any] = {k: document[k] for k in ("preset", "step") if k in document}
    out = ex.export(
        serving,
        args.out,
        format=args.format,
        dtype=args.dtype,
        quantize=args.quantize,
        extra_metadata=provenance,
        dynamo=not args.legacy_onnx,
    )
    exported = ex.load_exported(out)
    diff = ex.parity(serving, exported)
    size = out.stat().st_size
    result: dict[str, Any] = {
        "out": str(out),
        "format": args.format,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "onnx_exporter": exported.metadata.get("onnx_exporter"),
        "branch": args.branch,
        "num_classes": serving.config.num_classes,
        "size_bytes": size,
        "budget_bytes": ex.BUDGET_BYTES,
        "budget_fraction": size / ex.BUDGET_BYTES,
        "parity_max_abs_diff": diff,
        "parity_shapes": [list(s) for s in ex.PARITY_SHAPES],
        "inputs": exported.metadata["inputs"],
        "outputs": exported.metadata["outputs"],
    }
    exact = args.dtype == "fp32" and args.quantize == "none"
    if exact and not diff <= ex.PARITY_TOLERANCE:
        raise ex.ExportError(
            f"{out}: its probabilities differ from PyTorch's by up to {diff:.2e} on generated "
            f"inputs (tolerance {ex.PARITY_TOLERANCE:g}); please report this"
        )
    if loader is not None:
        comparison = ex.compare_gap(serving, exported, loader)
        result["eval"] = {
            "data": list(args.eval_data),
            "num_videos": comparison.num_videos,
            "gap_pytorch": comparison.pytorch,
            "gap_exported": comparison.exported,
            "gap_change": comparison.change,
            "max_abs_diff": comparison.max_abs_diff,
        }
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


def _signature(tensors: dict[str, Any]) -> str:
    """``{"frames": {"dtype": "uint8", "shape": ["batch", 1152]}}`` -> "frames uint8 (batch, 1152)"."""
    parts = []
    for name, tensor in tensors.items():
        dims = [str(d) for d in tensor["shape"]]
        shape = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
        parts.append(f"{name} {tensor['dtype']} {shape}")
    return ", ".join(parts)


def _print(result: dict[str, Any]) -> None:
    weights = {"fp32": "float32 weights", "fp16": "float16 weights"}[result["dtype"]]
    if result["quantize"] == "int8":
        weights = "int8 linear layers"
    size = result["size_bytes"]
    fmt = result["format"]
    if result.get("onnx_exporter") == "torchscript":
        fmt += ", TorchScript-based exporter"
    print(
        f"wrote {result['out']} ({fmt}, {weights}): {size:,} bytes "
        f"({size / 1e6:.1f} MB), {100 * result['budget_fraction']:.1f}% of the 2018 "
        "challenge's 1 GB budget"
    )
    print(f"takes {_signature(result['inputs'])} -> {_signature(result['outputs'])}")
    shapes = ", ".join(f"({b}, {t})" for b, t in result["parity_shapes"])
    print(
        f"parity with PyTorch on generated batches (B, T) = {shapes}: max abs diff "
        f"{result['parity_max_abs_diff']:.2e}"
    )
    if "eval" in result:
        e = result["eval"]
        print(
            f"GAP on {e['num_videos']} videos: PyTorch {e['gap_pytorch']:.4f}, exported "
            f"{e['gap_exported']:.4f}, change {e['gap_change']:+.4f} (max abs diff "
            f"{e['max_abs_diff']:.2e})"
        )
