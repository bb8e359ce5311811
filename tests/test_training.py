"""The learning modes: their equivalences, stopping conditions, reproducibility and checkpoints."""

import math

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.training import Trainer, load_checkpoint, save_checkpoint, train

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
    trainer = Trainer(net, moons, mode="minibatch", batch_size=8, lr=0.1, epochs=1, loss_fn="cross_entropy")
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


def test_divergence_after_good_epochs_restores_the_end_of_the_last_good_epoch(moons, monkeypatch):
    net = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=9, lr=0.1, epochs=6, loss_fn="cross_entropy")
    snapshots = {}
    original = Trainer._run_epoch

    def run_epoch(self):
        snapshots[self.epoch] = params(self.net)
        if self.epoch == 3:  # poison one update in epoch 4
            self.net.weights[0][0, 0] = float("nan")
        original(self)

    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
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
                      checkpoint_path=path)
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
    t2 = Trainer(resumed, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy")
    t2.resume(path)
    t2.run()
    unbroken = fresh()
    train(unbroken, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy")
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
