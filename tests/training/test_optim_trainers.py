"""The manual optimizers inside the training loops: no optimizer is the plain update, snapshots and checkpoints
rewind and resume them exactly and refuse another optimizer, a Trainer with an optimizer makes the hand loop's
updates, and its state follows the network to another dtype."""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.optim import SGD, Adam, AdamW
from reference import TorchMLP
from optim_cases import F64, make_net, make_problem


# ---------------------------------------------------------------------------------------------------- training loops
def test_no_optimizer_is_the_plain_update():
    from manual_backprop.optim.hooks import attach_optimizer

    a, b = make_net("cpu"), make_net("cpu")
    x, y = make_problem("cpu")
    plain = attach_optimizer(None, a, 0.2, False)[0]  # what a Trainer given no optimizer holds
    for _ in range(5):
        plain.update(a.weights, a.biases, a.loss_and_grads(x, y, "cross_entropy")[1], 0.2)
        b.step(b.loss_and_grads(x, y, "cross_entropy")[1], lr=0.2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_snapshot_and_restore_rewind_exactly():
    net = make_net("cpu")
    opt = Adam(net, lr=1e-2, amsgrad=True)
    x, y = make_problem("cpu")
    for _ in range(3):
        opt.update(net.weights, net.biases, net.loss_and_grads(x, y, "cross_entropy")[1], None)
    params, snapshot = [p.clone() for p in net.parameters()], opt.state_dict()
    for _ in range(4):  # an epoch cut short
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    for p, saved in zip(net.parameters(), params):
        p.copy_(saved)
    opt.load_state_dict(snapshot)
    for _ in range(4):
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    straight = make_net("cpu")
    straight_opt = Adam(straight, lr=1e-2, amsgrad=True)
    for _ in range(7):
        straight_opt.step(straight.loss_and_grads(x, y, "cross_entropy")[1])
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), straight.parameters()))


def test_checkpoints_refuse_another_optimizer_or_settings(tmp_path):
    from manual_backprop.optim.hooks import PlainGradientDescent

    net = make_net("cpu")
    opt = AdamW(net, lr=1e-2)
    opt.step(net.loss_and_grads(*make_problem("cpu"), "cross_entropy")[1])
    torch.save(opt.checkpoint_entry(), tmp_path / "opt.pt")
    saved = torch.load(tmp_path / "opt.pt", weights_only=True)
    same = AdamW(net, lr=1e-2)
    same.load_checkpoint_entry(saved)
    assert torch.equal(same.state[0]["exp_avg"], opt.state[0]["exp_avg"])
    with pytest.raises(ValueError, match="written with optimizer name='adamw', lr=0.01.*but this run has AdamW\\(lr=0.01, be"
                                         "tas=\\[0.9, 0.99\\]"):
        AdamW(net, lr=1e-2, betas=(0.9, 0.99)).load_checkpoint_entry(saved)
    other_lr = AdamW(net, lr=2e-2)  # a resume may change the learning rate, as a plain Trainer's may
    other_lr.load_checkpoint_entry(saved)
    assert other_lr.lr == 2e-2 and torch.equal(other_lr.state[0]["exp_avg"], opt.state[0]["exp_avg"])
    with pytest.raises(ValueError, match="but this run has no optimizer \\(plain SGD\\)"):
        PlainGradientDescent().load_checkpoint_entry(saved)
    with pytest.raises(ValueError, match="written with no optimizer \\(plain SGD\\), but this run has SGD"):
        SGD(net, lr=0.1).load_checkpoint_entry(None)
    assert PlainGradientDescent().checkpoint_entry() is None  # the entry checkpoints have always held for plain SGD
    PlainGradientDescent().load_checkpoint_entry(None)
    untouched = Adam(net, lr=0.5)
    with pytest.raises(ValueError, match="damaged"):
        untouched.load_checkpoint_entry({"state": {}})
    with pytest.raises(ValueError, match="damaged"):
        PlainGradientDescent().load_checkpoint_entry({"state": {}})
    assert untouched.lr == 0.5 and not untouched.state


def test_attach_optimizer_to_a_trainer():
    from manual_backprop.optim.hooks import attach_optimizer

    net, other = make_net("cpu"), make_net("cpu")
    opt = Adam(net, lr=1e-3)
    plain, lr, fast = attach_optimizer(None, net, 0.5, "auto")
    assert type(plain).__name__ == "PlainGradientDescent" and (lr, fast) == (0.5, "auto")
    assert attach_optimizer(opt, net, None, "auto") == (opt, 1e-3, False)
    assert attach_optimizer(opt, net, 1e-3, False) == (opt, 1e-3, False)
    with pytest.raises(ValueError, match="optimizer steps another network"):
        attach_optimizer(opt, other, None, False)
    with pytest.raises(ValueError, match="lr=0.5 differs from the optimizer's lr=0.001"):
        attach_optimizer(opt, net, 0.5, False)
    with pytest.raises(ValueError, match="fast='c' runs plain SGD"):
        attach_optimizer(opt, net, None, "c")
    with pytest.raises(TypeError, match="optimizer must be a manual_backprop.optim optimizer"):
        attach_optimizer(torch.optim.SGD(TorchMLP.from_manual(net).parameters(), lr=0.1), net, None, False)


def test_state_follows_the_network_to_another_dtype():
    net = make_net("cpu")
    opt = SGD(net, lr=0.1, momentum=0.9)
    x, y = make_problem("cpu")
    opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    net.to(torch.float32)
    opt.step(net.loss_and_grads(x.float(), y, "cross_entropy")[1])
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in opt.state.values())


# ---------------------------------------------------------------------------------------------------- Trainer
def _trainer_problem():
    from manual_backprop.datasets import load_dataset

    return load_dataset("blobs", n_samples=60, seed=0, dtype=F64)


def _blobs_net(seed=0):
    return MLP([2, 6, 3], activation="tanh", output_activation="softmax", bias_init="uniform", dtype=F64, seed=seed)


def test_trainer_with_an_optimizer_makes_the_hand_loops_updates():
    from manual_backprop.modes import epoch_order
    from manual_backprop.training import Trainer

    data = _trainer_problem()
    net, loop_net = _blobs_net(), _blobs_net()
    Trainer(net, data, mode="minibatch", batch_size=8, lr=1e-2, epochs=4, seed=3,
            optimizer=Adam(net, lr=1e-2, amsgrad=True)).run()
    opt, generator = Adam(loop_net, lr=1e-2, amsgrad=True), torch.Generator().manual_seed(3)
    from manual_backprop.network import ONE_UPDATE

    with ONE_UPDATE.off():  # the hand loop of network.py's functions (the Trainer's path with an optimizer)
        for _ in range(4):
            order, offsets = epoch_order("minibatch", 45, 8, generator)
            for idx in order.split(offsets.diff().tolist()):
                opt.step(loop_net.loss_and_grads(data.x_train[idx], data.y_train[idx], "cross_entropy")[1])
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), loop_net.parameters()))


def test_trainer_default_is_plain_sgd_with_the_same_numbers():
    from manual_backprop.training import Trainer

    data = _trainer_problem()
    plain, with_sgd = _blobs_net(), _blobs_net()
    Trainer(plain, data, mode="online", lr=0.05, epochs=3, fast=False).run()
    Trainer(with_sgd, data, mode="online", lr=0.05, epochs=3, optimizer=SGD(with_sgd, lr=0.05)).run()
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), with_sgd.parameters()))


@pytest.mark.parametrize("interrupt_at", [None, 13], ids=["between-epochs", "ctrl-c-mid-epoch"])
def test_trainer_checkpoints_resume_the_optimizer_exactly(tmp_path, monkeypatch, interrupt_at):
    from manual_backprop.training import Trainer

    data = _trainer_problem()
    straight = _blobs_net()
    Trainer(straight, data, mode="minibatch", batch_size=10, lr=1e-2, epochs=6,
            optimizer=SGD(straight, lr=1e-2, momentum=0.9, nesterov=True)).run()

    ckpt = tmp_path / "run.pt"
    first = _blobs_net()
    opt = SGD(first, lr=1e-2, momentum=0.9, nesterov=True)
    trainer = Trainer(first, data, mode="minibatch", batch_size=10, lr=1e-2, epochs=3 if interrupt_at is None else 6,
                      optimizer=opt, checkpoint_path=ckpt)
    if interrupt_at is None:
        trainer.run()
    else:
        calls, step = [0], opt.step

        def interrupting_step(grads):
            calls[0] += 1
            if calls[0] == interrupt_at:  # update 13: the third epoch (5 updates an epoch), part done
                raise KeyboardInterrupt
            step(grads)

        monkeypatch.setattr(opt, "step", interrupting_step)
        with pytest.raises(KeyboardInterrupt):
            trainer.run()
    resumed = _blobs_net(seed=5)
    Trainer(resumed, data, mode="minibatch", batch_size=10, lr=1e-2, epochs=6,
            optimizer=SGD(resumed, lr=1e-2, momentum=0.9, nesterov=True)).resume(ckpt).run()
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))


def test_trainer_refuses_a_resume_with_another_optimizer(tmp_path):
    from manual_backprop.training import Trainer

    data = _trainer_problem()
    net = _blobs_net()
    Trainer(net, data, mode="batch", lr=1e-2, epochs=2, optimizer=Adam(net, lr=1e-2),
            checkpoint_path=tmp_path / "run.pt").run()
    other = _blobs_net(seed=4)
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(ValueError, match="written with optimizer name='adam'.*but this run has no optimizer"):
        Trainer(other, data, mode="batch", lr=1e-2, epochs=4, fast=False).resume(tmp_path / "run.pt")
    with pytest.raises(ValueError, match=r"but this run has Adam\(lr=0.01, betas=\[0.5, 0.999\]"):
        Trainer(other, data, mode="batch", lr=1e-2, epochs=4,
                optimizer=Adam(other, lr=1e-2, betas=(0.5, 0.999))).resume(tmp_path / "run.pt")
    assert all(torch.equal(p, q) for p, q in zip(other.parameters(), before)), "a refused resume changed the net"
    with pytest.raises(ValueError, match="lr=0.5 differs from the optimizer's lr=0.01"):
        Trainer(other, data, mode="batch", lr=0.5, epochs=1, optimizer=Adam(other, lr=1e-2))
    with pytest.raises(ValueError, match="fast='fused' runs plain SGD"):
        Trainer(other, data, mode="batch", lr=1e-2, epochs=1, optimizer=Adam(other, lr=1e-2), fast="fused")
