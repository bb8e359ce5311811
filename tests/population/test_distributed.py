"""Data-parallel batch and minibatch learning over 2 and 3 gloo processes ends where one process ends (float64).

The claims, each proved by real torch.distributed processes on 127.0.0.1 (file-based rendezvous in tmp_path):
- every rank ends with bitwise the same parameters and the same History, even when rank r > 0 starts from other
  weights (the broadcast from rank 0 overwrites them);
- those parameters and that History equal the single-process run's to float64 summation-order rounding
  (assert_close with rtol 1e-12, atol 1e-14), for batch and minibatch mode, mean, element-wise mean (with the 1/2)
  and sum losses, with unequal shards and with ranks that get no sample of a batch at all;
- NaN on one rank stops every rank at the same update with the same message;
- a rank that hangs makes the others fail with a timeout error within a bounded time; a rank that crashes too;
- only rank 0 writes (TensorBoard events, checkpoints, JSON) and prints the table;
- the README's torchrun command runs, and its results equal the single-process experiment's.

One job of 3 processes proves all but the last claim (the 2-rank runs use its subgroup [0, 1]); the torchrun
command, 2 processes of its own, proves the last. Both start together when the first test needs them, so the
suite pays torch's start-up a few times, not once per claim; each test waits for the ranks it needs. This file is
also the workers' entry point: ``python tests/population/test_distributed.py RANK WORLD_SIZE FOLDER``.
"""

from __future__ import annotations

import datetime
import json
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
from manual_backprop.distributed import (ONLINE_IS_SEQUENTIAL, DistributedTrainer, init_distributed,  # noqa: E402
                                         shard_bounds)
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
# One job of 3 processes proves every process-level claim, so the suite pays torch's start-up (seconds of CPU per
# process) 3 times, not once per claim. The 2-rank runs use the subgroup [0, 1] of the same world; they go through
# exactly the code of a 2-process world (group rank and size, collectives on the group). The README's torchrun
# command runs 2 more processes of its own (test_the_readme_torchrun_command_...).
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


@pytest.fixture(scope="module")
def processes(request, tmp_path_factory):
    """Start the job and the torchrun command side by side if a selected test needs them; kill leftovers."""
    wanted = {f for item in request.session.items if getattr(item, "module", None) is request.module
              for f in getattr(item, "fixturenames", ())}
    started = {}
    if HAS_GLOO and "job" in wanted:
        started["job"] = _Job(tmp_path_factory.mktemp("job"))
    if HAS_GLOO and "torchrun_job" in wanted:
        started["torchrun"] = _Torchrun(tmp_path_factory.mktemp("torchrun"))
    yield started
    for running in started.values():
        running.kill()


@pytest.fixture(scope="module")
def job(processes):
    return processes["job"]


@pytest.fixture(scope="module")
def torchrun_job(processes):
    return processes["torchrun"]


needs_gloo = pytest.mark.skipif(not HAS_GLOO, reason="torch.distributed with gloo is not available")


# ---------------------------------------------------------------------------------------------- equivalence
def assert_same_as_single_process(name: str, got: dict, want_params, want_history: dict):
    for k, (p, q) in enumerate(zip(got["params"], want_params)):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14,
                                   msg=lambda m: f"{name}: parameter {k} (state-dict order): {m}")
    h, w = got["history"], want_history
    for key in ("epoch", "updates", "stop_reason", "message"):
        assert h[key] == w[key], f"{name}: history {key} {h[key]!r} != single process {w[key]!r}"
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        if w[key][0] is None:
            assert h[key] == w[key], f"{name}: {key}"
        else:
            torch.testing.assert_close(torch.tensor(h[key], dtype=F64), torch.tensor(w[key], dtype=F64),
                                       rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: history {key}: {m}")


def assert_ranks_identical(name: str, results: list):
    first = results[0][name]
    for r, result in enumerate(results[1:], start=1):
        got = result[name]
        for k, (p, q) in enumerate(zip(got["params"], first["params"])):
            assert torch.equal(p, q), f"{name}: rank {r}'s parameter {k} differs from rank 0's by " \
                                      f"{(p - q).abs().max().item():.3e}"
        strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # wall time is each rank's own
        assert strip(got["history"]) == strip(first["history"]), f"{name}: rank {r}'s history differs from rank 0's"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("world", ["two", "three"])
@pytest.mark.distributed
@needs_gloo
def test_data_parallel_run_equals_single_process_run(case, world, job):
    results = job.results()[:{"two": 2, "three": 3}[world]]
    runs = [r[world] for r in results]
    assert_ranks_identical(case, runs)
    want_params, want_history = single_process(CASES[case])
    assert_same_as_single_process(f"{case} over {world} ranks", runs[0][case], want_params, want_history)


@pytest.mark.distributed
@needs_gloo
def test_nan_on_one_rank_stops_every_rank_with_the_same_message(job):
    results = job.results()
    assert_ranks_identical("diverged", results)
    got = results[0]["diverged"]
    assert got["history"]["stop_reason"] == "diverged"
    assert "diverged in epoch 3 at update 3" in got["history"]["message"]
    # Every rank went back to the end of epoch 2, the last good state: the single-process run of 2 epochs.
    want_params, want_history = single_process(CASES["batch_cross_entropy"], epochs=2)
    want_history = dict(want_history, stop_reason="diverged", message=got["history"]["message"])
    assert_same_as_single_process("diverged", got, want_params, want_history)


# ---------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("failure", ["crash", "hang"])
@pytest.mark.distributed
@needs_gloo
def test_a_failed_rank_makes_the_others_fail_within_the_timeout(failure, job):
    assert job.wait(0) == 0, job.output()
    record = torch.load(job.folder / "failures.pt", weights_only=False)[failure]
    failed_rank = {"crash": 1, "hang": 2}[failure]
    assert record["error"] is not None, f"rank 0 finished although rank {failed_rank} {failure}ed"
    # From entering the update whose all_reduce cannot complete to the error: at most the timeout plus slack.
    assert record["waited"] <= FAIL_TIMEOUT_S + 20, f"rank 0 waited {record['waited']:.1f} s: {record['error']}"
    if failure == "crash":
        assert job.wait(1) != 0, "the crashed rank should exit with an error"
        assert "simulated crash of rank 1" in job.output(1)
    else:
        assert record["waited"] >= 0.8 * FAIL_TIMEOUT_S, f"rank 0 failed before the timeout: {record['error']}"
        assert "timed out" in record["error"].lower() or "timeout" in record["error"].lower(), record["error"]
        assert job.procs[2].poll() is None, "rank 2 should still hang; torchrun (here: the test) ends it"


# ---------------------------------------------------------------------------------------------- the experiment
def _single_process_experiment(tmp_path) -> dict:
    from experiments import learning_modes

    assert learning_modes.main(EXPERIMENT_ARGS + ["--logdir", str(tmp_path / "single"), "--quiet"]) == 0
    return json.loads((tmp_path / "single" / "learning_modes" / "moons-seed0" / "results.json").read_text())


def assert_results_equal(got: dict, want: dict):
    assert list(got) == list(want)
    for mode in want:
        for key in ("epoch", "updates", "stop_reason"):
            assert got[mode][key] == want[mode][key], f"{mode}: {key}"
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            torch.testing.assert_close(torch.tensor(got[mode][key], dtype=F64),
                                       torch.tensor(want[mode][key], dtype=F64),
                                       rtol=1e-12, atol=1e-14, msg=lambda m: f"{mode} {key}: {m}")


@pytest.mark.distributed
@needs_gloo
def test_only_rank_0_writes_logs_checkpoints_and_results(job, tmp_path):
    results = job.results()
    assert [r["experiment_exit"] for r in results] == [0, 0, 0]
    for r in (1, 2):
        assert results[r]["written"] == [], f"rank {r} wrote {results[r]['written']}"
    assert results[0]["written"], "rank 0 wrote nothing"
    run_dir = job.folder / "logs" / "learning_modes" / "moons-seed0"
    for mode in ("batch", "minibatch"):
        events = sorted((run_dir / mode).glob("events.out.tfevents.*"))
        assert len(events) == 1, f"{mode}: expected one event file (rank 0's), got {[e.name for e in events]}"
        assert events[0].name.split(".")[-2] == str(results[0]["pid"]), "the event file is not rank 0's"
        assert json.loads((run_dir / mode / "config.json").read_text())["world_size"] == 3
        assert (run_dir / mode / "checkpoint.pt").is_file()
    table_head = "mode           lr batch"
    assert job.output(0).count(table_head) == 1
    assert table_head not in job.output(1) and table_head not in job.output(2)
    assert_results_equal(json.loads((run_dir / "results.json").read_text()), _single_process_experiment(tmp_path))


def test_online_mode_is_refused_with_the_reason(monkeypatch, capsys):
    from experiments import learning_modes

    net, data, kwargs = build(CASES["batch_cross_entropy"])
    with pytest.raises(ValueError, match="online learning is sequential by nature"):
        DistributedTrainer(net, data, **dict(kwargs, mode="online"))
    # The experiment refuses an explicit online mode before it joins a process group (none exists here), naming the
    # modes to pass; by default --distributed trains the modes that can run (here it then asks for torchrun).
    assert learning_modes.main(["--distributed", "--epochs", "1", "--modes", "online", "batch"]) == 2
    err = capsys.readouterr().err
    assert ONLINE_IS_SEQUENTIAL in err and "--modes batch minibatch" in err
    monkeypatch.delenv("RANK", raising=False)
    assert learning_modes.main(["--distributed", "--epochs", "1", "--device", "cpu"]) == 2
    assert "online" not in capsys.readouterr().err
    assert not dist.is_initialized()


def test_one_process_fast_paths_are_refused():
    net, data, kwargs = build(CASES["batch_cross_entropy"])
    with pytest.raises(ValueError, match="fast must be False for distributed training"):
        DistributedTrainer(net, data, **dict(kwargs, fast=True))  # it would run whole epochs past the all_reduce


@needs_gloo
def test_distributed_without_torchrun_says_how_to_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.*torchrun --standalone"):
        init_distributed("cpu")
    with pytest.raises(RuntimeError, match="init_distributed"):
        DistributedTrainer(*build(CASES["batch_cross_entropy"])[:2], **build(CASES["batch_cross_entropy"])[2])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_are_contiguous_nearly_equal_and_cover_the_batch(world_size):
    for n in range(0, 20):
        bounds = [shard_bounds(n, r, world_size) for r in range(world_size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])), bounds
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True), (n, sizes)


# ---------------------------------------------------------------------------------------------- torchrun
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


@pytest.mark.distributed
@needs_gloo
def test_the_readme_torchrun_command_runs_and_matches_one_process(torchrun_job, tmp_path):
    try:
        torchrun_job.proc.wait(timeout=max(JOB_LIMIT_S - (time.monotonic() - torchrun_job.started), 0.1))
    except subprocess.TimeoutExpired:
        torchrun_job.kill()
        pytest.fail(f"torchrun still ran after {JOB_LIMIT_S} s\n{torchrun_job.log.read_text()}")
    output = torchrun_job.log.read_text()
    assert torchrun_job.proc.returncode == 0, output
    assert output.count("mode           lr batch") == 1, output  # rank 0 prints the table, rank 1 stays quiet
    results = json.loads((torchrun_job.folder / "learning_modes" / "moons-seed0" / "results.json").read_text())
    assert_results_equal(results, _single_process_experiment(tmp_path))


if __name__ == "__main__":
    _worker(*sys.argv[1:])


def test_rank_device_takes_the_one_visible_gpu_and_refuses_a_missing_one(monkeypatch):
    """Launchers that give each task one visible GPU: LOCAL_RANK 3 with one GPU visible is cuda:0; with two
    visible, LOCAL_RANK 3 names a GPU that is not there and is refused with a message (no CUDA needed: the device
    count is what is decided on)."""
    from manual_backprop import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert distributed._rank_device("cuda", 3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed._rank_device("cuda", 1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="LOCAL_RANK 3 needs GPU cuda:3, but this process sees 2 GPUs"):
        distributed._rank_device("cuda", 3)


# ---------------------------------------------------------------------------------------------- one GPU per rank
def _gpus(monkeypatch, count, local_world, visible=None):
    """Simulate a node: ``count`` GPUs seen by this process, ``local_world`` ranks on it (as torchrun sets)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    monkeypatch.setenv("LOCAL_RANK", "1" if local_world > 1 else "0")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def test_two_nccl_ranks_on_one_visible_gpu_are_refused_in_one_line(monkeypatch, tmp_path):
    """torchrun --nproc_per_node=2 on a one-GPU machine: both ranks would take cuda:0, which NCCL refuses or hangs
    on (issue 22); it is refused before any process group or device is touched."""
    _gpus(monkeypatch, count=1, local_world=2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("the device was set before the refusal"))
    with pytest.raises(ValueError, match=r"^nccl needs one GPU per rank, but this node starts 2 ranks "
                                         r"\(LOCAL_WORLD_SIZE\) and they all see 1 GPU; start at most 1 per node "
                                         r"\(torchrun --nproc_per_node=1\), or use --device cpu \(gloo\)$"):
        init_distributed("cuda", init_method=f"file://{tmp_path}/rendezvous", rank=1, world_size=2)
    assert not dist.is_initialized()


@pytest.mark.parametrize("count,local_world,visible,refused", [
    (1, 1, None, False),  # one rank, one GPU
    (1, 2, "3", False),  # a launcher shows each rank its own GPU: cuda:0 is that rank's
    (2, 2, None, False),  # one GPU per rank
    (2, 3, None, True),  # three ranks, two GPUs
    (2, 3, "0,1", True),  # the GPUs shown are still shared
])
def test_nccl_ranks_need_a_gpu_each(monkeypatch, count, local_world, visible, refused):
    from manual_backprop.distributed import _check_one_gpu_per_rank

    _gpus(monkeypatch, count, local_world, visible)
    if refused:
        with pytest.raises(ValueError, match="nccl needs one GPU per rank"):
            _check_one_gpu_per_rank()
    else:
        _check_one_gpu_per_rank()
