"""The learning modes: their equivalences, stopping conditions and reproducibility; the Trainer following its network
to another dtype or device and continuing when the epochs are raised (checkpoints: test_trainer_checkpoints.py;
argument checks: test_trainer_arguments.py)."""

import math

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.training import Trainer, train
from trainer_cases import F64, fresh, moons_data, params

moons = pytest.fixture(scope="module", name="moons")(moons_data)


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
    from manual_backprop.network import ONE_UPDATE

    with ONE_UPDATE.off():  # network.py's functions alone, as fast=False runs them (not the one C call)
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


def test_float32_training_works_and_learns(moons):
    data = moons.to(dtype=torch.float32)
    net = fresh(dtype=torch.float32)
    h = train(net, data, mode="minibatch", batch_size=5, lr=0.3, epochs=20, loss_fn="cross_entropy")
    assert h.train_accuracy[-1] > 0.8


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
    # enough samples for the narrow kernel, a path that returns to Python every epoch (the C loop's several epochs
    # a call would run epoch 1 and 2 in one call, with no Python between them)
    many = load_dataset("moons", n_samples=1000, noise=0.2, seed=0, dtype=torch.float32)
    trainer = Trainer(net, many, mode="batch", lr=0.2, epochs=3)
    assert trainer._fast_runner.path == "narrow"
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
