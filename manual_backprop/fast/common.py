"""What every fast path shares: the names of the paths, the warning and the error they raise, the size rule, and
the mark a C kernel leaves on the tensors it wrote."""

from __future__ import annotations

import torch

__all__ = ["FAST_PATHS", "FastPathWarning", "FastPathUnavailable", "C_WORK_LIMIT", "work_per_update",
           "mark_written", "layout_of"]

FAST_PATHS = ("c", "fused", "cuda_graph")

# "auto" takes the C loop on the CPU while one update costs at most this many multiply-adds (batch size times the
# weight count). The loop is plain C, one core, vectorised by the compiler; above this, BLAS matrix products on all
# cores (the fused path) win. 64-30-10 at batch 10 is 22,000; 784-256-256-10 at batch 128 is 34 million.
C_WORK_LIMIT = 1 << 18


class FastPathWarning(UserWarning):
    """A fast path was asked for but cannot apply here; the message says why and what runs instead."""


class FastPathUnavailable(RuntimeError):
    """Raised by the constructors of the fast paths when they cannot apply (the reason is the message)."""


def work_per_update(net, batch: int) -> int:
    """Multiply-adds of one forward phase: batch times the number of weights."""
    return batch * sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))


def layout_of(t: torch.Tensor) -> tuple:
    """What a C plan's pointer to t relies on besides t itself: its address, shape, strides, dtype and neg bit (a
    ``.data =``, ``set_``, ``t_()`` or ``resize_`` changes one of them, and bumps no version where it is ``.data``)."""
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.is_neg()


_increment_version = torch._C._increment_version


def _takes_a_list() -> bool:
    """Whether this torch's _increment_version takes a list (torch 2.5 on: a fraction of a microsecond for all of a
    network's parameters); before, it takes one tensor."""
    try:
        _increment_version([torch.empty(0)])
        return True
    except (TypeError, RuntimeError):  # torch 2.1-2.4: "increment_version expect a Tensor as input"
        return False


_LIST = _takes_a_list()


def mark_written(tensors) -> None:
    """Bump the version counter of each tensor a C kernel changed in place (through its address, which torch does
    not see), as torch's own in-place ops do: whatever is keyed on a parameter's version (the narrow kernel's kept
    pass, the fused step's kept forward phase, autograd's check of saved tensors) then knows it changed. ``tensors``:
    a list or tuple of tensors."""
    if _LIST:
        _increment_version(tensors)
    else:
        for t in tensors:
            _increment_version(t)
