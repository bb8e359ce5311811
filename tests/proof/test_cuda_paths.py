"""The CUDA paths, as a GPU user meets them; each scenario also runs on the CPU wherever its path exists there.

A CUDA test whose scenario cannot happen fails only on the first GPU, where time is scarce (issue 22: a divergence
at lr 1e6 under softmax and cross-entropy that never diverges, a sigmoid member that cannot diverge). So every
scenario below is a function of the device, and the CPU tests run it through the paths the CPU has (the plain
loop, the fused step, the C loop; the population's eager and compiled engines) and check that it is what the CUDA
test claims: a divergence inside the second 64-update replay, members that diverge, reach the target and run on.

On CUDA: graph capture and replay across epochs with an eager tail and a partial batch; divergence inside a replay;
re-capture on an lr change and replay after another runner's graph was destroyed; the population's CUDA graph and
compiled engines with frozen members, held to the eager engine on the same device and, separately, to the CPU
within the cross-device bound; no host synchronisation inside an epoch; kept gradients; a one-process torchrun.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from manual_backprop import MLP, fast, get_loss
from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import Trainer

HAS_CUDA = torch.cuda.is_available()
cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")]


def on_cuda(test):
    """Marks a test ``cuda`` (python -m pytest -m cuda selects it) and skips it without CUDA."""
    for mark in cuda:
        test = mark(test)
    return test

needs_cxx = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                               reason="torch.compile and the C loop need a C/C++ compiler")
F64 = torch.float64
GRAPH_CHUNK = 64  # updates per captured graph (fast.CudaGraphRunner's default chunk)
# One float64 run of a few hundred updates on CUDA against the same run on the CPU: the devices' tanh, exp and
# matrix products round differently (summation order), so the runs agree to a norm-relative error, not bit for bit.
CROSS_DEVICE_REL = 1e-10
SAME_DEVICE_REL = 1e-12  # another engine on the same device: the population's batched kernels (POPULATION_ULPS)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def _digits():
    return load_dataset("digits", dtype=F64)


# ---------------------------------------------------------------------------------------------- the scenarios
def _run(fast_switch, *, device, lr=0.05, epochs=3, logger=None, batch_size=10, output="softmax"):
    """minibatch digits at b=10: full batches in two 64-update chunks, an eager tail and a partial batch."""
    loss = "cross_entropy" if output == "softmax" else "squared_error"
    net = MLP([64, 16, 10], activation="tanh", output_activation=output, dtype=F64, device=device, seed=0)
    trainer = Trainer(net, _digits(), mode="minibatch", batch_size=batch_size, lr=lr, epochs=epochs, seed=1,
                      fast=fast_switch, logger=logger, loss_fn=loss)
    return net, trainer.run(), trainer


def _diverging_run(fast_switch, device):
    """Identity output, squared error, lr 5: diverges in epoch 1 at an update inside the second replay."""
    return _run(fast_switch, device=device, lr=5.0, epochs=2, output="identity")


def _xor_population(device, engine):
    """member 0 runs on (lr 0.01), member 1 diverges at an update (lr 5), member 2 reaches the target (lr 0.1):
    tanh with an identity output, which can diverge (a sigmoid output is bounded and never does)."""
    pop = Population([2, 2, 1], activation="tanh", output_activation="identity", seeds=[0, 1, 2], dtype=F64,
                     device=device)
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="online", lr=[0.01, 5.0, 0.1],
                                epochs=300, target_loss=0.05, engine=engine)
    return pop, trainer.run()


def _assert_same(a, b, tol=1e-12):
    for p, q in zip(a.parameters(), b.parameters()):
        p, q = p.cpu(), q.cpu()
        assert torch.linalg.norm(p - q) <= tol * torch.linalg.norm(q)


def _update_in_epoch(message):
    found = re.search(r"diverged in epoch (\d+) at update (\d+)", message)
    assert found, f"the message names no epoch and update: {message!r}"
    return int(found.group(1)), int(found.group(2))


def _cpu_paths():
    paths = [False, "fused"]
    try:
        fast.load_kernel()
        paths.append("c")
    except fast.FastPathUnavailable:
        pass
    return paths


# ---------------------------------------------------------------------------------------------- on the CPU
def test_the_graph_scenario_has_full_chunks_an_eager_tail_and_a_partial_batch():
    n = _digits().x_train.shape[0]
    full, partial = divmod(n, 10)
    assert partial > 0, "the scenario needs a partial batch"
    assert full // GRAPH_CHUNK >= 2 and full % GRAPH_CHUNK > 0, "two replays and an eager tail"
    net_p, hist_p, _ = _run(False, device="cpu")
    net_f, hist_f, _ = _run("fused", device="cpu")
    assert hist_p.updates == hist_f.updates and hist_p.stop_reason == "max_epochs"
    _assert_same(net_f, net_p)


@pytest.mark.parametrize("path", _cpu_paths())
def test_the_divergence_scenario_diverges_inside_the_second_replay_on_every_cpu_path(path):
    net, hist, _ = _diverging_run(path, "cpu")
    assert hist.stop_reason == "diverged", f"fast={path!r}: the scenario must diverge ({hist.message})"
    epoch, update = _update_in_epoch(hist.message)
    assert epoch == 1 and GRAPH_CHUNK <= update < 2 * GRAPH_CHUNK, f"not inside the second replay: {hist.message}"
    net_p, hist_p, _ = _diverging_run(False, "cpu")
    assert hist.message == hist_p.message
    _assert_same(net, net_p, tol=0.0)  # put back to the end of epoch 0, exactly


@pytest.mark.parametrize("engine", ["eager", pytest.param("compiled", marks=needs_cxx)])
def test_the_population_scenario_covers_every_stop_on_the_cpu_engines(engine):
    pop, hist = _xor_population("cpu", engine)
    assert hist.stop_reason == ["max_epochs", "diverged", "target_loss"], hist.stop_reason
    assert hist.diverged_update[1] is not None, "member 1 must diverge at an update, inside a replayed epoch"
    if engine != "eager":
        pop_e, hist_e = _xor_population("cpu", "eager")
        assert hist.stop_reason == hist_e.stop_reason and hist.last_epoch == hist_e.last_epoch
        for a, b in zip(pop.parameters(), pop_e.parameters()):
            assert torch.linalg.norm(a - b) <= SAME_DEVICE_REL * torch.linalg.norm(b)


def test_the_nccl_scenario_runs_with_gloo_on_the_cpu(tmp_path):
    _torchrun_equals_single(tmp_path, "cpu")


# ---------------------------------------------------------------------------------------------- on CUDA
@on_cuda
def test_graph_is_captured_once_and_replayed_with_an_eager_tail_and_a_partial_batch():
    net_g, hist_g, trainer = _run("cuda_graph", device="cuda")
    net_p, hist_p, _ = _run(False, device="cuda")
    engine = trainer._fast_runner._engine
    assert isinstance(engine, fast.CudaGraphRunner) and engine.captures == 1, "one capture, replayed every epoch"
    assert hist_g.updates == hist_p.updates
    _assert_same(net_g, net_p)


@on_cuda
def test_divergence_inside_a_replay_gives_the_plain_paths_message_and_restored_parameters():
    net_g, hist_g, _ = _diverging_run("cuda_graph", "cuda")
    net_p, hist_p, _ = _diverging_run(False, "cuda")
    assert hist_g.stop_reason == hist_p.stop_reason == "diverged"
    assert hist_g.message == hist_p.message
    _assert_same(net_g, net_p, tol=0.0)


@on_cuda
def test_lr_change_recaptures_and_a_graph_replays_after_another_runners_graph_is_destroyed():
    net_a, _, trainer_a = _run("cuda_graph", device="cuda", epochs=1)
    trainer_a.lr = 0.02
    net_b, _, trainer_b = _run("cuda_graph", device="cuda", epochs=1)
    trainer_b._fast_runner.close()  # B's graph (and its workspace) goes
    del trainer_b
    trainer_a.epochs = 2
    trainer_a.run()
    assert trainer_a._fast_runner._engine.captures == 2, "the new lr must be captured anew"
    net_p = MLP([64, 16, 10], activation="tanh", output_activation="softmax", dtype=F64, device="cuda", seed=0)
    plain = Trainer(net_p, _digits(), mode="minibatch", batch_size=10, lr=0.05, epochs=1, seed=1, fast=False)
    plain.run()
    plain.lr, plain.epochs = 0.02, 2
    plain.run()
    _assert_same(net_a, net_p)


class _Silent:
    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_kept_gradients_reach_the_histograms(device):
    path = "cuda_graph" if device == "cuda" else "fused"
    _, _, trainer_g = _run(path, device=device, epochs=1, logger=_Silent())
    _, _, trainer_p = _run(False, device=device, epochs=1, logger=_Silent())
    assert trainer_g.last_grads is not None
    for a, b in zip(trainer_g.last_grads.weights, trainer_p.last_grads.weights):
        assert torch.linalg.norm(a.cpu() - b.cpu()) <= 1e-12 * torch.linalg.norm(b.cpu())


@on_cuda
def test_no_host_synchronisation_inside_an_epochs_updates():
    net = MLP([64, 16, 10], activation="tanh", output_activation="softmax", dtype=F64, device="cuda", seed=0)
    data = _digits()
    x, y = data.x_train.to("cuda", F64), torch.nn.functional.one_hot(data.y_train, 10).to("cuda", F64)
    runner = fast.CudaGraphRunner(net, get_loss("cross_entropy"), 10)
    order = torch.randperm(x.shape[0]).to("cuda")
    offsets = list(range(0, x.shape[0], 10)) + [x.shape[0]]
    losses = torch.empty(len(offsets) - 1, dtype=F64, device="cuda")
    with torch.no_grad():
        runner.run(x, y, order, offsets, 0.05, losses)  # captures (warm-up may synchronise)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            runner.run(x, y, order, offsets, 0.05, losses)  # replays and the eager tail: no sync allowed
        finally:
            torch.cuda.set_sync_debug_mode("default")
    pop = Population([2, 4, 1], seeds=list(range(8)), dtype=F64, device="cuda")
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="online", lr=0.5, epochs=2)
    xs, ys = trainer._next_epoch_data()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            trainer._fn(pop.weights, pop.biases, trainer.good_w, trainer.good_b, trainer.active, xs, ys)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@on_cuda
@pytest.mark.parametrize("engine", ["cuda_graph", "compiled"])
def test_population_engines_on_cuda_equal_eager_on_cuda_and_the_cpu_within_the_cross_device_bound(engine):
    pop_e, hist_e = _xor_population("cuda", "eager")
    pop_g, hist_g = _xor_population("cuda", engine)
    pop_c, hist_c = _xor_population("cpu", "eager")
    assert hist_g.stop_reason == hist_e.stop_reason == ["max_epochs", "diverged", "target_loss"]
    assert hist_g.last_epoch == hist_e.last_epoch and hist_g.diverged_update == hist_e.diverged_update
    for a, b in zip(pop_g.parameters(), pop_e.parameters()):  # the same device: the engines' own bound
        assert torch.linalg.norm(a - b) <= SAME_DEVICE_REL * torch.linalg.norm(b)
    assert hist_e.stop_reason == hist_c.stop_reason and hist_e.last_epoch == hist_c.last_epoch
    for a, c in zip(pop_e.parameters(), pop_c.parameters()):  # across devices: the stated, looser bound
        assert torch.linalg.norm(a.cpu() - c) <= CROSS_DEVICE_REL * torch.linalg.norm(c)


@on_cuda
def test_one_process_torchrun_with_nccl_equals_a_single_process(tmp_path):
    _torchrun_equals_single(tmp_path, "cuda")


def _torchrun_equals_single(tmp_path, device):
    common = ["-m", "experiments.learning_modes", "--dataset", "moons", "--sizes", "2", "8", "2", "--epochs", "3",
              "--modes", "batch", "minibatch", "--device", device, "--dtype", "float64", "--quiet",
              "--logdir", str(tmp_path)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root}
    single = subprocess.run([sys.executable, *common, "--run-name", "single"], capture_output=True, text=True,
                            timeout=300, env=env, cwd=root)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           *common, "--distributed", "--run-name", "ranks"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=root)
    assert dist.returncode == 0, dist.stderr
    a = json.loads((tmp_path / "learning_modes" / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "learning_modes" / "ranks" / "results.json").read_text())
    for mode in ("batch", "minibatch"):
        for x, y in zip(a[mode]["train_loss"], b[mode]["train_loss"]):
            assert abs(x - y) <= 1e-12 * abs(y)
