"""The FLOP floor: a case's multiply-adds at the peak SGEMM rate measured in the same run, on the same threads.

The yardstick of issue 19: no implementation of an epoch can take less than its multiply-adds cost at the rate
this machine's best matrix product reaches. The rate is measured here, in the run whose rows it judges (a shared
machine's load moves it), as the best of several large square products in the case's dtype.

Multiply-adds of one update on B samples of sizes n_0..n_L: the forward phase's B n_k n_{k+1} per layer, the
weight gradients' as many again, and the hidden deltas' B n_k n_{k+1} for every layer but the first:
B (3 sum_k n_k n_{k+1} - n_0 n_1). An evaluation's forward phase on N samples: N sum_k n_k n_{k+1}.

The floor counts no activation. For S, whose epoch evaluates tanh on about a million floats, ``kernel_bound``
adds the bound of the narrow kernel's own approach beside it: the products it makes at the same peak rate, plus its
tanh at the rate measured in the same run (``tanh_rate``), so a reader sees how much of the gap to the floor the
activation alone takes.
"""

from __future__ import annotations

import time
from typing import Optional

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


def tanh_rate(dtype: torch.dtype = torch.float32, n: int = 4096, calls: int = 256, repeats: int = 15) -> Optional[dict]:
    """The best rate of the narrow kernel's own array tanh (its R_VTANH: vecmath.h's mbp_vtanh_f32 in float,
    narrow_tanh_f64's loop in double) on n elements of dtype from [-3, 3], in cache as the kernel's tiles are
    (it applies f to a tile's rows in L1), ``calls`` calls a measurement, less the same calls on no elements (the
    ctypes call): {"ns_per_element", ...}, or None where the kernel cannot be built."""
    from manual_backprop.fast.common import FastPathUnavailable
    from manual_backprop.fast.narrow import load_narrow_kernel

    try:
        lib = load_narrow_kernel()
    except FastPathUnavailable:
        return None
    fn = lib.narrow_vtanh_f64 if dtype == torch.float64 else lib.narrow_vecmath_tanh_f32
    x = torch.linspace(-3.0, 3.0, n, dtype=dtype)
    y = torch.empty_like(x)
    # in place in float, as the kernel applies it (the AVX-512 and AVX2 versions take the same time on any values:
    # no branches); out of place in double, where a compiler may branch on |x| > 0.625
    xp = x.data_ptr()
    yp = y.data_ptr() if dtype == torch.float64 else xp
    best = {n: float("inf"), 0: float("inf")}
    for _ in range(repeats):
        for size in (n, 0):
            start = time.perf_counter()
            for _ in range(calls):
                fn(xp, yp, size)
            best[size] = min(best[size], time.perf_counter() - start)
    return {"ns_per_element": max(best[n] - best[0], 0.0) / (calls * n) * 1e9, "elements": n, "calls": calls,
            "call_us": best[0] / calls * 1e6, "dtype": str(dtype).replace("torch.", "")}


KERNEL_BOUND = "kernel bound (products at peak + its tanh)"  # S's computed row (benchmarks/bench.py)


def kernel_bound(sizes: list, n_train: int, n_test: int, gflops: float, tanh_ns: float) -> dict:
    """What a batch-mode epoch of a tanh network costs the narrow kernel at the least, computed: the products it
    makes (the update's, and the test split's forward phase: the training split's is the next update's) at the
    peak rate, plus its hidden layers' tanh at the kernel's own measured rate. Not the FLOP floor: that one counts
    the training split's evaluation again, and no activation. {"us", "macs", "tanh_evaluations", "note"}."""
    macs = update_macs(sizes, n_train) + n_test * layer_macs(sizes)
    tanhs = (n_train + n_test) * sum(sizes[1:-1])
    products, activations = floor_us(macs, gflops), tanhs * tanh_ns / 1e3
    return {"us": products + activations, "macs": macs, "tanh_evaluations": tanhs,
            "note": f"{macs:,} multiply-adds at {gflops:.1f} GFLOP/s ({products:.0f} us) + {tanhs:,} tanh at "
                    f"{tanh_ns:.3f} ns ({activations:.0f} us), both measured in this run"}
