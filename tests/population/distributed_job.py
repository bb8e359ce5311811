"""The processes of the distributed tests (tests/population/test_distributed.py): the cases, the worker each rank
runs, the 3-process job and the README's torchrun command. Also the workers' entry point:
``python tests/population/distributed_job.py RANK WORLD_SIZE FOLDER``.

One job of 3 processes proves every process-level claim, so the suite pays torch's start-up (seconds of CPU per
process) 3 times, not once per claim. The 2-rank runs use the subgroup [0, 1] of the same world; they go through
exactly the code of a 2-process world (group rank and size, collectives on the group). The README's torchrun
command runs 2 more processes of its own.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # a worker runs this file as a script
    sys.path.insert(0, str(ROOT))

import torch.distributed as dist  # noqa: E402

from manual_backprop import MLP  # noqa: E402
from manual_backprop.datasets import load_dataset  # noqa: E402
from manual_backprop.distributed import DistributedTrainer, init_distributed, shard_bounds  # noqa: E402
from manual_backprop.losses import get_loss  # noqa: E402
from manual_backprop.training import Trainer  # noqa: E402

F64 = torch.float64
HAS_GLOO = dist.is_available() and dist.is_gloo_available()


# ---------------------------------------------------------------------------------------------- the cases
# 37 training samples and 13 test samples: shards of 19/18 over 2 ranks and 13/12/12 over 3, all unequal.
# minibatch b=7 leaves a last batch of 2 (1/1/0 over 3 ranks); b=2 gives one rank no sample in every update.
CASES = {
    "batch_cross_entropy": dict(sizes=[2, 6, 2], activation="tanh", output="softmax", loss=("cross_entropy", {}),
                                mode="batch", lr=0.5, epochs=5),
    "minibatch7_elementwise_mean_half": dict(sizes=[2, 5, 2], activation="sigmoid", output="sigmoid",
                                             loss=("squared_error", {"reduction": "elementwise_mean", "half": True}),
                                             mode="minibatch", batch_size=7, lr=0.8, epochs=4),
    "minibatch2_replacement_bce": dict(sizes=[2, 4, 1], activation="relu", output="sigmoid",
                                       loss=("binary_cross_entropy", {}), mode="minibatch", batch_size=2,
                                       replacement=True, lr=0.3, epochs=3),
    "batch_sum_squared_error": dict(sizes=[2, 3, 3, 2], activation="tanh", output="identity",
                                    loss=("squared_error", {"reduction": "sum"}), mode="batch", lr=0.01, epochs=5),
}


def moons():
    return load_dataset("moons", n_samples=50, noise=0.2, seed=0, dtype=F64)


def build(case: dict, weight_seed: int = 0):
    """(net, data, Trainer kwargs) of a case; every rank and the single-process run build the same one."""
    net = MLP(case["sizes"], activation=case["activation"], output_activation=case["output"], bias_init="uniform",
              dtype=F64, seed=weight_seed)
    name, options = case["loss"]
    kwargs = dict(mode=case["mode"], lr=case["lr"], epochs=case["epochs"], loss_fn=get_loss(name, **options),
                  batch_size=case.get("batch_size"), replacement=case.get("replacement", False), seed=5)
    return net, moons(), kwargs


def single_process(case: dict, epochs=None):
    net, data, kwargs = build(case)
    if epochs is not None:
        kwargs["epochs"] = epochs
    history = Trainer(net, data, **kwargs).run()
    return [p.clone() for p in net.parameters()], history.to_dict()


# ---------------------------------------------------------------------------------------------- the job
FAIL_TIMEOUT_S = 3.0  # the timeout of the groups in which a rank crashes or hangs: what bounds the others' wait
JOB_TIMEOUT_S = 120.0  # every other collective: generous, a busy CI machine is slow
JOB_LIMIT_S = 150  # a process still running after this fails the test; a hang would exceed it by far

EXPERIMENT_ARGS = ["--dataset", "moons", "--n-samples", "50", "--sizes", "2", "5", "2", "--dtype", "float64",
                   "--modes", "batch", "minibatch", "--batch-size", "7", "--epochs", "3", "--device", "cpu",
                   "--seed", "0"]  # run folder moons-seed0 (--run cannot pass through torchrun, see the README)


class _PoisonedOnRank1(DistributedTrainer):
    """Rank 1's copy of the data gets a NaN (rank 1 owns the middle shard's last row) before the third update."""

    calls = 0

    def _update(self, idx):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            _, stop = shard_bounds(self.x_train.shape[0], 1, self.world_size)
            self.x_train = self.x_train.clone()
            self.x_train[stop - 1] = float("nan")
        return super()._update(idx)


class _FailsOnRank1(DistributedTrainer):
    """The group's rank 1 hangs or crashes in its third update; the others note when they entered theirs."""

    calls = 0
    failure = "hang"

    def _update(self, idx):
        self.calls += 1
        self.entered = time.monotonic()
        if self.rank == 1 and self.calls == 3:
            if self.failure == "hang":
                time.sleep(10 * JOB_LIMIT_S)  # the test kills this process, as torchrun would
            raise RuntimeError("simulated crash of rank 1")  # the process exits with an error
        return super()._update(idx)


def _equivalence(rank: int, group=None) -> dict:
    out = {}
    for name, case in CASES.items():
        # A rank other than 0 starts from other weights: the broadcast from rank 0 must overwrite them.
        net, data, kwargs = build(case, weight_seed=0 if rank == 0 else 100 + rank)
        history = DistributedTrainer(net, data, group=group, **kwargs).run()
        out[name] = {"params": [p.clone() for p in net.parameters()], "history": history.to_dict()}
    return out


def _experiment(folder: Path) -> tuple:
    """learning_modes.main with --distributed on every rank; returns (exit code, paths this rank wrote under logs)."""
    from experiments import learning_modes

    logdir = str(folder / "logs")
    written = []

    def audit(event, args):  # every open for writing, mkdir and rename under logs, however it is done
        path = str(args[0]) if args and args[0] is not None else ""
        if not path.startswith(logdir):
            return
        if event == "open":
            mode, flags = args[1], args[2] or 0
            if (mode and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                written.append(path)
        elif event in ("os.mkdir", "os.rename", "os.replace"):
            written.append(path)

    sys.addaudithook(audit)
    code = learning_modes.main(EXPERIMENT_ARGS + ["--distributed", "--logdir", logdir])
    return code, list(written)


def _failure(group, failure: str) -> dict:
    net, data, kwargs = build(CASES["minibatch7_elementwise_mean_half"])
    trainer = _FailsOnRank1(net, data, group=group, **kwargs)
    trainer.failure = failure
    try:
        trainer.run()
    except Exception as error:
        if trainer.rank == 1:
            raise  # the failing rank's own error: its process exits with it
        return {"error": f"{type(error).__name__}: {error}", "waited": time.monotonic() - trainer.entered}
    return {"error": None}


def _worker(rank: str, world_size: str, folder: str) -> None:
    rank, world_size, folder = int(rank), int(world_size), Path(folder)
    # Start together: importing torch on a busy machine can put the ranks seconds apart.
    (folder / f"ready{rank}").touch()
    deadline = time.monotonic() + JOB_LIMIT_S
    while not all((folder / f"ready{r}").exists() for r in range(world_size)) and time.monotonic() < deadline:
        time.sleep(0.05)
    init_distributed("cpu", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size,
                     timeout=JOB_TIMEOUT_S)
    # new_group is collective over the world: every rank creates every group, in the same order.
    pair = dist.new_group([0, 1])
    short = datetime.timedelta(seconds=FAIL_TIMEOUT_S)
    crash_pair, hang_pair = dist.new_group([0, 1], timeout=short), dist.new_group([0, 2], timeout=short)
    meeting = dist.new_group([0, 2])  # rank 2 waits here, with the long timeout, while rank 0 sees the crash

    out = {"pid": os.getpid(), "three": _equivalence(rank)}
    if rank in (0, 1):
        out["two"] = _equivalence(rank, pair)
    net, data, kwargs = build(CASES["batch_cross_entropy"])
    history = _PoisonedOnRank1(net, data, **kwargs).run()
    out["diverged"] = {"params": [p.clone() for p in net.parameters()], "history": history.to_dict()}
    out["experiment_exit"], out["written"] = _experiment(folder)
    torch.save(out, folder / f"rank{rank}.pt")

    # Failures last: they leave groups broken. Rank 1 crashes, then rank 2 hangs; rank 0 records what it saw.
    failures = {}
    if rank in (0, 1):
        failures["crash"] = _failure(crash_pair, "crash")
    if rank in (0, 2):
        dist.barrier(group=meeting)
        failures["hang"] = _failure(hang_pair, "hang")
    torch.save(failures, folder / "failures.pt")
    sys.stdout.flush()
    os._exit(0)  # skip tearing down groups whose peers are gone


def _loopback_env() -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    for lo in ("lo", "lo0"):  # gloo talks over the loopback interface only
        if lo in names:
            env["GLOO_SOCKET_IFNAME"] = lo
    return env


class _Job:
    """The 3 processes of the job, started at once; the tests wait for the ranks they need."""

    world_size = 3

    def __init__(self, folder: Path):
        self.folder, self.started = folder, time.monotonic()
        self.procs = []
        for rank in range(self.world_size):
            with open(folder / f"rank{rank}.log", "w") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), str(rank), str(self.world_size), str(folder)],
                    cwd=ROOT, env=_loopback_env(), stdout=log, stderr=subprocess.STDOUT))

    def wait(self, rank: int) -> int:
        """Rank's exit code; a process still running JOB_LIMIT_S after the start fails the test."""
        try:
            return self.procs[rank].wait(timeout=max(JOB_LIMIT_S - (time.monotonic() - self.started), 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"rank {rank} still ran {JOB_LIMIT_S} s after the start\n{self.output()}")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def output(self, rank: int = None) -> str:
        ranks = range(self.world_size) if rank is None else [rank]
        return "\n".join(f"--- rank {r}:\n{(self.folder / f'rank{r}.log').read_text()}" for r in ranks)

    def results(self) -> list:
        """Every rank's results, once rank 0 is done (the others saved theirs before their failure part)."""
        code = self.wait(0)
        assert code == 0, f"rank 0 exited with {code}\n{self.output()}"
        return [torch.load(self.folder / f"rank{r}.pt", weights_only=False) for r in range(self.world_size)]


class _Torchrun:
    """The README's command, with torchrun's own launcher (python -m torch.distributed.run is torchrun)."""

    def __init__(self, folder: Path):
        self.folder, self.started = folder, time.monotonic()
        self.log = folder / "torchrun.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 "-m", "experiments.learning_modes", "--distributed", *EXPERIMENT_ARGS, "--logdir", str(folder)],
                cwd=ROOT, env=_loopback_env(), stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    _worker(*sys.argv[1:])
