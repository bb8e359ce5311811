"""The gradient-agreement suite: the hand-written forward and backward phases equal torch.autograd's, layer by layer.

Architectures of depth 1 to 5 and widths 1 to 64, every activation, every loss and reduction, batch sizes 1, small
and the full set, float64 (norm-relative error <= 1e-10) and float32 (assert_close), CPU and CUDA.
"""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import assert_grads_agree, assert_tensors_agree
from helpers import OUTPUT_LOSSES, make_problem
from manual_backprop import MLP, BinaryCrossEntropy, CrossEntropy, SquaredError
from manual_backprop.network import ONE_UPDATE
from reference import TorchMLP, finite_differences, norm_relative_error


@pytest.fixture(autouse=True, scope="module")
def _network_py_alone():
    """Agreement is network.py's own (the slide) with autograd: MLP.loss_and_grads' one C call is off here. The C
    call is held to network.py within ONE_UPDATE_ULPS by tests/proof/test_one_update.py; on a saturated unit two
    correct f's differ by an ulp of x, which f' = x (1 - x) turns into a large relative difference."""
    with ONE_UPDATE.off():
        yield

ARCHITECTURES = {
    "depth1-1x1": [1, 1],
    "depth1-5x3": [5, 3],
    "depth2-2x2x1": [2, 2, 1],
    "depth2-width1-hidden": [4, 1, 3],
    "depth3-4x8x8x3": [4, 8, 8, 3],
    "depth4-3x16x1x16x2": [3, 16, 1, 16, 2],
    "depth5-8x64x32x64x16x4": [8, 64, 32, 64, 16, 4],
}
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
# (output activation, loss, target kind): every loss and every reduction, on the outputs they make sense for.
FULL_SET = 48  # "the full set": a whole small training set in one batch
BATCHES = {"batch1": 1, "batch5": 5, "fullset": FULL_SET}




def cross_entropy_terms(net, x, y, loss_fn) -> float:
    """The size of what a softmax cross-entropy is computed from: per sample logsumexp(z) - sum_c y_c z_c, two
    numbers of size ~|z| whose difference can be far smaller (a confident, correct net: E ~ 1e-8 from logits ~ 10).
    Any two float64 implementations may differ there by a few eps times this, not times E; with the reduction's
    factor (1/B for the mean)."""
    with torch.no_grad():
        z = net.forward_cache(x).logits
        rows = loss_fn.prepare_target(y, tuple(z.shape), z.dtype)
        per_sample = torch.logsumexp(z, 1).abs() + (rows * z.abs()).sum(1)
        return float(per_sample.mean() if loss_fn.reduction == "mean" else per_sample.sum())


def check_agreement(net, x, y, loss_fn, rel=1e-10):
    twin = TorchMLP.from_manual(net)
    assert_tensors_agree("forward output", net.forward(x), twin(x).detach(), rel=rel)
    loss_m, grads_m = net.loss_and_grads(x, y, loss_fn)
    loss_a, grads_a = twin.loss_and_grads(x, y, loss_fn)
    eps = torch.finfo(loss_m.dtype).eps
    if not (isinstance(loss_fn, CrossEntropy) and abs(float(loss_m) - float(loss_a))
            <= 8 * eps * cross_entropy_terms(net, x, y, loss_fn)):  # within rounding of its terms, else relative
        assert_tensors_agree("loss", loss_m.reshape(1), loss_a.reshape(1), rel=rel)
    for k, delta in enumerate(grads_m.deltas):
        assert delta.shape == (x.shape[0], net.sizes[k + 1]), f"layer {k + 1} delta shape {tuple(delta.shape)}"
    assert_grads_agree(grads_m, grads_a, rel=rel)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("output_loss", OUTPUT_LOSSES.values(), ids=OUTPUT_LOSSES.keys())
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("sizes", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_manual_equals_autograd(sizes, hidden, output_loss, batch, dtype, device):
    output_activation, loss_fn, target_kind = output_loss
    if output_activation == "softmax" and sizes[-1] == 1:  # always 1, learns nothing: refused where it is built
        with pytest.raises(ValueError, match="output_activation 'softmax' on a single output is always 1"):
            MLP(sizes, activation=hidden, output_activation="softmax", dtype=dtype, device=device)
        return
    # Non-zero biases and a scale that keeps sigmoid/tanh off their flat tails, so no gradient is trivially zero.
    net = MLP(sizes, activation=hidden, output_activation=output_activation, init="xavier_normal",
              bias_init="uniform", init_scale=0.5, dtype=dtype, device=device, seed=sum(sizes) + batch)
    x, y = make_problem(sizes, target_kind, batch, dtype, device, seed=batch)
    check_agreement(net, x, y, loss_fn)


@pytest.mark.parametrize("hidden", [["tanh", "relu", "sigmoid"], ["identity", "leaky_relu:0.2", "tanh"]],
                         ids=["tanh-relu-sigmoid", "identity-leaky0.2-tanh"])
def test_per_layer_activations_agree(hidden, device):
    net = MLP([3, 6, 5, 4, 2], activation=hidden, output_activation="softmax", bias_init="normal",
              dtype=torch.float64, device=device, seed=3)
    x, y = make_problem(net.sizes, "index", 9, torch.float64, device)
    check_agreement(net, x, y, "cross_entropy")


def test_without_biases_agree(device):
    net = MLP([4, 7, 3], activation="tanh", output_activation="sigmoid", bias=False, dtype=torch.float64,
              device=device, seed=5)
    x, y = make_problem(net.sizes, "unit", 6, torch.float64, device)
    assert net.biases == [] and list(net.state_dict()) == ["0.weight", "2.weight"]
    check_agreement(net, x, y, "squared_error")


def test_one_sample_as_1d_tensor(device):
    net = MLP([3, 4, 2], activation="tanh", output_activation="identity", dtype=torch.float64, device=device, seed=1)
    x, y = make_problem(net.sizes, "real", 1, torch.float64, device)
    assert net(x[0]).shape == (1, 2)
    loss_1d, grads_1d = net.loss_and_grads(x[0], y[0], "squared_error")
    loss_2d, grads_2d = net.loss_and_grads(x, y, "squared_error")
    assert torch.equal(loss_1d, loss_2d)
    assert_grads_agree(grads_1d, grads_2d, rel=0.0)


@st.composite
def random_problem(draw):
    depth = draw(st.integers(1, 5))
    sizes = [draw(st.integers(1, 12)) for _ in range(depth + 1)]
    hidden = [draw(st.sampled_from(HIDDEN + ["leaky_relu:0.3"])) for _ in range(depth - 1)]
    output_loss = draw(st.sampled_from(sorted(OUTPUT_LOSSES)))
    if OUTPUT_LOSSES[output_loss][0] == "softmax":
        sizes[-1] = max(sizes[-1], 2)  # a softmax of one output is refused (it is always 1)
    batch = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**20))
    scale = draw(st.floats(0.1, 2.0))
    return sizes, hidden, OUTPUT_LOSSES[output_loss], batch, seed, scale


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problem())
def test_property_random_networks_agree(problem):
    sizes, hidden, (output_activation, loss_fn, target_kind), batch, seed, scale = problem
    net = MLP(sizes, activation=hidden, output_activation=output_activation, init="normal", init_scale=scale,
              bias_init="normal", dtype=torch.float64, seed=seed)
    x, y = make_problem(sizes, target_kind, batch, torch.float64, "cpu", seed=seed)
    if output_activation == "softmax" and isinstance(loss_fn, SquaredError):
        # The softmax Jacobian product x * (g - sum(g x)) cancels O(|g|) terms into a result of size ~(1 - max x):
        # any two float64 implementations may differ by ~eps / (1 - max x) there (see the saturated test below).
        assume(float(1.0 - net(x).max()) > 1e-4)
    check_agreement(net, x, y, loss_fn)


def test_a_confident_softmax_cross_entropy_agrees_to_its_terms():
    """Hypothesis found this net: E = 2.4e-8 = logsumexp(z) - z_y from logits of size ~10; network.py and torch's
    log_softmax differ by 1.9e-16, a relative 8e-9 of E, and within 8 eps of the terms. Every gradient agrees to
    1e-10 as usual."""
    sizes = [7, 7, 3]
    net = MLP(sizes, activation=["relu"], output_activation="softmax", init="normal", init_scale=2.0,
              bias_init="normal", dtype=torch.float64, seed=7)
    x, y = make_problem(sizes, "index", 7, torch.float64, "cpu", seed=7)
    loss_fn = CrossEntropy(reduction="mean")
    loss_m, _ = net.loss_and_grads(x, y, loss_fn)
    loss_a, _ = TorchMLP.from_manual(net).loss_and_grads(x, y, loss_fn)
    assert float(loss_m) < 1e-7, "the example is confident"  # here its relative difference was 8e-9
    terms = cross_entropy_terms(net, x, y, loss_fn)
    assert abs(float(loss_m) - float(loss_a)) <= 8 * torch.finfo(torch.float64).eps * terms
    check_agreement(net, x, y, loss_fn)


def test_saturated_softmax_with_squared_error_agrees_to_its_conditioning():
    """Hypothesis found this net: a softmax output saturated to 1 - 8e-7, trained on squared error. The output delta
    x_j (g_j - sum_c g_c x_c) subtracts numbers of size |g| ~ 2 to get 1.5e-6, so rounding alone (eps |g|, in any
    implementation) makes a relative difference of ~1e-10. The claim here is the forward-error bound of that
    formula: |manual - autograd| <= 8 eps x (|g| + |sum g x| + sum |g x|), elementwise, and the deltas that backprop
    carries down from it inherit no more than that relative error."""
    sizes = [1, 1, 5, 8, 3, 7]
    net = MLP(sizes, activation=["sigmoid", "sigmoid", "sigmoid", "identity"], output_activation="softmax",
              init="normal", init_scale=1.75, bias_init="normal", dtype=torch.float64, seed=79225)
    x, y = make_problem(sizes, "onehot", 1, torch.float64, "cpu", seed=79225)
    _, manual = net.loss_and_grads(x, y, SquaredError())
    _, auto = TorchMLP.from_manual(net).loss_and_grads(x, y, SquaredError())
    out = net(x)
    assert 1.0 - out.max() < 1e-6, "the example is saturated"
    g = 2.0 * (out - y)
    eps = torch.finfo(torch.float64).eps
    bound = 8 * eps * out * (g.abs() + (g * out).sum().abs() + (g * out).abs().sum())
    assert ((manual.deltas[-1] - auto.deltas[-1]).abs() <= bound).all()
    output_rel = ((bound.norm() / auto.deltas[-1].norm())).item()
    assert 1e-11 < output_rel < 1e-8, f"conditioning of this example: {output_rel:.2e}"
    for k in range(net.num_layers):
        err = norm_relative_error(manual.deltas[k], auto.deltas[k])
        assert err <= 2 * output_rel, f"layer {k + 1}: {err:.2e} > 2 x the output bound {output_rel:.2e}"


FD_CASES = {
    "sigmoid-se-sum": ([2, 3, 1], "sigmoid", "sigmoid", SquaredError("sum"), "unit"),
    "tanh-softmax-ce": ([4, 6, 5, 3], "tanh", "softmax", CrossEntropy(), "index"),
    "leaky-bce": ([3, 8, 8, 2], "leaky_relu", "sigmoid", BinaryCrossEntropy(), "binary"),
    "relu-identity-se-half": ([5, 10, 4], "relu", "identity", SquaredError("elementwise_mean", half=True), "real"),
    "identity-softmax-se": ([3, 4, 4, 4, 4, 3], "identity", "softmax", SquaredError(), "onehot"),
}


@pytest.mark.parametrize("case", FD_CASES.values(), ids=FD_CASES.keys())
def test_finite_differences_agree_with_both(case):
    sizes, hidden, output_activation, loss_fn, target_kind = case
    net = MLP(sizes, activation=hidden, output_activation=output_activation, bias_init="uniform",
              dtype=torch.float64, seed=11)
    x, y = make_problem(sizes, target_kind, 7, torch.float64, "cpu", seed=2)
    _, manual = net.loss_and_grads(x, y, loss_fn)
    _, auto = TorchMLP.from_manual(net).loss_and_grads(x, y, loss_fn)
    fd = finite_differences(net, x, y, loss_fn)
    for k in range(net.num_layers):
        for name, m, a, f in [("delta", manual.deltas[k], auto.deltas[k], fd.deltas[k]),
                              ("dE/dW", manual.weights[k], auto.weights[k], fd.weights[k]),
                              ("dE/db", manual.biases[k], auto.biases[k], fd.biases[k])]:
            assert not torch.isnan(f).any(), "every entry was evaluated"
            # Central differences with eps=1e-6 in float64 are good to ~1e-9 relative.
            assert norm_relative_error(m, f) < 1e-7, f"layer {k + 1} {name}: manual vs finite differences"
            assert norm_relative_error(a, f) < 1e-7, f"layer {k + 1} {name}: autograd vs finite differences"


def test_finite_differences_sample_large_net():
    net = MLP([20, 64, 64, 5], activation="tanh", output_activation="softmax", bias_init="uniform",
              dtype=torch.float64, seed=0)
    x, y = make_problem(net.sizes, "index", 4, torch.float64, "cpu")
    _, manual = net.loss_and_grads(x, y, "cross_entropy")
    fd = finite_differences(net, x, y, "cross_entropy", max_per_tensor=50, seed=1)
    for k in range(net.num_layers):
        mask = fd.masks["weights"][k]
        assert int(mask.sum()) == min(50, mask.numel())
        assert norm_relative_error(manual.weights[k], fd.weights[k], mask) < 1e-7


def test_twin_works_when_the_caller_turned_grad_mode_off():
    net = MLP([3, 5, 2], activation="tanh", output_activation="softmax", dtype=torch.float64, seed=0)
    x, y = make_problem(net.sizes, "index", 4, torch.float64, "cpu")
    twin = TorchMLP.from_manual(net)
    _, expected = twin.loss_and_grads(x, y, "cross_entropy")
    with torch.no_grad():
        _, got = twin.loss_and_grads(x, y, "cross_entropy")
    assert_grads_agree(got, expected, rel=0.0)
    assert all(p.grad is None for p in twin.parameters()), "the twin leaves .grad untouched"
