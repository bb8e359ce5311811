"""SGD, Adam and AdamW by hand against torch.optim on the autograd twin: steps, state dicts, settings (in the training
loops: test_optim_trainers.py; per member of a population: test_optim_populations.py).

Two claims per optimizer setting, over 100 steps in float64:
- given the same gradients, the manual optimizer makes the same updates as torch.optim's single-tensor algorithm,
  bit for bit (the same operations in the same order);
- trained end to end, the manual network and optimizer and the twin under torch.optim (autograd gradients, the loss
  from torch.nn.functional) have the same loss at every step and the same parameters at the end, to 1e-12.
"""


import pytest
import torch

from helpers import draw_targets, target_kind
from manual_backprop import MLP
from manual_backprop.losses import get_loss
from manual_backprop.optim import SGD, Adam, AdamW, get_optimizer
from reference import TorchMLP
from optim_cases import (F64, SETTINGS, assert_bit_equal_side_by_side, make_net, make_problem, step_side_by_side,
                         torch_optimizer, train_beside_the_twin, trained)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_same_gradients_give_bit_equal_updates(setting, device):
    assert_bit_equal_side_by_side(*setting, device)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_hundred_steps_equal_torch_optim_on_the_autograd_twin(setting, device):
    cls, settings = setting
    net = make_net(device)
    twin = TorchMLP.from_manual(net)
    opt, reference = cls(net, **settings), torch_optimizer(cls, twin.parameters(), settings)
    x, y = make_problem(device)
    first = float(net.loss(x, y, "cross_entropy"))
    train_beside_the_twin(net, opt.step, twin, reference, x, y, "cross_entropy")
    assert float(net.loss(x, y, "cross_entropy")) < first, "the run learned nothing: a vacuous comparison"


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
    train_beside_the_twin(net, lambda grads: net.step(grads, lr), twin, reference, x, y, loss_fn)


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
    assert_bit_equal_side_by_side(Adam, {"lr": 1e-2}, "cpu", torch.float32, steps=20)


# ---------------------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_state_dict_round_trip_resumes_exactly(setting, tmp_path):
    cls, settings = setting
    net, opt, x, y = trained(cls, settings, 30)
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
    net, opt, x, y = trained(cls, settings, 10)
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
