"""The learning modes: their equivalences, stopping conditions, reproducibility and checkpoints."""

import math

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.training import Trainer, train
from manual_backprop.checkpoint import load_checkpoint, save_checkpoint

F64 = torch.float64


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_samples=60, noise=0.2, seed=0, dtype=F64)


def fresh(seed=0, device="cpu", sizes=(2, 6, 2), dtype=F64):
    return MLP(list(sizes), activation="tanh", output_activation="softmax", bias_init="uniform", dtype=dtype,
               device=device, seed=seed)


def params(net):
    return [p.clone() for p in net.parameters()]


def test_minibatch_with_b_equal_n_is_exactly_batch_mode(moons, device):
    n = moons.x_train.shape[0]
    a, b = fresh(device=device), fresh(device=device)
    ha = train(a, moons, mode="batch", lr=0.5, epochs=5, loss_fn="cross_entropy")
    hb = train(b, moons, mode="minibatch", batch_size=n, lr=0.5, epochs=5, loss_fn="cross_entropy", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ha.train_loss == hb.train_loss and ha.updates == hb.updates == [0, 1, 2, 3, 4, 5]


def test_minibatch_with_b_1_is_exactly_online_mode(moons, device):
    a, b = fresh(device=device), fresh(device=device)
    ha = train(a, moons, mode="online", lr=0.1, epochs=2, loss_fn="cross_entropy", seed=7)
    hb = train(b, moons, mode="minibatch", batch_size=1, lr=0.1, epochs=2, loss_fn="cross_entropy", seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ha.train_loss == hb.train_loss
    n = moons.x_train.shape[0]
    assert ha.updates == [0, n, 2 * n]


def test_batch_gradient_is_the_mean_of_per_sample_gradients(moons):
    net = fresh()
    x = moons.x_train
    y = moons.targets("train", "index")
    _, full = net.loss_and_grads(x, y, "cross_entropy")
    per_sample = [net.loss_and_grads(x[i], y[i:i + 1], "cross_entropy")[1] for i in range(x.shape[0])]
    for k in range(net.num_layers):
        mean_w = torch.stack([g.weights[k] for g in per_sample]).mean(0)
        mean_b = torch.stack([g.biases[k] for g in per_sample]).mean(0)
        torch.testing.assert_close(full.weights[k], mean_w, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(full.biases[k], mean_b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode,kwargs", [("batch", {}), ("online", {}), ("minibatch", {"batch_size": 8}),
                                         ("minibatch", {"batch_size": 8, "replacement": True})])
def test_a_seeded_run_gives_the_same_numbers_again(moons, mode, kwargs):
    runs = []
    for _ in range(2):
        net = fresh(seed=1)
        history = train(net, moons, mode=mode, lr=0.2, epochs=3, loss_fn="cross_entropy", seed=5, **kwargs)
        runs.append((params(net), history.train_loss, history.test_loss, history.test_accuracy))
    assert all(torch.equal(p, q) for p, q in zip(runs[0][0], runs[1][0]))
    assert runs[0][1:] == runs[1][1:]
    other = fresh(seed=1)
    train(other, moons, mode=mode, lr=0.2, epochs=3, loss_fn="cross_entropy", seed=6, **kwargs)
    if mode != "batch":  # another sample order gives other numbers
        assert not torch.equal(other.weights[0], runs[0][0][0])


def test_minibatch_keeps_the_last_partial_batch_and_averages_over_its_size(moons):
    n = moons.x_train.shape[0]  # 45
    trainer = Trainer(fresh(), moons, mode="minibatch", batch_size=8, lr=0.1, epochs=1, loss_fn="cross_entropy")
    batches = trainer.batches()
    assert [len(b) for b in batches] == [8] * (n // 8) + [n % 8]
    assert sorted(torch.cat(batches).tolist()) == list(range(n)), "without replacement: each sample once an epoch"
    assert all(torch.equal(b, b.sort().values) for b in batches)
    # The partial batch's update is its own mean gradient: compare with loss_and_grads on exactly those samples.
    net = fresh()
    ref = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=8, lr=0.1, epochs=1, loss_fn="cross_entropy",
                      fast=False)  # the plain loop, op for op the same as loss_and_grads + step
    for idx in trainer.batches():
        y = moons.targets("train", "index")[idx]
        _, g = ref.loss_and_grads(moons.x_train[idx], y, "cross_entropy")
        ref.step(g, 0.1)
    generator_state = torch.Generator().manual_seed(0).get_state()
    trainer.generator.set_state(generator_state)
    trainer.run()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), ref.parameters()))


def test_history_records_train_and_test_every_epoch(moons):
    h = train(fresh(), moons, mode="minibatch", batch_size=10, lr=0.5, epochs=4, loss_fn="cross_entropy")
    assert h.epoch == [0, 1, 2, 3, 4]
    assert len(h.train_loss) == len(h.test_loss) == len(h.train_accuracy) == len(h.test_accuracy) == 5
    assert h.updates == [0, 5, 10, 15, 20]
    assert h.train_loss[-1] < h.train_loss[0]
    assert all(0.0 <= a <= 1.0 for a in h.test_accuracy)
    assert h.seconds[0] == 0.0 and h.seconds == sorted(h.seconds)
    assert h.stop_reason == "max_epochs"


def test_target_loss_stops_the_run(moons):
    h = train(fresh(), moons, mode="batch", lr=1.0, epochs=500, loss_fn="cross_entropy", target_loss=0.35)
    assert h.stop_reason == "target_loss"
    assert h.train_loss[-1] <= 0.35 < h.train_loss[-2]
    assert h.epoch[-1] < 500


def test_divergence_stops_with_a_message_and_keeps_the_last_good_state(moons):
    net = MLP([2, 8, 1], activation="relu", output_activation="identity", init="normal", init_scale=1.0,
              dtype=F64, seed=0)
    regression = type(moons)(name="moons-regression", x_train=moons.x_train * 50, y_train=torch.randn(45, 1, dtype=F64),
                             x_test=moons.x_test, y_test=torch.randn(15, 1, dtype=F64), num_classes=None)
    trainer = Trainer(net, regression, mode="online", lr=0.5, epochs=10, loss_fn="squared_error")
    history = trainer.run()
    assert history.stop_reason == "diverged"
    assert "diverged in epoch 1 at update" in history.message and "not finite" in history.message
    assert all(torch.isfinite(p).all() for p in net.parameters()), "the last good parameters are kept"
    assert history.epoch == [0] and math.isfinite(history.train_loss[-1])
    from manual_backprop.training import Diverged

    with pytest.raises(Diverged, match="diverged in epoch 1"):
        Trainer(MLP([2, 8, 1], activation="relu", output_activation="identity", init="normal", init_scale=1.0,
                    dtype=F64, seed=0), regression, mode="online", lr=0.5, epochs=10,
                loss_fn="squared_error").run(raise_on_divergence=True)


def test_divergence_after_good_epochs_restores_the_end_of_the_last_good_epoch(moons, monkeypatch, tmp_path):
    net = fresh()
    # a checkpoint every epoch: the C loop's several-epochs calls (fast/epochs.py) end at every epoch, so the
    # poison below lands at the start of epoch 4 on the default path as on the plain one
    trainer = Trainer(net, moons, mode="minibatch", batch_size=9, lr=0.1, epochs=6, loss_fn="cross_entropy",
                      checkpoint_path=tmp_path / "ckpt.pt")
    snapshots = {}
    original = Trainer._run_epochs

    def run_epochs(self):
        snapshots[self.epoch] = params(self.net)
        if self.epoch == 3:  # poison one update in epoch 4
            self.net.weights[0][0, 0] = float("nan")
        return original(self)

    monkeypatch.setattr(Trainer, "_run_epochs", run_epochs)
    history = trainer.run()
    assert history.stop_reason == "diverged" and "diverged in epoch 4 at update 16" in history.message
    assert history.epoch == [0, 1, 2, 3]
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), snapshots[3]))


def test_checkpoint_resume_equals_an_unbroken_run(moons, tmp_path):
    for mode, kwargs in [("online", {}), ("minibatch", {"batch_size": 7}), ("batch", {})]:
        unbroken = fresh()
        h_full = train(unbroken, moons, mode=mode, lr=0.2, epochs=6, loss_fn="cross_entropy", seed=2, **kwargs)
        path = tmp_path / f"{mode}.pt"
        first = fresh()
        train(first, moons, mode=mode, lr=0.2, epochs=3, loss_fn="cross_entropy", seed=2, checkpoint_path=path,
              **kwargs)
        resumed = fresh(seed=123)  # other initial weights: everything must come from the checkpoint
        trainer = Trainer(resumed, moons, mode=mode, lr=0.2, epochs=6, loss_fn="cross_entropy", seed=2,
                          checkpoint_path=path, **kwargs)
        trainer.resume(path)
        h_resumed = trainer.run()
        assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters())), mode
        assert h_resumed.train_loss == h_full.train_loss and h_resumed.updates == h_full.updates, mode
        assert load_checkpoint(path)["epoch"] == 6


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}, "the previous checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "no temporary file is left behind"


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_result(moons, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    net = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                      checkpoint_path=path, fast=False)  # interrupted inside the plain per-update loop
    original = Trainer._update
    calls = {"n": 0}

    def interrupt(self, idx):
        calls["n"] += 1
        if calls["n"] == 25:  # in the middle of epoch 3
            raise KeyboardInterrupt
        return original(self, idx)

    monkeypatch.setattr(Trainer, "_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["history"]["stop_reason"] == "interrupted"
    resumed = fresh(seed=9)
    t2 = Trainer(resumed, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                 fast=False)
    t2.resume(path)
    t2.run()
    unbroken = fresh()
    train(unbroken, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy", fast=False)
    assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters()))


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "stochastic", "lr": 0.1}, r"mode must be one of \['batch', 'online', 'minibatch'\], but got 'stochastic'"),
    ({"mode": "batch", "lr": -0.1}, "lr must be a finite number > 0, but got -0.1"),
    ({"mode": "minibatch", "lr": 0.1, "batch_size": 46}, r"batch_size must be an int in \[1, 45\]"),
    ({"mode": "minibatch", "lr": 0.1}, r"batch_size must be an int in \[1, 45\] .* but got None"),
    ({"mode": "batch", "lr": 0.1, "epochs": 0}, "epochs must be an int >= 1, but got 0"),
])
def test_bad_training_arguments_are_refused(moons, kwargs, message):
    kwargs.setdefault("epochs", 1)
    with pytest.raises(ValueError, match=message):
        Trainer(fresh(), moons, loss_fn="cross_entropy", **kwargs)


def test_data_that_does_not_fit_the_net_is_refused(moons):
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        Trainer(fresh(sizes=(3, 4, 2)), moons, mode="batch", lr=0.1, epochs=1)
    with pytest.raises(ValueError, match=r"sizes\[-1\] must equal the number of classes \(2\)"):
        Trainer(fresh(sizes=(2, 4, 3)), moons, mode="batch", lr=0.1, epochs=1, loss_fn="squared_error")


def test_float32_training_works_and_learns(moons):
    data = moons.to(dtype=torch.float32)
    net = fresh(dtype=torch.float32)
    h = train(net, data, mode="minibatch", batch_size=5, lr=0.3, epochs=20, loss_fn="cross_entropy")
    assert h.train_accuracy[-1] > 0.8


# ---------------------------------------------------------------------------------------------- issue 12
@pytest.mark.parametrize("kwargs,error,message", [
    ({"replacement": "no"}, TypeError, "replacement must be True or False, but got 'no'"),
    ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be an int >= 1, but got 0"),
    ({"histogram_every": 0}, ValueError, "histogram_every must be an int >= 1, but got 0"),
    ({"seed": "abc"}, TypeError, "seed must be an int, but got str: 'abc'"),
    ({"seed": 2 ** 70}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got 1180591620717411303424"),
    ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got -1"),
    ({"logger": "runs"}, TypeError, "logger must be a tblog.RunLogger .* but got str"),
    ({"progress": 3}, TypeError, "progress must be True, False or a label string, but got int: 3"),
])
def test_every_trainer_argument_is_checked_in_the_constructor(moons, kwargs, error, message):
    with pytest.raises(error, match=message):
        Trainer(fresh(), moons, mode="minibatch", batch_size=5, lr=0.1, epochs=1, **kwargs)


def test_a_folder_as_checkpoint_path_is_refused_in_the_constructor(moons, tmp_path):
    with pytest.raises(ValueError, match=rf"checkpoint_path {str(tmp_path)!r} is a folder; give a file path"):
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1, checkpoint_path=tmp_path)


def test_data_and_net_of_the_wrong_type_are_refused(moons):
    with pytest.raises(TypeError, match="data must be a Dataset .* but got str"):
        Trainer(fresh(), "moons", mode="batch", lr=0.1, epochs=1)
    with pytest.raises(TypeError, match="net must be a manual_backprop MLP, but got str"):
        Trainer("net", moons, mode="batch", lr=0.1, epochs=1)


def test_an_empty_split_is_refused_naming_it(moons):
    empty = type(moons)("empty", moons.x_train, moons.y_train, moons.x_test[:0], moons.y_test[:0], 2)
    with pytest.raises(ValueError, match="data.x_test is empty"):
        Trainer(fresh(), empty, mode="batch", lr=0.1, epochs=1)


def test_a_learning_rate_beyond_the_dtype_is_refused(moons):
    with pytest.raises(ValueError, match=r"lr=1e\+308 does not fit the network's dtype torch.float32"):
        Trainer(fresh(dtype=torch.float32), moons.to(dtype=torch.float32), mode="batch", lr=1e308, epochs=1)


def test_cross_entropy_on_regression_targets_is_refused(moons):
    regression = type(moons)("r", moons.x_train, moons.y_train[:, None].double(), moons.x_test,
                             moons.y_test[:, None].double(), None)
    with pytest.raises(ValueError, match="cross_entropy needs class labels, but the data holds regression targets"):
        Trainer(fresh(), regression, mode="batch", lr=0.1, epochs=1, loss_fn="cross_entropy")


def test_softmax_on_a_single_output_is_refused_before_training():
    """Softmax of one number is 1: such a network "trains" with loss 0 and learns nothing (a CSV with float labels
    and the default sizes made one). It is refused where the network is built, so no Trainer ever gets one."""
    with pytest.raises(ValueError, match="output_activation 'softmax' on a single output is always 1"):
        MLP([2, 3, 1], output_activation="softmax", dtype=F64, seed=0)


def test_trainer_state_dict_needs_a_mapping(moons):
    with pytest.raises(TypeError, match="state must be a Trainer.state_dict\\(\\) dict, but got NoneType"):
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1).load_state_dict(None)


def test_checkpoints_load_without_unpickling_code(moons, tmp_path, monkeypatch):
    """Every field of a Trainer checkpoint loads under torch.load(weights_only=True)."""
    path = tmp_path / "ckpt.pt"
    trainer = Trainer(fresh(), moons, mode="minibatch", batch_size=7, lr=0.2, epochs=2, checkpoint_path=path)
    trainer.run()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 2 and state["history"]["epoch"] == [0, 1, 2] and state["generator"].dtype == torch.uint8
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    load_checkpoint(path)
    assert loads == [True]


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match=rf"checkpoint {str(path)!r} holds objects that are not plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists(), "the checkpoint ran code"


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", "truncated"])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(moons, tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1, checkpoint_path=path).run()
        content = path.read_bytes()[:len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"checkpoint {str(path)!r} cannot be read .*delete it"):
        load_checkpoint(path)


def test_trainer_follows_the_network_to_another_dtype(moons, monkeypatch):
    """net.to(...) after the Trainer was built (issue 15, item 8): the data and the last good state follow it."""
    unbroken = fresh().to(torch.float32)
    train(unbroken, moons.to(dtype=torch.float32), mode="minibatch", batch_size=7, lr=0.2, epochs=2, seed=1)
    net = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=7, lr=0.2, epochs=2, seed=1)
    net.to(torch.float32)
    history = trainer.run()
    assert history.stop_reason == "max_epochs", history.message
    assert trainer.x_train.dtype == torch.float32 and all(g.dtype == torch.float32 for g in trainer._good_state)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), unbroken.parameters()))

    original = Trainer._run_epoch

    def run_epoch(self):  # between two epochs of one run, too
        original(self)
        if self.epoch == 1:
            self.net.to(torch.float64)

    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
    net = fresh().to(torch.float32)
    trainer = Trainer(net, moons.to(dtype=torch.float32), mode="batch", lr=0.2, epochs=3)
    history = trainer.run()
    assert history.stop_reason == "max_epochs" and history.epoch == [0, 1, 2, 3], history.message
    assert trainer.x_test.dtype == torch.float64 and net.weights[0].dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_trainer_follows_the_network_to_cuda(moons):
    """net.to("cuda") after the Trainer was built on the CPU: the data, the last good state and the fast path follow."""
    net = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=7, lr=0.2, epochs=2, seed=1)
    net.to("cuda")
    history = trainer.run()
    assert history.stop_reason == "max_epochs", history.message
    assert trainer.x_train.is_cuda and trainer.labels_test.is_cuda and all(g.is_cuda for g in trainer._good_state)
    expected = fresh(device="cuda")
    train(expected, moons.to("cuda"), mode="minibatch", batch_size=7, lr=0.2, epochs=2, seed=1)
    for p, q in zip(net.parameters(), expected.parameters()):
        torch.testing.assert_close(p, q)


def test_resuming_a_diverged_run_with_a_new_lr_continues_from_the_last_good_state(moons, tmp_path):
    path = tmp_path / "ckpt.pt"
    regression = type(moons)(name="moons-regression", x_train=moons.x_train * 50, y_train=torch.randn(45, 1, dtype=F64),
                             x_test=moons.x_test, y_test=torch.randn(15, 1, dtype=F64), num_classes=None)

    def trainer(lr):
        net = MLP([2, 8, 1], activation="relu", output_activation="identity", init="normal", init_scale=1.0,
                  dtype=F64, seed=0)
        return Trainer(net, regression, mode="online", lr=lr, epochs=3, loss_fn="squared_error")

    first = trainer(0.5)
    first.checkpoint_path = path
    assert first.run().stop_reason == "diverged"
    same = trainer(0.5).resume(path)
    assert same.run().stop_reason == "diverged", "the same lr would only diverge again: the run stays finished"
    history = trainer(1e-6).resume(path).run()
    assert history.stop_reason == "max_epochs" and history.epoch == [0, 1, 2, 3], history.message


def test_ctrl_c_inside_a_fast_epoch_resumes_to_the_unbroken_fast_run(moons, tmp_path, monkeypatch):
    """The default Trainer runs a fast path (fast="auto"); Ctrl-C inside its epoch rewinds that epoch as well."""
    from manual_backprop.fast import CKernel

    path = tmp_path / "ckpt.pt"
    trainer = Trainer(fresh(), moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                      checkpoint_path=path)
    assert trainer._fast_runner is not None and trainer._fast_runner.path == "c"
    original, calls = CKernel.call_epochs, {"n": 0}

    def interrupt(self, epochs):  # Ctrl-C as the C loop's call returns, before its epochs are recorded
        original(self, epochs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(CKernel, "call_epochs", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 2
    resumed = fresh(seed=9)
    Trainer(resumed, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy").resume(path).run()
    unbroken = fresh()
    train(unbroken, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy")
    assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters()))


def test_a_checkpoint_that_cannot_be_written_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    """A folder that turns read-only (or a full disk): the error names the checkpoint, the previous one stays."""
    from manual_backprop import checkpoint

    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError, match=rf"cannot write {path}: Permission denied"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}


def test_run_continues_when_epochs_are_raised(moons):
    """Like PopulationTrainer: run(), raise epochs, run() again equals one longer run."""
    a = Trainer(fresh(), moons, mode="minibatch", batch_size=8, lr=0.1, epochs=2, loss_fn="cross_entropy")
    a.run()
    a.epochs = 5
    history = a.run()
    b = Trainer(fresh(), moons, mode="minibatch", batch_size=8, lr=0.1, epochs=5, loss_fn="cross_entropy")
    b.run()
    assert history.epoch == list(range(6)) and history.stop_reason == "max_epochs"
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
