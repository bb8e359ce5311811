"""The GPU check: everything this project claims on CUDA, in one command, in under 8 minutes on one GPU.

    python -m benchmarks.gpu_check                              # on a CUDA machine
    python -m benchmarks.gpu_check --out bench_results/gpu_check.json
    python -m benchmarks.gpu_check --cpu-dry-run                # without CUDA: the same steps, tiny, on the CPU

Steps, each a subprocess with its own timeout (a hang costs its step, never the whole check; the timeouts share
a budget of 450 s, so the whole check ends within it):

    tests       python -m pytest -m cuda tests: every CUDA test (tests/test_cuda_paths.py, the CUDA tests of
                tests/test_update_proof.py and the CUDA parametrizations of the other files)
    check64     manual-backprop check --device cuda --dtype float64: the manual network against autograd and
                finite differences, layer by layer, and (--paths all, its default on CUDA) one update through
                every fast path and population engine against network.py's
    check32     the same in float32
    bench       python -m benchmarks.bench --device cuda --no-jax: the update-level cases on CUDA (the fused
                step, the CUDA graphs timed on whole replays with their memory pool, autograd, numpy, the
                matrix-product floor); JAX is left out here, its compilations would not fit the time
    population  python -m benchmarks.population --device cuda: K = 1024 XOR nets online in lockstep (eager
                and CUDA-graph engines) against the same runs one at a time

It writes one JSON summary (every step's command, exit status, seconds and output tail, the figures read from the
steps' own JSON, and the GPU targets as met / not met / n/a) to --out, and prints a short table. Targets (issue
11): the population at least 4000x faster than sequential single runs; the CUDA-graph online XOR update at 3 us
or less. Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 without CUDA (one line
says so) or on a bad flag.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments.common import Column, finite_positive, format_table, option, parse_config, run_main

EXPERIMENT = "gpu_check"
STEPS = ("tests", "check64", "check32", "bench", "population")
# The whole check's budget in seconds: under the 8-minute promise (480 s), with room for start-up and the summary.
BUDGET = 450
# Each step's timeout: at most its cap, and never so long that the steps after it lose their reserve; a step that
# finishes early leaves its time to the next (check --paths all compiles the population engine on CUDA).
CAPS = {"tests": 170, "check64": 75, "check32": 75, "bench": 150, "population": 90}
RESERVES = {"tests": 60, "check64": 30, "check32": 30, "bench": 70, "population": 30}


def step_timeout(name: str, later: list, elapsed: float, scale: float = 1.0) -> float:
    """The timeout of step ``name`` when ``elapsed`` seconds are spent and the steps ``later`` are still to run."""
    left = BUDGET * scale - elapsed - sum(RESERVES[s] * scale for s in later)
    return max(RESERVES[name] * scale / 2, min(CAPS[name] * scale, left))
POPULATION_SPEEDUP_TARGET = 4000.0
GRAPH_UPDATE_TARGET_US = 3.0


@dataclass
class Config:
    out: str = option("bench_results/gpu_check.json", help="the JSON summary (the steps' own JSON files go beside it)")
    cpu_dry_run: bool = option(False, help="without CUDA: run every step on the CPU, shrunk to seconds, to test this "
                                           "command itself (its figures say nothing about a GPU)")
    steps: list[str] = option(list(STEPS), choices=STEPS, help="which steps to run")
    timeout_scale: float = option(1.0, help="multiplies the budget and every step's timeout", check=finite_positive)
    quiet: bool = option(False, help="no progress lines and no table")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m benchmarks.gpu_check", description=__doc__)


def step_commands(cfg: Config, folder: Path) -> dict:
    """{step: argv} for this machine: CUDA, or the CPU dry run (the same commands, shrunk)."""
    py = sys.executable
    dry = cfg.cpu_dry_run
    device = "cpu" if dry else "cuda"
    tests = [py, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"]
    if not dry and _has_module("pytest_timeout"):
        tests += ["--timeout", "120"]  # one hung test fails alone instead of eating the step
    if not dry and _has_module("xdist"):
        tests += ["-n", "4"]  # about 2,600 small CUDA tests: four processes share the GPU
    tests += ["tests/test_cuda_paths.py", "tests/test_update_proof.py"] if dry else ["tests"]
    check = [py, "-m", "commands.cli", "check", "--device", device]
    if dry:
        check += ["--sizes", "3", "4", "2", "--batch", "4"]
    bench = [py, "-m", "benchmarks.bench", "--device", device, "--no-population", "--no-jax", "--quiet",
             "--out", str(folder / "gpu_bench.json")]
    bench += (["--quick", "--cases", "online_tiny", "--repeats", "2", "--measure-seconds", "0.01"] if dry
              else ["--cases", "online_tiny", "online_small", "minibatch_small", "medium", "large",
                    "--repeats", "9", "--measure-seconds", "0.02"])
    population = [py, "-m", "benchmarks.population", "--device", device, "--dtypes", "float32", "float64",
                  "--out", str(folder / "gpu_population.json")]
    if dry:
        population += ["--K", "8", "--epochs", "2", "--warmup-epochs", "1", "--sequential-runs", "1",
                       "--engines", "eager"]
    return {"tests": tests, "check64": check + ["--dtype", "float64"], "check32": check + ["--dtype", "float32"],
            "bench": bench, "population": population}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def run_step(name: str, argv: list, timeout: float, quiet: bool) -> dict:
    """Run one step as a subprocess in the repository root; never raises for the step's own failure."""
    if not quiet:
        print(f"[gpu_check] {name}: {' '.join(argv[1:])} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True,
                              text=True, timeout=timeout)
        rc, output, timed_out = proc.returncode, proc.stdout + proc.stderr, False
    except subprocess.TimeoutExpired as err:
        out = err.stdout or b""
        output = (out.decode(errors="replace") if isinstance(out, bytes) else out)
        rc, timed_out = None, True
    seconds = time.perf_counter() - start
    status = "timed out" if timed_out else ("passed" if rc == 0 else "failed")
    return {"step": name, "command": " ".join(["python"] + argv[1:]), "rc": rc, "status": status,
            "seconds": round(seconds, 2), "timeout": timeout, "tail": output[-4000:]}


def pytest_counts(output: str) -> dict:
    """The counts of pytest's last summary line: {"passed": 12, "skipped": 3, ...}."""
    counts = {}
    for line in reversed(output.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", line)
        if found:
            for n, what in found:
                counts["errors" if what.startswith("error") else what] = int(n)
            break
    return counts


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def figures(cfg: Config, folder: Path, steps: dict) -> tuple:
    """(figures, targets): what the bench and population steps measured, and the GPU targets judged on it."""
    figs, targets = {}, []
    bench = _read_json(folder / "gpu_bench.json") if "bench" in steps else None
    graph_us = None
    if bench is not None:
        for r in bench["results"]:
            rows = {n: {k: row.get(k) for k in ("median_us", "ratio_to_manual", "peak_cuda_bytes",
                                                 "cuda_graph_pool_bytes", "note")}
                    for n, row in r["implementations"].items()}
            figs[f"bench/{r['case']}"] = {"device": r["device"], "manual_path": r["manual_path"], "rows": rows,
                                          "skipped": r["skipped"]}
            if r["case"] == "online_tiny":
                name = "manual" if r["manual_path"] == "cuda_graph" else "manual-cuda_graph"
                if name in r["implementations"] and r["device"].startswith("cuda"):
                    graph_us = r["implementations"][name]["median_us"]
        figs["bench/targets"] = bench.get("targets")
    if graph_us is None:
        targets.append({"target": f"CUDA-graph online XOR update at {GRAPH_UPDATE_TARGET_US:g} us or less",
                        "status": "n/a", "detail": "not measured" + (" (CPU dry run)" if cfg.cpu_dry_run else "")})
    else:
        targets.append({"target": f"CUDA-graph online XOR update at {GRAPH_UPDATE_TARGET_US:g} us or less",
                        "status": "met" if graph_us <= GRAPH_UPDATE_TARGET_US else "not met",
                        "detail": f"{graph_us:.2f} us per update (graphs of 64 updates, replayed)"})
    pop = _read_json(folder / "gpu_population.json") if "population" in steps else None
    best = None
    if pop is not None:
        figs["population"] = {"device": pop["device"], "cases": pop["cases"], "sequential": pop["sequential_by_dtype"],
                              "check": pop["check"]}
        for c in pop["cases"]:
            if best is None or c["speedup_vs_sequential_trainer"] > best["speedup_vs_sequential_trainer"]:
                best = c
    target = f"population at least {POPULATION_SPEEDUP_TARGET:g}x faster than sequential single runs"
    if best is None or cfg.cpu_dry_run:
        targets.append({"target": target, "status": "n/a",
                        "detail": "not measured" + (" (CPU dry run)" if cfg.cpu_dry_run else "")})
    else:
        s = best["speedup_vs_sequential_trainer"]
        targets.append({"target": target, "status": "met" if s >= POPULATION_SPEEDUP_TARGET else "not met",
                        "detail": f"{s:.0f}x ({best['engine']} {best['dtype']}, K={best['K']}: "
                                  f"{best['ns_per_member_update']:.1f} ns per member-update vs the sequential "
                                  f"Trainer)"})
    return figs, targets


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:
        info["jax"] = None
    return info


STEP_COLUMNS = [Column("step", align="<"), Column("status", align="<"), Column("seconds", spec=".1f"),
                Column("result", align="<")]
TARGET_COLUMNS = [Column("GPU target", align="<"), Column("status", align="<"), Column("figures", align="<")]


def summary_table(report: dict) -> str:
    rows = []
    for s in report["steps"]:
        result = ""
        if s["step"] == "tests":
            result = ", ".join(f"{n} {k}" for k, n in s.get("counts", {}).items())
        elif s["step"].startswith("check"):
            result = {0: "agrees", 1: "DISAGREES", 2: "bad input"}.get(s["rc"], "")
        rows.append([s["step"], s["status"], s["seconds"], result])
    return (format_table(STEP_COLUMNS, rows) + "\n\n"
            + format_table(TARGET_COLUMNS, [[t["target"], t["status"], t["detail"]] for t in report["targets"]]))


def run(cfg: Config) -> int:
    if not torch.cuda.is_available() and not cfg.cpu_dry_run:
        print("gpu_check: CUDA is not available on this machine; nothing checked (run it on a GPU machine, or "
              "--cpu-dry-run to test the command itself)", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commands = step_commands(cfg, out.parent)
    start = time.perf_counter()
    steps = {}
    for i, name in enumerate(cfg.steps):
        timeout = step_timeout(name, cfg.steps[i + 1:], time.perf_counter() - start, cfg.timeout_scale)
        step = run_step(name, commands[name], timeout, cfg.quiet)
        if name == "tests":
            step["counts"] = pytest_counts(step["tail"])
        steps[name] = step
    figs, targets = figures(cfg, out.parent, steps)
    report = {"experiment": EXPERIMENT, "config": asdict(cfg), "dry_run": cfg.cpu_dry_run, "machine": machine(),
              "total_seconds": round(time.perf_counter() - start, 1), "steps": list(steps.values()),
              "figures": figs, "targets": targets}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    if not cfg.quiet:
        print(summary_table(report))
        print(f"\ntotal {report['total_seconds']:.0f} s; written: {out}")
    return 0 if all(s["status"] == "passed" for s in steps.values()) else 1


def main(argv=None) -> int:
    finished = {}

    def go(cfg):
        finished["status"] = run(cfg)

    return run_main(EXPERIMENT, parse_args, go, argv) or finished.get("status", 0)


if __name__ == "__main__":
    sys.exit(main())
