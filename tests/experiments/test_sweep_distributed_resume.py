"""`torchrun ... -m experiments.sweep --distributed`, Ctrl-C in the middle of a mode, then the printed command: every
process continues its block of members from its own checkpoint (not from epoch 0) to the results of an unbroken
distributed run, exactly; a damaged checkpoint of rank 1's is refused in one line before anything is said or
written. Real processes (gloo on 127.0.0.1), a real SIGINT to the whole process group, as a terminal's Ctrl-C."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from manual_backprop.tblog import read_scalars

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")]
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6000  # a checkpoint every 600 epochs; one member of each block never reaches the target, so none ends early
ARGS = ["--seeds", "4", "--lrs", "1", "4", "--epochs", str(EPOCHS), "--modes", "online", "--target-loss", "0.001",
        "--device", "cpu", "--distributed"]


def _env() -> dict:
    bin_dir = str(Path(sys.executable).parent)  # where torchrun is, as in the user's activated venv
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MASTER_ADDR": "127.0.0.1",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _torchrun(args: list) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            "experiments.sweep", *args]


def _results(path: Path) -> dict:
    saved = json.loads((path / "results.json").read_text())
    rows = [{k: v for k, v in r.items() if k != "seconds_for_mode"} for r in saved["rows"]]
    return {"rows": rows, "members": saved["members"]}


def _saved_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):  # not there yet
        return -1


def _files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_an_interrupted_distributed_sweep_resumes_each_block_mid_mode(tmp_path):
    logdir = ["--logdir", str(tmp_path)]
    unbroken = subprocess.run(_torchrun([*ARGS, *logdir, "--run-name", "unbroken", "--quiet"]), cwd=ROOT,
                              env=_env(), capture_output=True, text=True, timeout=600)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]

    run_dir = tmp_path / "sweep" / "cut"
    shards = [run_dir / "checkpoints" / f"online.members{a}-{b}.pt" for a, b in ((0, 3), (4, 7))]
    process = subprocess.Popen(_torchrun([*ARGS, *logdir, "--run-name", "cut"]), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and \
            not all(_saved_epoch(p) >= EPOCHS // 10 for p in shards):
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: torchrun and both ranks get SIGINT
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0, (out, err)
    assert "online saved by each of the 2 processes" in err, err
    assert 'experiments/' not in "".join(line for line in err.splitlines() if line.strip().startswith("File ")), \
        f"a traceback through the experiment:\n{err}"
    lines = err.splitlines()
    command = shlex.split(lines[lines.index(next(line for line in lines if "Continue with:" in line)) + 1])
    assert command[:4] == ["torchrun", "--standalone", "--nproc_per_node=2", "-m"], command
    assert command[-3:] == ["--run-name", "cut", "--resume"], command
    saved = [_saved_epoch(p) for p in shards]
    assert min(saved) >= EPOCHS // 10 and max(saved) < EPOCHS, saved

    # rank 1's checkpoint damaged in a copy of the run: refused in one line, before anything is said or written
    damaged = tmp_path / "sweep" / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / "checkpoints" / shards[1].name).write_bytes(b"not a checkpoint")
    before = _files(damaged)
    refused = subprocess.run([*command[:-3], "--run-name", "damaged", "--resume"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and refused.stdout == "", refused.stdout
    errors = [line for line in refused.stderr.splitlines() if line.startswith("sweep: ")]
    assert len(errors) == 1 and errors[0].startswith("sweep: error: ") and shards[1].name in errors[0], \
        refused.stderr[-3000:]
    assert _files(damaged) == before, "a refused resume changed the run folder"

    resumed = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout.split("resuming online from epoch")[1].split(" of ")[0]  # " 1200" or "s 1200 to 1800"
    expected = [saved[0]] if saved[0] == saved[1] else [min(saved), max(saved)]
    assert [int(word) for word in said.split() if word.isdigit()] == expected, (saved, resumed.stdout)
    assert _results(run_dir) == _results(tmp_path / "sweep" / "unbroken")
    assert not any((run_dir / "checkpoints").iterdir()), "the checkpoints are removed once the mode is kept"
    for lr in ("lr1", "lr4"):  # the curves logged once, whole: the same steps as the unbroken run's
        cut, whole = read_scalars(run_dir / f"online_{lr}"), read_scalars(tmp_path / "sweep" / "unbroken" /
                                                                          f"online_{lr}")
        assert {tag: [step for step, _ in v] for tag, v in cut.items()} == \
            {tag: [step for step, _ in v] for tag, v in whole.items()}, lr
