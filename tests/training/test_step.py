"""The training step: no read-back from the device, the meta device, compiled shapes, the
on-device handling of non-finite steps, batches without frames, the loss (the schedule and clipping: test_schedule.py,
test_clipping.py)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nextvlad.data import Batch
from nextvlad.losses import yt8m_loss
from nextvlad.models import (
    InputTransform,
    MixtureModel,
    create_model,
    get_config,
    list_models,
    preset_options,
)
from nextvlad.nn import BatchNorm
from nextvlad.training.batches import FRAME_BUCKET, bucket_length
from nextvlad.training.optim import adam
from nextvlad.training.step import Recipe, TrainStep

CPU = torch.device("cpu")
FRAME_PRESETS = [n for n in list_models() if get_config(n).input_level == "frame"]

# Operations that make the host wait for the device: they return data-dependent sizes or
# values to the host.
SYNC_OPS = {
    "nonzero",
    "nonzero_numpy",
    "argwhere",
    "_local_scalar_dense",  # .item(), float(t), int(t)
    "item",
    "is_nonzero",  # bool(t)
    "equal",
    "allclose",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "repeat_interleave",
}


class SyncCounter(TorchDispatchMode):
    """Counts the host-synchronising aten operations run inside it, and calls of the tensor
    methods that copy data to the host without an aten operation on the CPU (``tolist``,
    ``numpy``, ``cpu``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()
        for name in ("tolist", "numpy", "cpu"):
            original = getattr(torch.Tensor, name)

            def counted(
                tensor: torch.Tensor, *a: Any, _o: Any = original, _n: str = name, **k: Any
            ) -> Any:
                self.seen[_n] += 1
                return _o(tensor, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.seen[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def tiny(name: str, **extra: Any) -> dict[str, Any]:
    """Tiny sizes for a preset, keeping its structure."""
    small = {"num_clusters": 4, "hidden_size": 16, "num_classes": 7, **extra}
    return {k: v for k, v in small.items() if k in preset_options(name)}


def make_step(name: str, recipe: Recipe | None = None, **kwargs: Any) -> TrainStep:
    torch.manual_seed(0)
    model = create_model(name, **tiny(name))
    config = model.config  # type: ignore[union-attr]
    transform = InputTransform(config.stream_dims)
    optimizer = adam([p for p in model.parameters() if p.requires_grad], 2e-4, 1e-8)
    if recipe is None:
        recipe = Recipe(distill_weight=9.0 if isinstance(model, MixtureModel) else 0.0)
    return TrainStep(model, transform, optimizer, recipe, device=CPU, **kwargs)


def make_batch(num_frames: list[int], num_classes: int = 7, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    t = max(max(num_frames), 1)
    frames = torch.randint(0, 256, (len(num_frames), t, 1152), dtype=torch.uint8, generator=g)
    counts = torch.tensor(num_frames)
    frames[torch.arange(t) >= counts[:, None]] = 0  # as the loader pads
    labels = (torch.rand(len(num_frames), num_classes, generator=g) < 0.3).float()
    return Batch(
        ids=[str(i) for i in range(len(num_frames))],
        labels=labels,
        frames=frames,
        num_frames=counts,
    )


@pytest.mark.parametrize("name", FRAME_PRESETS)
@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_the_step_never_waits_for_the_device(
    name: str, skip_nonfinite: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = Recipe(skip_nonfinite=skip_nonfinite, distill_weight=9.0 if "mix" in name else 0.0)
    step = make_step(name, recipe)
    batches = [step.prepare(make_batch(n)) for n in ([5, 3, 0, 2], [4, 4, 1, 6])]
    with SyncCounter(monkeypatch) as counter:  # transform ... optimizer, bookkeeping
        for i, prepared in enumerate(batches):
            step(prepared, examples_seen=4 * i)
    assert counter.seen == {}, f"{name}: {dict(counter.seen)}"
    monkeypatch.undo()
    records = step.read()  # the one read-back, outside the step
    assert len(records) == 2 and all(r.finite and math.isfinite(r.loss) for r in records)


def test_the_counter_sees_what_it_looks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    step = make_step("nextvlad-8g-128k-2048h")
    with SyncCounter(monkeypatch) as counter:
        prepared = step.prepare(make_batch([3, 1]))  # the packing: nonzero, tolist on the host
    assert counter.seen["nonzero"] == 1 and counter.seen["tolist"] == 1
    with SyncCounter(monkeypatch) as counter:
        step(prepared, 0)
        step.read()  # tolist
        bool(torch.ones(()).sum() > 0)
        torch.ones(3).sum().item()
    assert counter.seen == {"tolist": 1, "_local_scalar_dense": 2}  # bool() is one too


@pytest.mark.parametrize("name", FRAME_PRESETS)
def test_meta_weights_and_features_with_host_frame_counts(name: str) -> None:
    """No data at all on the 'device': forward, loss, backward and clipping still run, so
    nothing in them needs a value from it. The paper's sizes, allocated nowhere."""
    meta = torch.device("meta")
    with meta:
        model = (
            create_model(name, num_classes=3862)
            if "num_classes" in preset_options(name)
            else create_model(name)
        )
        transform = InputTransform(model.config.stream_dims)  # type: ignore[union-attr]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)  # never stepped here
    step = TrainStep(model, transform, optimizer, Recipe(distill_weight=9.0), device=meta)
    batch = Batch(
        ids=list("abc"),
        labels=torch.zeros(3, 3862),
        frames=torch.zeros(3, 300, 1152, dtype=torch.uint8),
        num_frames=torch.tensor([300, 17, 0]),  # on the host
    )
    prepared = step.prepare(batch)
    assert prepared.inputs.device == meta and prepared.packing is not None
    assert prepared.packing.num_frames.device == CPU
    loss, logits = step.forward_loss(prepared.inputs, prepared.packing, prepared.labels)
    assert loss.device == meta and logits.shape == (3, 3862)
    loss.backward()
    assert all(p.grad is not None and p.grad.device == meta for p in step.parameters)
    finite = step._clip_and_check(loss)
    assert finite.device == meta


@pytest.mark.parametrize(
    "name", ["nextvlad-8g-128k-2048h", "netvlad-128k-2048h", "mix3-nextvlad-8g-112k-2048h"]
)
def test_compiled_forward_and_loss_have_no_graph_break(name: str) -> None:
    import torch._dynamo

    step = make_step(name, compile="eager", max_frames=64)
    prepared = step.prepare(make_batch([5, 3, 0, 2]))
    assert prepared.inputs.shape[1] == FRAME_BUCKET  # bucketed
    explained = torch._dynamo.explain(step.forward_loss)(
        prepared.inputs, prepared.packing, prepared.labels
    )
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_training_recompiles_once_per_bucket() -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    step = make_step("nextvlad-8g-128k-2048h", compile="eager", max_frames=100)
    g = torch.Generator().manual_seed(0)
    buckets = set()
    for i in range(20):
        lengths = torch.randint(0, 101, (4,), generator=g).tolist()
        prepared = step.prepare(make_batch(lengths, seed=i))
        assert prepared.packing is not None
        buckets.add((prepared.inputs.shape[1], prepared.packing.num_rows))
        step(prepared, 4 * i)
    assert all(record.finite for record in step.read())
    graphs = counters["stats"]["unique_graphs"]
    assert 1 < len(buckets) < 20  # the lengths vary, the buckets a little
    assert graphs <= len(buckets), (graphs, sorted(buckets))


def test_bucket_lengths() -> None:
    assert [bucket_length(n, 300) for n in (1, 31, 32, 33, 290, 300)] == [32, 32, 32, 64, 300, 300]


def _bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, m in model.named_modules()
        if isinstance(m, BatchNorm)
        for key, value in m.named_buffers()  # moving statistics, batches tracked
    }


@pytest.mark.parametrize("name", FRAME_PRESETS)
def test_a_batch_without_frames_moves_no_batch_norm_statistic(name: str) -> None:
    step = make_step(name)
    before = _bn_state(step.model)
    step(step.prepare(make_batch([0, 0, 0])), 0)
    after = _bn_state(step.model)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # not NaN, not moved
    step(step.prepare(make_batch([3, 0, 2])), 3)  # a batch with frames does move them
    moved = _bn_state(step.model)
    assert any(not torch.equal(before[k], moved[k]) for k in before if "running" in k)


def test_reference_compat_batch_without_frames_moves_nothing_either() -> None:
    torch.manual_seed(0)
    model = create_model(
        "nextvlad-8g-128k-2048h", **tiny("nextvlad-8g-128k-2048h"), reference_compat=True
    ).train()
    before = _bn_state(model)
    model(torch.randn(2, 5, 1152), torch.tensor([0, 0]))
    assert all(torch.equal(v, _bn_state(model)[k]) for k, v in before.items())


def test_a_non_finite_step_is_skipped_on_the_device() -> None:
    step = make_step("nextvlad-8g-128k-2048h", Recipe(skip_nonfinite=True))
    step(step.prepare(make_batch([3, 2])), 0)
    weights = {k: v.clone() for k, v in step.model.state_dict().items()}
    adam_state = {k: v.clone() for k, v in step.optimizer.state_dict()["state"][0].items()}
    bad = make_batch([3, 2], seed=1)
    prepared = step.prepare(bad)
    prepared.labels[0, 0] = float("nan")  # a NaN loss
    step(prepared, 2)
    assert [r.finite for r in step.read()] == [True, False]
    for key, value in step.model.state_dict().items():  # weights and BN statistics kept
        assert torch.equal(value, weights[key]), key
    for key, value in step.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, adam_state[key]), key
    assert step.optimizer.steps_taken == 1  # type: ignore[attr-defined]


def test_loss_is_the_references(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step's loss is yt8m_loss of the model's outputs (nothing added, nothing left)."""
    step = make_step("mix3-nextvlad-8g-112k-2048h")
    step.model.eval()  # no dropout, moving statistics: the same output twice
    prepared = step.prepare(make_batch([4, 2, 3]))
    loss, _ = step.forward_loss(prepared.inputs, prepared.packing, prepared.labels)
    features = step.transform(prepared.inputs, prepared.packing)
    out = step.model(features, prepared.packing)
    expected = yt8m_loss(
        out.logits,
        prepared.labels,
        branch_logits=out.branch_logits,
        temperature=3.0,
        distill_weight=9.0,
        l2_tensors=step.regularized,
        l2_weight=1e-5,
    )["total"]
    torch.testing.assert_close(loss, expected)


def test_bf16_autocast_keeps_batch_norm_softmax_and_normalisation_in_float32() -> None:
    """Under bf16 autocast the products run in bf16; every batch norm, the soft-assignment
    softmax and the intra-normalisation see float32 (issue 22: only where bf16 pays)."""
    from torch.overrides import TorchFunctionMode

    dtypes: dict[str, set[torch.dtype]] = {}

    class Seen(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            name = getattr(func, "__name__", "")
            if name in ("batch_norm", "softmax", "normalize", "linear", "bmm"):
                dtypes.setdefault(name, set()).add(out.dtype)  # autocast casts below here
            return out

    step = make_step("nextvlad-8g-128k-2048h", Recipe(precision="bf16"))
    batch = step.prepare(make_batch([5, 5, 5]))  # no padding: the sums are one bmm
    with Seen():
        step(batch, 0)
    assert dtypes["linear"] == {torch.bfloat16} and dtypes["bmm"] == {torch.bfloat16}
    for name in ("batch_norm", "softmax", "normalize"):
        assert dtypes[name] == {torch.float32}, name


def test_bf16_is_native_on_cpus_with_avx512_bf16_or_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from nextvlad.training.step import bf16_is_native

    for bf16, amx in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert bf16_is_native(CPU) is (bf16 or amx)
    assert bf16_is_native(torch.device("cuda", 0))
