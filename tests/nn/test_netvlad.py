"""NetVLAD layer and the mean pool."""

from __future__ import annotations

import pytest
import torch

from nextvlad.nn import MeanPool, NetVLAD, frame_mask


def test_shape_and_intra_normalisation() -> None:
    layer = NetVLAD(dim=10, num_clusters=4).eval()
    out = layer(torch.randn(3, 8, 10), frame_mask(torch.tensor([8, 5, 1]), 8))
    assert out.shape == (3, 40) == (3, layer.output_dim)
    norms = out.reshape(3, 10, 4).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3, 4))


@pytest.mark.parametrize("training", [False, True])
def test_padding_and_order_change_nothing(training: bool) -> None:
    torch.manual_seed(1)
    layer = NetVLAD(dim=10, num_clusters=4).train(training)
    x = torch.randn(2, 6, 10)
    n = torch.tensor([6, 3])
    padded = torch.cat([x, 50 * torch.randn(2, 4, 10)], dim=1)
    a = layer(x, frame_mask(n, 6))
    torch.testing.assert_close(a, layer(padded, frame_mask(n, 10)), rtol=1e-5, atol=1e-5)
    perm = torch.randperm(6)
    full = layer(x)
    torch.testing.assert_close(full, layer(x[:, perm]), rtol=1e-5, atol=1e-5)


def test_invalid_sizes_raise() -> None:
    with pytest.raises(ValueError, match="num_clusters"):
        NetVLAD(dim=4, num_clusters=0)
    with pytest.raises(ValueError, match="dim"):
        MeanPool(0)


def test_mean_pool_counts_real_frames_only() -> None:
    x = torch.arange(12.0).reshape(1, 4, 3)
    out = MeanPool(3)(x, frame_mask(torch.tensor([2]), 4))
    torch.testing.assert_close(out, x[:, :2].mean(dim=1))
    zero = MeanPool(3)(x, frame_mask(torch.tensor([0]), 4))
    torch.testing.assert_close(zero, torch.zeros(1, 3))
