"""What every fast path shares: the names of the paths, the warning and the error they raise, and the size rule."""

from __future__ import annotations

__all__ = ["FAST_PATHS", "FastPathWarning", "FastPathUnavailable", "C_WORK_LIMIT", "work_per_update"]

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
