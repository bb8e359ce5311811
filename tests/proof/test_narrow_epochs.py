"""The narrow kernel's several-epochs call (fast/narrow_epochs.py) is the Trainer's narrow path, epoch by epoch.

    updates, figures   bit-equal to NarrowBatch's epoch-by-epoch run (whose passes are proven against network.py
                       update by update in test_narrow_kernel.py): parameters, every History figure, the stop;
    rules              the divergence rewind, the target stop, the last good state and the last gradients as the
                       epoch-by-epoch path has them;
    nothing kept       a user's edit, net.to and a resume between runs are seen; checkpoints cut the calls;
    where it applies   batch mode without labels, where torch's add_ rounds as one fused multiply-add.
"""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import Dataset
from manual_backprop.fast import narrow_epochs
from manual_backprop.fast.narrow_epochs import NarrowChunks, chunks_unsupported
from manual_backprop.fast.one_update import add_is_fused
from manual_backprop.losses import SquaredError
from manual_backprop.training import Trainer
from helpers import c_loop_reason

F64, F32 = torch.float64, torch.float32
pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")


def _data(n=500, n_test=130, seed=0, dtype=F64, same=False, classes=None):
    """Inputs (n, 3) and regression targets (n, 4) (class indices with ``classes``); a separate test split unless
    ``same``. 500 samples: enough for the narrow kernel (runner.py's cost model)."""
    g = torch.Generator().manual_seed(seed)
    x, xt = torch.randn(n, 3, generator=g, dtype=dtype), torch.randn(n_test, 3, generator=g, dtype=dtype)
    if classes:
        y, yt = torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (n_test,), generator=g)
    else:
        y, yt = torch.randn(n, 4, generator=g, dtype=dtype), torch.randn(n_test, 4, generator=g, dtype=dtype)
    if same:
        xt, yt = x, y
    return Dataset("narrow-epochs", x, y, xt, yt, classes)


def _trainer(chunked, monkeypatch, *, hidden="tanh", dtype=F64, bias=True, same=False, epochs=12, lr=0.05,
             loss_fn=None, **kw):
    monkeypatch.setattr(narrow_epochs, "CHUNKS", chunked)
    net = MLP([3, 9, 5, 4], activation=hidden, output_activation="identity", bias=bias, bias_init="uniform"
              if bias else "zeros", dtype=dtype, seed=1)
    t = Trainer(net, _data(dtype=dtype, same=same), mode="batch", lr=lr, epochs=epochs,
                loss_fn=loss_fn or SquaredError(), seed=3, **kw)
    assert t._fast_runner.path == "narrow"
    assert (t._fast_runner.epoch_chunks() is not None) == chunked
    return t


def _run_pair(monkeypatch, **kw):
    """(chunked, epoch-by-epoch) trainers on the same network and data, each run; the chunked one's calls counted."""
    calls = []
    original = NarrowChunks.run
    monkeypatch.setattr(NarrowChunks, "run", lambda self, t, until: calls.append(until) or original(self, t, until))
    runs = []
    for chunked in (True, False):
        t = _trainer(chunked, monkeypatch, **kw)
        t.run()
        runs.append(t)
    a, b = runs
    assert calls, "the chunked trainer never called the narrow kernel's epochs"
    return a, b, calls


def _assert_same(a, b):
    for name in ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates"):
        assert getattr(a.history, name) == getattr(b.history, name), name
    assert a.history.stop_reason == b.history.stop_reason and a.history.message == b.history.message
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters())), "parameters differ"
    assert a.epoch == b.epoch and a.updates == b.updates


@pytest.mark.skipif(not add_is_fused(F64), reason="torch's add_ does not fuse here: the call does not apply")
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("same", [False, True], ids=["test-split", "test-is-train"])
def test_the_calls_make_the_epoch_by_epoch_run(monkeypatch, dtype, hidden, bias, same):
    a, b, calls = _run_pair(monkeypatch, dtype=dtype, hidden=hidden, bias=bias, same=same, epochs=12)
    assert len(calls) < 12, "one call an epoch: the calls did not take several"
    _assert_same(a, b)


def test_divergence_rewinds_as_the_epoch_by_epoch_path(monkeypatch):
    a, b, _ = _run_pair(monkeypatch, lr=3.0, epochs=60, hidden="identity")
    assert a.history.stop_reason == "diverged"
    _assert_same(a, b)
    for p, g in zip(a.net.parameters(), a._good_state):
        assert torch.equal(p, g) and bool(torch.isfinite(p).all())


def test_target_stop_and_last_gradients_as_the_epoch_by_epoch_path(monkeypatch):
    probe = _trainer(False, monkeypatch, epochs=30)
    probe.run()
    target = probe.history.train_loss[17] * (1 + 1e-12)  # reached at epoch 17 (or earlier)
    calls = []
    original = NarrowChunks.run
    monkeypatch.setattr(NarrowChunks, "run", lambda self, t, until: calls.append(until) or original(self, t, until))
    runs = []
    for chunked in (True, False):
        t = _trainer(chunked, monkeypatch, epochs=30, target_loss=target)
        t._fast_runner.keep_grads = True  # what the gradient histograms read
        if chunked:  # the epoch-by-epoch path keeps its last gradients anyway
            t._fast_runner.epoch_chunks().keep_grads = True
        t.run()
        runs.append(t)
    a, b = runs
    assert calls and a.history.stop_reason == "target_loss"
    _assert_same(a, b)
    for g, h in zip([*a.last_grads.weights, *a.last_grads.biases], [*b.last_grads.weights, *b.last_grads.biases]):
        assert torch.equal(g, h), "the last gradients differ from the epoch-by-epoch path's"


def test_an_edit_between_runs_and_net_to_are_seen(monkeypatch):
    runs = []
    for chunked in (True, False):
        t = _trainer(chunked, monkeypatch, epochs=4)
        t.run()
        with torch.no_grad():
            t.net.weights[1][0, 0] = 2.5  # the user's edit between runs
        t.epochs = 9
        t.run()
        t.net.to(dtype=F32)
        t.epochs = 13
        t.run()
        runs.append(t)
    a, b = runs
    assert a.net.dtype == F32
    _assert_same(a, b)


def test_checkpoints_cut_the_calls_and_a_resume_continues_to_the_unbroken_run(monkeypatch, tmp_path):
    whole = _trainer(True, monkeypatch, epochs=14)
    whole.run()
    path = tmp_path / "ckpt.pt"
    first = _trainer(True, monkeypatch, epochs=7, checkpoint_path=path, checkpoint_every=3)
    calls = []
    original = NarrowChunks.run
    monkeypatch.setattr(NarrowChunks, "run", lambda self, t, until: calls.append(until) or original(self, t, until))
    first.run()
    assert set(calls) <= {3, 6, 7}, f"a call went past a checkpoint: {calls}"
    second = _trainer(True, monkeypatch, epochs=14).resume(path)
    second.run()
    _assert_same(whole, second)


def test_where_it_applies(monkeypatch):
    t = _trainer(True, monkeypatch)
    assert chunks_unsupported(t) is None
    net = MLP([3, 9, 5, 3], activation="tanh", output_activation="softmax", dtype=F64, seed=1)
    classes = Trainer(net, _data(classes=3), mode="batch", lr=0.05, epochs=3)
    assert classes._fast_runner.path == "narrow"
    assert "accuracy" in chunks_unsupported(classes) and classes._fast_runner.epoch_chunks() is None
    monkeypatch.setattr(narrow_epochs, "add_is_fused", lambda dtype: False)  # a torch whose add_ rounds twice
    assert "fused" in chunks_unsupported(t) and t._fast_runner.epoch_chunks() is None


def test_ctrl_c_during_a_call_rewinds_to_its_start_and_a_resume_gives_the_unbroken_run(monkeypatch, tmp_path):
    whole = _trainer(True, monkeypatch, epochs=14)
    whole.run()
    path = tmp_path / "ckpt.pt"
    cut = _trainer(True, monkeypatch, epochs=14, checkpoint_path=path, checkpoint_every=100)
    original, seen = NarrowChunks._record, []

    def interrupted(self, t, *args):  # Ctrl-C lands after the second call's kernel ran, before its rows are kept
        seen.append(t.epoch)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return original(self, t, *args)
    monkeypatch.setattr(NarrowChunks, "_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    assert cut.history.stop_reason == "interrupted" and cut.epoch == seen[1] > 0
    monkeypatch.setattr(NarrowChunks, "_record", original)
    assert torch.equal(cut.net.weights[0], cut._good_state[0]), "the parameters are not the last kept epoch's"
    resumed = _trainer(True, monkeypatch, epochs=14).resume(path)
    assert resumed.epoch == cut.epoch
    resumed.run()
    _assert_same(whole, resumed)


def test_calls_of_one_epoch_make_one_pass_an_epoch_as_the_epoch_by_epoch_path(monkeypatch):
    """Each call starts from the pass the last one left (NarrowBatch's kept pass) and leaves its own: a run cut
    into calls of one epoch (Trainer.run one epoch at a time, a checkpoint every epoch) passes as often as one
    epoch at a time, and gives the same bits."""
    runs = []
    for chunked in (True, False):
        t = _trainer(chunked, monkeypatch, epochs=1)
        for e in range(1, 9):
            t.epochs = e
            t.run()
        runs.append(t)
    a, b = runs
    _assert_same(a, b)
    assert a._fast_runner._engine.passes == b._fast_runner._engine.passes == 9  # the first update's, one an epoch


def _with_edit(monkeypatch, chunked, edit):
    t = _trainer(chunked, monkeypatch, epochs=4)
    t.run()
    edit(t)
    t.epochs = 7
    t.run()
    return t


EDITS = {  # each pair: a write that bumps no version counter, and the same values written by one that does
    "a weight through .data": (lambda t: t.net.weights[1].data.__setitem__((0, 0), 2.5),
                               lambda t: t.net.weights[1].__setitem__((0, 0), 2.5)),
    "a bias through numpy": (lambda t: t.net.biases[0].numpy().__setitem__(0, -1.0),
                             lambda t: t.net.biases[0].__setitem__(0, -1.0)),
    "the inputs through .data": (lambda t: t.x_train.data.mul_(0.5), lambda t: t.x_train.mul_(0.5)),
    "the test targets through .data": (lambda t: t.y_test.data.add_(1.0), lambda t: t.y_test.add_(1.0)),
}


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "epoch-by-epoch"])
@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edit_that_bumps_no_version_is_seen_at_the_next_run(monkeypatch, chunked, edit):
    """The kept pass and the data copies are keyed on version counters; a write through ``.data`` or a numpy view
    bumps none, so each run compares the values (a red-team finding, older than the several-epochs call)."""
    silent, loud = EDITS[edit]

    def bumped(t):
        with torch.no_grad():
            loud(t)
    _assert_same(_with_edit(monkeypatch, chunked, silent), _with_edit(monkeypatch, chunked, bumped))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 16, 10_007])
def test_the_data_check_sees_one_changed_bit_anywhere(dtype, rows):
    """The check behind those runs (narrow.c's narrow_same_values, the copy transposed against the data through its
    strides): any single element changed is seen, at the first row, the last and a tail past the 16-row gathers, in a
    strided view too; bits, not ==: -0 for 0 is a change, and a NaN kept is none."""
    from manual_backprop.fast.narrow import _same_values, load_narrow_kernel

    lib = load_narrow_kernel()
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 5, generator=g, dtype=dtype)
    x[rows // 2, 1], x[0, 4] = 0.0, float("nan")
    copy = x.t().contiguous()  # (5, rows), as the kernel keeps the inputs
    assert _same_values(lib, copy.t(), x)
    for i, j, value in [(0, 0, 7.0), (rows - 1, 4, 7.0), (rows // 2, 1, -0.0), (rows - 1, 2, float("nan"))]:
        edited = x.clone()
        edited[i, j] = value
        assert not _same_values(lib, copy.t(), edited), (i, j, value)
    wide = torch.randn(rows, 10, generator=g, dtype=dtype)
    view = wide[:, ::2]  # row stride 10, column stride 2
    assert _same_values(lib, view.t().contiguous().t(), view)
    assert not _same_values(lib, view.t().contiguous().t(), wide[:, 1::2])


RESHAPED = {  # a user's tensor whose shape or dtype a ``.data =`` changed between runs: the copy no longer fits it
    "fewer target rows": lambda t: setattr(t.y_train, "data", t.y_train.data[:10].clone()),
    "targets of another dtype": lambda t: setattr(t.y_train, "data", t.y_train.data.float()),
    "fewer test target rows": lambda t: setattr(t.y_test, "data", t.y_test.data[:10].clone()),
    "3-D targets": lambda t: setattr(t.y_train, "data", t.y_train.data.unsqueeze(0)),
}


@pytest.mark.parametrize("change", list(RESHAPED))
def test_a_data_tensor_changed_in_shape_between_runs_is_a_change_not_a_read_past_it(monkeypatch, change):
    """The between-runs check compares the kept copies only with tensors of their own shape and dtype: a target
    tensor replaced through ``.data`` by a shorter one, one of another dtype or one of three dimensions is a change
    (the copy is made again from what the tensor holds, which the kernel then refuses by name), never a read of the
    new tensor through the old one's sizes (a red-team finding: y.contiguous() is y itself, so the shapes compared
    had been y's with y's; a shorter y was read past its end)."""
    from manual_backprop.fast.narrow import _same_values, load_narrow_kernel

    t = _trainer(True, monkeypatch, epochs=2)
    t.run()
    kernel = t._fast_runner._engine.kernel
    train, test = (t.x_train, t.y_train), (t.x_test, t.y_test)
    RESHAPED[change](t)
    engine = t._fast_runner._engine
    changed = [kernel.data_changed(*train), engine._held_out.data_changed(*test)]
    assert changed == [change != "fewer test target rows", change == "fewer test target rows"]
    lib = load_narrow_kernel()
    assert not _same_values(lib, torch.zeros(3, 2), torch.zeros(2, 3))
    assert not _same_values(lib, torch.zeros(3, 2), torch.zeros(3, 2, dtype=F64))
    assert not _same_values(lib, torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))


def test_the_last_gradients_without_a_logger_are_the_epoch_by_epoch_paths(monkeypatch):
    a, b, _ = _run_pair(monkeypatch, epochs=9)
    assert a.logger is None and a.last_grads is not None
    for g, h in zip([*a.last_grads.weights, *a.last_grads.biases], [*b.last_grads.weights, *b.last_grads.biases]):
        assert torch.equal(g, h)
