"""Batch normalisation with the reference's (TensorFlow slim) semantics.

The original code normalises with epsilon 1e-3 and keeps moving statistics with decay 0.999
(PyTorch momentum 0.001). TF's non-fused batch norm updates the moving variance with the
*biased* batch variance, the fused one (used for `gating_bn` and `mix_weights_bn`) with the
*unbiased* one; ``unbiased_update`` selects which. Both normalise with the biased variance.

A ``mask`` restricts the training statistics to the rows that are real (not padded frames),
which is this project's clean default for the soft-assignment batch norm of the VLAD layers.

With ``sync = True`` and an initialised process group, the training statistics are taken over
the rows of every process (a masked SyncBatchNorm; gradients flow through the all-reduce).
By default each process keeps its own statistics, as the paper's two GPU towers did.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPSILON = 1e-3
BN_MOMENTUM = 1.0 - 0.999  # TF decay 0.999


class BatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over (R, C) rows with TF semantics and optional row mask.

    Args:
        num_features: C.
        unbiased_update: update the running variance with the unbiased (n-1) batch variance, as
            TF's fused batch norm does; the non-fused one (default) uses the biased one.
    """

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = BN_EPSILON,
        momentum: float = BN_MOMENTUM,
        unbiased_update: bool = False,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.update_rate: float = momentum  # = 1 - decay; torch types self.momentum Optional
        self.unbiased_update = unbiased_update
        self.sync = False  # statistics over all processes of the default group (DDP)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (R, C); mask: (R,) 1 for rows that count in the training statistics."""
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if self.sync and dist.is_available() and dist.is_initialized():
            return self._synced(x, mask)
        if mask is None:
            if self.unbiased_update:  # PyTorch's own update is the unbiased one
                return F.batch_norm(
                    x,
                    self.running_mean,
                    self.running_var,
                    self.weight,
                    self.bias,
                    True,
                    self.update_rate,
                    self.eps,
                )
            out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            with torch.no_grad():
                var, mean = torch.var_mean(x.detach(), dim=0, correction=0)
                self._update(mean, var, x.shape[0])
            return out
        # Statistics over the real rows only.
        m = mask.to(x.dtype).unsqueeze(1)  # (R, 1)
        count = m.sum().clamp_min(1.0)
        mean = (x * m).sum(0) / count  # (C,)
        centred = x - mean
        var = (centred.square() * m).sum(0) / count  # biased, (C,)
        out = centred * torch.rsqrt(var + self.eps) * self.weight + self.bias
        with torch.no_grad():
            self._update(mean.detach(), var.detach(), count.detach())
        return out

    def _synced(self, x: Tensor, mask: Tensor | None) -> Tensor:
        from torch.distributed.nn.functional import all_reduce

        m = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype).unsqueeze(1)  # (R, 1)
        local = torch.cat([m.sum(0), (x * m).sum(0), (x.square() * m).sum(0)])  # (1 + 2C,)
        total = all_reduce(local)  # sum over processes, differentiable
        c = self.num_features
        count = total[0].clamp_min(1.0)
        mean = total[1 : 1 + c] / count  # (C,)
        var = (total[1 + c :] / count - mean.square()).clamp_min(0.0)  # biased, (C,)
        out = (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        with torch.no_grad():
            self._update(mean.detach(), var.detach(), count.detach())
        return out

    def _update(self, mean: Tensor, biased_var: Tensor, n: Tensor | int) -> None:
        assert self.running_mean is not None and self.running_var is not None
        var = biased_var
        if self.unbiased_update:  # n / (n - 1), as a tensor so that torch.compile keeps one graph
            count = torch.as_tensor(n, dtype=biased_var.dtype, device=biased_var.device)
            var = biased_var * (count / (count - 1).clamp_min(1.0))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.update_rate)
        self.running_var.lerp_(var.to(self.running_var.dtype), self.update_rate)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
