"""How the benchmark times and weighs an implementation: calibration, interleaved repeats, CUDA memory.

Rules that keep a comparison fair:
- nothing is compiled, captured or allocated for the first time inside a timed run: ``calibrate`` runs every
  implementation once before timing it, and an implementation that compiles per length (``compiles_per_size``:
  JAX's jit over a chunk) also runs each length once, untimed, before it times that length, and once more at the
  measured length;
- an implementation that works in whole chunks (``granule``: a CUDA graph of 64 updates) is timed on whole chunks
  only, so a row that says cuda_graph times graph replays, never the eager tail;
- the device is synchronised at the end of each measurement, never inside one;
- Python's garbage is collected before each measurement, untimed: a row pays for the collections of its own
  garbage, never for the one the row before it left (a full collection of this process costs 50-100 ms, and in
  the rotation the row after the autograd or numpy peer paid it every repeat: O's two Trainer rows, the same C
  loop, read 2.0 and 7.1 us an epoch by their place alone).
"""

from __future__ import annotations

import gc
import time
from typing import Optional

import torch

from benchmarks.cases import Impl


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def granule(impl: Impl) -> int:
    """The unit of work an implementation must be timed in (1, or a CUDA graph's chunk of updates)."""
    return int(getattr(impl, "granule", 1))


def _timed(impl: Impl, device: torch.device, u0: int, n: int, cpu: Optional[list] = None) -> tuple:
    gc.collect()
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    made = impl.run(u0, n) or n
    sync(device)
    if cpu is not None:
        cpu.append(time.process_time() - cpu_start)
    return time.perf_counter() - start, made


def measure(impls: dict, repeats: int, chunk: dict, device: torch.device, budget: int,
            cpu_times: Optional[dict] = None) -> dict:
    """Interleaved timing: ``repeats`` rounds, each measuring every implementation once (rotating order).

    Returns {name: [wall seconds per unit, one per repeat]}; ``cpu_times``, when given, gets {name: [process CPU
    seconds per unit]} beside them (on a shared machine wall time includes other processes' turns; CPU time
    counts this process's own work, on every thread). Each implementation walks its own way through the sample
    order, ``chunk[name]`` units per measurement, wrapping around after ``budget`` units.
    """
    names = list(impls)
    times = {name: [] for name in names}
    cpus = {name: [] for name in names}
    cursor = {name: 0 for name in names}
    for r in range(repeats):
        rotated = names[r % len(names):] + names[:r % len(names)]
        for name in rotated:
            n = chunk[name]
            u0 = cursor[name] if cursor[name] + n <= budget else 0
            spent = []
            elapsed, made = _timed(impls[name], device, u0, n, spent)
            times[name].append(elapsed / made)
            cpus[name].append(spent[0] / made)
            cursor[name] = u0 + n
    if cpu_times is not None:
        cpu_times.update(cpus)
    return times


def calibrate(impl: Impl, device: torch.device, seconds: float, max_units: int) -> int:
    """How many units (updates, or epochs) make a measurement of about ``seconds``; a multiple of the granule.

    Every length is run once untimed first where the implementation compiles per length, and the returned
    length has been run (warmed) before it is returned.
    """
    g = granule(impl)
    if max_units < g:
        raise ValueError(f"n/a: the implementation works in chunks of {g} updates, but the case has only "
                         f"{max_units} in its sample order")
    per_size = getattr(impl, "compiles_per_size", False)
    longest = max_units // g * g
    impl.run(0, g)  # warm-up: first-call allocations, compilation, cuBLAS handles, a CUDA graph's capture
    n = g
    while True:
        if per_size:
            impl.run(0, n)  # compile at this length, untimed
        elapsed, made = _timed(impl, device, 0, n)
        if elapsed >= seconds / 4 or n >= longest:
            break
        n = min(longest, n * (16 if per_size else 4))  # fewer lengths where each costs a compilation
    chunk = int(made * seconds / max(elapsed, 1e-9)) // g * g
    chunk = max(g, min(longest, chunk))
    if per_size or chunk != n:
        impl.run(0, chunk)  # warmed at exactly the measured length
    return chunk


def cuda_mark(device: torch.device) -> Optional[dict]:
    """The device's memory before an implementation's calibration (which captures its CUDA graph, if any)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.empty_cache()
    return {"reserved": torch.cuda.memory_reserved(device)}


def cuda_memory(impl: Impl, device: torch.device, mark: Optional[dict]) -> dict:
    """Peak device memory above the resident set during one measured unit, after any capture.

    For a CUDA graph the unit is one replay of a whole chunk, and the graph's private memory pool (reserved at
    capture, held for the graph's life, which no empty_cache releases) is added: that pool is the memory a replay
    works in. Returns {"peak_cuda_bytes", "cuda_graph_pool_bytes"} (None off CUDA).
    """
    if mark is None:
        return {"peak_cuda_bytes": None, "cuda_graph_pool_bytes": None}
    g = granule(impl)
    sync(device)
    torch.cuda.empty_cache()
    pool = torch.cuda.memory_reserved(device) - mark["reserved"] if g > 1 else 0
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    impl.run(0, g)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    return {"peak_cuda_bytes": int(peak + max(pool, 0)), "cuda_graph_pool_bytes": int(max(pool, 0)) if g > 1
            else None}
