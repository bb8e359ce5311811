"""What the optimizer tests share (test_optim.py, test_optim_trainers.py, test_optim_populations.py): the settings
of each optimizer, the problem and network they train, and one step of the manual optimizer beside torch.optim's."""

import torch

from conftest import assert_tensors_agree
from helpers import draw_targets
from manual_backprop import MLP
from manual_backprop.parameter_state import in_layer_order
from manual_backprop.optim import SGD, Adam, AdamW
from reference import TorchMLP, torch_loss

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


def trained(cls, settings, steps, device="cpu"):
    """(net, opt, x, y): a fresh net after ``steps`` steps of cls(**settings) on the problem."""
    x, y = make_problem(device)
    net = make_net(device)
    opt = cls(net, **settings)
    for _ in range(steps):
        opt.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    return net, opt, x, y


def assert_bit_equal_side_by_side(cls, settings, device, dtype=F64, steps=STEPS):
    """``steps`` steps of cls(**settings) on a fresh net beside torch.optim's on its twin, from the same gradients:
    the parameters bit-equal after every step (the same operations in the same order)."""
    net = make_net(device, dtype)
    twin = TorchMLP.from_manual(net)
    opt, reference = cls(net, **settings), torch_optimizer(cls, twin.parameters(), settings)
    x, y = make_problem(device, dtype)
    for step in range(steps):
        step_side_by_side(net, twin, opt, reference, x, y)
        for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
            assert torch.equal(mine, theirs.detach()), f"step {step + 1}, parameter {i}: not bit-equal"


def train_beside_the_twin(net, step, twin, reference, x, y, loss_fn) -> None:
    """STEPS updates of net (``step(grads)``, from the manual backward) beside STEPS of the torch.optim ``reference``
    on its autograd twin (the loss from torch.nn.functional, autograd's gradients): the same loss at every step and
    the same parameters at the end, to 1e-12 (norm-relative)."""
    for k in range(STEPS):
        loss, grads = net.loss_and_grads(x, y, loss_fn)
        step(grads)
        with torch.enable_grad():
            out, zs = twin.forward_with_logits(x)
            expected = torch_loss(net.check_loss(loss_fn), zs[-1], out, y)
            reference.zero_grad()
            expected.backward()
        reference.step()
        assert_tensors_agree(f"loss at step {k + 1}", loss.reshape(1), expected.detach().reshape(1), rel=1e-12)
    for i, (mine, theirs) in enumerate(zip(net.parameters(), twin.parameters())):
        assert_tensors_agree(f"parameter {i} after {STEPS} steps", mine, theirs.detach(), rel=1e-12)
