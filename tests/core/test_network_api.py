"""The public API: shapes, state dicts that load into torch.nn.Sequential, init schemes, seeds, devices."""

import math

import pytest
import torch
from torch import nn

from manual_backprop import MLP
from reference import TorchMLP

F64 = torch.float64


def test_shapes_of_the_public_api():
    net = MLP([5, 7, 4, 3], activation="relu", output_activation="softmax", dtype=F64, seed=0)
    assert [tuple(w.shape) for w in net.weights] == [(7, 5), (4, 7), (3, 4)]
    assert [tuple(b.shape) for b in net.biases] == [(7,), (4,), (3,)]
    x = torch.randn(6, 5, dtype=F64)
    assert net(x).shape == net.forward(x).shape == (6, 3)
    loss, grads = net.loss_and_grads(x, torch.tensor([0, 1, 2, 0, 1, 2]), "cross_entropy")
    assert loss.dim() == 0
    assert [tuple(d.shape) for d in grads.deltas] == [(6, 7), (6, 4), (6, 3)]
    assert [tuple(g.shape) for g in grads.weights] == [(7, 5), (4, 7), (3, 4)]
    torch.testing.assert_close(net(x).sum(dim=1), torch.ones(6, dtype=F64))  # softmax rows are distributions


def test_backward_is_pure_and_step_updates_in_place():
    net = MLP([3, 4, 2], dtype=F64, seed=0)
    before = [p.clone() for p in net.parameters()]
    ids = [id(p) for p in net.parameters()]
    x, y = torch.randn(5, 3, dtype=F64), torch.rand(5, 2, dtype=F64)
    _, grads = net.loss_and_grads(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    net.step(grads, lr=0.3)
    assert [id(p) for p in net.parameters()] == ids
    torch.testing.assert_close(net.weights[0], before[0] - 0.3 * grads.weights[0], rtol=0, atol=0)
    torch.testing.assert_close(net.biases[1], before[3] - 0.3 * grads.biases[1], rtol=0, atol=0)


@pytest.mark.parametrize("output", ["sigmoid", "softmax", "identity"])
def test_state_dict_loads_into_plain_sequential(output):
    net = MLP([3, 6, 6, 2], activation=["tanh", "relu"], output_activation=output, bias_init="uniform",
              dtype=F64, seed=1)
    seq = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2),
                        {"sigmoid": nn.Sigmoid(), "softmax": nn.Softmax(dim=-1), "identity": nn.Identity()}[output]).double()
    seq.load_state_dict(net.state_dict())
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(seq(x).detach(), net(x), rtol=0, atol=0)
    twin = TorchMLP.from_manual(net)
    assert list(twin.state_dict()) == list(net.state_dict()) == list(seq.state_dict())
    back = twin.to_manual()
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), net.parameters()))
    fresh = MLP(net.sizes, activation=["tanh", "relu"], output_activation=output, dtype=F64, seed=99)
    fresh.load_state_dict(seq.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), net.parameters()))


def test_same_seed_same_network_other_seed_other_network():
    a = MLP([4, 16, 3], seed=7, bias_init="normal")
    b = MLP([4, 16, 3], seed=7, bias_init="normal")
    c = MLP([4, 16, 3], seed=8, bias_init="normal")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.weights[0], c.weights[0])
    # float32 is the rounding of the float64 draw, so both dtypes start from the same network.
    d = MLP([4, 16, 3], seed=7, bias_init="normal", dtype=F64)
    assert all(torch.equal(p, q.float()) for p, q in zip(a.parameters(), d.parameters()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_same_seed_same_network_on_cpu_and_cuda():
    cpu = MLP([4, 16, 3], seed=3, dtype=F64)
    cuda = MLP([4, 16, 3], seed=3, dtype=F64, device="cuda")
    assert all(torch.equal(p, q.cpu()) for p, q in zip(cpu.parameters(), cuda.parameters()))
    moved = cpu.copy().to("cuda")
    assert moved.device.type == "cuda" and all(p.is_cuda for p in moved.parameters())


@pytest.mark.parametrize("init,expected_std", [
    ("normal", lambda fi, fo, s: s),
    ("uniform", lambda fi, fo, s: s / math.sqrt(3)),
    ("xavier_uniform", lambda fi, fo, s: math.sqrt(2 / (fi + fo))),
    ("xavier_normal", lambda fi, fo, s: math.sqrt(2 / (fi + fo))),
    ("he_uniform", lambda fi, fo, s: math.sqrt(2 / fi)),
    ("he_normal", lambda fi, fo, s: math.sqrt(2 / fi)),
    ("torch_default", lambda fi, fo, s: 1 / math.sqrt(3 * fi)),
])
def test_init_schemes_have_their_variance(init, expected_std):
    net = MLP([200, 300], init=init, init_scale=0.3, dtype=F64, seed=0)
    std = net.weights[0].std().item()
    target = expected_std(200, 300, 0.3)
    assert abs(std - target) < 0.02 * target, f"{init}: std {std:.4f}, expected {target:.4f}"
    assert abs(net.weights[0].mean().item()) < 0.01 * target * 10


def test_bias_inits():
    assert all((b == 0).all() for b in MLP([3, 4, 2], bias_init="zeros", seed=0).biases)
    nonzero = MLP([3, 400, 2], bias_init="uniform", init_scale=0.1, seed=0, dtype=F64).biases[0]
    assert nonzero.abs().max() <= 0.1 and nonzero.std() > 0.05


def test_from_tensors_copies_and_reads_shapes():
    w = [torch.randn(5, 3, dtype=F64), torch.randn(2, 5, dtype=F64)]
    net = MLP.from_tensors(w, None, activation="tanh", output_activation="identity")
    assert net.sizes == [3, 5, 2] and net.dtype == F64 and not net.bias
    w[0].zero_()
    assert net.weights[0].abs().sum() > 0, "the given tensors are copied"


def test_to_and_copy():
    net = MLP([2, 3, 1], seed=0)
    clone = net.copy()
    clone.weights[0].add_(1.0)
    assert not torch.equal(clone.weights[0], net.weights[0])
    net.to(dtype=F64)
    assert net.dtype == F64 and all(p.dtype == F64 for p in net.parameters())
    assert net(torch.zeros(1, 2, dtype=F64)).dtype == F64


@pytest.mark.parametrize("bad,message", [
    (lambda b: torch.empty_like(b, device="meta"), r"state_dict\['2.bias'\] is a meta tensor, which holds no values"),
    (lambda b: b.to_sparse(), r"state_dict\['2.bias'\] must be a dense \(strided\) tensor, but got layout "
                              r"torch.sparse_coo"),
    (lambda b: b.to(torch.complex128), r"state_dict\['2.bias'\] must hold real numbers, but got dtype "
                                       r"torch.complex128"),
    (lambda b: b[:0], r"state_dict\['2.bias'\] must have shape \(1,\), but got \(0,\)"),
    (lambda b: b.tolist(), r"state_dict\['2.bias'\] must be a torch.Tensor, but got list"),
])
def test_a_bad_last_value_leaves_the_network_untouched(bad, message):
    """load_state_dict checks every value (type, layout, device, dtype, shape) before the first copy: a bad
    '2.bias' refuses the whole dict in one line naming the key, and '0.weight', '0.bias', '2.weight' stay as they
    were (issue 20: they were overwritten, then the meta or sparse '2.bias' failed)."""
    net, other = MLP([2, 3, 1], seed=0, dtype=torch.float64), MLP([2, 3, 1], seed=1, dtype=torch.float64)
    before = [p.clone() for p in net.parameters()]
    state = dict(other.state_dict())
    state["2.bias"] = bad(state["2.bias"])
    with pytest.raises((TypeError, ValueError), match=message):
        net.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_the_package_exports_what_a_reader_reaches_for():
    """``from manual_backprop import ...`` gives the MLP, the slide's functions (network.py's own), the losses and
    activations, and the Trainer with its History; internals stay in their modules."""
    import manual_backprop
    from manual_backprop import network

    slide = ("forward_phase", "backward_phase", "output_delta", "hidden_delta", "weight_gradient", "bias_gradient",
             "update")
    assert all(getattr(manual_backprop, name) is getattr(network, name) for name in slide)
    wanted = {"MLP", "Trainer", "History", "Loss", "SquaredError", "CrossEntropy", "BinaryCrossEntropy", "Activation",
              "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Identity", "Softmax", *slide}
    assert wanted <= set(manual_backprop.__all__)
    assert all(hasattr(manual_backprop, name) for name in manual_backprop.__all__)
    assert not {"resolve_architecture", "kept_bytes", "attach_optimizer", "SampleOrders"} & set(manual_backprop.__all__)


def test_inputs_taken_as_given_are_what_the_checks_return():
    """MLP.loss_and_grads skips its checks for the common inputs (_takes_as_given); for exactly those the checks
    return x and y themselves, and anything the test refuses still goes through them (and their messages)."""
    from manual_backprop.losses import get_loss
    net = MLP([3, 4, 2], seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.rand(5, 2, generator=gen, dtype=torch.float64)
    taken = []
    for loss in ("squared_error", "bce", "cross_entropy"):
        loss_fn = get_loss(loss)
        for xs, ys in ((x, y), (x[0], y[0]), (x.float(), y), (x, y.float()), (x[:, :2], y), (x, y[:, :1]),
                       (x[:0], y[:0]), (x.t().contiguous().t(), y), (nn.Parameter(x), y), (x, y.argmax(1))):
            if net._takes_as_given(xs, ys, loss_fn):
                taken.append((loss, tuple(xs.shape)))
                assert net.check_x(xs) is xs
                assert net.check_y(ys, (xs.shape[0], 2), loss_fn) is ys
    # the plain rows and a non-contiguous x (the C call makes it contiguous) for the losses that take rows as given
    assert taken == [("squared_error", (5, 3)), ("squared_error", (5, 3)), ("bce", (5, 3)), ("bce", (5, 3))]
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        net.loss_and_grads(x.float(), y)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        net.loss_and_grads(x[:, :2], y)


def test_a_loss_or_check_replaced_on_the_instance_or_the_class_still_runs():
    """The shortcut past the checks applies only to Loss's own prepare_target and MLP's own checks: one set on the
    instance, or Loss.prepare_target replaced on the class, runs as before."""
    from manual_backprop.losses import Loss, SquaredError
    net = MLP([3, 4, 2], seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.rand(5, 2, generator=gen, dtype=torch.float64)
    clamped = SquaredError()
    clamped.prepare_target = lambda y, shape, dtype: Loss.prepare_target(clamped, y, shape, dtype).clamp(0.25, 0.75)
    assert net.loss_and_grads(x, y, clamped)[0].item() == net.loss_and_grads(x, y.clamp(0.25, 0.75))[0].item()
    calls = []
    net.check_x = lambda x, **kw: calls.append("x") or MLP.check_x(net, x, **kw)
    net.loss_and_grads(x, y)
    assert calls == ["x"]
    del net.check_x
    original = Loss.prepare_target
    try:
        Loss.prepare_target = lambda self, y, shape, dtype: calls.append("class") or original(self, y, shape, dtype)
        net.loss_and_grads(x, y)
    finally:
        Loss.prepare_target = original
    assert calls == ["x", "class"]
