"""Fault injection, bounded in time: a run killed at a random point resumes to the unbroken run's numbers, two runs
on one folder cannot both run, a folder that turns read-only mid-run loses nothing, a damaged checkpoint under
torchrun is one line on every rank.

Processes are started with the test's Python on tiny data (moons, a few epochs); every wait has a deadline.
"""

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from experiments.learning_modes import main
from experiments.sweep import main as main_sweep
from manual_backprop import checkpoint as checkpoint_module
from manual_backprop.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--dataset", "moons", "--n-samples", "80", "--sizes", "2", "8", "2", "--batch-size", "8", "--quiet",
         "--device", "cpu", "--dtype", "float64"]
# Long enough (a few seconds, most of it evaluation and logging) that a kill lands in the middle of the run.
LONGER = ["--dataset", "moons", "--n-samples", "200", "--sizes", "2", "8", "2", "--batch-size", "8", "--quiet",
          "--device", "cpu", "--dtype", "float64", "--epochs", "6", "--modes", "minibatch", "online"]
START_LIMIT_S = 60  # importing torch on a busy 2-core machine
FIGURES = ("epoch", "updates", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "stop_reason")


def start(args, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "experiments.learning_modes", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition, proc: subprocess.Popen, limit: float = START_LIMIT_S) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never got there (exit {proc.poll()})")
        time.sleep(0.02)


def figures(results: dict) -> dict:
    return {mode: {k: h[k] for k in FIGURES} for mode, h in results.items()}


def lock_holder(folder: Path) -> str:
    try:
        return (folder / ".lock").read_text().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------- kill and resume
def kill_at_random_point(args, logdir: Path, run: str, rng: random.Random) -> float:
    """Start the run, wait until it holds its folder, SIGKILL it a random moment later; returns the delay."""
    proc = start([*args, "--logdir", str(logdir), "--run", run], logdir / f"{run}.log")
    folder = logdir / "learning_modes" / run
    wait_for(lambda: lock_holder(folder) == str(proc.pid), proc)
    delay = rng.uniform(0.0, 1.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return delay


def test_a_run_killed_at_a_random_point_resumes_to_the_unbroken_result(tmp_path):
    rng = random.Random()
    assert main([*LONGER, "--logdir", str(tmp_path), "--run", "unbroken"]) == 0
    delay = kill_at_random_point(LONGER, tmp_path, "killed", rng)
    assert main([*LONGER, "--logdir", str(tmp_path), "--run", "killed", "--resume"]) == 0, f"killed at {delay:.2f} s"
    read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
    assert figures(read("killed")) == figures(read("unbroken")), f"killed {delay:.2f} s into training"


@pytest.mark.slow
def test_a_run_killed_again_and_again_resumes_to_the_unbroken_result(tmp_path):
    rng = random.Random()
    assert main([*LONGER, "--logdir", str(tmp_path), "--run", "unbroken"]) == 0
    delays = [kill_at_random_point(LONGER, tmp_path, "killed", rng)]
    for _ in range(3):  # each restart resumes (the process is started with --resume) and is killed again
        delays.append(kill_at_random_point([*LONGER, "--resume"], tmp_path, "killed", rng))
    assert main([*LONGER, "--logdir", str(tmp_path), "--run", "killed", "--resume"]) == 0, delays
    read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
    assert figures(read("killed")) == figures(read("unbroken")), delays


# ---------------------------------------------------------------------------------------------- two runs at once
def test_a_second_run_on_a_locked_folder_is_refused_and_the_lock_dies_with_its_process(tmp_path, capsys):
    # One mode and many epochs: the first run is still training (and writes no JSON) while the others are refused.
    # (With the fast paths as the default, 500 epochs of two modes can end within the test's window.)
    proc = start([*LONGER, "--epochs", "100000", "--modes", "minibatch", "--logdir", str(tmp_path), "--run", "shared"],
                 tmp_path / "first.log")
    folder = tmp_path / "learning_modes" / "shared"
    try:
        wait_for(lambda: lock_holder(folder) == str(proc.pid) and (folder / "minibatch" / "config.json").exists(),
                 proc)
        before = {p: p.read_bytes() for p in folder.rglob("*.json")}
        assert main([*SMALL, "--epochs", "1", "--logdir", str(tmp_path), "--run", "shared"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{folder} is in use by another run (process {proc.pid})" in err[0], err
        assert main([*SMALL, "--epochs", "1", "--logdir", str(tmp_path), "--run", "shared", "--resume"]) == 2
        assert "in use by another run" in capsys.readouterr().err
        assert {p: p.read_bytes() for p in folder.rglob("*.json")} == before, "the refused runs wrote nothing"
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # The operating system released the dead process's lock: the folder can be resumed (no stale lock file).
    assert main([*LONGER, "--epochs", "1", "--logdir", str(tmp_path), "--run", "shared", "--resume",
                 "--allow-changes", "epochs"]) == 0


@pytest.mark.slow
def test_two_runs_started_at_once_on_one_folder_one_runs_one_is_refused(tmp_path):
    args = [*SMALL, "--epochs", "30", "--logdir", str(tmp_path), "--run", "race"]
    procs = [start(args, tmp_path / f"run{i}.log") for i in range(2)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    logs = "".join((tmp_path / f"run{i}.log").read_text() for i in range(2))
    assert codes == [0, 2], logs
    assert "in use by another run" in logs or "already has a checkpoint" in logs, logs


# ---------------------------------------------------------------------------------------------- read-only mid-run
def test_a_folder_that_turns_read_only_mid_run_loses_nothing(tmp_path, capsys, monkeypatch):
    args = [*SMALL, "--epochs", "4", "--modes", "batch", "minibatch", "--logdir", str(tmp_path)]
    assert main([*args, "--run", "unbroken"]) == 0
    folder = tmp_path / "learning_modes" / "broken"
    real_mkstemp, writes = checkpoint_module.tempfile.mkstemp, {"n": 0}

    def mkstemp(*a, prefix="", dir=None, **k):  # the minibatch folder turns read-only before epoch 3's checkpoint
        if str(dir) == str(folder / "minibatch") and prefix.startswith(".checkpoint.pt"):
            writes["n"] += 1
            if writes["n"] >= 3:
                raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*a, prefix=prefix, dir=dir, **k)

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", mkstemp)
    assert main([*args, "--run", "broken"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / "minibatch" / "checkpoint.pt") in err[0] and "Permission denied" in err[0]
    monkeypatch.undo()
    # Nothing lost: batch's results, minibatch's last checkpoint (epoch 2), and the run resumes to the same numbers.
    assert list(json.loads((folder / "results.json").read_text())) == ["batch"]
    assert load_checkpoint(folder / "minibatch" / "checkpoint.pt")["epoch"] == 2
    assert not [p for p in (folder / "minibatch").iterdir() if p.name.endswith(".tmp")], "no temporary file left"
    assert main([*args, "--run", "broken", "--resume"]) == 0
    read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
    assert figures(read("broken")) == figures(read("unbroken"))


# ---------------------------------------------------------------------------------------------- torchrun
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo")
def test_a_damaged_checkpoint_under_torchrun_is_one_line_on_every_rank(tmp_path):
    args = [*SMALL, "--epochs", "1", "--modes", "batch", "--logdir", str(tmp_path), "--run-name", "r"]
    assert main(args) == 0
    path = tmp_path / "learning_modes" / "r" / "batch" / "checkpoint.pt"
    path.write_bytes(b"\x00not a checkpoint")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "experiments.learning_modes", "--distributed", *args, "--resume"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("learning_modes: error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "cannot be read" in errors[0], output
    # torchrun itself then reports the failed ranks (with a traceback of its own launcher); the ranks printed none.
    ranks = output.split("failed (exitcode: 2)")[0]
    assert "Traceback" not in ranks and "exitcode  : 2" in output, output


# ---------------------------------------------------------------------------------------------- a real Ctrl-C
def test_sigint_on_a_sweep_prints_no_traceback_and_a_command_that_resumes_it_as_printed(tmp_path):
    """Issue 21 item 1: `timeout -s INT` on a sweep; the printed command, run through a shell as a user would paste
    it, finishes the run with the unbroken run's rows."""
    args = ["--seeds", "8", "--lrs", "1", "4", "--epochs", "400", "--device", "cpu", "--quiet", "--logdir",
            str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    log = tmp_path / "stopped.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", *args, "--run", "stopped"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    folder = tmp_path / "sweep" / "stopped"
    wait_for(lambda: (folder / "progress.json").exists(), proc)  # one mode finished, the next one training
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    command = text.strip().splitlines()[-1].strip()
    assert command.startswith("python -m experiments.sweep ") and command.endswith("--run stopped --resume"), text
    done = subprocess.run(command.replace("python", shlex.quote(sys.executable), 1), shell=True, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert main_sweep([*args, "--run", "unbroken"]) == 0
    rows = lambda run: [{k: v for k, v in r.items() if k != "seconds_for_mode"}  # noqa: E731
                        for r in json.loads((tmp_path / "sweep" / run / "results.json").read_text())["rows"]]
    assert rows("stopped") == rows("unbroken")
