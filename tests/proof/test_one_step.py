"""The proof of MLP.step's one C call (manual_backprop/fast/one_update.py, registered in network.ONE_STEP).

After ``net.loss_and_grads`` ran as one C call, ``net.step(grads, lr)`` with the Gradients it returned is one more C
call, mbp_step: W <- W - lr dE/dW and b <- b - lr dE/db, each element rounded once (fma), as torch's
``add_(g, alpha=-lr)`` rounds it. The claim is bit for bit: the parameters after the C step equal those after
network.update with the same gradients, for float64 and float32, with and without biases, at several rates, on the
proof's nets and a wide one. The path is taken only for the Gradients of the network's last C call, unchanged, with
the parameters still those the call read; anything else (older gradients, a replaced tensor in them, gradients
built by hand, a replaced parameter, the pure path) runs network.update, and gives the same bits. Where torch's
add_ does not round as fma does (a probe at the first plan of each dtype), the C step is never used.
"""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.fast import one_update
from manual_backprop.losses import SquaredError
from manual_backprop.network import ONE_STEP, Gradients, update
from reference.proof_cases import SIZES
from helpers import c_loop_reason

pytestmark = [pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}"),
              pytest.mark.usefixtures("both_checks")]

F64, F32 = torch.float64, torch.float32
WIDE = [90, 9, 5, 3]  # dot's and the gradients' blocks and tails (test_one_update.py)


@pytest.fixture
def steps(monkeypatch):
    """The step hook's answers: True where the C step ran, False where network.update ran."""
    seen, real = [], ONE_STEP.path

    def counting(net, grads, lr):
        got = real(net, grads, lr)
        seen.append(got)
        return got

    monkeypatch.setattr(ONE_STEP, "path", counting)
    return seen


def _problem(sizes, dtype, bias=True, B=5, seed=0):
    net = MLP(sizes, activation="tanh", output_activation="sigmoid", bias=bias, bias_init="uniform", dtype=dtype,
              seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, sizes[0], generator=gen, dtype=dtype) * 2.0
    y = torch.rand(B, sizes[-1], generator=gen, dtype=dtype)
    return net, x, y


def _stepped_by_update(net, grads, lr):
    """network.update's result on a copy of net's parameters: the reference step."""
    weights, biases = [w.clone() for w in net.weights], [b.clone() for b in net.biases]
    update(weights, biases, grads, lr)
    return [*weights, *biases]


def _same_bits(net, expected, what):
    for k, (p, q) in enumerate(zip([*net.weights, *net.biases], expected)):
        assert torch.equal(p, q), f"{what}: parameter {k} differs from network.update's by " \
                                  f"{(p - q).abs().max().item():.3g}"


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("sizes", [SIZES, WIDE, [2, 2, 1]], ids=["proof", "wide", "xor"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_the_c_step_is_network_update_bit_for_bit(sizes, dtype, bias, steps):
    net, x, y = _problem(sizes, dtype, bias)
    for lr in (0.5, 1e-3, 3.7, 0.0):
        _, grads = net.loss_and_grads(x, y, SquaredError())
        expected = _stepped_by_update(net, grads, lr)
        net.step(grads, lr)
        _same_bits(net, expected, f"lr={lr}")
    assert steps == [one_update._fma_rounding[dtype]] * 4  # the C step ran wherever the probe allowed it
    assert one_update._fma_rounding[dtype], "torch's add_ did not round as fma here: the C step is never used"


def test_other_gradients_run_network_update(steps):
    """Older gradients, a replaced tensor in them, gradients built by hand, a replaced parameter: each runs
    network.update (the hook says False), with network.update's bits."""
    net, x, y = _problem(SIZES, F64)
    loss_fn = SquaredError()
    _, older = net.loss_and_grads(x, y, loss_fn)
    _, grads = net.loss_and_grads(x * 0.5, y, loss_fn)
    for what, given in (("older gradients", older),
                        ("gradients built by hand", Gradients([g.clone() for g in grads.weights],
                                                              [g.clone() for g in grads.biases]))):
        expected = _stepped_by_update(net, given, 0.3)
        net.step(given, 0.3)
        _same_bits(net, expected, what)
    _, grads = net.loss_and_grads(x, y, loss_fn)
    grads.weights[0] = grads.weights[0] * 2.0
    expected = _stepped_by_update(net, grads, 0.3)
    net.step(grads, 0.3)
    _same_bits(net, expected, "a replaced gradient tensor")
    _, grads = net.loss_and_grads(x, y, loss_fn)
    net.weights[1] = net.weights[1].clone()
    expected = _stepped_by_update(net, grads, 0.3)
    net.step(grads, 0.3)
    _same_bits(net, expected, "a replaced parameter")
    assert steps == [False] * 4
    _, grads = net.loss_and_grads(x, y, loss_fn)  # a new plan for the new parameter: the C step again
    expected = _stepped_by_update(net, grads, 0.3)
    net.step(grads, 0.3)
    _same_bits(net, expected, "after a new plan")
    assert steps[-1] is True


def test_the_pure_path_and_a_failed_probe_never_take_the_c_step(steps, monkeypatch):
    net, x, y = _problem(SIZES, F64)
    _, grads = net.loss_and_grads(x, y, SquaredError())
    with ONE_STEP.off():
        expected = _stepped_by_update(net, grads, 0.2)
        net.step(grads, 0.2)
    _same_bits(net, expected, "pure path")
    assert steps == []
    monkeypatch.setitem(one_update._fma_rounding, F64, False)  # as on a torch whose add_ rounds twice
    other, x, y = _problem(SIZES, F64, seed=1)
    _, grads = other.loss_and_grads(x, y, SquaredError())
    expected = _stepped_by_update(other, grads, 0.2)
    other.step(grads, 0.2)
    _same_bits(other, expected, "probe failed")
    assert steps == [False]


def test_the_probe_finds_what_a_two_rounding_step_would_miss():
    """The probe's values separate one rounding from two: a step computed as p + (-lr * g) differs on them."""
    for dtype in (F64, F32):
        gen = torch.Generator().manual_seed(0)  # the probe's own draws (one_update._step_matches_add)
        w, g = torch.randn(1, 1000, generator=gen, dtype=dtype), torch.randn(1, 1000, generator=gen, dtype=dtype)
        fused = w.clone().add_(g, alpha=-0.1)
        twice = w + torch.tensor(-0.1, dtype=dtype) * g
        assert not torch.equal(fused, twice)


@pytest.mark.parametrize("change", ["t_", "data=t()"])
def test_a_square_gradient_transposed_in_place_runs_network_update(change, steps):
    """Its address and shape are unchanged, its strides are not: the C step would read it untransposed."""
    net, x, y = _problem([3, 3, 2], F64)
    _, grads = net.loss_and_grads(x, y, SquaredError())
    g = grads.weights[0]
    g.t_() if change == "t_" else setattr(g, "data", g.t())
    expected = _stepped_by_update(net, grads, 0.3)
    net.step(grads, 0.3)
    _same_bits(net, expected, f"a gradient after {change}")
    assert steps == [False]
