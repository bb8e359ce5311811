"""RunLogger's ``loss/update`` curve: every update's loss handed in, about ``max_update_points_per_epoch`` of them
an epoch written (thinned on the device, one transfer), and the same points against the samples seen.

Kept points lie at least ``_every`` updates apart, starting with the first one; the last loss handed in before an
epoch ends is always written, so each epoch's curve ends where the epoch did. While the epoch length is unknown
(``updates_per_epoch`` not given), the losses are held until the first ``log_epoch`` tells it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_int

__all__ = ["UpdateLossPoints"]


class UpdateLossPoints:
    """The ``loss/update`` half of RunLogger (which holds the writer, ``_active``, ``_add_scalar`` and the state
    its __init__ sets: ``_every``, ``_next_update``, ``_held``, ``_held_span``, ``_pending``)."""

    def log_update_losses(self, first_update: int, losses: Tensor, stride: int = 1) -> None:
        """``loss/update`` with step = update count: ``losses[i]`` is the loss at update ``first_update + i*stride``.

        ``losses`` is a 1-D tensor on any device (the trainer's read-back of the last few updates); only the points
        that survive thinning leave the device, in one transfer. The tensor may be reused by the caller afterwards.
        """
        if not self._active():
            return
        first_update = check_int("first_update", first_update, minimum=0)
        stride = check_int("stride", stride, minimum=1)
        if not isinstance(losses, Tensor):
            raise TypeError(f"losses must be a 1-D torch.Tensor of losses, but got {type(losses).__name__}")
        if losses.dim() == 0:
            losses = losses.reshape(1)
        if losses.dim() != 1 or not losses.is_floating_point():
            raise ValueError(
                f"losses must be a 1-D floating-point tensor, "
                f"but got shape {tuple(losses.shape)} and dtype {losses.dtype}"
            )
        if losses.numel() == 0:
            return
        losses = losses.detach()
        if self._every is None:
            # Epoch length unknown: hold the values (a copy, the caller may reuse its buffer) until log_epoch.
            last = first_update + (losses.numel() - 1) * stride
            lo, hi = self._held_span or (first_update, last)
            self._held_span = (min(lo, first_update), max(hi, last))
            self._held.append((first_update, losses.clone(), stride))
            return
        self._write_update_losses(first_update, losses, stride)

    def _interval(self, updates_per_epoch: int) -> int:
        # Kept points lie >= every updates apart, so an epoch holds at most ceil(upe / every) <= N - 1 of them,
        # plus the one written at the epoch's end.
        return max(1, math.ceil(updates_per_epoch / (self.max_update_points_per_epoch - 1)))

    def _learn_interval(self) -> None:
        lo, hi = self._held_span
        stride = self._held[-1][2]
        self._updates_per_epoch = hi - lo + stride  # the updates the first epoch spanned
        self._every = self._interval(self._updates_per_epoch)
        held, self._held, self._held_span = self._held, [], None
        for first_update, losses, stride in held:
            self._write_update_losses(first_update, losses, stride)

    def _write_update_losses(self, first_update: int, losses: Tensor, stride: int) -> None:
        n = losses.numel()
        if self._next_update is None:
            self._next_update = first_update
        start = max(0, -(-(self._next_update - first_update) // stride))  # first index at or after _next_update
        step = max(1, -(-self._every // stride))  # index distance between kept points, >= every updates
        kept = losses[start::step]  # (m,), m may be 0
        values = torch.cat([kept, losses[-1:]]).to("cpu", torch.float64).tolist()  # one transfer
        m = len(values) - 1
        for i in range(m):
            self._add_update_point(first_update + (start + i * step) * stride, values[i])
        last_index = n - 1
        if m:
            last_kept = start + (m - 1) * step
            self._next_update = first_update + last_kept * stride + self._every
        else:
            last_kept = -1
        self._pending = None if last_kept == last_index else (first_update + last_index * stride, values[-1])

    def _write_pending(self) -> None:
        if self._pending is not None:
            self._add_update_point(*self._pending)
            self._pending = None

    def _add_update_point(self, update: int, value: float) -> None:
        self._add_scalar("loss/update", value, update)
        if self.samples_per_epoch is not None:
            self._add_scalar("loss/by_samples_seen", value, self.samples_seen(update))

    def samples_seen(self, update: int) -> int:
        """The samples seen by the end of update ``update`` (counted from 1); see ``samples_per_epoch``."""
        n, per_epoch = self.samples_per_epoch, self._updates_per_epoch
        epochs, into = divmod(update, per_epoch)
        return epochs * n + min(into * -(-n // per_epoch), n)
