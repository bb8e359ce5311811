"""The CUDA paths, as a GPU user meets them (issue: CUDA paths right before the first GPU). Skipped without CUDA.

Graph capture and replay across epochs with an eager tail and a partial batch; divergence inside a replay;
re-capture on an lr change and replay after another runner's graph was destroyed; the population's CUDA graph with
members that reached their target, diverged or still run; the compiled engine on CUDA; no host synchronisation
inside an epoch's updates; gradients kept for the histograms; and a one-process torchrun with NCCL.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from manual_backprop import MLP, fast, get_loss
from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")]
F64 = torch.float64


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def _digits():
    return load_dataset("digits", dtype=F64)


def _run(fast_switch, *, lr=0.05, epochs=3, device="cuda", logger=None, batch_size=10):
    """minibatch digits: 1347 training samples at b=10 are 134 full batches (two 64-update chunks and six eager
    updates) and a partial batch of 7."""
    net = MLP([64, 16, 10], activation="tanh", output_activation="softmax", dtype=F64, device=device, seed=0)
    trainer = Trainer(net, _digits(), mode="minibatch", batch_size=batch_size, lr=lr, epochs=epochs, seed=1,
                      fast=fast_switch, logger=logger)
    return net, trainer.run(), trainer


def _assert_same(a, b, tol=1e-12):
    for p, q in zip(a.parameters(), b.parameters()):
        p, q = p.cpu(), q.cpu()
        assert torch.linalg.norm(p - q) <= tol * torch.linalg.norm(q)


def test_graph_is_captured_once_and_replayed_with_an_eager_tail_and_a_partial_batch():
    net_g, hist_g, trainer = _run("cuda_graph")
    net_p, hist_p, _ = _run(False)
    engine = trainer._fast_runner._engine
    assert isinstance(engine, fast.CudaGraphRunner) and engine.captures == 1, "one capture, replayed every epoch"
    assert hist_g.updates == hist_p.updates
    _assert_same(net_g, net_p)


def test_divergence_inside_a_replay_gives_the_plain_paths_message_and_restored_parameters():
    net_g, hist_g, _ = _run("cuda_graph", lr=1e6, epochs=2)
    net_p, hist_p, _ = _run(False, lr=1e6, epochs=2)
    assert hist_g.stop_reason == hist_p.stop_reason == "diverged"
    assert hist_g.message == hist_p.message
    _assert_same(net_g, net_p, tol=0.0)


def test_lr_change_recaptures_and_a_graph_replays_after_another_runners_graph_is_destroyed():
    net_a, _, trainer_a = _run("cuda_graph", epochs=1)
    trainer_a.lr = 0.02
    net_b, _, trainer_b = _run("cuda_graph", epochs=1)
    trainer_b._fast_runner.close()  # B's graph (and its workspace) goes
    del trainer_b
    trainer_a.epochs = 2
    trainer_a.run()
    assert trainer_a._fast_runner._engine.captures == 2, "the new lr must be captured anew"
    net_p = MLP([64, 16, 10], activation="tanh", output_activation="softmax", dtype=F64, device="cuda", seed=0)
    plain = Trainer(net_p, _digits(), mode="minibatch", batch_size=10, lr=0.05, epochs=1, seed=1)
    plain.run()
    plain.lr, plain.epochs = 0.02, 2
    plain.run()
    _assert_same(net_a, net_p)


def test_kept_gradients_reach_the_histograms():
    class Silent:
        def __getattr__(self, name):
            return lambda *a, **k: None

    _, _, trainer_g = _run("cuda_graph", epochs=1, logger=Silent())
    _, _, trainer_p = _run(False, epochs=1, logger=Silent())
    assert trainer_g.last_grads is not None
    for a, b in zip(trainer_g.last_grads.weights, trainer_p.last_grads.weights):
        assert torch.linalg.norm(a.cpu() - b.cpu()) <= 1e-12 * torch.linalg.norm(b.cpu())


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


def _xor_population(device, engine):
    # member 0 runs on, member 1 diverges (lr 1e4), member 2 reaches the target
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=F64, device=device)
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="online", lr=[0.1, 1e4, 5.0],
                                epochs=300, target_loss=0.05, engine=engine)
    return pop, trainer.run()


@pytest.mark.parametrize("engine", ["cuda_graph", "compiled"])
def test_population_engines_on_cuda_equal_eager_and_the_cpu(engine):
    pop_e, hist_e = _xor_population("cuda", "eager")
    pop_c, hist_c = _xor_population("cpu", "eager")
    pop_g, hist_g = _xor_population("cuda", engine)
    assert hist_g.stop_reason == hist_e.stop_reason == hist_c.stop_reason
    assert set(hist_g.stop_reason) >= {"diverged", "target_loss"}, "the case must cover frozen members"
    for a, b, c in zip(pop_g.parameters(), pop_e.parameters(), pop_c.parameters()):
        assert torch.linalg.norm(a.cpu() - b.cpu()) <= 1e-12 * torch.linalg.norm(b.cpu())
        assert torch.linalg.norm(a.cpu() - c) <= 1e-10 * torch.linalg.norm(c)


def test_one_process_torchrun_with_nccl_equals_a_single_process(tmp_path):
    common = ["-m", "experiments.learning_modes", "--dataset", "moons", "--sizes", "2", "8", "2", "--epochs", "3",
              "--modes", "batch", "minibatch", "--device", "cuda", "--dtype", "float64", "--quiet",
              "--logdir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    single = subprocess.run([sys.executable, *common, "--run-name", "single"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           *common, "--distributed", "--run-name", "nccl"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert dist.returncode == 0, dist.stderr
    a = json.loads((tmp_path / "learning_modes" / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "learning_modes" / "nccl" / "results.json").read_text())
    for mode in ("batch", "minibatch"):
        for x, y in zip(a[mode]["train_loss"], b[mode]["train_loss"]):
            assert abs(x - y) <= 1e-12 * abs(y)
