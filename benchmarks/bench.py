"""Speed and memory of the hand-written backprop, side by side with autograd, numpy, JAX and the bare matrix products.

    python -m benchmarks.bench --threads 1              # every case on the CPU (and on CUDA when present)
    python -m benchmarks.bench --quick                  # a smoke run: few repeats, the large cases shrunk
    python -m benchmarks.bench --cases S O D --threads 1 --no-population  # the Trainer-level cases alone
    python -m benchmarks.bench --cases online_tiny online_small --device cpu --out bench/cpu.json

Two kinds of case. The update-level cases (online_tiny ... large: cases.py) time one gradient-descent update
(forward phase, loss, backward phase, step) of one network, for each implementation of the same update:

    manual          the fast path the Trainer's fast=True picks (manual_backprop.fast: "c" for small networks on
                    the CPU, "fused" for large ones, "cuda_graph" on CUDA); ratios are taken against it
    manual-plain    the plain path, exactly the Trainer's per-update loop (loss_and_gradients, update)
    manual-api      the checked public API a user's own loop calls: net.loss_and_grads + net.step per update
    manual-c, manual-fused, manual-cuda_graph   each fast path on its own, where it applies; a cuda_graph row is
                    timed on whole graphs of 64 updates (replays only), its memory includes the graph's pool
    autograd+SGD    the autograd twin (reference.torch_mlp.TorchMLP) with torch.optim.SGD
    numpy           the same hand-written update in plain numpy, as a student would write it
    matmul-floor    the update's matrix products alone (3L - 1 of them, preallocated outputs): a lower bound
    numpy-matmul-floor   the same products through numpy's BLAS: where it is below matmul-floor, numpy's BLAS is
                    faster than torch's on this machine, and no torch implementation can beat numpy there
    jax             jit(lax.scan over the chunk's updates), where JAX is installed (jax_peer.py)

The Trainer-level cases S, O and D (epochs.py, issue 19; on the CPU) time whole epochs as users run them,
evaluation included: the default Trainer (no fast argument), fast=False, fast=True, autograd+SGD, numpy, JAX (jit
of the whole epoch; and lax.scan over E epochs in one call), torch's own products, and the FLOP floor (the epoch's
multiply-adds at the peak SGEMM rate measured in this run: flops.py), each doing the same work: the epoch's
updates in a fresh order, then the loss (and accuracy) on the training and test splits (once where they are the
same, as for XOR); S also has training-only rows. Every row gives wall and process CPU time and its call
granularity; a Trainer-level measurement lasts at least EPOCH_MEASURE_SECONDS. Case P (case_p.py) times whole
PopulationTrainer runs of 1024 XOR nets (float64, online, the default engine) in ns per member-update.

Timing is interleaved (timing.py): each repeat measures every implementation once, in a rotating order, in
one process, so a noisy (shared) machine slows them alike. Each measurement makes a chunk of updates (or epochs),
calibrated to about --measure-seconds; nothing is compiled or captured inside a timed run (JAX is compiled and
warmed at exactly the chunk length it is timed at). The figure is the median over repeats, and each ratio is the
median over repeats of the pair's ratio within the repeat. On CUDA the device is synchronised only at the end of
each measurement, never inside a chunk.

Memory: the bytes kept for the backward phase per update, manual (the ForwardCache's activations and logits, or
a fast path's buffers for them) against autograd (every tensor autograd packs while building the graph, counted
once per storage with torch.autograd.graph.saved_tensors_hooks, parameters excluded); on CUDA also the peak device
memory above the resident set during one measured update, or one graph replay plus the graph's memory pool.

Targets (report.py, epochs.py): each is "met", "not met", or "n/a" where this run did not measure it
(--quick shrinks the medium and large cases; JAX not installed). The JSON records the machine, the threads, the
torch (and numpy, jax) versions and XLA's flags, the dtype and the device.
"""

from __future__ import annotations

import contextlib
import os
import io
import json
import math
import re
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from benchmarks.cases import CASES, QUICK_SIZES, Case, Impl, case_data, sample_order
from benchmarks.case_p import run_case_p
from benchmarks.epochs import (EPOCH_CASES, EpochCase, build_rows, case_macs, computed_row, epoch_data, floor_rows,
                               rows_of)
from benchmarks.flops import KERNEL_BOUND, fma_peak, kernel_bound, peak_gemm_flops, tanh_rate
from benchmarks.jax_peer import xla_flags
from benchmarks.manual import ManualAPI, ManualC, ManualCudaGraph, ManualFused, ManualPlain
from benchmarks.peers import Autograd, MatmulFloor, Numpy, NumpyMatmulFloor
from benchmarks.report import machine_info, table, targets
from benchmarks.timing import calibrate, cuda_mark, cuda_memory, measure
from experiments.common import (DTYPES, at_least, check_config, finite_positive, option, parse_config, run_main,
                                seed_range)
from manual_backprop import fast
from manual_backprop.checkpoint import atomic_write
from manual_backprop.losses import get_loss
from manual_backprop.network import MLP

EXPERIMENT = "bench"
GRAPH_CHUNK = 64  # updates per CUDA graph, as the Trainer's cuda_graph path captures them


@dataclass
class Config:
    cases: list[str] = option(list(CASES) + list(EPOCH_CASES) + ["P"],
                              choices=list(CASES) + list(EPOCH_CASES) + ["P"],
                              help="which cases to time: update-level cases, and the Trainer-level cases S, O, D "
                                   "(those on the CPU only)")
    devices: list[str] = option(factory=lambda: ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
                                flags=("--device",), help="cpu and/or cuda (default: cpu, and cuda when present)",
                                check=lambda v: None if all(re.fullmatch(r"cpu|cuda(:[0-9]+)?", d) for d in v)
                                else "must be cpu, cuda or cuda:N (one or more)")
    dtype: str = option("float32", help="of every network and its data", choices=DTYPES)
    quick: bool = option(False, help="smoke run: 3 repeats, short measurements, the medium and large nets shrunk")
    repeats: Optional[int] = option(None, help="interleaved repeats for every case (default: each case's own)",
                                    check=at_least(1))
    measure_seconds: float = option(0.05, help="target length of one measurement (the chunk length is calibrated "
                                               "to it)", check=finite_positive)
    threads: Optional[int] = option(None, help="torch.set_num_threads, numpy's BLAS threads and, at 1, XLA's, "
                                               "with the process held to one CPU while it runs (XLA's runtime "
                                               "used a second core despite its flags) (default: torch's)",
                                check=at_least(1))
    seed: int = option(0, help="weights, data and sample order", check=seed_range)
    out: str = option("bench_results/bench.json", help="JSON file to write (and bench_population_DEVICE.json beside "
                                                       "it); checked before anything is timed",
                      check=lambda v: None if Path(v).expanduser().name and not Path(v).expanduser().is_dir()
                      else "must name a file to write, not a folder")
    quiet: bool = option(False, help="no progress lines and no table on stdout")
    jax: bool = option(True, help="time the JAX peer where JAX is installed (an optional extra)")
    population: bool = option(True, help="also the population case: K = 1024 XOR nets online, vs the same runs one "
                                         "at a time (benchmarks.population), whatever --cases names; "
                                         "--no-population leaves it out")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m benchmarks.bench", description=__doc__)


def check_writable(out: str) -> None:
    """Make --out's folder and write a probe file there now, so that a path that cannot be written fails in one
    line before the run, not after it."""
    folder = Path(out).expanduser().resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"--out must be a file in a folder this user can write, but got {out!r} "
                         f"({err.strerror or err}: {folder})") from None


def pin_to_one_cpu():
    """Hold this process to one CPU (the first it may use) and return the CPUs it had, or None where the system
    cannot (no sched_setaffinity). At --threads 1 every peer then runs on one core: XLA's CPU runtime kept a second
    core busy whatever its thread flags said (2-core machine: JAX's process CPU time 1.7x its wall time)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    return saved


def run(cfg: Config, command: str = "") -> dict:
    """Time every case on every device; write the JSON report to cfg.out and return it (with its table)."""
    check_config(cfg)
    check_writable(cfg.out)
    for dev in cfg.devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {dev}: CUDA is not available on this machine")
    limiter = contextlib.nullcontext()
    xla = xla_flags(cfg.threads)  # before JAX starts (machine_info imports it)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        with contextlib.suppress(ImportError):  # numpy's BLAS has its own thread pool
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(cfg.threads)
    saved_cpus = pin_to_one_cpu() if cfg.threads == 1 else None
    dtype = getattr(torch, cfg.dtype)
    # Timings compare implementations in true float32: TF32 would make the matrix products a different operation.
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    results, epoch_results, case_p = [], [], None
    try:
        with limiter:
            machine = machine_info(cfg)  # inside the limits, so the thread pools show what the timings ran with
            machine["xla_flags"] = xla
            if any(name in EPOCH_CASES for name in cfg.cases):  # the FLOP floor's rate, in this run
                machine["peak_gemm"] = peak_gemm_flops(dtype)
                machine["fma_peak"] = fma_peak(dtype)  # the CPU's own rate: the FMA floor's
                machine["tanh_rate"] = tanh_rate(dtype)  # the C kernels' own, for S's kernel bound
            for dev in cfg.devices:
                for name in cfg.cases:
                    if name in EPOCH_CASES and dev != "cpu" or name == "P" and dev != "cpu":
                        continue  # the Trainer-level targets are CPU figures; their peers run on the CPU
                    if not cfg.quiet:
                        print(f"[bench] {name} on {dev} ...", file=sys.stderr, flush=True)
                    if name == "P":
                        case_p = run_case_p(3 if cfg.quick else 7, epochs=20 if cfg.quick else 500,
                                            k=64 if cfg.quick else 1024)
                    elif name in EPOCH_CASES:
                        rate = machine["tanh_rate"]
                        epoch_results.append(run_epoch_case(EPOCH_CASES[name], dtype, cfg, machine["peak_gemm"],
                                                            rate["ns_per_element"] if rate else None,
                                                            machine["fma_peak"]))
                    else:
                        results.append(run_case(CASES[name], torch.device(dev), dtype, cfg))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32
        if saved_cpus is not None:
            os.sched_setaffinity(0, saved_cpus)
    machine["cpu_affinity"] = "one CPU (--threads 1)" if saved_cpus is not None else "all the process may use"
    report = {"experiment": EXPERIMENT, "command": command, "config": asdict(cfg), "machine": machine,
              "quick": cfg.quick, "results": results, "trainer_results": epoch_results, "case_p": case_p}
    report["targets"] = targets(results, epoch_results, quick=cfg.quick,
                                extra=[case_p["target"]] if case_p else [])
    if cfg.population and "P" not in cfg.cases:  # case P is the population's Trainer-level case
        report["population"] = population_case(cfg)
    out = Path(cfg.out).expanduser().resolve()  # against the caller's folder
    atomic_write(out, lambda f: f.write(json.dumps(report, indent=2) + "\n"), binary=False)
    report["table"] = table(report)
    if not cfg.quiet:
        m = report["machine"]
        print(f"\n{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
              f"jax {m['jax'] or '-'}, {cfg.dtype}{', quick' if cfg.quick else ''}\n")
        print(report["table"])
        if report.get("population"):
            print(f"\nPopulation case (benchmarks.population):\n{report['population']['table']}")
        print(f"\nwritten: {out}")
    return report


def main(argv=None) -> int:
    command = "python -m benchmarks.bench " + " ".join(sys.argv[1:]) if argv is None else f"main({argv!r})"
    return run_main(EXPERIMENT, parse_args, lambda cfg: run(cfg, command), argv)


def population_case(cfg: Config) -> dict:
    """K = 1024 XOR networks trained online in lockstep (manual_backprop.population) against the same runs one at a
    time, per device; the figures and table of benchmarks.population, in this report."""
    from benchmarks import population as bench_population

    rows = {}
    for dev in cfg.devices:
        pop_cfg = bench_population.Config(device=dev, dtypes=[cfg.dtype], quick=cfg.quick, threads=cfg.threads or 0,
                                          out=str(Path(cfg.out).with_name(f"bench_population_{dev}.json")))
        if cfg.quick:
            pop_cfg.K, pop_cfg.epochs, pop_cfg.warmup_epochs, pop_cfg.sequential_runs = 64, 10, 1, 2
            pop_cfg.engines = ["eager"] + (["cuda_graph"] if dev.startswith("cuda") else [])
        with contextlib.redirect_stdout(io.StringIO()):
            result = bench_population.run(pop_cfg)
        result["table"] = bench_population.table(result, pop_cfg)
        rows[dev] = result
    return {"by_device": rows, "table": "\n\n".join(r["table"] for r in rows.values())}


# ---------------------------------------------------------------------------------------------------- the cases
def _calibrate_all(impls: dict, skipped: dict, device: torch.device, seconds: float, budget: int):
    """Each implementation's chunk length and CUDA memory (measured after its warm-up and any graph capture)."""
    chunk, memory = {}, {}
    for name, impl in list(impls.items()):
        try:
            mark = cuda_mark(device)
            chunk[name] = calibrate(impl, device, seconds, budget)
            memory[name] = cuda_memory(impl, device, mark)
        except Exception as err:  # a peer or path that cannot run here is reported, not fatal
            skipped[name] = str(err) if str(err).startswith("n/a") else f"{type(err).__name__}: {err}"
            del impls[name]
    return chunk, memory


def run_case(case: Case, device: torch.device, dtype: torch.dtype, cfg: Config) -> dict:
    sizes, batch = list(case.sizes), case.batch
    shrunk = cfg.quick and case.name in QUICK_SIZES
    if shrunk:
        sizes, batch = QUICK_SIZES[case.name]
        case = Case(**{**asdict(case), "sizes": sizes, "batch": batch})
    repeats = cfg.repeats or (3 if cfg.quick else case.repeats)
    seconds = cfg.measure_seconds / (10 if cfg.quick else 1)
    torch.manual_seed(cfg.seed)
    x, y, data_note = case_data(case, dtype, device, cfg.seed, n_synthetic=max(4 * batch, 512))
    n = x.shape[0]
    loss_fn = get_loss(case.loss)
    base = MLP(sizes, activation=case.activation, output_activation=case.output_activation, dtype=dtype,
               device=device, seed=cfg.seed, bias_init="normal", init_scale=0.1)
    updates_per_epoch = n // batch
    # enough sample order for every measurement; the large nets are timed on few updates, but a CUDA graph's rows
    # on at least two whole graphs (one graph per measurement at the least)
    work = fast.work_per_update(base, batch)
    budget = max(updates_per_epoch, min(20_000 if cfg.quick else 200_000, int(4e9 / max(work, 1))))
    if device.type == "cuda":
        budget = max(budget, 2 * GRAPH_CHUNK)
    order = sample_order(n, batch, budget, cfg.seed)
    args = (loss_fn, x, y, order, batch, case.lr)
    auto = fast.resolve_fast("auto", base, loss_fn, batch, warn=False)

    impls, skipped = {}, {}

    def add(name: str, make: Callable[[], Impl]):
        try:
            impls[name] = make()
        except Exception as err:  # a peer or path that cannot run here is reported, not fatal
            skipped[name] = f"{type(err).__name__}: {err}"

    c_chunk = case.c_chunk or updates_per_epoch
    makers = {
        "c": lambda: ManualC(base.copy(), *args, chunk=c_chunk),
        "fused": lambda: ManualFused(base.copy(), *args),
        "cuda_graph": lambda: ManualCudaGraph(base.copy(), *args, chunk=GRAPH_CHUNK),
    }
    add("manual", makers[auto])
    add("manual-plain", lambda: ManualPlain(base.copy(), *args))
    add("manual-api", lambda: ManualAPI(base.copy(), *args))
    for path in fast.FAST_PATHS:
        if path == auto:
            continue
        if path == "cuda_graph" and device.type != "cuda":
            continue
        if path == "c" and (device.type != "cpu" or work > 64 * fast.C_WORK_LIMIT):
            skipped["manual-c"] = (f"not run: {work:,} multiply-adds per forward phase is far beyond the C loop's "
                                   f"range" if device.type == "cpu" else "CPU only")
            continue
        add(f"manual-{path}", makers[path])
    if case.name == "online_tiny" and "manual" in impls and auto == "c":
        # the manual path calls the C loop once per epoch (4 updates), as the Trainer does; this is the loop
        # alone, with the call's fixed cost spread over 1024 updates
        add("manual-c(1024/call)", lambda: ManualC(base.copy(), *args, chunk=1024))
    add("autograd+SGD", lambda: Autograd(base.copy(), *args))
    add("numpy", lambda: Numpy(base.copy(), *args))
    add("matmul-floor", lambda: MatmulFloor(base.copy(), *args))
    if device.type == "cpu":
        add("numpy-matmul-floor", lambda: NumpyMatmulFloor(base.copy(), *args))
    if not cfg.jax:
        skipped["jax"] = "not run (--no-jax)"
    else:
        try:
            import jax  # noqa: F401

            from benchmarks.jax_peer import Jax

            add("jax", lambda: Jax(base.copy(), *args))
        except ImportError:
            skipped["jax"] = "not installed (optional peer: pip install 'manual-backprop[jax]')"
    if "manual" in impls and auto == "c":
        impls["manual"].chunk_note = f"{c_chunk} updates per call (one epoch)"
    chunk, memory = _calibrate_all(impls, skipped, device, seconds, budget)
    cpu_times = {}
    times = measure(impls, repeats, chunk, device, budget, cpu_times)
    ref = times.get("manual")
    rows = {}
    for name, impl in impls.items():
        ts = times[name]
        row = {"median_us": statistics.median(ts) * 1e6, "min_us": min(ts) * 1e6,
               "cpu_us": statistics.median(cpu_times[name]) * 1e6,
               "times_us": [t * 1e6 for t in ts], "updates_per_measurement": chunk[name],
               "note": getattr(impl, "chunk_note", "")}
        if ref is not None:
            row["ratio_to_manual"] = statistics.median(t / m for t, m in zip(ts, ref))  # pair by pair
        row["kept_bytes"] = impl.kept_bytes()
        row.update(memory[name])
        if hasattr(impl, "eager_updates"):
            row["eager_updates_outside_graphs"] = impl.eager_updates  # 0: every run was whole graphs
        loss = impl.final_loss()
        row["last_loss"] = loss
        row["finite"] = loss is None or math.isfinite(loss)
        rows[name] = row
    return {"case": case.name, "sizes": sizes, "activation": case.activation,
            "output_activation": case.output_activation, "loss": case.loss, "batch": batch, "lr": case.lr,
            "data": case.data, "n_samples": n, "note": case.note, "data_note": data_note, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "manual_path": auto, "repeats": repeats, "shrunk": shrunk,
            "work_per_update": work, "implementations": rows, "skipped": skipped}


EPOCH_MEASURE_SECONDS = 0.25  # a Trainer-level measurement lasts at least this long: repeatable on a busy machine


def run_epoch_case(case: EpochCase, dtype: torch.dtype, cfg: Config, peak: dict, tanh_ns: Optional[float] = None,
                   fma: Optional[dict] = None) -> dict:
    """A Trainer-level case (epochs.py) on the CPU: whole epochs, evaluation included, every row alike;
    wall and process CPU time; the FLOP floor at ``peak`` (flops.peak_gemm_flops, measured in this run), the FMA
    floor at ``fma`` (flops.fma_peak), and for S the narrow kernel's own bound: its products at the FMA rate (the
    SGEMM rate without it), its tanh at ``tanh_ns`` (ns an element, measured in this run)."""
    device = torch.device("cpu")
    repeats = cfg.repeats or (3 if cfg.quick else case.repeats)
    seconds = cfg.measure_seconds / 10 if cfg.quick else max(cfg.measure_seconds, EPOCH_MEASURE_SECONDS)
    impls, skipped = {}, {}

    def add(name: str, make: Callable[[], Impl]):
        try:
            impls[name] = make()
        except Exception as err:
            skipped[name] = f"{type(err).__name__}: {err}"

    updates_per_epoch = build_rows(case, dtype, cfg.seed, add, skipped, with_jax=cfg.jax)
    max_epochs = 1_000_000
    chunk, _ = _calibrate_all(impls, skipped, device, seconds, max_epochs)
    cpu_times = {}
    times = measure(impls, repeats, chunk, device, max_epochs, cpu_times)
    rows = rows_of(impls, times, chunk, updates_per_epoch, "trainer-default", cpu_times)
    default = rows.get("trainer-default", {}).get("median_us")
    rows.update(floor_rows(case_macs(case, dtype, cfg.seed), peak, default, updates_per_epoch,
                           training_row=case.name == "S", fma=fma))
    if case.name == "S" and tanh_ns is not None:
        data = epoch_data(case, dtype, cfg.seed)
        bound = kernel_bound(case.sizes, data.x_train.shape[0], data.x_test.shape[0],
                             (fma or peak)["gflops"], tanh_ns, "the CPU's multiply-add rate" if fma else
                             "the peak SGEMM rate")
        rows[KERNEL_BOUND] = computed_row(bound["us"], bound["note"], default, updates_per_epoch, macs=bound["macs"],
                                          tanh_evaluations=bound["tanh_evaluations"])
    return {"case": case.name, "sizes": case.sizes, "activation": case.activation,
            "output_activation": case.output_activation, "loss": case.loss, "mode": case.mode, "lr": case.lr,
            "data": case.data, "note": case.note, "device": "cpu", "dtype": str(dtype).replace("torch.", ""),
            "updates_per_epoch": updates_per_epoch, "repeats": repeats, "implementations": rows,
            "skipped": skipped}


if __name__ == "__main__":
    sys.exit(main())
