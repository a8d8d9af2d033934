"""NeXtVLAD layer: shapes, invalid configurations, and the invariances that are its point."""

from __future__ import annotations

import pytest
import torch

from nextvlad.nn import NeXtVLAD, frame_mask


def _layer(**kwargs: object) -> NeXtVLAD:
    torch.manual_seed(0)
    return NeXtVLAD(**{"dim": 12, "num_clusters": 5, "groups": 4, "expansion": 2, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("groups", [1, 2, 3, 8])
@pytest.mark.parametrize("num_clusters", [1, 4])
@pytest.mark.parametrize("expansion", [1, 2, 4])
def test_output_shape(groups: int, num_clusters: int, expansion: int) -> None:
    layer = NeXtVLAD(dim=24, num_clusters=num_clusters, groups=groups, expansion=expansion)
    x = torch.randn(3, 7, 24)
    out = layer(x, frame_mask(torch.tensor([7, 3, 1]), 7))
    assert out.shape == (3, expansion * 24 // groups * num_clusters) == (3, layer.output_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": 5}, "must divide"),
        ({"groups": 0}, "groups must be a positive integer"),
        ({"num_clusters": 0}, "num_clusters must be a positive integer"),
        ({"dim": -1}, "dim must be a positive integer"),
        ({"expansion": 0}, "expansion must be a positive integer"),
    ],
)
def test_invalid_configurations_raise(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _layer(**kwargs)


@pytest.mark.parametrize("training", [False, True])
def test_padded_frames_change_nothing(training: bool) -> None:
    layer = _layer().train(training)
    x = torch.randn(3, 6, 12)
    num_frames = torch.tensor([6, 4, 2])
    padded = torch.cat([x, 100 * torch.randn(3, 5, 12)], dim=1)  # garbage padding
    a = layer(x, frame_mask(num_frames, 6))
    b = layer(padded, frame_mask(num_frames, 11))
    # Garbage also inside the first six frames beyond each video's length:
    x2 = x.clone()
    x2[1, 4:] = 55.0
    x2[2, 2:] = -7.0
    c = layer(x2, frame_mask(num_frames, 6))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_frame_order_changes_nothing(training: bool) -> None:
    layer = _layer().train(training)
    x = torch.randn(2, 9, 12)
    perm = torch.randperm(9)
    torch.testing.assert_close(layer(x), layer(x[:, perm]), rtol=1e-5, atol=1e-5)


def test_reference_compat_counts_padding_in_training_statistics() -> None:
    x = torch.randn(3, 6, 12)
    mask = frame_mask(torch.tensor([6, 2, 1]), 6)
    clean, compat = _layer().train(), _layer(reference_compat=True).train()
    initial = {k: v.clone() for k, v in clean.state_dict().items()}
    compat.load_state_dict(initial)
    assert not torch.allclose(clean(x, mask), compat(x, mask), atol=1e-3)
    clean.load_state_dict(initial)
    compat.load_state_dict(initial)
    clean.eval()
    compat.eval()  # with moving statistics the two modes compute the same
    torch.testing.assert_close(clean(x, mask), compat(x, mask))


def test_zero_frame_video_is_finite() -> None:
    layer = _layer().train()
    out = layer(torch.randn(2, 4, 12), frame_mask(torch.tensor([0, 4]), 4))
    assert torch.isfinite(out).all()


def test_matches_the_papers_equations_written_naively() -> None:
    """Eq. (5)-(8) with a loop over frames, groups and clusters; eval-mode batch norm."""
    layer = _layer().eval()
    with torch.no_grad():  # make the batch norms non-trivial
        for bn in (layer.assignment_bn, layer.vlad_bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    layer = layer.double()
    num_frames = torch.tensor([5, 3])
    out = layer(x, frame_mask(num_frames, 5, torch.float64))
    g, k, f = layer.groups, layer.num_clusters, layer.group_dim
    bn = layer.assignment_bn
    for b in range(2):
        y = torch.zeros(f, k, dtype=torch.float64)
        for i in range(int(num_frames[b])):
            x_dot = layer.expand(x[b, i])
            logits = layer.assignment(x_dot)
            logits = (logits - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
            logits = logits * bn.weight + bn.bias
            for gi in range(g):
                alpha_g = torch.sigmoid(layer.group_attention(x_dot)[gi])  # Eq. (7)
                alpha_gk = torch.softmax(logits[gi * k : (gi + 1) * k], 0)  # Eq. (6)
                x_tilde = x_dot[gi * f : (gi + 1) * f]
                for kk in range(k):  # Eq. (5), summed as Eq. (8)
                    y[:, kk] += alpha_g * alpha_gk[kk] * (x_tilde - layer.anchors[:, kk])
        y = y / y.norm(dim=0, keepdim=True)
        v = layer.vlad_bn
        expected = (y.reshape(-1) - v.running_mean) / torch.sqrt(v.running_var + v.eps)
        expected = expected * v.weight + v.bias
        torch.testing.assert_close(out[b], expected)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("reference_compat", [False, True])
def test_folded_and_padding_skipping_forwards_are_the_same_function(
    training: bool, reference_compat: bool
) -> None:
    torch.manual_seed(3)
    layer = NeXtVLAD(24, 5, 4, 2, reference_compat=reference_compat).double().train(training)
    x = torch.randn(3, 7, 24, dtype=torch.float64, requires_grad=True)
    mask = frame_mask(torch.tensor([7, 3, 0]), 7, torch.float64)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    outputs, grads, states = [], [], []
    for folded, skip_padding in ((False, False), (False, True), (True, False), (True, True)):
        layer.load_state_dict(state)
        layer.folded, layer.skip_padding = folded, skip_padding
        out = layer(x, mask)
        outputs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), [x, *layer.parameters()]))
        states.append({k: v.clone() for k, v in layer.state_dict().items()})
    for i in (1, 2, 3):
        torch.testing.assert_close(outputs[0], outputs[i], rtol=1e-10, atol=1e-12)
        for a, b in zip(grads[0], grads[i], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
        for name, value in states[0].items():  # batch-norm moving statistics
            torch.testing.assert_close(value, states[i][name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("skip_padding", [False, True])
def test_skip_padding_runs_the_per_frame_layers_on_real_frames_only(skip_padding: bool) -> None:
    layer = _layer(skip_padding=skip_padding)
    rows_seen: list[int] = []
    layer.expand.register_forward_hook(lambda _m, inputs, _o: rows_seen.append(inputs[0].shape[0]))
    layer(torch.randn(3, 6, 12), frame_mask(torch.tensor([6, 4, 0]), 6))
    assert rows_seen == [10 if skip_padding else 18]


@pytest.mark.parametrize("layer", ["nextvlad", "netvlad"])
@pytest.mark.parametrize("reference_compat", [False, True])
@pytest.mark.parametrize("skip_padding", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_frame_counts_and_their_mask_are_one_contract(
    layer: str, reference_compat: bool, skip_padding: bool, training: bool
) -> None:
    """(B,) frame counts, their (B, M) mask and their packing give the same output in every
    mode: ``reference_compat`` and ``skip_padding`` off once failed on counts."""
    from nextvlad.nn import NetVLAD, pack_frames

    torch.manual_seed(0)
    if layer == "nextvlad":
        module: torch.nn.Module = NeXtVLAD(16, 4, 2, reference_compat=reference_compat)
        module.skip_padding = skip_padding  # type: ignore[assignment]
    else:
        module = NetVLAD(16, 4, reference_compat=reference_compat)
    module.train(training)
    x = torch.randn(3, 7, 16)
    counts = torch.tensor([7, 3, 5])
    outputs = []
    for given in (counts, frame_mask(counts, 7), pack_frames(counts, 7)):
        outputs.append(module(x, given))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])


@pytest.mark.parametrize("counts", [[7, 3, 0], [7, 2, 5], [7, 7, 6], [7, 7, 7]])
@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_every_layout_of_the_sums_is_the_same_function(
    counts: list[int], folded: bool, training: bool
) -> None:
    """Packed frames summed per video, or (no padding) taken as they lie for one batched
    matmul: the masked function, its gradients and its moving statistics, in float64."""
    from nextvlad.nn import pack_frames

    torch.manual_seed(5)
    layer = NeXtVLAD(24, 5, 4, 2).double().train(training)
    layer.folded = folded
    x = torch.randn(3, 7, 24, dtype=torch.float64, requires_grad=True)
    n = torch.tensor(counts)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    results = []
    for skip_padding, given in (
        (False, frame_mask(n, 7, torch.float64)),
        (True, pack_frames(n, 7)),
    ):
        layer.load_state_dict(state)
        layer.skip_padding = skip_padding
        out = layer(x, given)
        grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
        results.append((out, grads, {k: v.clone() for k, v in layer.state_dict().items()}))
    (out0, grads0, state0), (out1, grads1, state1) = results
    torch.testing.assert_close(out1, out0, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads0, grads1, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)
    for name, value in state0.items():
        torch.testing.assert_close(state1[name], value, rtol=1e-12, atol=1e-14)


def test_the_sums_layout_follows_the_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    """No padding: the frames are used where they lie (no gather), summed by one bmm; with
    padding: a matmul per video on its real rows."""
    from nextvlad.nn import nextvlad as module
    from nextvlad.nn import pack_frames

    layer = _layer()
    x = torch.randn(4, 10, 12)
    bmms: list[int] = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a: bmms.append(1) or real_bmm(*a))
    for counts, padded in (([10, 10, 10, 10], True), ([10, 10, 10, 9], False)):
        bmms.clear()
        layer(x, pack_frames(torch.tensor(counts), 10))
        assert bool(bmms) is padded, counts
    frames = module._Frames.of(layer, x, pack_frames(torch.tensor([10] * 4), 10))
    assert frames.rows.data_ptr() == x.data_ptr() and frames.packing is None


def _folded_forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of each forward that runs folded."""
    calls: list[int] = []
    original = NeXtVLAD._forward_folded

    def counting(self: NeXtVLAD, x: torch.Tensor, frames: object) -> torch.Tensor:
        calls.append(x.shape[0])
        return original(self, x, frames)  # type: ignore[arg-type]

    monkeypatch.setattr(NeXtVLAD, "_forward_folded", counting)
    return calls


@pytest.mark.parametrize("training", [False, True])
def test_auto_folds_batches_of_long_videos_only(
    monkeypatch: pytest.MonkeyPatch, training: bool
) -> None:
    """``folded="auto"`` (the default) runs folded where the batch's real frames a video
    reach ``FOLD_MIN_FRAMES`` on average, and gives the function of the unfolded layer."""
    import nextvlad.nn.nextvlad as module

    calls = _folded_forwards(monkeypatch)
    monkeypatch.setattr(module, "FOLD_MIN_FRAMES", 5)
    layer = _layer().double().train(training)
    assert layer.folded == "auto"
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    for counts, folds in (([7, 7, 7], True), ([7, 6, 2], True), ([7, 3, 2], False)):
        n = torch.tensor(counts)
        calls.clear()
        layer.load_state_dict(state)
        out = layer(x, n)
        assert calls == ([3] if folds else [])
        layer.load_state_dict(state)
        layer.folded = False
        torch.testing.assert_close(out, layer(x, n), rtol=1e-10, atol=1e-12)
        layer.folded = "auto"
    calls.clear()
    layer(x)  # no mask: every frame counts
    assert calls == [3]


def test_auto_does_not_fold_where_the_rounding_or_the_graph_must_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nextvlad.nn.nextvlad as module

    calls = _folded_forwards(monkeypatch)
    monkeypatch.setattr(module, "FOLD_MIN_FRAMES", 1)
    x = torch.randn(2, 4, 12)
    _layer(reference_compat=True)(x, torch.tensor([4, 4]))  # the original's rounding
    _layer(folded=False)(x)
    torch.jit.trace(_layer().eval(), (x,), check_trace=False)  # exported graphs: as written
    assert calls == []
    _layer(folded=True)(x, torch.tensor([2, 1]))  # True folds whatever the lengths
    assert calls == [2]
    with pytest.raises(ValueError, match="folded must be True, False or 'auto'"):
        _layer(folded="yes")
