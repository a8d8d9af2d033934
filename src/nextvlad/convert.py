"""Import weights of the original TensorFlow implementation (linrongc/youtube-8m).

``from_tf(variables, config)`` builds the model that a reference configuration describes (the
TF flags: ``model``, ``groups``, ``nextvlad_cluster_size``, ... as stored in the parity
fixtures; inferred from the variable shapes when omitted) and loads variables named as in the
reference's checkpoints (``tower/video_VLAD/cluster_weights``, ``tower/branch_0/...``).
Models built here use ``reference_compat=True`` so that they compute what the original does.

Name map (TF scope -> module): ``fully_connected`` = expansion FC (``expand``),
``fully_connected_1`` = group attention, ``cluster_weights`` (+ ``cluster_bn``) = soft
assignment, ``cluster_weights2`` = anchors, ``vlad_bn``, ``hidden1_weights`` + ``hidden1_bn``,
``gating_weights_1`` + ``gating_bn`` + ``gating_weights_2`` (SE context gating), the top-level
``fully_connected`` = logistic classifier, ``mix_weights_bn`` + ``mix_weights`` = mixture gate.
TF dense kernels are (in, out) and are transposed into PyTorch's (out, in).

Note on the reference: it reads every hyper-parameter as ``arg or FLAGS.x``, so a value of 0
(e.g. ``drop_rate`` or ``cl_lambda``) silently falls back to the flag's default there. The
configuration given here is taken literally.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nextvlad.errors import CheckpointError, ConfigError, UsageError
from nextvlad.models import (
    FrameModel,
    FrameModelConfig,
    MixtureConfig,
    MixtureModel,
    StreamConfig,
    build_model,
)

_BN = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_STREAM_SCOPES = {False: ("video_VLAD", "audio_VLAD"), True: ("video_vlad", "audio_vlad")}
# Variables of a TF checkpoint that are not model weights.
_IGNORED = re.compile(
    r"(^|/)(Adam|Adam_\d+|ExponentialMovingAverage|Momentum)$|global_step|beta\d_power"
)


def normalize_tf_name(name: str) -> str:
    """Drop a ``:0`` suffix and a leading ``tower/`` scope."""
    name = name.removesuffix(":0")
    return name.removeprefix("tower/")


def _frame_map(prefix: str, scopes: tuple[str, ...], model: FrameModel, key: str) -> dict[str, str]:
    names: dict[str, str] = {}

    def bn(tf_scope: str, module: str) -> None:
        for tf_suffix, torch_suffix in _BN.items():
            names[f"{prefix}{tf_scope}/{tf_suffix}"] = f"{key}{module}.{torch_suffix}"

    for i, scope in enumerate(scopes):
        s, m = f"{scope}", f"aggregators.{i}."
        names[f"{prefix}{s}/fully_connected/weights"] = f"{key}{m}expand.weight"
        names[f"{prefix}{s}/fully_connected/biases"] = f"{key}{m}expand.bias"
        names[f"{prefix}{s}/fully_connected_1/weights"] = f"{key}{m}group_attention.weight"
        names[f"{prefix}{s}/fully_connected_1/biases"] = f"{key}{m}group_attention.bias"
        names[f"{prefix}{s}/cluster_weights"] = f"{key}{m}assignment.weight"
        bn(f"{s}/cluster_bn", f"{m}assignment_bn")
        names[f"{prefix}{s}/cluster_weights2"] = f"{key}{m}anchors"
        bn(f"{s}/vlad_bn", f"{m}vlad_bn")
    names[f"{prefix}hidden1_weights"] = f"{key}hidden.weight"
    bn("hidden1_bn", "hidden_bn")
    names[f"{prefix}gating_weights_1"] = f"{key}gating.fc1.weight"
    bn("gating_bn", "gating.bn")
    names[f"{prefix}gating_weights_2"] = f"{key}gating.fc2.weight"
    names[f"{prefix}fully_connected/weights"] = f"{key}classifier.fc.weight"
    names[f"{prefix}fully_connected/biases"] = f"{key}classifier.fc.bias"
    return names


def _check_reference_architecture(config: FrameModelConfig) -> None:
    if (
        config.aggregator != "nextvlad"
        or config.gating != "se"
        or config.classifier != "logistic"
        or len(config.streams) != 2
        or any(s.reduce_dim for s in config.streams)
    ):
        raise ConfigError(
            "TF import supports the reference's NeXtVLAD models only (two NeXtVLAD streams, "
            "SE context gating, logistic classifier)"
        )


def tf_name_map(model: nn.Module) -> dict[str, str]:
    """Reference variable name (without ``tower/``) -> key in ``model.state_dict()``."""
    if isinstance(model, MixtureModel):
        _check_reference_architecture(model.config.branch)
        names = {}
        for tf_suffix, torch_suffix in _BN.items():
            names[f"mix_weights_bn/{tf_suffix}"] = f"gate_bn.{torch_suffix}"
        names["mix_weights/weights"] = "gate.weight"
        names["mix_weights/biases"] = "gate.bias"
        for n, branch in enumerate(model.branches):
            assert isinstance(branch, FrameModel)
            names.update(_frame_map(f"branch_{n}/", _STREAM_SCOPES[True], branch, f"branches.{n}."))
        return names
    if isinstance(model, FrameModel):
        _check_reference_architecture(model.config)
        return _frame_map("", _STREAM_SCOPES[False], model, "")
    raise ConfigError(f"TF import does not support {type(model).__name__}")


def _to_torch_layout(array: np.ndarray, target: torch.Tensor, name: str) -> torch.Tensor:
    value = torch.from_numpy(np.ascontiguousarray(array))
    if value.ndim == 2 and target.ndim == 2 and not name.endswith(("cluster_weights2",)):
        value = value.t()  # TF dense kernel (in, out) -> nn.Linear weight (out, in)
    if value.ndim == 3 and value.shape[0] == 1:  # cluster_weights2 (1, λN/G, K) -> anchors
        value = value[0]
    if tuple(value.shape) != tuple(target.shape):
        raise CheckpointError(
            f"variable {name}: shape {tuple(array.shape)} does not fit the model's "
            f"{tuple(target.shape)}"
        )
    return value.to(target.dtype)


def load_tf_variables(
    model: nn.Module, variables: Mapping[str, Any], *, strict: bool = True
) -> None:
    """Copy reference variables (name -> array) into ``model``, transposing kernels."""
    given = {normalize_tf_name(k): np.asarray(v) for k, v in variables.items()}
    names = tf_name_map(model)
    state = model.state_dict()
    missing = sorted(n for n in names if n not in given)
    if missing:
        raise CheckpointError(
            f"{len(missing)} variable(s) the model needs are missing, e.g. {', '.join(missing[:5])}"
        )
    unexpected = sorted(n for n in given if n not in names and not _IGNORED.search(n))
    if strict and unexpected:
        raise CheckpointError(
            f"{len(unexpected)} variable(s) do not belong to this model, "
            f"e.g. {', '.join(unexpected[:5])}"
        )
    with torch.no_grad():
        for tf_name, key in names.items():
            state[key].copy_(_to_torch_layout(given[tf_name], state[key], tf_name))


def _shape(variables: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in variables:
        raise CheckpointError(f"cannot infer the configuration: variable {name} is missing")
    return tuple(variables[name].shape)


def infer_tf_config(variables: Mapping[str, Any]) -> dict[str, Any]:
    """A reference configuration (TF flag names) read off the variable shapes."""
    given = {normalize_tf_name(k): np.asarray(v) for k, v in variables.items()}
    branches = sorted({int(m.group(1)) for k in given if (m := re.match(r"branch_(\d+)/", k))})
    mixture = bool(branches)
    prefix = "branch_0/" if mixture else ""
    video, audio = _STREAM_SCOPES[mixture]
    n, wide = _shape(given, f"{prefix}{video}/fully_connected/weights")
    groups = _shape(given, f"{prefix}{video}/fully_connected_1/weights")[1]
    clusters = _shape(given, f"{prefix}{video}/cluster_weights2")[2]
    audio_n = _shape(given, f"{prefix}{audio}/fully_connected/weights")[0]
    hidden = _shape(given, f"{prefix}hidden1_weights")[1]
    reduced = _shape(given, f"{prefix}gating_weights_1")[1]
    vocab = _shape(given, f"{prefix}fully_connected/weights")[1]
    config: dict[str, Any] = {
        "model": "MixNeXtVladModel" if mixture else "NeXtVLADModel",
        "groups": groups,
        "nextvlad_cluster_size": clusters,
        "nextvlad_hidden_size": hidden,
        "expansion": wide // n,
        "gating_reduction": hidden // reduced,
        "vocab_size": vocab,
        "feature_sizes": [n, audio_n],
        "feature_names": ["rgb", "audio"],
        "video_level_classifier_model": "LogisticModel",
    }
    if mixture:
        config["mix_number"] = len(branches)
    return config


def model_config_from_tf(config: Mapping[str, Any]) -> FrameModelConfig | MixtureConfig:
    """Our configuration for a reference configuration (TF flag names)."""
    model = config.get("model")
    if model not in ("NeXtVLADModel", "MixNeXtVladModel"):
        raise ConfigError(f"unsupported reference model {model!r}")
    if config.get("video_level_classifier_model", "LogisticModel") != "LogisticModel":
        raise ConfigError("only the LogisticModel classifier of the reference is supported")
    sizes = list(config.get("feature_sizes", [1024, 128]))
    feature_names = list(config.get("feature_names", ["rgb", "audio"]))
    k, g, lam = config["nextvlad_cluster_size"], config["groups"], config["expansion"]
    # The reference gives the audio stream half the clusters and half the groups.
    streams = (
        StreamConfig(feature_names[0], sizes[0], k, g, lam),
        StreamConfig(feature_names[1], sizes[1], k // 2, g // 2, lam),
    )
    branch = FrameModelConfig(
        streams=streams,
        aggregator="nextvlad",
        hidden_size=config["nextvlad_hidden_size"],
        dropout=float(config.get("drop_rate", 0.5)),
        gating="se",
        gating_reduction=config["gating_reduction"],
        num_classes=config["vocab_size"],
        reference_compat=True,
    )
    if model == "NeXtVLADModel":
        return branch
    return MixtureConfig(
        branch=branch,
        num_branches=int(config.get("mix_number", 3)),
        temperature=float(config.get("cl_temperature", 3.0)),
        distill_weight=float(config.get("cl_lambda", 9.0)),
    )


def from_tf(
    variables: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> FrameModel | MixtureModel:
    """The model of reference configuration ``config`` (inferred when None) with the
    reference's variables loaded; in ``reference_compat`` mode and in eval mode."""
    model_config = model_config_from_tf(
        config if config is not None else infer_tf_config(variables)
    )
    model = build_model(model_config)
    assert isinstance(model, FrameModel | MixtureModel)
    load_tf_variables(model, variables)
    return model.eval()


def read_tf_variables(source: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Variable name -> array of ``source``: an ``.npz`` of plain arrays (no pickled objects),
    or a TF checkpoint prefix (``model.ckpt-310001``, whose ``.index`` file is beside it; needs
    TensorFlow).

    Raises:
        UsageError: nothing at ``source``, or a TF checkpoint without TensorFlow installed.
        CheckpointError: a file that is not a readable .npz or TF checkpoint.
    """
    path = Path(source)
    if path.suffix == ".npz" or (path.is_file() and zipfile.is_zipfile(path)):
        return _read_npz(path)
    if not path.exists() and not Path(f"{path}.index").exists():
        raise UsageError(f"{path}: no such file (nor a TF checkpoint prefix: no {path}.index)")
    if path.is_file() and path.suffix != ".index" and not Path(f"{path}.index").exists():
        raise CheckpointError(
            f"{path}: neither an .npz of arrays nor a TF checkpoint prefix (no {path}.index)"
        )
    try:
        import tensorflow as tf
    except ImportError:
        raise UsageError(
            f"{path}: reading a TensorFlow checkpoint needs TensorFlow "
            "(pip install -e '.[tf]'), or export its variables to an .npz first"
        ) from None
    prefix = str(path).removesuffix(".index")
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except Exception as err:  # TF raises many types for unreadable checkpoints
        raise CheckpointError(f"{path}: not a readable TensorFlow checkpoint ({err})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):  # a lone .npy array
                raise ValueError("one .npy array, not an .npz archive of named arrays")
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        reason = str(err).split(". ")[0] if "pickled" in str(err) else str(err)
        raise CheckpointError(f"{path}: not a readable .npz of arrays ({reason})") from None
