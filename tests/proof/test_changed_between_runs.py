"""What a user changes between two runs reaches every fast path: the change is the plain path's, whatever was kept.

A fast path copies things when it is built or after a pass: the f's and the loss (codes, a LeakyReLU's slope, the
loss's reduction, in the C plans), the parameters' memory (the fused step's transposed views, the C plans'
pointers), a forward phase or gradients at the current parameters (NarrowBatch, FusedStep). A user may change any
of them between two ``Trainer.run`` calls, or before a ``Trainer.evaluate`` outside a run: an attribute set in
place, an f replaced, a parameter given new memory (``.data =``, ``set_``), values written through numpy (which
bumps no version counter), the data edited the same way. Each change must give what the plain path gives.

These are whole-run comparisons (four epochs, float64): a path that kept what the change made stale differs from
the plain path by 1e-3 and more; the same path without a stale copy agrees within its proven ulps
(test_update_proof.py and the paths' own proofs), far inside the tolerance below.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from manual_backprop import MLP
from manual_backprop.activations import LeakyReLU
from manual_backprop.datasets import load_dataset
from manual_backprop.derived import ONE_UPDATE
from manual_backprop.losses import SquaredError
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import Trainer
from tests.helpers import c_loop_reason

F64 = torch.float64
C_REASON = c_loop_reason()
needs_c = pytest.mark.skipif(C_REASON is not None, reason=f"no C loop here: {C_REASON}")

# name: (mode, samples, sizes, batch size, fast, the path it must take)
PATHS = {
    "c-online": ("online", 200, [2, 8, 2], None, "auto", "c"),
    "c-minibatch": ("minibatch", 400, [2, 12, 2], 20, "auto", "c"),
    "narrow-batch": ("batch", 1000, [2, 8, 2], None, "auto", "narrow"),
    "fused-batch": ("batch", 1000, [2, 100, 2], None, "auto", "fused"),
    "fused-minibatch": ("minibatch", 400, [2, 12, 2], 20, "fused", "fused"),
}


def _change(t: Trainer, how: str) -> None:
    net, w = t.net, t.net.weights[0]
    if how == "slope":
        net.activation_functions[0].negative_slope = 0.9
    elif how == "f_replaced":
        net.activation_functions[0] = LeakyReLU(0.9)
    elif how == "reduction":
        t.loss_fn.reduction = "sum"
    elif how == "data_assigned":
        w.data = w.clone() * 0.5
    elif how == "set_":
        w.set_(w.clone() * 0.5)
    elif how == "numpy_write":
        w.numpy()[:] *= 0.5  # no version bump
    elif how == "x_numpy_write":
        t.x_train.numpy()[:] *= 0.5
    else:
        raise AssertionError(how)


CHANGES = ["slope", "f_replaced", "reduction", "data_assigned", "set_", "numpy_write", "x_numpy_write"]


def _two_runs(path: str, fast, how: str, evaluate_between: bool):
    mode, n, sizes, batch, fast_path, _ = PATHS[path]
    data = load_dataset("moons", n_samples=n, noise=0.2, seed=0, dtype=F64)
    net = MLP(sizes, activation="leaky_relu:0.01", output_activation="softmax", dtype=F64, seed=0)
    extra = {"batch_size": batch} if batch else {}
    t = Trainer(net, data, mode=mode, lr=0.1, epochs=2, seed=0, fast=fast_path if fast else False, **extra)
    t.run()
    _change(t, how)
    between = t.evaluate("train")[0] if evaluate_between else None
    t.epochs = 4
    t.run()
    return t, between


@needs_c
@pytest.mark.parametrize("evaluate_between", [False, True], ids=["run", "evaluate-then-run"])
@pytest.mark.parametrize("how", CHANGES)
@pytest.mark.parametrize("path", list(PATHS))
def test_a_change_between_runs_is_the_plain_paths(path, how, evaluate_between):
    fast, between_fast = _two_runs(path, True, how, evaluate_between)
    plain, between_plain = _two_runs(path, False, how, evaluate_between)
    assert fast._fast_runner.path == PATHS[path][-1]
    if evaluate_between:  # the evaluation outside a run sees the change
        assert_close(between_fast, between_plain, rtol=1e-12, atol=1e-14)
    for a, b in zip(fast.net.parameters(), plain.net.parameters()):
        assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert_close(torch.tensor(fast.history.train_loss), torch.tensor(plain.history.train_loss), rtol=1e-9,
                 atol=1e-12)


@pytest.mark.parametrize("fast", [False, "auto"])
def test_a_divergence_after_a_change_between_runs_puts_back_the_changed_parameters(fast):
    """The first epoch's start is the parameters as the user left them, not the last run's last good state."""
    data = load_dataset("moons", n_samples=200, noise=0.2, seed=0, dtype=F64)
    net = MLP([2, 8, 2], activation="tanh", output_activation="softmax", dtype=F64, seed=0)
    t = Trainer(net, data, mode="online", lr=0.1, epochs=2, seed=0, fast=fast)
    t.run()
    with torch.no_grad():
        net.weights[1].mul_(1e308)  # the logits overflow: the first epoch diverges
    changed = [p.clone() for p in net.parameters()]
    t.epochs = 4
    t.run()
    assert t.history.stop_reason == "diverged"
    for p, c in zip(net.parameters(), changed):
        assert torch.equal(p, c)


@pytest.mark.parametrize("how", ["slope", "f_replaced", "reduction"])
def test_one_update_sees_an_f_or_loss_changed_in_place(how):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    net = MLP([3, 5, 2], activation="leaky_relu:0.01", output_activation="identity", dtype=F64, seed=0)
    loss_fn = SquaredError()
    net.loss_and_grads(x, y, loss_fn)  # a plan is built
    if how == "slope":
        net.activation_functions[0].negative_slope = 0.5
    elif how == "f_replaced":
        net.activation_functions[0] = LeakyReLU(0.5)
    else:
        loss_fn.reduction = "sum"
    loss, grads = net.loss_and_grads(x, y, loss_fn)
    with ONE_UPDATE.off():
        loss_ref, grads_ref = net.loss_and_grads(x, y, loss_fn)
    assert_close(loss, loss_ref, rtol=1e-14, atol=1e-15)
    for a, b in zip(grads.weights + grads.biases, grads_ref.weights + grads_ref.biases):
        assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_the_population_c_engine_sees_an_f_changed_between_runs():
    data = load_dataset("xor", dtype=F64)
    final = {}
    for engine in ("c", "eager"):
        pop = Population([2, 3, 1], activation="leaky_relu:0.01", seeds=range(8), dtype=F64)
        t = PopulationTrainer(pop, data, mode="online", lr=0.5, epochs=5, engine=engine)
        t.run()
        pop.activation_functions[0].negative_slope = 0.9
        t.epochs = 10
        t.run()
        assert t.engine == engine
        final[engine] = [p.clone() for p in pop.weights + pop.biases]
    for a, b in zip(final["c"], final["eager"]):
        assert_close(a, b, rtol=1e-12, atol=1e-14)
