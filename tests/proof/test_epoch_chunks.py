"""The C loop's several-epochs call (fast/epochs.py) is the Trainer's epochs, epoch by epoch.

    orders       bit-identical to modes.epoch_order epoch by epoch, and the generator left where it leaves it;
    updates      one call of E epochs is bit-equal to E calls of one epoch, and to the one-epoch C loop
                 over whole runs (one update through the call is proven against network.py within C_ULPS by
                 reference/update_proof.py's "epochs" path, in test_update_proof.py);
    evaluation   the in-loop training loss within EVAL_ULPS (relative) of torch's evaluation of the same
                 parameters, the accuracy equal;
    rules        the divergence rewind, the target stop and the last good state as the one-epoch path has them;
    nothing kept a user's edit, a resume and net.to between runs are seen.
"""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import Dataset, load_dataset
from manual_backprop.fast import epochs as chunks_mod
from manual_backprop.fast.runner import EpochRunner
from manual_backprop.losses import SquaredError, get_loss
from manual_backprop.modes import epoch_order
from manual_backprop.training import Trainer
from reference.proof_cases import HIDDEN
from helpers import c_loop_reason, draw_targets, target_kind

F64 = torch.float64
OUTPUTS = [("sigmoid", SquaredError()), ("identity", SquaredError(reduction="elementwise_mean")),
           ("tanh", SquaredError(reduction="sum", half=True)), ("softmax", get_loss("cross_entropy")),
           ("sigmoid", get_loss("binary_cross_entropy"))]


pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")


def _data(loss_fn, n=12, n_test=7, seed=0, dtype=F64, classes=3):
    """Inputs (n, 3) and targets of the loss's kind (class indices, 0/1, or [0, 1)); a separate test split."""
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, 3, generator=g, dtype=dtype), torch.randn(n_test, 3, generator=g, dtype=dtype)
    kind = target_kind(loss_fn, classes="index", other="unit")
    y, yt = (draw_targets(kind, (m,), classes, g) for m in (n, n_test))
    y, yt = (t.to(dtype) if t.is_floating_point() else t for t in (y, yt))
    return Dataset("t", x, y, xt, yt, classes if kind == "index" else None)


def _trainer(hidden, output, loss_fn, *, chunked=True, epochs=9, dtype=F64, lr=0.3, scale=1.0, mode="online",
             monkeypatch=None, **kw):
    net = MLP([3, 5, 3], activation=hidden, output_activation=output, bias_init="uniform", dtype=dtype, seed=1)
    for w in net.weights:
        w.mul_(scale)
    t = Trainer(net, _data(loss_fn, dtype=dtype), mode=mode, lr=lr, epochs=epochs, loss_fn=loss_fn, seed=3,
                batch_size=kw.pop("batch_size", None), fast="c", **kw)
    assert t._fast_runner.path == "c"
    if not chunked:
        t._fast_runner.epoch_chunks = lambda: None  # the one-epoch C loop, the evaluation in torch
    return t


@pytest.mark.parametrize("n,E", [(n, E) for n in (2, 3, 4, 5, 17, 300) for E in (1, 2, 3, 7)]
                         + [(n, 8 * n + 1) for n in (2, 3, 4, 5, 17)] + [(4, 200)])
def test_bulk_orders_are_epoch_order_epoch_by_epoch(n, E):
    # the bulk replay takes calls of more than REPLAY_FROM epochs a sample, the rest draw torch.randperm an epoch
    assert chunks_mod.REPLAY_FROM == 8 and chunks_mod.REPLAY_MAX >= 17
    class T:  # what EpochChunks.orders reads of a Trainer
        mode, replacement, batch_size = "online", False, 1
        x_train = torch.zeros(n, 1)

    t = T()
    t.generator = torch.Generator().manual_seed(n * 10 + E)
    reference = torch.Generator().manual_seed(n * 10 + E)
    chunks = chunks_mod.EpochChunks.__new__(chunks_mod.EpochChunks)
    orders, offsets = chunks.orders(t, E)
    expected = torch.cat([epoch_order("online", n, 1, reference)[0] for _ in range(E)])
    assert torch.equal(orders, expected), "the bulk orders differ from epoch_order's"
    assert torch.equal(t.generator.get_state(), reference.get_state()), "the generator is not where epoch_order leaves it"
    assert torch.equal(offsets, torch.arange(n + 1))


@pytest.mark.parametrize("E", [1, 3])
def test_batch_mode_orders_are_epoch_orders_and_draw_nothing(E):
    class T:  # what EpochChunks.orders reads of a Trainer
        mode, replacement, batch_size = "batch", False, 7
        x_train = torch.zeros(7, 1)

    t = T()
    t.generator = torch.Generator().manual_seed(5)
    before = t.generator.get_state()
    chunks = chunks_mod.EpochChunks.__new__(chunks_mod.EpochChunks)
    orders, offsets = chunks.orders(t, E)
    assert torch.equal(orders, torch.cat([epoch_order("batch", 7, 7, None)[0] for _ in range(E)]))
    assert torch.equal(offsets, epoch_order("batch", 7, 7, None)[1])
    assert torch.equal(t.generator.get_state(), before)


def _state(t):
    return [p.clone() for p in t.net.parameters()]


def _run_in_calls(t, sizes):
    """Run the Trainer's epochs as calls of the given numbers of epochs, through EpochChunks directly."""
    chunks = t._fast_runner.epoch_chunks()
    t._record_epoch()  # epoch 0, as Trainer.run records it
    t._good_state = _state(t)
    for size in sizes:
        chunks._per_epoch = 1e-12  # no wall-time cap: exactly `size` epochs in the call
        chunks.run(t, t.epoch + size)
        if t.history.stop_reason:  # diverged (a saturated net at this lr): both ways must agree on it too
            break
    return t


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", [1.0, 8.0], ids=["ordinary", "saturated"])
@pytest.mark.parametrize("output,loss_fn", OUTPUTS, ids=[f"{o}-{l.name}" for o, l in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_one_call_of_E_epochs_is_E_calls_of_one(hidden, output, loss_fn, regime, dtype):
    a = _run_in_calls(_trainer(hidden, output, loss_fn, dtype=dtype, scale=regime), [6])
    b = _run_in_calls(_trainer(hidden, output, loss_fn, dtype=dtype, scale=regime), [1] * 6)
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q), "parameters after one call of 6 epochs differ from 6 calls of one"
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates", "epoch"):
        assert getattr(a.history, name) == getattr(b.history, name), name
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.history.stop_reason == b.history.stop_reason and a.history.message == b.history.message


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("output,loss_fn", OUTPUTS, ids=[f"{o}-{l.name}" for o, l in OUTPUTS])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("mode", ["online", "minibatch", "batch"])
def test_chunked_trainer_makes_the_one_epoch_c_loops_updates(hidden, output, loss_fn, dtype, mode):
    """Bit-equal parameters and generator to the one-epoch C loop (evaluated in torch) over the whole run; the
    in-loop evaluation within EVAL_ULPS of torch's on the same parameters, accuracies equal."""
    kw = {"batch_size": 5} if mode == "minibatch" else {}
    a = _trainer(hidden, output, loss_fn, dtype=dtype, mode=mode, **kw)
    b = _trainer(hidden, output, loss_fn, dtype=dtype, mode=mode, chunked=False, **kw)
    a.run(), b.run()
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q), "the chunked run's parameters differ from the one-epoch C loop's"
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.history.epoch == b.history.epoch and a.history.updates == b.history.updates
    assert a.history.train_accuracy == b.history.train_accuracy and a.history.test_accuracy == b.history.test_accuracy
    eps = torch.finfo(dtype).eps
    for name in ("train_loss", "test_loss"):
        for got, ref in zip(getattr(a.history, name), getattr(b.history, name)):
            assert abs(got - ref) <= chunks_mod.EVAL_ULPS * eps * abs(ref), f"{name}: {got} vs torch's {ref}"


def test_divergence_rewinds_as_the_one_epoch_path():
    loss_fn = SquaredError()
    a = _trainer("identity", "identity", loss_fn, lr=40.0, epochs=50)
    b = _trainer("identity", "identity", loss_fn, lr=40.0, epochs=50, chunked=False)
    a.run(), b.run()
    assert a.history.stop_reason == b.history.stop_reason == "diverged"
    assert a.history.message == b.history.message
    assert a.history.epoch == b.history.epoch
    for p, q, g in zip(a.net.parameters(), b.net.parameters(), a._good_state):
        assert torch.equal(p, q) and torch.equal(p, g) and bool(torch.isfinite(p).all())
    assert torch.equal(a.generator.get_state(), b.generator.get_state()), "the generator is not at the bad epoch's start"


def test_target_stop_as_the_one_epoch_path():
    loss_fn = SquaredError()
    probe = _trainer("tanh", "sigmoid", loss_fn, epochs=30, chunked=False)
    probe.run()
    target = probe.history.train_loss[12]  # reached at epoch 12 (or earlier)
    a = _trainer("tanh", "sigmoid", loss_fn, epochs=30, target_loss=target * (1 + 1e-9))
    b = _trainer("tanh", "sigmoid", loss_fn, epochs=30, chunked=False, target_loss=target * (1 + 1e-9))
    a.run(), b.run()
    assert a.history.stop_reason == b.history.stop_reason == "target_loss"
    assert a.history.epoch == b.history.epoch and a.history.message.split("(")[0] == b.history.message.split("(")[0]
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_an_edit_between_runs_and_net_to_are_seen():
    loss_fn = SquaredError()
    runs = []
    for chunked in (True, False):
        t = _trainer("tanh", "sigmoid", loss_fn, epochs=4, chunked=chunked)
        t.run()
        with torch.no_grad():
            t.net.weights[0][0, 0] = 2.5  # the user's edit between runs
        t.epochs = 8
        t.run()
        t.net.to(dtype=torch.float32)
        t.epochs = 11
        t.run()
        runs.append(t)
    a, b = runs
    assert a.net.dtype == torch.float32
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_resume_continues_to_the_unbroken_run(tmp_path):
    loss_fn = get_loss("cross_entropy")
    path = tmp_path / "ckpt.pt"
    whole = _trainer("tanh", "softmax", loss_fn, epochs=12)
    whole.run()
    first = _trainer("tanh", "softmax", loss_fn, epochs=5, checkpoint_path=path, checkpoint_every=2)
    first.run()
    second = _trainer("tanh", "softmax", loss_fn, epochs=12).resume(path)
    second.run()
    assert all(torch.equal(p, q) for p, q in zip(whole.net.parameters(), second.net.parameters()))
    assert whole.history.train_loss == second.history.train_loss


def test_default_trainer_uses_the_chunks_on_xor():
    data = load_dataset("xor", dtype=torch.float32)
    net = MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid", seed=0, dtype=torch.float32)
    t = Trainer(net, data, mode="online", lr=0.5, epochs=40, seed=0)
    calls = []
    original = chunks_mod.EpochChunks.run
    chunks_mod.EpochChunks.run = lambda self, tr, until: calls.append(until) or original(self, tr, until)
    try:
        t.run()
    finally:
        chunks_mod.EpochChunks.run = original
    assert calls and len(calls) < 40 and len(t.history.epoch) == 41
    assert isinstance(t._fast_runner, EpochRunner)


def test_the_last_gradients_are_those_of_the_stopping_epoch():
    """What the gradient histograms read (trainer.last_grads) after a call that stopped early: the last update's."""
    loss_fn = SquaredError()
    probe = _trainer("tanh", "sigmoid", loss_fn, epochs=30, chunked=False)
    probe.run()
    target = probe.history.train_loss[12] * (1 + 1e-9)
    runs = []
    for chunked in (True, False):
        t = _trainer("tanh", "sigmoid", loss_fn, epochs=30, chunked=chunked, target_loss=target)
        t._fast_runner.keep_grads = True
        t.run()
        runs.append(t)
    a, b = runs
    assert a.history.stop_reason == "target_loss" and a.history.epoch == b.history.epoch
    for g, h in zip([*a.last_grads.weights, *a.last_grads.biases], [*b.last_grads.weights, *b.last_grads.biases]):
        assert torch.equal(g, h), "the last gradients differ from the one-epoch C loop's"


@pytest.mark.parametrize("output,loss_fn", OUTPUTS, ids=[f"{o}-{l.name}" for o, l in OUTPUTS])
def test_rows_recorded_at_once_are_the_rows_a_logged_run_records_epoch_by_epoch(output, loss_fn, tmp_path):
    """Without a logger a call's History rows are appended at once (History.record_many); with one, epoch by epoch
    as the logger takes them. Every list holds the same values (seconds, timed, are a running sum in both)."""
    from manual_backprop.tblog import RunLogger

    a = _trainer("tanh", output, loss_fn, epochs=30)
    with RunLogger(tmp_path, "chunks", "logged", "online") as logger:
        b = _trainer("tanh", output, loss_fn, epochs=30, logger=logger)
        a.run(), b.run()
    for name in ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates"):
        assert getattr(a.history, name) == getattr(b.history, name), name
    for h in (a.history, b.history):
        assert len(h.seconds) == len(h.epoch) and all(s <= t for s, t in zip(h.seconds, h.seconds[1:]))
    assert a.epoch == b.epoch == 30 and a.updates == b.updates
