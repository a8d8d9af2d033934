"""Parity with the original TensorFlow code through its stored outputs (../shared/fixtures)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nextvlad.convert import (
    from_tf,
    infer_tf_config,
    model_config_from_tf,
    normalize_tf_name,
    tf_name_map,
)
from nextvlad.errors import CheckpointError
from nextvlad.losses import distillation_kl, yt8m_loss
from nextvlad.models import InputTransform, MixtureModel, load_eigenvalues
from tests.conftest import shared_path


def _fixture(name: str) -> dict[str, Any]:
    with np.load(shared_path(f"fixtures/tf_reference/{name}")) as data:
        return {k: data[k] for k in data.files}


def _variables(fixture: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in fixture.items() if k.startswith("tower/")}


def _model_input(fixture: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    eigenvalues = load_eigenvalues(shared_path("data/yt8m_pca/eigenvals.npy"))
    num_frames = torch.from_numpy(fixture["num_frames"]).long()
    x = InputTransform((1024, 128), eigenvalues)(torch.from_numpy(fixture["quantized"]), num_frames)
    return x, num_frames


def _relative(actual: torch.Tensor, expected: np.ndarray) -> float:
    ref = torch.as_tensor(expected, dtype=actual.dtype)
    return float((actual - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return _fixture("nextvlad_single_infer.npz")


@pytest.fixture(scope="module")
def mixture() -> dict[str, Any]:
    return _fixture("mix_nextvlad_train.npz")


def test_single_model_inference_matches(single: dict[str, Any]) -> None:
    config = json.loads(str(single["config"]))
    model = from_tf(_variables(single), config)
    x, n = _model_input(single)
    with torch.no_grad():
        logits = model(x, n).logits
    np.testing.assert_allclose(logits.numpy(), single["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        torch.sigmoid(logits).numpy(), single["predictions"], rtol=0, atol=1e-5
    )


def test_configuration_is_inferred_from_variable_shapes(
    single: dict[str, Any], mixture: dict[str, Any]
) -> None:
    for fixture in (single, mixture):
        given = json.loads(str(fixture["config"]))
        inferred = infer_tf_config(_variables(fixture))
        a, b = model_config_from_tf(given), model_config_from_tf(inferred)
        if hasattr(a, "branch"):  # dropout is not in the variables
            assert a.branch.streams == b.branch.streams and a.num_branches == b.num_branches
        else:
            assert a.streams == b.streams and a.hidden_size == b.hidden_size
            assert a.gating_reduction == b.gating_reduction and a.num_classes == b.num_classes


@pytest.fixture(scope="module")
def trained(mixture: dict[str, Any]) -> dict[str, Any]:
    """One training step of the mixture in float64, as the fixture's TF step."""
    config = json.loads(str(mixture["config"]))
    model = from_tf(_variables(mixture), config).double().train()
    assert isinstance(model, MixtureModel)
    x, n = _model_input(mixture)
    out = model(x.double(), n)
    labels = torch.from_numpy(mixture["labels"]).double()
    terms = yt8m_loss(
        out.logits,
        labels,
        branch_logits=out.branch_logits,
        temperature=config["cl_temperature"],
        distill_weight=config["cl_lambda"],
        l2_tensors=model.regularized_parameters(),
        l2_weight=config["l2_penalty"],
    )
    terms["total"].backward()
    return {"model": model, "out": out, "terms": terms, "x": x, "n": n, "config": config}


def test_model_input_checksum(mixture: dict[str, Any]) -> None:
    x, _ = _model_input(mixture)
    x64 = x.double()
    expected = mixture["model_input_checksum"]
    np.testing.assert_allclose([x64.sum().item(), x64.square().sum().item()], expected, rtol=1e-7)


def test_mixture_training_outputs_match(mixture: dict[str, Any], trained: dict[str, Any]) -> None:
    out = trained["out"]
    assert _relative(torch.sigmoid(out.logits.detach()), mixture["predictions"]) < 1e-5
    aux = torch.sigmoid(out.branch_logits.detach()).permute(1, 0, 2)  # (M, B, C)
    assert _relative(aux, mixture["aux_predictions"]) < 1e-5
    assert _relative(out.mix_weights.detach(), mixture["mix_weights"]) < 1e-5
    kl = distillation_kl(out.logits.detach(), out.branch_logits.detach(), 3.0)
    assert _relative(kl, mixture["kl_per_branch"]) < 1e-5


@pytest.mark.parametrize(
    "term",
    [
        "label_loss_mixture",
        "label_loss_aux",
        "label_loss",
        "regularization_loss_kl",
        "l2_regularization_sum",
        "reg_loss",
        "total",
    ],
)
def test_every_loss_term_matches(
    mixture: dict[str, Any], trained: dict[str, Any], term: str
) -> None:
    assert _relative(trained["terms"][term].detach(), mixture[f"loss/{term}"]) < 1e-5


def test_gradients_of_all_trainable_variables_match(
    mixture: dict[str, Any], trained: dict[str, Any]
) -> None:
    model = trained["model"]
    names = tf_name_map(model)
    params = dict(model.named_parameters())
    order = trained["config"]["trainable_variable_order"]
    assert len(order) == 91 == len(params)
    for tf_name in order:
        grad = params[names[normalize_tf_name(tf_name)]].grad
        expected = torch.from_numpy(mixture[f"grad/{tf_name}"]).double()
        if grad.ndim == 2 and expected.ndim == 2:
            grad = grad.t()
        expected = expected.reshape(grad.shape)
        scale = float(expected.abs().max())
        error = float((grad - expected).abs().max())
        if scale < 1e-5:  # ~0 in theory (vlad_bn/beta: a batch norm follows)
            assert error < 1e-6, tf_name
        else:
            assert error / scale < 1e-4, tf_name


def test_batch_norm_statistics_after_one_step(
    mixture: dict[str, Any], trained: dict[str, Any]
) -> None:
    names = tf_name_map(trained["model"])
    state = trained["model"].state_dict()
    keys = [k for k in mixture if k.startswith("bn_after_step/")]
    assert len(keys) == 2 + 2 * 3 * 6  # gate + 6 batch norms a branch, mean and variance
    for key in keys:
        value = state[names[normalize_tf_name(key.removeprefix("bn_after_step/"))]]
        assert _relative(value, mixture[key]) < 1e-5, key


def test_mixture_inference_matches(mixture: dict[str, Any]) -> None:
    config = json.loads(str(mixture["config"]))
    model = from_tf(_variables(mixture), config)
    x, n = _model_input(mixture)
    with torch.no_grad():
        predictions = torch.sigmoid(model(x, n).logits)
    assert _relative(predictions, mixture["predictions_infer"]) < 1e-5


def test_bad_variables_are_refused(single: dict[str, Any]) -> None:
    config = json.loads(str(single["config"]))
    variables = _variables(single)
    missing = {k: v for k, v in variables.items() if "hidden1_weights" not in k}
    with pytest.raises(CheckpointError, match="missing"):
        from_tf(missing, config)
    wrong = dict(variables)
    wrong["tower/hidden1_weights"] = np.zeros((10, 10), np.float32)
    with pytest.raises(CheckpointError, match="does not fit"):
        from_tf(wrong, config)
    extra = dict(variables, **{"tower/something_else": np.zeros(3)})
    with pytest.raises(CheckpointError, match="do not belong"):
        from_tf(extra, config)


def test_read_tf_variables_reads_a_prefix_through_tensorflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TF checkpoint prefix (its .index beside it, or the .index itself) goes to
    tf.train.load_checkpoint as the prefix; what TF cannot read is a CheckpointError."""
    import types

    from nextvlad.convert import read_tf_variables

    prefix = tmp_path / "model.ckpt-7"
    Path(f"{prefix}.index").write_bytes(b"")
    asked = []

    class Reader:
        def get_variable_to_shape_map(self) -> dict[str, list[int]]:
            return {"tower/x": [2]}

        def get_tensor(self, name: str) -> np.ndarray:
            return np.arange(2.0)

    def load_checkpoint(path: str) -> Reader:
        asked.append(path)
        if path.endswith("broken"):
            raise RuntimeError("bad magic")
        return Reader()

    fake = types.SimpleNamespace(train=types.SimpleNamespace(load_checkpoint=load_checkpoint))
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    for source in (prefix, Path(f"{prefix}.index")):
        variables = read_tf_variables(source)
        assert list(variables) == ["tower/x"] and variables["tower/x"].tolist() == [0.0, 1.0]
    assert asked == [str(prefix), str(prefix)]
    broken = tmp_path / "broken"
    Path(f"{broken}.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable TensorFlow checkpoint"):
        read_tf_variables(broken)
