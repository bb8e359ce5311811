"""The FLOP floor: a case's multiply-adds at the peak SGEMM rate measured in the same run, on the same threads.

The yardstick of issue 19: no implementation of an epoch can take less than its multiply-adds cost at the rate
this machine's best matrix product reaches. The rate is measured here, in the run whose rows it judges (a shared
machine's load moves it), as the best of several large square products in the case's dtype.

Multiply-adds of one update on B samples of sizes n_0..n_L: the forward phase's B n_k n_{k+1} per layer, the
weight gradients' as many again, and the hidden deltas' B n_k n_{k+1} for every layer but the first:
B (3 sum_k n_k n_{k+1} - n_0 n_1). An evaluation's forward phase on N samples: N sum_k n_k n_{k+1}.
"""

from __future__ import annotations

import time

import torch

SGEMM_SIZE = 512  # large enough for the BLAS kernel's peak on one core, small enough to time in milliseconds


def peak_gemm_flops(dtype: torch.dtype = torch.float32, repeats: int = 15, size: int = SGEMM_SIZE) -> dict:
    """The best rate of a (size x size) @ (size x size) product on torch's current threads: {"gflops", ...}."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g, dtype=dtype)
    b = torch.randn(size, size, generator=g, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm: the BLAS's first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * size**3 / best / 1e9, "size": size, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "best_seconds": best}


def layer_macs(sizes: list) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def update_macs(sizes: list, batch: int) -> int:
    """Multiply-adds of one update on ``batch`` samples: forward, hidden deltas, weight gradients."""
    return batch * (3 * layer_macs(sizes) - sizes[0] * sizes[1])


def epoch_macs(sizes: list, updates: int, batch: int, evaluated_samples: int) -> dict:
    """{"training", "evaluation", "total"} multiply-adds of one epoch."""
    training = updates * update_macs(sizes, batch)
    evaluation = evaluated_samples * layer_macs(sizes)
    return {"training": training, "evaluation": evaluation, "total": training + evaluation}


def floor_us(macs: int, gflops: float) -> float:
    """Microseconds that ``macs`` multiply-adds take at ``gflops`` (2 FLOPs each)."""
    return 2 * macs / (gflops * 1e9) * 1e6
