"""The proof of MLP.loss_and_grads's one C call (manual_backprop/fast/one_update.py), update by update.

The call is a declared derivative of network.loss_and_gradients, registered in network.ONE_UPDATE. Two claims:

    within ONE_UPDATE_ULPS (C_ULPS) of the reference  E, every dE/dW and dE/db and every delta, against network.py's
                                                      own functions on the same parameters and samples, for every
                                                      hidden x output activation x loss, ordinary and saturated,
                                                      float64 and float32, one sample and a batch, and a wide net
                                                      (dot4's blocks and tails, the gradient's 32-element blocks);
    bit for bit the C loop's update                   E and the gradients that mbp_train writes for the same update
                                                      (the same functions, so the same rounding).

The cases are reference/proof_cases.py's, as in test_update_proof.py (whose harness path "one-update" proves the C
call then network.update in float64); this file adds float32, the deltas, the wide net, the C loop's bits and the
hook's behaviour. The ulps are reference/update_proof.py's (against the absolute-value network's magnitudes); a
delta is measured against the magnitude of dE/dnet of its layer in that network. Beside them: the parameters are
never written, every call returns fresh tensors, the hook follows the network's parameters, refuses what it cannot
run (the reference runs instead, bit-equal to it), and the pure path is one switch away.
"""

import os
import subprocess
import sys

import pytest
import torch

from manual_backprop import MLP, fast
from manual_backprop.fast import one_update
from manual_backprop.losses import SquaredError, get_loss
from manual_backprop.network import ONE_UPDATE, Gradients, loss_and_gradients
from reference.proof_cases import CASE_IDS, CASES, REGIMES, SIZES
from reference.update_proof import named, reference_update, update_misses
from helpers import c_loop_reason, draw_targets, target_kind

F64, F32 = torch.float64, torch.float32
# 90 inputs: dot's five blocks of 16, one of 8 and a tail of 2; the gradients' block of 64, three of 8 and the tail;
# 9 units: dot4 twice and one, the gradients' row pairs and a last row alone; B = 7: dot4's sample pairs and one
WIDE = [90, 9, 5, 3]

pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")


@pytest.fixture
def calls(monkeypatch):
    """The hook's calls: True where the C call ran, False where it refused (and the reference ran)."""
    seen, real = [], ONE_UPDATE.path

    def counting(net, x, y, loss_fn):
        got = real(net, x, y, loss_fn)
        seen.append(got is not None)
        return got

    monkeypatch.setattr(ONE_UPDATE, "path", counting)
    return seen


def _problem(hidden, output, loss_fn, regime, B, dtype, sizes=SIZES, seed=0):
    net = MLP(sizes, activation=hidden, output_activation=output, bias_init="uniform", dtype=F64, seed=seed)
    for w in net.weights:
        w.mul_(REGIMES[regime])
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(B, sizes[0], generator=gen, dtype=F64) * 2.0
    y = draw_targets(target_kind(loss_fn, classes="onehot", other="unit"), (B,), sizes[-1], gen)
    return net.to(dtype=dtype), x.to(dtype), y.to(dtype)


def _delta_scales(net, x, y, loss_fn) -> dict:
    """deltas[k]'s scale: the largest |dE/dnet^{k+1}| of the absolute-value network (reference/update_proof.py's
    G, before it is carried through |W[k]|), f' at its bound 1."""
    with torch.no_grad():
        F = [x.abs()]
        for k in range(net.num_layers):
            F.append(F[-1] @ net.weights[k].abs().t() + (net.biases[k].abs() if net.bias else 0.0))
        out = net.forward(x)
        c = loss_fn.scale(*out.shape)
        if loss_fn.name == "squared_error":
            g = 2.0 * c * ((out - y).abs() + F[-1])
            G = 2.0 * g.max(dim=1, keepdim=True).values.expand_as(g)
        else:
            G = c * (out.abs() + y.abs() + F[-1])
        scales = {}
        for k in range(net.num_layers - 1, -1, -1):
            scales[f"delta[{k}]"] = G.max().item()
            G = G @ net.weights[k].abs()
    return scales


def _check(net, x, y, loss_fn, calls, what):
    before = [p.clone() for p in net.parameters()]
    loss, grads = net.loss_and_grads(x, y, loss_fn)
    assert calls[-1:] == [True], f"{what}: the C call did not run"
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before)), f"{what}: parameters were written"
    with torch.no_grad():
        ref_loss, ref_grads = loss_and_gradients(net, x.reshape(-1, net.sizes[0]), y, loss_fn)
    _, scales = reference_update(net, x.reshape(-1, net.sizes[0]), y, loss_fn, 0.0)
    scales.update(_delta_scales(net, x.reshape(-1, net.sizes[0]), y, loss_fn))
    got, ref = named(loss, grads, []), named(ref_loss, ref_grads, [])
    got.update({f"delta[{k}]": d for k, d in enumerate(grads.deltas)})
    ref.update({f"delta[{k}]": d for k, d in enumerate(ref_grads.deltas)})
    rows = update_misses(got, ref, scales, one_update.ONE_UPDATE_ULPS)
    assert len(rows) == 1 + 3 * net.num_layers, f"{what}: compared {[r[0] for r in rows]}"
    bad = [(name, round(miss, 2)) for name, miss, ok in rows if not ok]
    assert not bad, f"{what}: beyond {one_update.ONE_UPDATE_ULPS} ulps of the reference: {bad}"
    return loss, grads


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("B", [1, 6])
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", CASES, ids=CASE_IDS)
def test_one_c_call_is_the_reference_loss_and_gradients(hidden, output, loss_fn, regime, B, dtype, calls):
    net, x, y = _problem(hidden, output, loss_fn, regime, B, dtype)
    _check(net, x, y, loss_fn, calls, f"{hidden}/{output}/{loss_fn!r} {regime} B={B} {dtype}")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", [("tanh", "softmax", get_loss("cross_entropy")),
                                                   ("sigmoid", "sigmoid", SquaredError())], ids=["tanh-ce", "sig-se"])
def test_a_wide_network_through_every_block_and_tail(hidden, output, loss_fn, regime, dtype, calls):
    net, x, y = _problem(hidden, output, loss_fn, regime, 7, dtype, sizes=WIDE)
    _check(net, x, y, loss_fn, calls, f"wide {hidden}/{output} {regime} {dtype}")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("sizes,B", [(SIZES, 1), (SIZES, 6), (WIDE, 7), ([2, 2, 2], 1)])
@pytest.mark.parametrize("hidden,output,loss_fn", CASES[::3], ids=CASE_IDS[::3])
def test_one_c_call_is_the_c_loops_update_bit_for_bit(hidden, output, loss_fn, sizes, B, dtype, calls):
    net, x, y = _problem(hidden, output, loss_fn, "saturated", B, dtype, sizes=sizes)
    loss, grads = net.loss_and_grads(x, y, loss_fn)
    assert calls == [True]
    loop = net.copy()
    kept = Gradients([torch.zeros_like(w) for w in loop.weights], [torch.zeros_like(b) for b in loop.biases])
    losses = fast.CKernel(loop, loss_fn).run(x, y, torch.arange(B), torch.tensor([0, B]), 0.3, grads=kept)
    assert torch.equal(loss, losses[0]), f"E {loss.item()!r} is not the C loop's {losses[0].item()!r}"
    for name, a, b in [*((f"dW[{k}]", g, h) for k, (g, h) in enumerate(zip(grads.weights, kept.weights))),
                       *((f"db[{k}]", g, h) for k, (g, h) in enumerate(zip(grads.biases, kept.biases)))]:
        assert torch.equal(a, b), f"{name} differs from the C loop's by {(a - b).abs().max().item():.3g}"


def test_every_call_returns_fresh_tensors(calls):
    net, x, y = _problem("tanh", "sigmoid", SquaredError(), "ordinary", 4, F64)
    loss1, g1 = net.loss_and_grads(x, y)
    kept = [t.clone() for t in (loss1, *g1.weights, *g1.biases, *g1.deltas)]
    net.step(g1, 0.5)
    loss2, g2 = net.loss_and_grads(x, y)
    assert calls == [True, True]
    first = [loss1, *g1.weights, *g1.biases, *g1.deltas]
    second = [loss2, *g2.weights, *g2.biases, *g2.deltas]
    assert all(torch.equal(a, b) for a, b in zip(first, kept)), "a second call overwrote the first call's results"
    pointers = {t.untyped_storage().data_ptr() for t in first + second}
    assert len(pointers) == len(first) + len(second), "results share memory"
    assert not torch.equal(g1.weights[0], g2.weights[0]), "the second call did not see the step"


def test_the_hook_follows_the_networks_parameters(calls):
    """A new tensor in net.weights, a cast with net.to, and a load_state_dict in place: each call runs on the
    network as it is now (the kept plan is rebuilt or still points at the same memory)."""
    net, x, y = _problem("sigmoid", "sigmoid", SquaredError(), "ordinary", 3, F64)
    loss_fn = SquaredError()
    _check(net, x, y, loss_fn, calls, "first")
    net.weights[1] = net.weights[1] * 2.0
    _check(net, x, y, loss_fn, calls, "a replaced weight")
    other = MLP(SIZES, activation="sigmoid", output_activation="sigmoid", dtype=F64, seed=5)
    net.load_state_dict(other.state_dict())
    loss, _ = _check(net, x, y, loss_fn, calls, "a loaded state")
    with torch.no_grad():
        assert torch.equal(loss, other.loss_and_grads(x, y, loss_fn)[0])
    net.to(dtype=F32)
    _check(net, x.float(), y.float(), loss_fn, calls, "after net.to(float32)")
    assert calls == [True] * 5


def test_inputs_as_the_api_takes_them(calls):
    """One sample as a 1-D x and y, class indices for cross-entropy, a column slice of a wider x."""
    loss_fn = get_loss("cross_entropy")
    net, x, y = _problem("tanh", "softmax", loss_fn, "ordinary", 5, F64)
    _check(net, x[0], y[0], SquaredError(), calls, "1-D sample")
    wide = torch.randn(5, 2 * SIZES[0], dtype=F64)
    _check(net, wide[:, ::2], y, loss_fn, calls, "non-contiguous x")
    loss, grads = net.loss_and_grads(x, y.argmax(dim=1), loss_fn)
    with torch.no_grad():
        ref_loss, ref = loss_and_gradients(net, x, y, loss_fn)
    assert calls[-1] is True
    assert torch.allclose(loss, ref_loss, rtol=1e-14, atol=0) and torch.allclose(grads.weights[0], ref.weights[0],
                                                                                 rtol=1e-12, atol=1e-15)


def _bit_equal_to_the_reference(net, x, y, loss_fn):
    loss, grads = net.loss_and_grads(x, y, loss_fn)
    with torch.no_grad():
        ref_loss, ref = loss_and_gradients(net, x, y, loss_fn)
    assert torch.equal(loss, ref_loss)
    for a, b in zip([*grads.weights, *grads.biases, *grads.deltas], [*ref.weights, *ref.biases, *ref.deltas]):
        assert torch.equal(a, b)


def test_the_pure_path_is_network_py_alone(calls):
    """``with ONE_UPDATE.off()`` (and ``enabled = False``) runs network.py's functions: bit-equal, the hook unasked."""
    net, x, y = _problem("tanh", "sigmoid", SquaredError(), "saturated", 4, F64)
    with ONE_UPDATE.off():
        _bit_equal_to_the_reference(net, x, y, SquaredError())
        assert not ONE_UPDATE.enabled
    assert ONE_UPDATE.enabled and calls == []
    net.loss_and_grads(x, y)
    assert calls == [True]


def test_manual_backprop_pure_in_the_environment_turns_the_hook_off():
    code = ("import manual_backprop; from manual_backprop.network import ONE_UPDATE; "
            "print(ONE_UPDATE.path is not None, ONE_UPDATE.enabled)")
    for value, expected in (("1", "True False"), ("0", "True True")):
        env = {**os.environ, "MANUAL_BACKPROP_PURE": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.stdout.split() == expected.split(), (value, out.stdout, out.stderr[-2000:])


def test_what_the_call_does_not_take_runs_the_reference(calls, monkeypatch):
    """Above C_WORK_LIMIT, a population (MLP.loss_and_grads is its method too), parameters that are not contiguous:
    the hook refuses, and the result is network.py's bit for bit."""
    net, x, y = _problem("tanh", "sigmoid", SquaredError(), "ordinary", 4, F64)
    work = fast.work_per_update(net, 4)
    monkeypatch.setattr(one_update, "C_WORK_LIMIT", work - 1)  # one multiply-add too many
    _bit_equal_to_the_reference(net, x, y, SquaredError())
    monkeypatch.setattr(one_update, "C_WORK_LIMIT", work)
    net.loss_and_grads(x, y)
    assert calls == [False, True]
    net.weights[0] = net.weights[0].t().contiguous().t()  # the same values, column-major
    _bit_equal_to_the_reference(net, x, y, SquaredError())
    assert calls[-1] is False

    from manual_backprop.population import Population

    pop = Population(SIZES, activation="tanh", output_activation="sigmoid", dtype=F64, seeds=[0, 1])
    losses, grads = pop.loss_and_grads(x, y, "squared_error")
    assert losses.shape == (2,) and grads.weights[0].shape == (2, 5, 3) and calls[-1] is False
