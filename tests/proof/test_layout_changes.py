"""The C paths read a tensor's memory through its address, which torch's own ops read through its layout (shape,
strides, offset, dtype, the neg bit). Where one of those changes outside the path, the path must see it:
MLP.loss_and_grads' C call and MLP.step's C call fall back to network.py (or rebuild) after an in-place t_() or a
``.data =`` on a parameter (its integer view included) or on a gradient, and after new memory under a parameter's
storage; the narrow kernel's kept pass and bound pointers follow a ``.data =``; the C loop and the narrow kernel
refuse a parameter whose layout or dtype no longer matches the network's, saying so; a real input with the neg bit
(``z.conj().imag``) is read as its values. Each case is compared with the pure path on the same changes."""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.network import ONE_STEP, ONE_UPDATE, update
from manual_backprop.training import Trainer

from helpers import c_loop_reason, move_memory

pytestmark = [pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}"),
              pytest.mark.usefixtures("both_checks")]
F64 = torch.float64


def _net():
    return MLP([3, 3, 2], activation="tanh", bias_init="uniform", dtype=F64, seed=0)


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=g, dtype=F64), torch.rand(4, 2, generator=g, dtype=F64)


def _neg_bit(x):
    """A contiguous real tensor with the neg bit set whose values are x (its memory holds -x), as
    ``z.conj().imag`` is for a complex z of one element."""
    got = torch._neg_view(-x)
    assert got.is_neg() and got.is_contiguous() and torch.equal(got, x)
    return got


CHANGES = {
    "W[0].t_() before the call": ("before", lambda net: net.weights[0].t_()),
    "W[0].data = its transpose before the call": ("before", lambda net: setattr(net.weights[0], "data",
                                                                                 net.weights[0].t())),
    "W[0].t_() between loss_and_grads and step": ("between", lambda net: net.weights[0].t_()),
    "W[0].data = a copy between loss_and_grads and step": ("between", lambda net: setattr(
        net.weights[0], "data", net.weights[0].clone() * 0.5)),
    "W[0] given new memory under its storage before the call": ("before", lambda net: move_memory(net.weights[0])),
    "W[0] given new memory between loss_and_grads and step": ("between", lambda net: move_memory(net.weights[0])),
}


def _one_update(change, pure):
    net, (x, y) = _net(), _batch()
    net.loss_and_grads(x, y, "squared_error")  # the C call's plan is made for the network as it was
    when, mutate = CHANGES[change] if change else (None, None)
    if when == "before":
        mutate(net)
    with (ONE_UPDATE.off() if pure else _nothing()), (ONE_STEP.off() if pure else _nothing()):
        loss, grads = net.loss_and_grads(x, y, "squared_error")
        if when == "between":
            mutate(net)
        net.step(grads, 0.5)
    return loss, grads, [p.clone() for p in net.parameters()]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("change", list(CHANGES))
def test_one_update_sees_a_parameters_new_layout(change):
    loss_c, grads_c, params_c = _one_update(change, pure=False)
    loss_t, grads_t, params_t = _one_update(change, pure=True)
    eps = torch.finfo(F64).eps
    assert abs(loss_c.item() - loss_t.item()) <= 64 * eps * abs(loss_t.item())
    for a, b in zip([*grads_c.weights, *grads_c.biases], [*grads_t.weights, *grads_t.biases]):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    for a, b in zip(params_c, params_t):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def _as_integers(t):
    """``t.data = t.view(torch.int64)``: the same memory, shape and strides, another dtype (no version bump)."""
    t.data = t.view(torch.int64)


def test_one_update_refuses_a_parameter_made_integers_as_network_py_does():
    errors = []
    for pure in (False, True):
        net, (x, y) = _net(), _batch()
        net.loss_and_grads(x, y, "squared_error")  # the C call's plan, made for float64 parameters
        _as_integers(net.weights[0])
        with (ONE_UPDATE.off() if pure else _nothing()), pytest.raises(RuntimeError) as err:
            net.loss_and_grads(x, y, "squared_error")
        errors.append(str(err.value))
    assert errors[0] == errors[1]


def test_a_step_on_a_gradient_made_integers_is_network_update():
    net, (x, y) = _net(), _batch()
    net.loss_and_grads(x, y, "squared_error")
    loss, grads = net.loss_and_grads(x, y, "squared_error")  # the C call's: the C step would read them as doubles
    _as_integers(grads.weights[0])  # between loss_and_grads and step: update() adds the integers
    ref = net.copy()
    update(ref.weights, ref.biases, grads, 0.5)
    net.step(grads, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))


REFUSED_BETWEEN_RUNS = {  # a change between runs that the Trainer's C paths refuse, and what their message names
    "W[0] made integers": (lambda net: _as_integers(net.weights[0]), r"of its dtype.*but got torch\.int64 \(8, 2\)"),
    "b[1] given the neg bit": (lambda net: setattr(net.biases[1], "data", _neg_bit(net.biases[1].clone())),
                               r"neg=True"),
}


@pytest.mark.parametrize("change", list(REFUSED_BETWEEN_RUNS))
@pytest.mark.parametrize("mode,n,path", [("batch", 2000, "narrow"), ("online", 60, "c")])
def test_the_trainers_c_paths_refuse_a_parameter_changed_between_runs(mode, n, path, change):
    mutate, message = REFUSED_BETWEEN_RUNS[change]
    data = load_dataset("moons", n_samples=n, noise=0.2, seed=0, dtype=F64)
    net = MLP([2, 8, 2], activation="tanh", output_activation="softmax", dtype=F64, seed=0)
    t = Trainer(net, data, mode=mode, lr=0.2, epochs=2, seed=0)
    assert t._fast_runner.path == path
    t.run()
    mutate(net)
    before, epochs = [p.clone() for p in net.parameters()], len(t.history.train_loss)
    t.epochs = 4
    with pytest.raises(ValueError, match=message):
        t.run()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before)), "a refused run wrote a parameter"
    assert len(t.history.train_loss) == epochs


def test_one_update_reads_a_neg_bit_input_as_its_values():
    net, (x, y) = _net(), _batch()
    loss, grads = net.loss_and_grads(_neg_bit(x), _neg_bit(y), "squared_error")
    ref_loss, ref_grads = net.loss_and_grads(x, y, "squared_error")
    assert loss.item() == ref_loss.item()
    assert all(torch.equal(a, b) for a, b in zip(grads.weights, ref_grads.weights))


def test_a_trainer_reads_neg_bit_data_as_its_values():
    data = load_dataset("moons", n_samples=60, noise=0.2, seed=0, dtype=F64)
    flipped = load_dataset("moons", n_samples=60, noise=0.2, seed=0, dtype=F64)
    flipped.x_train, flipped.x_test = _neg_bit(data.x_train), _neg_bit(data.x_test)
    runs = []
    for d in (data, flipped):
        net = MLP([2, 6, 2], activation="tanh", output_activation="softmax", dtype=F64, seed=0)
        t = Trainer(net, d, mode="online", lr=0.1, epochs=3, seed=0)
        assert t._fast_runner.path == "c"
        t.run()
        runs.append((net.parameters(), t.history.train_loss))
    assert all(torch.equal(p, q) for p, q in zip(runs[0][0], runs[1][0]))
    assert runs[0][1] == runs[1][1]


def _narrow_run(fast, mutate):
    data = load_dataset("moons", n_samples=2000, noise=0.2, seed=0, dtype=F64)
    net = MLP([2, 8, 2], activation="tanh", output_activation="softmax", dtype=F64, seed=0)
    t = Trainer(net, data, mode="batch", lr=0.2, epochs=2, seed=0, fast=fast)
    path = t._fast_runner.path if t._fast_runner is not None else ""
    t.run()
    mutate(net)
    t.epochs = 4
    t.run()
    return path, [p.clone() for p in net.parameters()], t.history.train_loss


@pytest.mark.parametrize("what,mutate", [
    ("new memory under W[0]", lambda net: setattr(net.weights[0], "data", net.weights[0].clone() * 0.5)),
    ("W[0] scaled in place", lambda net: net.weights[0].mul_(0.5)),
], ids=["data", "in place"])
def test_the_narrow_kernel_follows_a_parameter_changed_between_runs(what, mutate):
    path, params, losses = _narrow_run("auto", mutate)
    assert path == "narrow"
    _, ref_params, ref_losses = _narrow_run(False, mutate)
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-12, atol=0)


def test_the_c_loop_refuses_a_parameter_whose_layout_changed():
    net = MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid", seed=0)
    t = Trainer(net, load_dataset("xor"), mode="online", lr=0.5, epochs=2, seed=0)
    assert t._fast_runner.path == "c"
    t.run()
    net.weights[0].t_()  # square: the same shape, other strides
    t.epochs = 4
    with pytest.raises(ValueError, match=r"contiguous CPU tensors .*an in-place t_\(\)"):
        t.run()


def test_a_network_whose_dtype_or_sizes_were_set_by_hand_is_not_read_past():
    for attr, value, x_dtype in (("dtype", torch.float32, torch.float32), ("sizes", [4, 3, 2], F64)):
        errors = []
        for pure in (False, True):
            net = _net()
            net.loss_and_grads(*_batch(), "squared_error")
            setattr(net, attr, value)
            x, y = torch.randn(4, 4 if attr == "sizes" else 3, dtype=x_dtype), torch.rand(4, 2, dtype=x_dtype)
            with (ONE_UPDATE.off() if pure else _nothing()), pytest.raises(RuntimeError) as err:
                net.loss_and_grads(x, y, "squared_error")
            errors.append(str(err.value))
        assert errors[0] == errors[1], attr
