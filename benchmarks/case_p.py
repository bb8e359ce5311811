"""Case P (issue 19): 1024 XOR nets, float64, online, through the default population engine, the whole run timed.

    python -m benchmarks.bench --cases P --threads 1

One measurement is a whole ``PopulationTrainer.run`` as a user starts it: the Population built (weights drawn from
1024 seeds), the trainer built (sample orders, the engine's set-up or compilation) and EPOCHS epochs run, every
member's evaluation and stopping rules included. The figure is nanoseconds per member-update, the run's wall (and
process CPU) time over K x epochs x 4 updates; the target is 25 ns or less. The engine is the default (no engine
argument), whatever that is in this version; the row says which engine ran. Repeats are timed one after another,
and the median is the figure.
"""

from __future__ import annotations

import statistics
import time

import torch

from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationTrainer

K = 1024
EPOCHS = 500
LRS = [0.5, 1.0, 2.0, 4.0]  # member i gets LRS[i % 4]: members that succeed, stall and saturate alike
TARGET_NS = 25.0


def one_run(epochs: int, k: int = K, **trainer_kw) -> tuple:
    """(wall seconds, process CPU seconds, member-updates, the trainer) of one whole run."""
    data = load_dataset("xor", dtype=torch.float64)
    start, cpu = time.perf_counter(), time.process_time()
    pop = Population([2, 2, 1], seeds=list(range(k)), dtype=torch.float64)
    trainer = PopulationTrainer(pop, data, mode="online", lr=[LRS[i % len(LRS)] for i in range(k)], epochs=epochs,
                                **trainer_kw)
    history = trainer.run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    # lockstep member-updates: every member's slot of every update the run made (history.updates: per member)
    return wall, cpu, k * int(history.updates[-1]), trainer


def run_case_p(repeats: int, epochs: int = EPOCHS, k: int = K) -> dict:
    """The P case's one row (the default engine), with every repeat's figures."""
    one_run(2, k)  # untimed: first-call allocations, imports, a compiled engine's cache
    walls, cpus, engine, member_updates = [], [], None, None
    for _ in range(repeats):
        wall, cpu, member_updates, trainer = one_run(epochs, k)
        walls.append(wall / member_updates * 1e9)
        cpus.append(cpu / member_updates * 1e9)
        engine = getattr(trainer, "engine", None)
    ns = statistics.median(walls)
    row = {"ns_per_member_update": ns, "cpu_ns_per_member_update": statistics.median(cpus),
           "min_ns": min(walls), "times_ns": walls, "cpu_times_ns": cpus, "engine": engine,
           "run_seconds": statistics.median(walls) * member_updates / 1e9,
           "granularity": f"one PopulationTrainer.run of {epochs} epochs per measurement (construction included); "
                          f"{k} members x 4 updates an epoch",
           "member_updates": member_updates}
    met = ns <= TARGET_NS
    return {"case": "P", "K": k, "sizes": [2, 2, 1], "dtype": "float64", "mode": "online", "epochs": epochs,
            "repeats": repeats, "implementations": {"population-default": row},
            "target": {"target": f"P: default population engine at most {TARGET_NS:g} ns per member-update, "
                                  f"whole run", "status": "met" if met else "not met", "met": met,
                       "detail": f"{ns:.1f} ns per member-update wall, {row['cpu_ns_per_member_update']:.1f} ns "
                                 f"process CPU ({'met' if row['cpu_ns_per_member_update'] <= TARGET_NS else 'not met'}"
                                 f" on CPU time; engine {engine!r}, K={k}, {epochs} epochs, construction included)"}}
