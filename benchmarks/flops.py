"""The FLOP floor: a case's multiply-adds at the peak SGEMM rate measured in the same run, on the same threads.

The yardstick of issue 19: no implementation of an epoch can take less than its multiply-adds cost at the rate
this machine's best matrix product reaches. The rate is measured here, in the run whose rows it judges (a shared
machine's load moves it), as the best of several large square products in the case's dtype, through torch.mm and
through numpy's matmul (each its own BLAS: MKL in torch's CPU build, OpenBLAS in numpy's), the faster of the two.

A BLAS is not the CPU. On a CPU its vendor's BLAS does not tune for (MKL on AMD, say), the products run at half the
vector units' rate, and a hand-written kernel can beat that "floor". ``fma_peak`` measures the CPU's own rate: the
kernel's vector multiply-add, on independent sums, as often as the FMA units take it. The FMA floor (the same
multiply-adds at that rate) is the floor no code can beat; the benchmark reports both.

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
    """The best rate of a (size x size) @ (size x size) product on the current threads, through torch.mm and
    through numpy.matmul: {"gflops" (the faster), "library", "torch_gflops", "numpy_gflops", ...}."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g, dtype=dtype)
    b = torch.randn(size, size, generator=g, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    a_np, b_np, out_np = a.numpy(), b.numpy(), out.numpy().copy()
    products = {"torch": lambda: torch.mm(a, b, out=out), "numpy": lambda: np.matmul(a_np, b_np, out=out_np)}
    best = {}
    for name, product in products.items():
        product()  # warm: the BLAS's first call
        best[name] = float("inf")
    for _ in range(repeats):  # interleaved: a load change hits both alike
        for name, product in products.items():
            start = time.perf_counter()
            product()
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: 2 * size**3 / seconds / 1e9 for name, seconds in best.items()}
    library = max(rates, key=rates.get)
    return {"gflops": rates[library], "library": library, "torch_gflops": rates["torch"],
            "numpy_gflops": rates["numpy"], "size": size, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "best_seconds": best[library]}


FMA_CHAINS = 12  # narrow_fma_rounds' independent sums (_csrc/narrow_body.c: CHAINS)


def fma_peak(dtype: torch.dtype = torch.float32, rounds: int = 200_000, repeats: int = 15) -> Optional[dict]:
    """The CPU's multiply-add rate as the C kernels' code reaches it: narrow_fma_rounds (narrow_body.c), FMA_CHAINS
    independent sums of one 64-byte vector each, ``rounds`` times, best of ``repeats``: {"gflops", ...} (2 FLOPs a
    multiply-add), or None where the kernel cannot be built."""
    import ctypes

    from manual_backprop.fast.common import FastPathUnavailable
    from manual_backprop.fast.narrow import load_narrow_kernel

    try:
        lib = load_narrow_kernel()
    except FastPathUnavailable:
        return None
    fn = lib.narrow_fma_rounds_f64 if dtype == torch.float64 else lib.narrow_fma_rounds_f32
    fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_void_p], None
    out = torch.empty((), dtype=dtype)
    lanes = 64 // out.element_size()
    fn(rounds, out.data_ptr())
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(rounds, out.data_ptr())
        best = min(best, time.perf_counter() - start)
    return {"gflops": 2 * FMA_CHAINS * lanes * rounds / best / 1e9, "lanes": lanes, "chains": FMA_CHAINS,
            "rounds": rounds,
            "dtype": str(dtype).replace("torch.", ""), "best_seconds": best}


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


KERNEL_BOUND = "kernel bound (products at the FMA rate + its tanh)"  # S's computed row (benchmarks/bench.py)


def kernel_bound(sizes: list, n_train: int, n_test: int, gflops: float, tanh_ns: float,
                 rate_name: str = "the CPU's multiply-add rate") -> dict:
    """What a batch-mode epoch of a tanh network costs the narrow kernel at the least, computed: the products it
    makes (the update's, and the test split's forward phase: the training split's is the next update's) at
    ``gflops`` (``rate_name``: the FMA peak where it was measured), plus its hidden layers' tanh at the kernel's own
    measured rate. Not the FLOP floor: that one counts the training split's evaluation again, and no activation.
    {"us", "macs", "tanh_evaluations", "note"}."""
    macs = update_macs(sizes, n_train) + n_test * layer_macs(sizes)
    tanhs = (n_train + n_test) * sum(sizes[1:-1])
    products, activations = floor_us(macs, gflops), tanhs * tanh_ns / 1e3
    return {"us": products + activations, "macs": macs, "tanh_evaluations": tanhs,
            "note": f"{macs:,} multiply-adds at {gflops:.1f} GFLOP/s, {rate_name} ({products:.0f} us) + "
                    f"{tanhs:,} tanh at {tanh_ns:.3f} ns ({activations:.0f} us), both measured in this run"}
