"""SGD, Adam and AdamW by hand against torch.optim on the autograd twin, and per member in a population.

Two claims per optimizer setting, over 100 steps in float64:
- given the same gradients, the manual optimizer makes the same updates as torch.optim's single-tensor algorithm,
  bit for bit (the same operations in the same order);
- trained end to end, the manual network and optimizer and the twin under torch.optim (autograd gradients, the loss
  from torch.nn.functional) have the same loss at every step and the same parameters at the end, to 1e-12.
"""

import pytest
import torch

from conftest import assert_tensors_agree
from helpers import draw_targets, target_kind
from manual_backprop import MLP
from manual_backprop.parameter_state import in_layer_order
from manual_backprop.losses import get_loss
from manual_backprop.optim import SGD, Adam, AdamW, get_optimizer
from manual_backprop.population import Population
from reference import TorchMLP, norm_relative_error, torch_loss

F64 = torch.float64
SIZES = [4, 8, 6, 3]
STEPS = 100

SETTINGS = {
    "sgd": (SGD, {"lr": 0.1}),
    "sgd-momentum": (SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd-dampening-l2": (SGD, {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}),
    "sgd-nesterov": (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    "adam": (Adam, {"lr": 1e-2}),
    "adam-l2-amsgrad": (Adam, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True}),
    "adamw": (AdamW, {"lr": 1e-2}),
    "adamw-amsgrad": (AdamW, {"lr": 3e-3, "betas": (0.5, 0.9), "weight_decay": 0.5, "amsgrad": True}),
}


def make_problem(device, dtype=F64, batch=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, SIZES[0], generator=g, dtype=F64).to(dtype=dtype, device=device)
    return x, draw_targets("index", (batch,), SIZES[-1], g).to(device)


def make_net(device, dtype=F64, seed=1):
    return MLP(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform", dtype=dtype,
               device=device, seed=seed)


def torch_optimizer(cls, params, settings):
    # foreach=False: torch.optim's single-tensor algorithm, which it also picks on the CPU by default.
    return getattr(torch.optim, cls.__name__)(params, foreach=False, **settings)


def step_side_by_side(net, twin, opt, reference, x, y):
    """One step of the manual optimizer on net and of the torch.optim reference on the twin, from the same
    gradients (the manual backward's, handed to the twin as .grad)."""
    _, grads = net.loss_and_grads(x, y, "cross_entropy")
    opt.step(grads)
    for p, g in zip(twin.parameters(), in_layer_order(grads.weights, grads.biases)):
        p.grad = g.clone()
    reference.step()


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_same_gradients_give_bit_equal_updates(setting, device):
    cls, settings = setting
    net = make_net(device)
    twin = TorchMLP.from_manual(net)
    opt, reference = cls(net, **settings), torch_optimizer(cls, twin.parameters(), settings)
    x, y = make_problem(device)
    for step in range(STEPS):
        step_side_by_side(net, twin, opt, reference, x, y)
        for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
            assert torch.equal(mine, theirs.detach()), f"step {step + 1}, parameter {i}: not bit-equal"


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_hundred_steps_equal_torch_optim_on_the_autograd_twin(setting, device):
    cls, settings = setting
    net = make_net(device)
    twin = TorchMLP.from_manual(net)
    opt, reference = cls(net, **settings), torch_optimizer(cls, twin.parameters(), settings)
    x, y = make_problem(device)
    first = float(net.loss(x, y, "cross_entropy"))
    for step in range(STEPS):
        loss, grads = net.loss_and_grads(x, y, "cross_entropy")
        opt.step(grads)
        with torch.enable_grad():
            out, zs = twin.forward_with_logits(x)
            expected = torch_loss(net.check_loss("cross_entropy"), zs[-1], out, y)
            reference.zero_grad()
            expected.backward()
        reference.step()
        err = abs(loss.item() - expected.item()) / abs(expected.item())
        assert err <= 1e-12, f"step {step + 1}: loss {loss.item()!r} vs torch.optim {expected.item()!r}"
    assert float(net.loss(x, y, "cross_entropy")) < first, "the run learned nothing: a vacuous comparison"
    for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
        assert_tensors_agree(f"parameter {i} after {STEPS} steps", mine, theirs.detach(), rel=1e-12)


# The plain update (MLP.step, no optimizer) on three architectures.
PLAIN_CASES = {
    "xor-sigmoid-se": ([2, 2, 1], "sigmoid", "sigmoid", "squared_error", 0.5),
    "tanh-softmax-ce": ([4, 10, 3], "tanh", "softmax", "cross_entropy", 0.2),
    "relu-deep-bce": ([3, 8, 8, 8, 2], "relu", "sigmoid", "binary_cross_entropy", 0.1),
}


@pytest.mark.parametrize("case", PLAIN_CASES.values(), ids=PLAIN_CASES.keys())
def test_hundred_plain_steps_equal_torch_optim_sgd_on_the_twin(case, device):
    """100 MLP.step updates equal 100 torch.optim.SGD steps on the autograd twin: the same loss at every step and
    the same parameters at the end, to 1e-12."""
    sizes, hidden, output, loss_name, lr = case
    net = MLP(sizes, activation=hidden, output_activation=output, bias_init="uniform", dtype=F64, device=device,
              seed=4)
    twin = TorchMLP.from_manual(net)
    reference = torch.optim.SGD(twin.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, sizes[0], generator=g, dtype=F64).to(device)
    loss_fn = get_loss(loss_name)
    y = draw_targets(target_kind(loss_fn), (16,), sizes[-1], g).to(device)
    for step in range(STEPS):
        loss, grads = net.loss_and_grads(x, y, loss_fn)
        net.step(grads, lr)
        with torch.enable_grad():
            out, zs = twin.forward_with_logits(x)
            expected = torch_loss(loss_fn, zs[-1], out, y)
            reference.zero_grad()
            expected.backward()
        reference.step()
        assert_tensors_agree(f"loss at step {step}", loss.reshape(1), expected.detach().reshape(1), rel=1e-12)
    for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
        assert_tensors_agree(f"parameter {i} after {STEPS} steps", mine, theirs.detach(), rel=1e-12)


def test_plain_sgd_is_the_lectures_update():
    """SGD(net, lr) makes exactly MLP.step's update W <- W - lr dE/dW."""
    a, b = make_net("cpu"), make_net("cpu")
    x, y = make_problem("cpu")
    opt = SGD(a, lr=0.3)
    for _ in range(10):
        opt.step(a.loss_and_grads(x, y, "cross_entropy")[1])
        b.step(b.loss_and_grads(x, y, "cross_entropy")[1], lr=0.3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_float32_follows_torch_optim():
    net = make_net("cpu", torch.float32)
    twin = TorchMLP.from_manual(net)
    opt, reference = Adam(net, lr=1e-2), torch_optimizer(Adam, twin.parameters(), {"lr": 1e-2})
    x, y = make_problem("cpu", torch.float32)
    for _ in range(20):
        step_side_by_side(net, twin, opt, reference, x, y)
    for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
        assert torch.equal(mine, theirs.detach()), f"parameter {i}"


# ---------------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_state_dict_round_trip_resumes_exactly(setting, tmp_path):
    cls, settings = setting
    x, y = make_problem("cpu")
    net = make_net("cpu")
    opt = cls(net, **settings)
    for _ in range(30):
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    for _ in range(20):
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = make_net("cpu", seed=9)
    resumed.load_state_dict(saved["net"])
    opt2 = cls(resumed, lr=123.0)  # the settings come back with the state
    opt2.load_state_dict(saved["opt"])
    assert opt2.settings() == opt.settings()
    for _ in range(20):
        opt2.step(resumed.loss_and_grads(x, y, "cross_entropy")[1])
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), resumed.parameters()))


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_state_dicts_load_across_to_and_from_torch_optim(setting):
    """The state dict has torch.optim's layout: a manual run continues in torch.optim and back, to the same bits."""
    cls, settings = setting
    x, y = make_problem("cpu")
    net = make_net("cpu")
    opt = cls(net, **settings)
    for _ in range(10):
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    twin = TorchMLP.from_manual(net)
    reference = torch_optimizer(cls, twin.parameters(), settings)
    reference.load_state_dict(opt.state_dict())
    for _ in range(10):
        step_side_by_side(net, twin, opt, reference, x, y)
    assert all(torch.equal(p, q.detach()) for p, q in zip(net.parameters(), twin.parameters()))
    back = cls(net, **settings)
    back.load_state_dict(reference.state_dict())
    for key, value in opt.state_dict()["state"].items():
        for name, t in value.items():
            assert torch.equal(t, back.state_dict()["state"][key][name]), f"state {key} {name}"


def test_load_state_dict_refuses_a_mismatch():
    net = make_net("cpu")
    x, y = make_problem("cpu")
    adam = Adam(net)
    adam.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    with pytest.raises(ValueError, match="settings"):
        SGD(net, lr=0.1).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="AdamW's, not Adam's"):
        Adam(net).load_state_dict(AdamW(net).state_dict())
    other = MLP([4, 5, 3], dtype=F64, seed=0)
    with pytest.raises(ValueError, match="one parameter group over the 4 parameters"):
        Adam(other).load_state_dict(adam.state_dict())
    state = adam.state_dict()
    state["state"][0]["exp_avg"] = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(2, 2\), but the parameter has \(8, 4\)"):
        Adam(net).load_state_dict(state)


# ---------------------------------------------------------------------------------------------------- settings
def test_bad_settings_are_named():
    net = make_net("cpu")
    with pytest.raises(ValueError, match="lr must be >= 0"):
        SGD(net, lr=-0.1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0 and dampening = 0"):
        SGD(net, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\)"):
        Adam(net, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas must be a pair"):
        Adam(net, betas=0.9)
    with pytest.raises(ValueError, match=r"lr must be one number, but got shape \(3,\)"):
        SGD(net, lr=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="eps must be a finite number"):
        Adam(net, eps=float("nan"))
    with pytest.raises(TypeError, match="amsgrad must be True or False"):
        Adam(net, amsgrad=1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        get_optimizer("rmsprop", net)
    assert isinstance(get_optimizer("AdamW", net, lr=0.1), AdamW)
    opt = SGD(net, lr=0.1)
    with pytest.raises(ValueError, match=r"gradient 1 \(net.parameters\(\)\[1\]\) must have shape \(8,\)"):
        opt.step([torch.zeros(8, 4, dtype=F64), torch.zeros(3, dtype=F64)] + net.parameters()[2:])
    with pytest.raises(ValueError, match="grads must hold 6 tensors"):
        opt.step(net.parameters()[:2])


def test_step_builds_no_graph():
    net = make_net("cpu")
    x, y = make_problem("cpu")
    _, grads = net.loss_and_grads(x, y, "cross_entropy")
    grads.weights = [g.clone().requires_grad_() for g in grads.weights]
    opt = Adam(net, weight_decay=0.1)
    with torch.enable_grad():
        opt.step(grads)
    assert all(not p.requires_grad and p.grad_fn is None for p in net.parameters())
    assert all(not t.requires_grad for s in opt.state.values() for t in s.values())


# ---------------------------------------------------------------------------------------------------- populations
PER_MEMBER = {
    "sgd-lr-momentum": (SGD, {"lr": [0.05, 0.1, 0.2], "momentum": [0.0, 0.5, 0.9]}),
    "sgd-nesterov-l2": (SGD, {"lr": 0.05, "momentum": [0.3, 0.6, 0.9], "nesterov": True,
                              "weight_decay": [0.0, 1e-3, 1e-2]}),
    "sgd-dampening": (SGD, {"lr": [0.05, 0.1, 0.2], "momentum": [0.0, 0.5, 0.9], "dampening": [0.5, 0.0, 0.3]}),
    "adam-lr-betas": (Adam, {"lr": [1e-3, 1e-2, 3e-2], "betas": ([0.8, 0.9, 0.95], 0.999)}),
    "adam-l2-amsgrad": (Adam, {"lr": 1e-2, "betas": (0.9, [0.99, 0.999, 0.9]), "eps": [1e-8, 1e-6, 1e-4],
                               "weight_decay": [0.0, 0.1, 0.01], "amsgrad": True}),
    "adamw": (AdamW, {"lr": [1e-3, 1e-2, 3e-2], "weight_decay": [0.0, 0.1, 0.5]}),
}


def member_settings(settings: dict, i: int) -> dict:
    def pick(v):
        return v[i] if isinstance(v, list) else v
    return {k: tuple(pick(b) for b in v) if k == "betas" else pick(v) for k, v in settings.items()}


@pytest.mark.parametrize("setting", PER_MEMBER.values(), ids=PER_MEMBER.keys())
def test_per_member_settings_follow_each_members_own_run(setting, device):
    """K members with their own numbers in one optimizer; member i ends where a single run with its numbers ends."""
    cls, settings = setting
    seeds = [1, 2, 3]
    pop = Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform", seeds=seeds,
                     dtype=F64, device=device)
    as_tensors = {k: (tuple(torch.tensor(b, dtype=F64) if isinstance(b, list) else b for b in v) if k == "betas"
                      else torch.tensor(v, dtype=F64) if isinstance(v, list) else v) for k, v in settings.items()}
    opt = cls(pop, **as_tensors)
    singles = [make_net(device, seed=s) for s in seeds]
    single_opts = [cls(net, **member_settings(settings, i)) for i, net in enumerate(singles)]
    x, y = make_problem(device)
    for step in range(50):
        opt.step(pop.loss_and_grads(x, y, "cross_entropy")[1])
        for net, o in zip(singles, single_opts):
            o.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    for i, net in enumerate(singles):
        for j, (p, q) in enumerate(zip(pop.parameters(), net.parameters())):
            err = norm_relative_error(p[i], q)
            assert err <= 1e-12, f"member {i} parameter {j}: {err:.2e} from its own run"


def test_population_with_shared_settings_is_bit_equal_to_torch_optim_per_member():
    pop = Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform", seeds=[1, 2],
                     dtype=F64)
    opt = Adam(pop, lr=1e-2, weight_decay=0.01)
    x, y = make_problem("cpu")
    twins = [TorchMLP.from_manual(pop.member(i)) for i in range(2)]
    refs = [torch_optimizer(Adam, t.parameters(), {"lr": 1e-2, "weight_decay": 0.01}) for t in twins]
    for _ in range(30):
        _, grads = pop.loss_and_grads(x, y, "cross_entropy")
        opt.step(grads)
        for i, (twin, ref) in enumerate(zip(twins, refs)):
            for p, g in zip(twin.parameters(), in_layer_order(grads.weights, grads.biases)):
                p.grad = g[i].clone()
            ref.step()
    for i, twin in enumerate(twins):
        assert all(torch.equal(p[i], q.detach()) for p, q in zip(pop.parameters(), twin.parameters()))


def test_per_member_settings_need_one_number_per_member():
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=F64)
    with pytest.raises(ValueError, match=r"lr must be one number or 3 \(one per member\), but got shape \(2,\)"):
        SGD(pop, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"momentum\[1\] must be >= 0"):
        SGD(pop, lr=0.1, momentum=torch.tensor([0.5, -0.5, 0.9]))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD(pop, lr=0.1, momentum=[0.5, 0.0, 0.9], nesterov=True)
    opt = SGD(pop, lr=torch.tensor([0.1, 0.2, 0.3]))
    assert opt.settings()["lr"] == pytest.approx([0.1, 0.2, 0.3])
    state = opt.state_dict()
    assert torch.equal(state["param_groups"][0]["lr"], torch.tensor([0.1, 0.2, 0.3]).double())  # as given


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


def test_members_mask_leaves_frozen_members_where_they_are():
    """PopulationTrainer freezes members (target reached, diverged): a masked member keeps its parameters, even where
    its gradient is NaN, and the others make the update they make without the mask."""
    def pop():
        return Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform",
                          seeds=[1, 2, 3], dtype=F64)

    masked, free = pop(), pop()
    opt_masked, opt_free = Adam(masked, lr=[1e-2, 2e-2, 3e-2]), Adam(free, lr=[1e-2, 2e-2, 3e-2])
    x, y = make_problem("cpu")
    frozen = [p[1].clone() for p in masked.parameters()]
    active = torch.tensor([True, False, True])
    for _ in range(5):
        _, grads = masked.loss_and_grads(x, y, "cross_entropy")
        for g in grads.weights:
            g[1] = float("nan")  # a diverged member's gradient
        opt_masked.update(masked.weights, masked.biases, grads, None, members=active)
        opt_free.step(free.loss_and_grads(x, y, "cross_entropy")[1])
    for j, (p, q, f) in enumerate(zip(masked.parameters(), free.parameters(), frozen)):
        assert torch.equal(p[1], f), f"parameter {j}: the frozen member moved"
        assert torch.equal(p[0], q[0]) and torch.equal(p[2], q[2]), f"parameter {j}: an active member differs"
    with pytest.raises(ValueError, match=r"members must be a \(3,\) bool tensor"):
        opt_free.step(free.loss_and_grads(x, y, "cross_entropy")[1], members=torch.tensor([True, False]))


def test_attach_optimizer_to_a_population_trainer():
    from manual_backprop.optim.hooks import attach_optimizer

    pop = Population([2, 2, 1], seeds=[0, 1], dtype=torch.float32)
    opt = SGD(pop, lr=[0.1, 0.5], momentum=0.9)
    lr = torch.tensor([0.1, 0.5], dtype=torch.float32)  # as PopulationTrainer keeps it: the population's dtype
    assert attach_optimizer(opt, pop, lr, "eager", switch="engine")[2] == "eager"
    assert attach_optimizer(SGD(pop, lr=0.1), pop, torch.tensor([0.1, 0.1]), "eager", switch="engine")
    with pytest.raises(ValueError, match="differs from the optimizer's lr"):
        attach_optimizer(opt, pop, torch.tensor([0.1, 0.1]), "eager", switch="engine")
    with pytest.raises(ValueError, match="engine='compiled' runs plain SGD; with an optimizer use engine='eager'"):
        attach_optimizer(opt, pop, lr, "compiled", switch="engine")


def _population_trainer_takes_an_optimizer() -> bool:
    import inspect

    from manual_backprop.population import PopulationTrainer

    return "optimizer" in inspect.signature(PopulationTrainer).parameters


@pytest.mark.skipif(not _population_trainer_takes_an_optimizer(), reason="PopulationTrainer has no optimizer hook yet")
def test_population_trainer_with_per_member_adam_follows_each_members_trainer():
    from manual_backprop.datasets import load_dataset
    from manual_backprop.population import PopulationTrainer
    from manual_backprop.training import Trainer

    data = load_dataset("xor", dtype=F64)
    lrs, beta1s = [0.01, 0.05, 0.1], [0.9, 0.8, 0.5]
    pop = Population([2, 3, 1], seeds=[0, 1, 2], dtype=F64)
    PopulationTrainer(pop, data, mode="minibatch", batch_size=2, lr=lrs, epochs=40, loss_fn="squared_error",
                      optimizer=Adam(pop, lr=lrs, betas=(beta1s, 0.999))).run()
    for i, (lr, beta1) in enumerate(zip(lrs, beta1s)):
        net = MLP([2, 3, 1], dtype=F64, seed=i)
        Trainer(net, data, mode="minibatch", batch_size=2, lr=lr, epochs=40, seed=i, loss_fn="squared_error",
                optimizer=Adam(net, lr=lr, betas=(beta1, 0.999))).run()
        for j, (p, q) in enumerate(zip(pop.parameters(), net.parameters())):
            assert norm_relative_error(p[i], q) <= 1e-12, f"member {i} parameter {j}"
    plain, with_sgd = (Population([2, 2, 1], seeds=list(range(4)), dtype=F64) for _ in range(2))
    # One engine for both (the C engine, the default without an optimizer, takes none), so the claim is the update's.
    PopulationTrainer(plain, data, mode="online", lr=2.0, epochs=30, loss_fn="squared_error", engine="eager").run()
    PopulationTrainer(with_sgd, data, mode="online", lr=2.0, epochs=30, loss_fn="squared_error", engine="eager",
                      optimizer=SGD(with_sgd, lr=2.0)).run()
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), with_sgd.parameters()))
