"""The GPU check: everything this project claims on CUDA, in one command, well inside 8 minutes on one GPU.

    PYTHONPATH=. python3 -m benchmarks.gpu_check --out gpu_check       # on the GPU machine, from the checkout
    python -m benchmarks.gpu_check --cpu-dry-run --out /tmp/dry        # here: the same steps, files and budget

It needs nothing installed beyond torch, numpy and pytest (no mnist1d, no C compiler: without one the C loop falls
back to the fused path, and the environment record says so). Steps, each a subprocess in its own session
(process group), killed as a group when its time is up, so torchrun ranks and compile workers never run on into the
next step; the steps' timeouts share one budget of BUDGET seconds:

    environment python -m benchmarks.gpu_env: GPU, driver, torch, CUDA, cuDNN, NCCL, triton, compiler, packages
    tests       python -m pytest -m cuda tests --junitxml: every CUDA test (tests/proof/test_cuda_paths.py, the
                CUDA tests of the update proof and the CUDA parametrizations of the other files)
    check64     manual-backprop check --device cuda --dtype float64 --paths all: the manual network against
                autograd and finite differences, then one update through every fast path and population engine,
                each path its own row (agrees / disagrees / error: the reason)
    check32     the same in float32
    bench       python -m benchmarks.bench --device cuda: the update-level cases (the fused step, the CUDA graphs
                timed on whole replays with their pool, autograd, numpy)
    population  python -m benchmarks.population --device cuda: K = 1024 XOR nets online in lockstep

Everything goes into --out (a folder, relative to where the command is run): logs/<step>.log, each step's whole
stdout and stderr, never cut; gpu_check.json, rewritten after every step (a run cut short still says what it found
and which step was running); cuda_tests.xml (junit); environment.json; gpu_bench.json and gpu_population.json,
the steps' own figures. Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 without
CUDA (one line says so) or on a bad flag.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.gpu_figures import figures, summary_table
from experiments.common import finite_positive, option, parse_config, run_main
from manual_backprop.checkpoint import atomic_write

EXPERIMENT = "gpu_check"
ROOT = Path(__file__).resolve().parent.parent
STEPS = ("environment", "tests", "check64", "check32", "bench", "population")
# The whole check's budget in seconds: well under the 8-minute promise (480 s), with room for start-up.
BUDGET = 420
# Each step's timeout: at most its cap, and never so long that the steps after it lose their reserve; a step that
# finishes early leaves its time to the next. The CUDA tests are expected to take 90-150 s; check --paths all
# compiles the population engine (triton on CUDA); the environment step builds the C loop once.
CAPS = {"environment": 60, "tests": 200, "check64": 90, "check32": 90, "bench": 100, "population": 80}
RESERVES = {"environment": 20, "tests": 90, "check64": 30, "check32": 30, "bench": 40, "population": 30}
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL to a step's process group
SUMMARY = "gpu_check.json"


def step_timeout(name: str, later: list, elapsed: float, scale: float = 1.0) -> float:
    """The timeout of step ``name`` when ``elapsed`` seconds are spent and the steps ``later`` are still to run."""
    left = BUDGET * scale - elapsed - sum(RESERVES[s] * scale for s in later)
    return max(RESERVES[name] * scale / 2, min(CAPS[name] * scale, left))


@dataclass
class Config:
    out: str = option("gpu_check", help="folder for every file the check writes (relative to the current folder)")
    cpu_dry_run: bool = option(False, help="without CUDA: run every step on the CPU, shrunk, to test this command "
                                           "itself (its figures say nothing about a GPU)")
    steps: list[str] = option(list(STEPS), choices=STEPS, help="which steps to run")
    timeout_scale: float = option(1.0, help="multiplies the budget and every step's timeout", check=finite_positive)
    quiet: bool = option(False, help="no progress lines and no table")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m benchmarks.gpu_check", description=__doc__)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def step_commands(cfg: Config, folder: Path) -> dict:
    """{step: argv} for this machine: CUDA, or the CPU dry run (the same commands, shrunk). Every path is absolute,
    inside ``folder``."""
    py = sys.executable
    dry = cfg.cpu_dry_run
    device = "cpu" if dry else "cuda"
    tests = [py, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
             f"--junitxml={folder / 'cuda_tests.xml'}", "-o", "junit_family=xunit2"]
    if not dry and _has_module("pytest_timeout"):
        tests += ["--timeout", "120"]  # one hung test fails alone instead of eating the step
    tests += ["tests/proof/test_cuda_paths.py", "tests/proof/test_update_proof.py"] if dry else ["tests"]
    check = [py, "-m", "commands.cli", "check", "--device", device, "--paths", "all"]
    if dry:
        check += ["--sizes", "3", "4", "2", "--batch", "4"]
    bench = [py, "-m", "benchmarks.bench", "--device", device, "--no-population", "--no-jax", "--quiet",
             "--out", str(folder / "gpu_bench.json")]
    bench += (["--quick", "--cases", "online_tiny", "--repeats", "2", "--measure-seconds", "0.01"] if dry
              else ["--cases", "online_tiny", "online_small", "minibatch_small", "medium", "large",
                    "--repeats", "7", "--measure-seconds", "0.02"])
    population = [py, "-m", "benchmarks.population", "--device", device, "--dtypes", "float32", "float64",
                  "--out", str(folder / "gpu_population.json")]
    if dry:
        population += ["--K", "8", "--epochs", "2", "--warmup-epochs", "1", "--sequential-runs", "1",
                       "--engines", "eager"]
    return {"environment": [py, "-m", "benchmarks.gpu_env", str(folder / "environment.json")], "tests": tests,
            "check64": check + ["--dtype", "float64"], "check32": check + ["--dtype", "float32"],
            "bench": bench, "population": population}


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's whole process group, then SIGKILL to whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if wait is not None:
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass


def run_step(name: str, argv: list, timeout: float, log: Path, quiet: bool = True) -> dict:
    """Run one step in its own session, its stdout and stderr streamed whole into ``log``; never raises for the
    step's own failure. What is left of its process group afterwards (a straggling worker) is killed too."""
    if not quiet:
        print(f"[gpu_check] {name}: {' '.join(argv[1:])} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(paths)}  # PYTHONPATH=., as there
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rc, timed_out, error = None, False, None
    with open(log, "wb") as f:  # noqa: SIM115 - a log, appended to by the child while it runs
        try:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as err:
            error = f"could not start: {err}"
        else:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            except BaseException:  # Ctrl-C or a kill of the check: the step's group goes with it
                _kill_group(proc)
                raise
            _kill_group(proc)
            if timed_out:
                rc = proc.wait()
    seconds = time.perf_counter() - start
    status = "error" if error else "timed out" if timed_out else ("passed" if rc == 0 else "failed")
    text = log.read_text(errors="replace")
    return {"step": name, "command": " ".join(["python"] + argv[1:]), "rc": None if timed_out else rc,
            "status": status, "seconds": round(seconds, 2), "timeout": round(timeout, 1), "log": str(log),
            "error": error, "tail": "\n".join(text.splitlines()[-30:])}


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


PATH_ROW = re.compile(r"^(\S+)\s.*?\s(agrees|disagrees|error: .*)$")


def path_rows(output: str) -> dict:
    """{path: "agrees" | "disagrees" | "error: reason"} from check's proof table."""
    rows, inside = {}, False
    for line in output.splitlines():
        if line.startswith("One update (lr"):
            inside = True
        elif inside and not line.startswith("path "):
            found = PATH_ROW.match(line.strip())
            if found:
                rows[found.group(1)] = found.group(2)
    return rows


def environment_summary(path: Path) -> str:
    """One line of what the machine has: GPU, torch, CUDA, NCCL, triton, and the compiler or its absence."""
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError):
        return "no environment.json"
    cuda = env.get("cuda", {})
    gpus = ", ".join(g["name"] for g in cuda.get("gpus", [])) or "no GPU"
    triton = env.get("packages", {}).get("triton", {})
    compiler = env.get("compiler", {})
    return (f"{gpus}; torch {env.get('torch')}, CUDA {cuda.get('torch_cuda')}, NCCL {cuda.get('nccl')}, triton "
            f"{triton.get('version') if triton.get('installed') else 'missing'}; "
            + (f"C compiler {compiler['path']}" if compiler.get("path") else
               "NO C compiler: the C loop falls back to the fused path"))


def write_summary(folder: Path, report: dict) -> None:
    atomic_write(folder / SUMMARY, lambda f: f.write(json.dumps(report, indent=2) + "\n"), binary=False)


def run(cfg: Config) -> int:
    if not torch.cuda.is_available() and not cfg.cpu_dry_run:
        print("gpu_check: CUDA is not available on this machine; nothing checked (run it on a GPU machine, or "
              "--cpu-dry-run to test the command itself)", file=sys.stderr)
        return 2
    folder = Path(cfg.out).expanduser().resolve()  # against the caller's folder, not the checkout
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {cfg.out}: expected a folder for the check's files, but it is a file")
    folder.mkdir(parents=True, exist_ok=True)
    commands = step_commands(cfg, folder)
    start = time.perf_counter()
    report = {"experiment": EXPERIMENT, "config": asdict(cfg), "dry_run": cfg.cpu_dry_run, "folder": str(folder),
              "budget_seconds": BUDGET * cfg.timeout_scale, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "finished": False, "running": None, "steps": [], "figures": {}, "targets": []}
    for i, name in enumerate(cfg.steps):
        timeout = step_timeout(name, cfg.steps[i + 1:], time.perf_counter() - start, cfg.timeout_scale)
        report["running"] = name
        report["total_seconds"] = round(time.perf_counter() - start, 1)
        write_summary(folder, report)
        step = run_step(name, commands[name], timeout, folder / "logs" / f"{name}.log", cfg.quiet)
        text = Path(step["log"]).read_text(errors="replace")
        if name == "tests":
            step["counts"] = pytest_counts(text)
            step["junit"] = str(folder / "cuda_tests.xml")
        elif name.startswith("check"):
            step["paths"] = path_rows(text)
        elif name == "environment":
            step["summary"] = environment_summary(folder / "environment.json")
        report["steps"].append(step)
        report["running"] = None
        report["figures"], report["targets"] = figures(cfg.cpu_dry_run, folder, [s["step"] for s in report["steps"]])
        report["total_seconds"] = round(time.perf_counter() - start, 1)
        write_summary(folder, report)
    report["finished"] = True
    write_summary(folder, report)
    if not cfg.quiet:
        print(summary_table(report))
        print(f"\ntotal {report['total_seconds']:.0f} s of a {BUDGET * cfg.timeout_scale:.0f} s budget; "
              f"everything is in {folder}")
    return 0 if all(s["status"] == "passed" for s in report["steps"]) else 1


def main(argv=None) -> int:
    finished = {}

    def go(cfg):
        finished["status"] = run(cfg)

    return run_main(EXPERIMENT, parse_args, go, argv) or finished.get("status", 0)


if __name__ == "__main__":
    sys.exit(main())
