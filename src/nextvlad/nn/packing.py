"""Where the real frames of a padded batch lie, worked out on the host.

A batch of B videos padded to T frames holds sum(num_frames) real frames. The layers that run
per frame (NeXtVLAD's expansion, attention and soft assignment) only need those, so they
gather them into R rows (the *packed* frames), work on the rows and sum them per video. Which
rows to gather is known on the host from the batch's frame counts: :func:`pack_frames`
computes the indices there and moves them to the device with the batch, so that the device
never has to report a data-dependent size back to the host (a ``nonzero`` on the device
would stall a GPU until everything queued before it has run).

For ``torch.compile`` the number of packed rows is rounded up to a multiple of
``row_multiple`` (a *row budget*), so that a compiled step sees a bounded set of shapes; the
extra rows repeat the first frame of the batch, are masked out (``row_mask``) of every
statistic and contribute nothing to any sum.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class FramePacking:
    """The real frames of a (B, T) batch as R_pad packed rows (see the module docstring).

    Tensors are on the device of the batch's features, except ``num_frames`` (the host's).
    """

    batch_size: int  # B
    length: int  # T, the padded number of frames
    num_frames: Tensor  # (B,) int64 on the host: real frames of each video
    rows: Tensor  # (R_pad,) int64: index b*T + t of each packed row in the (B*T) frames
    frame_mask: Tensor  # (B, T) float32: 1 for real frames (Eq. (19))
    counts: Tensor  # (B,) float32: real frames of each video
    has_frames: Tensor  # () float32: 1 if the batch has any real frame (gates BN updates)
    # Only with a row budget (row_multiple): (R_pad,) float32, 1 for real rows, 0 for the
    # extra ones; and (B*T,) int64, for each of the B*T frames its packed row, or the first
    # extra row (a row whose assignment is zero) for a padded frame.
    row_mask: Tensor | None = None
    slots: Tensor | None = None
    sizes: tuple[int, ...] = ()  # host: real rows of each video (empty with a row budget)

    @property
    def num_rows(self) -> int:
        """R_pad: the packed rows, extra rows of the budget included."""
        return int(self.rows.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FramePacking:
        """The packing with its device tensors on ``device`` (``num_frames`` stays here)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            rows=self.rows.to(device, non_blocking=non_blocking),
            frame_mask=self.frame_mask.to(device, non_blocking=non_blocking),
            counts=self.counts.to(device, non_blocking=non_blocking),
            has_frames=self.has_frames.to(device, non_blocking=non_blocking),
            row_mask=move(self.row_mask),
            slots=move(self.slots),
        )

    def pin_memory(self) -> FramePacking:
        """Page-locked host copies, so that ``to(cuda, non_blocking=True)`` is asynchronous."""

        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return replace(
            self,
            rows=self.rows.pin_memory(),
            frame_mask=self.frame_mask.pin_memory(),
            counts=self.counts.pin_memory(),
            has_frames=self.has_frames.pin_memory(),
            row_mask=pin(self.row_mask),
            slots=pin(self.slots),
        )


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pack_frames(
    num_frames: Tensor, length: int, *, row_multiple: int | None = None
) -> FramePacking:
    """The packing of a batch padded to ``length`` frames, on the host.

    num_frames: (B,) real frames of each video (host tensor; a device tensor is copied to the
    host, which waits for the device). ``row_multiple``: round the packed rows up to a
    multiple of this (at least one extra row), for a bounded set of shapes under
    ``torch.compile`` and for the gather-based sums used on GPUs; None: exactly the real rows.
    """
    counts = num_frames.detach().to("cpu", torch.int64).clamp(0, length)  # (B,)
    mask = torch.arange(length).unsqueeze(0) < counts.unsqueeze(1)  # (B, T)
    return _packing(counts, mask, row_multiple)


def pack_mask(mask: Tensor, *, row_multiple: int | None = None) -> FramePacking:
    """The packing of a (B, T) frame mask (1 for real frames, any pattern), on the host."""
    host = mask.detach().to("cpu") > 0  # (B, T)
    return _packing(host.sum(dim=1), host, row_multiple)


def _packing(counts: Tensor, mask: Tensor, row_multiple: int | None) -> FramePacking:
    b, t = mask.shape
    flat = mask.reshape(b * t)  # (B*T,)
    rows = flat.nonzero().squeeze(1)  # (R,) on the host
    real = int(rows.shape[0])
    row_mask = slots = None
    sizes: tuple[int, ...] = tuple(int(n) for n in counts.tolist())
    if row_multiple is not None:
        padded = round_up(real + 1, max(1, row_multiple))
        row_mask = torch.zeros(padded)
        row_mask[:real] = 1.0
        rows = torch.cat([rows, torch.zeros(padded - real, dtype=torch.int64)])  # (R_pad,)
        slots = torch.full((b * t,), real, dtype=torch.int64)  # padded frames: extra row
        slots[flat] = torch.arange(real)
        sizes = ()
    return FramePacking(
        batch_size=b,
        length=t,
        num_frames=counts,
        rows=rows,
        frame_mask=mask.to(torch.float32),
        counts=counts.to(torch.float32),
        has_frames=torch.tensor(1.0 if real else 0.0),
        row_mask=row_mask,
        slots=slots,
        sizes=sizes,
    )


def as_packing(
    frames: Tensor | FramePacking | None, x: Tensor, *, row_multiple: int | None = None
) -> FramePacking | None:
    """A packing for features ``x`` (B, T, ...) from frame counts (B,), a frame mask (B, T)
    or a packing; None stays None (every frame real). Counts or masks on the host cost
    nothing on the device; on a device they are copied to the host first (which waits)."""
    if frames is None or isinstance(frames, FramePacking):
        return frames
    if row_multiple is None and x.device.type != "cpu":
        row_multiple = 1  # sums by one gather and a batched matmul: fewer kernels
    if frames.ndim == 2:
        packing = pack_mask(frames, row_multiple=row_multiple)
    else:
        packing = pack_frames(frames, x.shape[1], row_multiple=row_multiple)
    return packing.to(x.device, non_blocking=True)
