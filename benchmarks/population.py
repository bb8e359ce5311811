"""Benchmark: K XOR networks trained in lockstep as one Population vs the same K runs one at a time.

    python -m benchmarks.population                       # K = 1024, online, 200 epochs, eager + compiled
    python -m benchmarks.population --engines eager --dtypes float32 float64
    python -m benchmarks.population --device cuda --engines eager cuda_graph
    python -m benchmarks.population --quick               # a few seconds: what the tests run

The figure of merit is the cost of one member-update: the seconds of the lockstep run divided by K times the
updates each member makes. It includes everything a run does: drawing each member's sample order, gathering its
samples, the forward and backward phases and the update, the end-of-epoch evaluation, the divergence/target
bookkeeping and the once-an-epoch read-back. The sequential baseline trains members one after another with
``Trainer`` (the project's single-run path, evaluation included) and with a bare loop of
``loss_and_gradients`` + ``update`` (no evaluation, no bookkeeping: the least a single run costs here). The
sequential runs are timed on the first ``--sequential-runs`` members and extrapolated to K (per update, the cost
of a run does not depend on which member it is); the table says so. Every ratio is taken within one process run.

``--epochs-per-call E ...`` adds rows for the compiled engine's epoch function with E epochs unrolled into one
torch.compile'd call (benchmark only: the library compiles one epoch per call). Those rows draw and gather the
samples and read the results back once per call, but skip PopulationTrainer's per-epoch Python (history rows,
messages); in float64 their parameters are checked against the eager engine's after as many epochs.

The timed sequential runs also serve as a check: they must end with the parameters of the same members of the
population (norm-relative error, reported as ``check``).

Threads: by default torch uses one thread (``--threads``): a lockstep update is a few dozen small kernels, which
gain nothing from a second thread, and on a shared 2-core machine an OpenMP team waiting for a busy core makes them
many times slower. For scale: issue 6 quotes about 60 ns per update for a compiled single-run JAX loop (not
measured here) and aims below 50 ns per member-update.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments.common import (DTYPES, Column, at_least, check_config, format_table, option, parse_config,
                                run_main)
from manual_backprop.datasets import load_dataset
from manual_backprop.losses import get_loss
from manual_backprop.checks import resolve_device
from manual_backprop.network import MLP, loss_and_gradients, update
from manual_backprop.population import ENGINES, Population, PopulationTrainer
from manual_backprop.training import MODES, Trainer
from manual_backprop.checkpoint import write_json
from reference.compare import norm_relative_error


@dataclass
class Config:
    K: int = option(1024, help="members of the population", check=at_least(1))
    sizes: list[int] = option([2, 2, 1], help="layer widths; the default is the lecture's XOR network")
    mode: str = option("online", help="learning mode; online makes the most, and smallest, updates", choices=MODES)
    epochs: int = option(200, help="timed epochs (each member makes epochs * 4 updates on XOR)", check=at_least(1))
    warmup_epochs: int = option(3, help="untimed epochs first (allocations; compilation for the compiled engine)",
                                check=at_least(0))
    lrs: list[float] = option([0.5, 1.0, 2.0, 4.0], help="member i gets lrs[i % len(lrs)]")
    engines: Optional[list[str]] = option(None, choices=ENGINES,
                                          help="population engines to time (default: eager and, where a C++ "
                                               "compiler exists, compiled; cuda_graph on CUDA)")
    dtypes: list[str] = option(["float64"], help="each dtype is timed on its own", choices=DTYPES)
    device: str = option("cpu", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    threads: int = option(1, help="torch.set_num_threads; 0 leaves torch's default")
    sequential_runs: int = option(8, help="members also trained one at a time, timed and extrapolated to K",
                                  check=at_least(1))
    epochs_per_call: list[int] = option([0], help="also time the compiled engine's epoch function with E epochs "
                                                  "unrolled into one torch.compile'd call, for each E (0: none; "
                                                  "benchmark only: PopulationTrainer compiles one epoch per call)",
                                        check=lambda v: None if all(e >= 0 for e in v) else "must all be >= 0")
    out: str = option("runs/bench_population.json", help="JSON file to write")
    quick: bool = option(False, help="K 64, 10 epochs, 2 sequential runs, eager only")


def parse_args(argv=None) -> Config:
    cfg = parse_config(Config, argv, prog="python -m benchmarks.population", description=__doc__)
    if cfg.quick:
        cfg.K, cfg.epochs, cfg.warmup_epochs, cfg.sequential_runs = 64, 10, 1, 2
        cfg.engines = cfg.engines or ["eager"]
    return cfg


def default_engines(device: torch.device) -> list:
    if device.type == "cuda":
        return ["eager", "cuda_graph"]
    has_compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("cc")
    return ["eager", "compiled"] if has_compiler else ["eager"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_population(cfg: Config, data, dtype, device, engine: str) -> dict:
    """Seconds of ``epochs`` lockstep epochs after ``warmup_epochs`` untimed ones."""
    seeds = list(range(cfg.K))
    lrs = [cfg.lrs[i % len(cfg.lrs)] for i in range(cfg.K)]
    pop = Population(cfg.sizes, seeds=seeds, dtype=dtype, device=device)
    trainer = PopulationTrainer(pop, data, mode=cfg.mode, lr=lrs, epochs=cfg.warmup_epochs, engine=engine,
                                batch_size=2 if cfg.mode == "minibatch" else None)
    start = time.perf_counter()
    trainer.run()
    warmup = time.perf_counter() - start
    trainer.epochs = cfg.warmup_epochs + cfg.epochs
    _sync(device)
    start = time.perf_counter()
    trainer.run()
    _sync(device)
    seconds = time.perf_counter() - start
    updates = cfg.epochs * len(trainer.chunks)  # per member
    return {"engine": engine, "dtype": str(dtype).replace("torch.", ""), "K": cfg.K, "updates_per_member": updates,
            "seconds": seconds, "warmup_seconds": warmup,
            "ns_per_member_update": seconds / (cfg.K * updates) * 1e9, "population": pop}


def time_compiled_block(cfg: Config, data, dtype, device, E: int) -> dict:
    """The compiled engine's epoch function (PopulationTrainer's ``_fn``) with E epochs unrolled into one
    torch.compile'd call: what several epochs per compiled call would gain (benchmark only; the library compiles
    one epoch per call).

    Each call draws and gathers its E epochs' sample orders, runs them, and reads back their update losses,
    figures and masks in one transfer, as the trainer does once an epoch; the per-epoch Python of
    PopulationTrainer (history rows, divergence messages, the logger) is not run. The first call (compilation) is
    the warm-up; then ceil(epochs / E) calls are timed. Returns the figures and the population, for the check.
    """
    seeds = list(range(cfg.K))
    lrs = [cfg.lrs[i % len(cfg.lrs)] for i in range(cfg.K)]
    calls = -(-cfg.epochs // E)
    pop = Population(cfg.sizes, seeds=seeds, dtype=dtype, device=device)
    trainer = PopulationTrainer(pop, data, mode=cfg.mode, lr=lrs, epochs=(calls + 1) * E, engine="eager",
                                batch_size=2 if cfg.mode == "minibatch" else None)
    fn, K = trainer._fn, cfg.K

    def block(weights, biases, good_w, good_b, active, xs, ys):  # xs (E, K, S, n_0), ys (E, K, S, n_L)
        outs = [fn(weights, biases, good_w, good_b, active, xs[e], ys[e]) for e in range(E)]
        return tuple(torch.stack([o[i] for o in outs]) for i in range(4))

    compiled = torch.compile(block, dynamic=False)
    args = (pop.weights, pop.biases, trainer.good_w, trainer.good_b, trainer.active)

    def one_call():
        if trainer.orders is None:  # batch mode: every member sees all samples
            xs = trainer.x_train.expand(E, K, -1, -1)
            ys = trainer.y_train.expand(E, K, -1, -1)
        else:
            order = trainer.orders.epochs(E).to(device)  # (E, K, S)
            xs, ys = trainer.x_train[order].contiguous(), trainer.y_train[order].contiguous()
        outputs = compiled(*args, xs, ys)
        torch.cat([o.flatten().to(torch.float64) for o in outputs]).cpu()  # the one read-back

    with torch.no_grad():
        start = time.perf_counter()
        one_call()
        warmup = time.perf_counter() - start
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            one_call()
        _sync(device)
        seconds = time.perf_counter() - start
    updates = calls * E * len(trainer.chunks)  # per member
    return {"engine": f"compiled, {E} epochs/call", "dtype": str(dtype).replace("torch.", ""), "K": cfg.K,
            "epochs_per_call": E, "updates_per_member": updates, "seconds": seconds, "warmup_seconds": warmup,
            "ns_per_member_update": seconds / (cfg.K * updates) * 1e9, "population": pop,
            "epochs_run": (calls + 1) * E, "benchmark_only": True}


def block_check(cfg: Config, data, dtype, device, case: dict) -> float:
    """Max norm-relative error between the E-epoch block's population and the library's eager engine run for as
    many epochs (float64: the same updates, so they agree to rounding)."""
    pop = Population(cfg.sizes, seeds=list(range(cfg.K)), dtype=dtype, device=device)
    PopulationTrainer(pop, data, mode=cfg.mode, lr=[cfg.lrs[i % len(cfg.lrs)] for i in range(cfg.K)],
                      epochs=case["epochs_run"], engine="eager",
                      batch_size=2 if cfg.mode == "minibatch" else None).run()
    block = case["population"]
    return max(norm_relative_error(a, b) for a, b in zip(block.weights + block.biases, pop.weights + pop.biases))


def time_sequential(cfg: Config, data, dtype, device) -> dict:
    """The first ``sequential_runs`` members, one after another: with Trainer, and as a bare update loop."""
    n = min(cfg.sequential_runs, cfg.K)
    batch_size = 2 if cfg.mode == "minibatch" else None
    total_epochs = cfg.warmup_epochs + cfg.epochs
    nets, trainer_seconds, updates = [], 0.0, 0
    for i in range(n):
        net = MLP(cfg.sizes, seed=i, dtype=dtype, device=device)
        trainer = Trainer(net, data, mode=cfg.mode, lr=cfg.lrs[i % len(cfg.lrs)], epochs=total_epochs, seed=i,
                          batch_size=batch_size)
        _sync(device)
        start = time.perf_counter()
        trainer.run()
        _sync(device)
        trainer_seconds += time.perf_counter() - start
        updates += trainer.updates
        nets.append(net)
    # The bare loop: the same updates in the same order, without evaluation or bookkeeping.
    bare_seconds, bare_updates = 0.0, 0
    loss_fn = get_loss("squared_error")
    for i in range(n):
        net = MLP(cfg.sizes, seed=i, dtype=dtype, device=device)
        order_source = Trainer(net, data, mode=cfg.mode, lr=1.0, epochs=1, seed=i, batch_size=batch_size)
        x, y = order_source.x_train, order_source.y_train
        epochs = [order_source.batches() for _ in range(total_epochs)]
        lr = cfg.lrs[i % len(cfg.lrs)]
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for batches in epochs:
                for idx in batches:
                    xb = x if idx is None else x.index_select(0, idx)
                    yb = y if idx is None else y.index_select(0, idx)
                    _, grads = loss_and_gradients(net, xb, yb, loss_fn)
                    update(net.weights, net.biases, grads, lr)
                    bare_updates += 1
        _sync(device)
        bare_seconds += time.perf_counter() - start
    return {"runs_timed": n, "extrapolated_to": cfg.K, "updates": updates,
            "trainer_seconds": trainer_seconds, "ns_per_update": trainer_seconds / updates * 1e9,
            "bare_seconds": bare_seconds, "bare_ns_per_update": bare_seconds / bare_updates * 1e9,
            "extrapolated_seconds_for_K": trainer_seconds / n * cfg.K, "nets": nets}


def run(cfg: Config) -> dict:
    check_config(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    engines = cfg.engines or default_engines(device)
    cases, sequential, check = [], {}, {"max_norm_relative_error": 0.0, "members_checked": 0}
    for dtype_name in cfg.dtypes:
        dtype = getattr(torch, dtype_name)
        data = load_dataset("xor", dtype=dtype)
        seq = time_sequential(cfg, data, dtype, device)
        for engine in engines:
            case = time_population(cfg, data, dtype, device, engine)
            pop = case.pop("population")
            case["speedup_vs_sequential_trainer"] = seq["ns_per_update"] / case["ns_per_member_update"]
            case["speedup_vs_sequential_bare"] = seq["bare_ns_per_update"] / case["ns_per_member_update"]
            cases.append(case)
            if engine == "compiled":
                for E in [e for e in cfg.epochs_per_call if e > 0]:
                    block = time_compiled_block(cfg, data, dtype, device, E)
                    block["speedup_vs_sequential_trainer"] = seq["ns_per_update"] / block["ns_per_member_update"]
                    block["speedup_vs_sequential_bare"] = seq["bare_ns_per_update"] / block["ns_per_member_update"]
                    if dtype == torch.float64:
                        block["check_vs_eager"] = block_check(cfg, data, dtype, device, block)
                    block.pop("population")
                    cases.append(block)
            if dtype == torch.float64:  # the timed runs are the same runs
                for i, net in enumerate(seq["nets"]):
                    member = pop.member(i)
                    for key, value in net.state_dict().items():
                        err = norm_relative_error(member.state_dict()[key], value)
                        check["max_norm_relative_error"] = max(check["max_norm_relative_error"], err)
                    check["members_checked"] += 1
        seq.pop("nets")
        sequential[dtype_name] = seq
    result = {"config": asdict(cfg), "engines": engines, "device": str(device),
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()},
              "cases": cases, "sequential": sequential[cfg.dtypes[0]], "sequential_by_dtype": sequential,
              "check": check}
    write_json(result, Path(cfg.out))
    print(table(result, cfg))
    print(f"\nwritten to {cfg.out}")
    return result


COLUMNS = [Column("case", 40, "<"), Column("K", 6), Column("updates", 8), Column("seconds", 8, spec=".2f"),
           Column("ns per member-update", 21), Column("speedup", 8, spec=".1f")]


def table(result: dict, cfg: Config) -> str:
    rows = []
    for dtype_name, seq in result["sequential_by_dtype"].items():
        rows.append([f"sequential Trainer {dtype_name}", seq["runs_timed"], seq["updates"], seq["trainer_seconds"],
                     f"{seq['ns_per_update']:.0f}", 1.0])
        rows.append([f"sequential bare loop {dtype_name}", seq["runs_timed"], seq["updates"], seq["bare_seconds"],
                     f"{seq['bare_ns_per_update']:.0f}", seq["ns_per_update"] / seq["bare_ns_per_update"]])
        rows += [[f"population {c['engine']} {dtype_name}", c["K"], c["K"] * c["updates_per_member"], c["seconds"],
                  f"{c['ns_per_member_update']:.1f}", c["speedup_vs_sequential_trainer"]]
                 for c in result["cases"] if c["dtype"] == dtype_name]
    seq = result["sequential"]
    return "\n".join([
        f"XOR {cfg.sizes} {cfg.mode}, {cfg.epochs} epochs, device {result['device']}, "
        f"{result['machine']['threads']} thread(s), torch {result['machine']['torch']}",
        format_table(COLUMNS, rows),
        f"sequential rows: {seq['runs_timed']} runs timed, per-update cost extrapolated to K = "
        f"{seq['extrapolated_to']} ({seq['extrapolated_seconds_for_K']:.1f} s for all K with Trainer); "
        f"speedup = sequential Trainer ns per update / this row's",
        (f"check: {result['check']['members_checked']} timed single runs vs their population members, "
         f"max norm-relative error {result['check']['max_norm_relative_error']:.1e}"
         if result['check']['members_checked'] else
         "check: not made (the timed single runs are compared with their members in float64 only)")] + [
        f"{c['engine']} ({c['dtype']}): benchmark only, E epochs unrolled into one compiled call, no per-epoch "
        f"Python; compilation {c['warmup_seconds']:.0f} s"
        + (f"; vs the eager engine after {c['epochs_run']} epochs: max norm-relative error "
           f"{c['check_vs_eager']:.1e}" if "check_vs_eager" in c else "")
        for c in result["cases"] if c.get("benchmark_only")])


def main(argv=None) -> int:
    # RuntimeError too: an engine that cannot run here (torch.compile without a working compiler, say)
    return run_main("bench_population", parse_args, run, argv, errors=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
