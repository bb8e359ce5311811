"""Per-sample gradients, their norms and noise, and Hessian-vector products, each against its oracle.

Oracles (reference/oracles.py): torch.func (vmap over per-sample parameter copies, vmap(grad) of one sample's loss),
double backward through the autograd twin, and central finite differences of the twin's gradients. Every hidden
activation times every output activation, loss and reduction of the agreement suite; float64 to a norm-relative
1e-10, float32 with assert_close; a Population member by member.
"""

import pytest
import torch

from conftest import assert_tensors_agree
from manual_backprop import MLP, Activation, SquaredError
from manual_backprop.parameter_state import in_layer_order
from manual_backprop.population import Population
from manual_backprop.quantities import (SECOND_DERIVATIVES, gradient_noise, hessian_vector_product,
                                        per_sample_gradients, per_sample_norms)
from reference import norm_relative_error
from reference.oracles import (gradient_noise_func, hvp_double_backward, hvp_finite_differences,
                               per_sample_contributions, per_sample_loss_gradients)
from helpers import OUTPUT_LOSSES, make_problem

F64 = torch.float64
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
SIZES = [3, 6, 5, 4]


def make_net(hidden, output_activation, dtype=F64, device="cpu", sizes=SIZES, bias=True, seed=7):
    # Non-zero biases and a moderate scale: no derivative is trivially zero, no unit saturated.
    return MLP(sizes, activation=hidden, output_activation=output_activation, init="xavier_normal", bias=bias,
               bias_init="uniform", init_scale=0.5, dtype=dtype, device=device, seed=seed)


def in_parameter_order(grads):
    """A Gradients' tensors in state-dict order, as the oracles return them."""
    return in_layer_order(grads.weights, grads.biases)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def random_vector(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=F64).to(dtype=p.dtype, device=p.device) for p in net.parameters()]


CASES = [(h, name) for h in HIDDEN for name in OUTPUT_LOSSES]
IDS = [f"{h}-{name}" for h, name in CASES]


# ---------------------------------------------------------------------------------------------------- per sample
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hidden,case", CASES, ids=IDS)
def test_per_sample_gradients_match_torch_func_and_sum_to_the_batch_gradient(hidden, case, dtype, device):
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net(hidden, output_activation, dtype, device)
    x, y = make_problem(SIZES, target_kind, 9, dtype, device, seed=3)
    ps = per_sample_gradients(net, x, y, loss_fn)
    _, batch = net.loss_and_grads(x, y, loss_fn)
    oracle = per_sample_contributions(net, x, y, loss_fn)
    for i, (mine, theirs, whole) in enumerate(zip(in_parameter_order(ps), oracle, in_parameter_order(batch))):
        assert mine.shape == (9, *net.parameters()[i].shape), f"parameter {i}: shape {tuple(mine.shape)}"
        assert_tensors_agree(f"parameter {i} per-sample (torch.func)", mine, theirs)
        assert_tensors_agree(f"parameter {i} sum over samples (loss_and_grads)", mine.sum(dim=0), whole)


@pytest.mark.parametrize("case", list(OUTPUT_LOSSES), ids=list(OUTPUT_LOSSES))
def test_contribution_convention_is_the_per_sample_loss_gradient_times_its_reduction_share(case):
    """contribution_i = g_i * scale(B) / scale(1): 1/B for "mean" and "elementwise_mean", 1 for "sum"."""
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net("tanh", output_activation)
    x, y = make_problem(SIZES, target_kind, 6, F64, "cpu", seed=4)
    share = 1.0 if loss_fn.reduction == "sum" else 1.0 / 6
    for i, (mine, g) in enumerate(zip(in_parameter_order(per_sample_gradients(net, x, y, loss_fn)),
                                      per_sample_loss_gradients(net, x, y, loss_fn))):
        assert_tensors_agree(f"parameter {i}", mine, g * share)


@pytest.mark.parametrize("hidden,case", CASES, ids=IDS)
def test_per_sample_norms_match_the_materialised_contributions(hidden, case, device):
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net(hidden, output_activation, device=device)
    x, y = make_problem(SIZES, target_kind, 11, F64, device, seed=5)
    materialised = torch.cat([t.reshape(11, -1) for t in per_sample_contributions(net, x, y, loss_fn)], dim=1)
    norms = per_sample_norms(net, x, y, loss_fn)
    assert norms.shape == (11,)
    assert_tensors_agree("norms vs torch.func", norms, materialised.norm(dim=1))
    mine = torch.cat([t.reshape(11, -1) for t in in_parameter_order(per_sample_gradients(net, x, y, loss_fn))], 1)
    assert_tensors_agree("norms vs per_sample_gradients", norms, mine.norm(dim=1))
    assert_tensors_agree("squared", per_sample_norms(net, x, y, loss_fn, squared=True), norms ** 2)


def test_per_sample_norms_without_biases():
    net = make_net("tanh", "sigmoid", bias=False)
    x, y = make_problem(SIZES, "unit", 5, F64, "cpu")
    materialised = torch.cat([t.reshape(5, -1) for t in per_sample_contributions(net, x, y, "squared_error")], 1)
    assert_tensors_agree("norms", per_sample_norms(net, x, y, "squared_error"), materialised.norm(dim=1))


# ---------------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("hidden,case", CASES, ids=IDS)
def test_gradient_noise_matches_torch_func(hidden, case, correction, device):
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net(hidden, output_activation, device=device)
    x, y = make_problem(SIZES, target_kind, 12, F64, device, seed=6)
    noise = gradient_noise(net, x, y, loss_fn, correction=correction)
    oracle = gradient_noise_func(net, x, y, loss_fn, correction=correction)
    for i, (m, v, om, ov) in enumerate(zip(noise.mean, noise.variance, oracle["mean"], oracle["variance"])):
        assert_tensors_agree(f"parameter {i} mean G", m, om)
        assert_tensors_agree(f"parameter {i} variance", v, ov)
    for key in ("trace", "grad_norm_sq", "b_simple"):
        assert_tensors_agree(key, getattr(noise, key).reshape(1), oracle[key].reshape(1))
    assert noise.batch == 12 and noise.correction == correction


def test_b_simple_does_not_depend_on_the_reduction():
    net = make_net("tanh", "identity")
    x, y = make_problem(SIZES, "real", 8, F64, "cpu", seed=1)
    values = [gradient_noise(net, x, y, SquaredError(r, half=h)).b_simple for r in ("mean", "sum", "elementwise_mean")
              for h in (False, True)]
    for v in values[1:]:
        assert_tensors_agree("B_simple", v.reshape(1), values[0].reshape(1), rel=1e-13)


def test_mean_gradient_is_the_batch_gradient_for_the_mean_loss():
    net = make_net("sigmoid", "sigmoid")
    x, y = make_problem(SIZES, "unit", 10, F64, "cpu", seed=2)
    _, grads = net.loss_and_grads(x, y, "squared_error")
    for i, (m, g) in enumerate(zip(gradient_noise(net, x, y, "squared_error").mean, in_parameter_order(grads))):
        assert_tensors_agree(f"parameter {i}", m, g, rel=1e-14)


def test_gradient_noise_needs_more_samples_than_the_correction():
    net = make_net("tanh", "sigmoid")
    x, y = make_problem(SIZES, "unit", 1, F64, "cpu")
    with pytest.raises(ValueError, match="more than 1 samples for correction=1, but got a batch of 1"):
        gradient_noise(net, x, y, "squared_error")
    assert torch.isfinite(gradient_noise(net, x, y, "squared_error", correction=0).trace)
    with pytest.raises(ValueError, match="correction must be an int >= 0"):
        gradient_noise(net, x, y, "squared_error", correction=-1)


# ---------------------------------------------------------------------------------------------------- Hv
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hidden,case", CASES, ids=IDS)
def test_hessian_vector_product_matches_double_backward(hidden, case, dtype, device):
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net(hidden, output_activation, dtype, device)
    x, y = make_problem(SIZES, target_kind, 7, dtype, device, seed=8)
    v = random_vector(net)
    hv = hessian_vector_product(net, x, y, loss_fn, v)
    oracle = hvp_double_backward(net, x, y, loss_fn, v)
    assert len(hv) == len(net.parameters())
    if dtype == F64:
        err = norm_relative_error(flat(hv), flat(oracle))
        assert err <= 1e-10, f"H v: norm-relative error {err:.2e} over all parameters"
    for i, (mine, theirs) in enumerate(zip(hv, oracle)):
        assert_tensors_agree(f"(H v)[{i}]", mine, theirs, rel=1e-10)


@pytest.mark.parametrize("hidden,case", CASES, ids=IDS)
def test_hessian_vector_product_matches_finite_differences_of_gradients(hidden, case):
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    net = make_net(hidden, output_activation)
    x, y = make_problem(SIZES, target_kind, 7, F64, "cpu", seed=9)
    v = random_vector(net, seed=1)
    hv = hessian_vector_product(net, x, y, loss_fn, v)
    fd = hvp_finite_differences(net, x, y, loss_fn, v)
    # eps = 1e-5: truncation ~eps^2 |third derivative|, rounding ~1e-16 |grad| / eps; measured at most ~3e-9.
    err = norm_relative_error(flat(hv), flat(fd))
    assert err < 1e-7, f"H v vs finite differences of gradients: norm-relative error {err:.2e}"


@pytest.mark.parametrize("sizes,hidden", [([2, 2, 2], "sigmoid"), ([4, 8, 8, 8, 3], ["tanh", "sigmoid", "relu"]),
                                          ([5, 3], None), ([3, 1, 4, 2], "tanh")],
                         ids=["xor-net", "deep-mixed", "one-layer", "width1"])
def test_hessian_vector_product_architectures(sizes, hidden):
    kwargs = {} if hidden is None else {"activation": hidden}
    net = MLP(sizes, output_activation="softmax", bias_init="normal", dtype=F64, seed=2, **kwargs)
    x, y = make_problem(sizes, "index", 6, F64, "cpu", seed=3)
    v = random_vector(net, seed=4)
    hv = hessian_vector_product(net, x, y, "cross_entropy", v)
    assert norm_relative_error(flat(hv), flat(hvp_double_backward(net, x, y, "cross_entropy", v))) <= 1e-10


def test_hessian_vector_product_without_biases_and_with_one_sample():
    net = make_net("tanh", "tanh", bias=False)
    x, y = make_problem(SIZES, "real", 1, F64, "cpu")
    v = random_vector(net)
    hv = hessian_vector_product(net, x[0], y[0], "squared_error", v)
    assert len(hv) == net.num_layers
    assert norm_relative_error(flat(hv), flat(hvp_double_backward(net, x, y, "squared_error", v))) <= 1e-10


def test_hessian_is_symmetric():
    """u . H v = v . H u: a property no single oracle call checks."""
    net = make_net("sigmoid", "softmax")
    x, y = make_problem(SIZES, "onehot", 8, F64, "cpu", seed=1)
    u, v = random_vector(net, seed=1), random_vector(net, seed=2)
    uhv = flat(u) @ flat(hessian_vector_product(net, x, y, "squared_error", v))
    vhu = flat(v) @ flat(hessian_vector_product(net, x, y, "squared_error", u))
    assert abs(uhv - vhu) <= 1e-12 * max(abs(uhv), abs(vhu))


def test_second_derivatives_match_autograd():
    """f''(net) read off x = f(net), for every element-wise activation, against autograd's second derivative."""
    from manual_backprop.activations import get_activation
    from manual_backprop.quantities import second_derivative

    z = torch.linspace(-4, 4, 81, dtype=F64) + 0.013  # off relu's kink
    for name in HIDDEN + ["leaky_relu:0.2"]:
        f = get_activation(name)
        zz = z.clone().requires_grad_()
        with torch.enable_grad():
            (d1,) = torch.autograd.grad(f.torch_module()(zz).sum(), zz, create_graph=True)
            (d2,) = torch.autograd.grad(d1.sum(), zz, allow_unused=True) if d1.requires_grad else (None,)
        expected = torch.zeros_like(z) if d2 is None else d2
        got = second_derivative(f, f.forward(z))
        got = torch.zeros_like(z) if got is None else got
        assert_tensors_agree(f"f'' of {name}", got, expected, rel=1e-13)
    assert set(SECOND_DERIVATIVES) >= {type(get_activation(n)) for n in HIDDEN}


def test_an_activation_without_a_second_derivative_is_named():
    class Softsign(Activation):
        name = "softsign"

        def forward(self, z):
            return z / (1 + z.abs())

        def derivative(self, x):
            return (1 - x.abs()) ** 2

    net = make_net("tanh", "sigmoid")
    net.activation_functions[0] = Softsign()
    x, y = make_problem(SIZES, "unit", 3, F64, "cpu")
    with pytest.raises(TypeError, match="f'' of activation Softsign: add it to .*SECOND_DERIVATIVES"):
        hessian_vector_product(net, x, y, "squared_error", random_vector(net))


def test_bad_vectors_are_named():
    net = make_net("tanh", "sigmoid")
    x, y = make_problem(SIZES, "unit", 3, F64, "cpu")
    v = random_vector(net)
    with pytest.raises(ValueError, match=r"v must be a list of 6 tensors in net.parameters\(\) order, but got a list of 5"):
        hessian_vector_product(net, x, y, "squared_error", v[:5])
    with pytest.raises(ValueError, match=r"v\[3\] must have the shape of b\[1\], \(5,\), but got \(4,\)"):
        hessian_vector_product(net, x, y, "squared_error", v[:3] + [torch.zeros(4, dtype=F64)] + v[4:])
    with pytest.raises(ValueError, match=r"v\[0\] must have dtype torch.float64"):
        hessian_vector_product(net, x, y, "squared_error", [v[0].float()] + v[1:])
    with pytest.raises(ValueError, match="but got NoneType"):
        hessian_vector_product(net, x, y, "squared_error")


def test_quantities_build_no_graph():
    """Autograd off: with grad mode on and inputs that require grad, nothing returned carries a graph."""
    net = make_net("tanh", "softmax")
    x, y = make_problem(SIZES, "index", 5, F64, "cpu")
    x = x.clone().requires_grad_()
    v = [t.requires_grad_() for t in random_vector(net)]
    with torch.enable_grad():
        outputs = [*in_parameter_order(per_sample_gradients(net, x, y, "cross_entropy")),
                   per_sample_norms(net, x, y, "cross_entropy"), gradient_noise(net, x, y, "cross_entropy").b_simple,
                   *hessian_vector_product(net, x, y, "cross_entropy", v)]
    for t in outputs:
        assert not t.requires_grad and t.grad_fn is None


# ---------------------------------------------------------------------------------------------------- population
@pytest.mark.parametrize("hidden,case", [("tanh", "softmax-ce-index"), ("sigmoid", "sigmoid-se-mean"),
                                         ("relu", "sigmoid-bce-mean"), ("leaky_relu", "softmax-se-mean")],
                         ids=["tanh-ce", "sigmoid-se", "relu-bce", "leaky-softmax-se"])
def test_population_quantities_equal_each_members_oracles(hidden, case, device):
    """The functions run over the member axis: member i's slice is what the oracles give for member(i) alone."""
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    pop = Population(SIZES, activation=hidden, output_activation=output_activation, init="xavier_normal",
                     bias_init="uniform", seeds=[3, 4, 5], dtype=F64, device=device)
    x, y = make_problem(SIZES, target_kind, 8, F64, device, seed=2)
    v = random_vector(pop, seed=5)
    ps = in_parameter_order(per_sample_gradients(pop, x, y, loss_fn))
    norms = per_sample_norms(pop, x, y, loss_fn)
    noise = gradient_noise(pop, x, y, loss_fn)
    hv = hessian_vector_product(pop, x, y, loss_fn, v)
    assert norms.shape == (3, 8) and noise.b_simple.shape == (3,) and ps[0].shape == (3, 8, SIZES[1], SIZES[0])
    for i in range(3):
        member = pop.member(i)
        for j, theirs in enumerate(per_sample_contributions(member, x, y, loss_fn)):
            assert_tensors_agree(f"member {i} parameter {j} per-sample", ps[j][i], theirs)
        materialised = torch.cat([t.reshape(8, -1) for t in per_sample_contributions(member, x, y, loss_fn)], 1)
        assert_tensors_agree(f"member {i} norms", norms[i], materialised.norm(dim=1))
        oracle = gradient_noise_func(member, x, y, loss_fn)
        assert_tensors_agree(f"member {i} B_simple", noise.b_simple[i].reshape(1), oracle["b_simple"].reshape(1))
        for j, (mine, theirs) in enumerate(zip(noise.variance, oracle["variance"])):
            assert_tensors_agree(f"member {i} parameter {j} variance", mine[i], theirs)
        expected = hvp_double_backward(member, x, y, loss_fn, [t[i] for t in v])
        err = norm_relative_error(flat([t[i] for t in hv]), flat(expected))
        assert err <= 1e-10, f"member {i}: H v norm-relative error {err:.2e}"


def test_population_with_one_batch_per_member():
    pop = Population([2, 3, 1], activation="tanh", bias_init="uniform", seeds=[0, 1], dtype=F64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 2, generator=g, dtype=F64)
    y = torch.rand(2, 5, 1, generator=g, dtype=F64)
    v = random_vector(pop)
    hv = hessian_vector_product(pop, x, y, "squared_error", v)
    for i in range(2):
        expected = hvp_double_backward(pop.member(i), x[i], y[i], "squared_error", [t[i] for t in v])
        assert norm_relative_error(flat([t[i] for t in hv]), flat(expected)) <= 1e-10


# ---------------------------------------------------------------------------------------------------- property
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def random_problem(draw):
    depth = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 8)) for _ in range(depth + 1)]
    hidden = [draw(st.sampled_from(HIDDEN + ["leaky_relu:0.3"])) for _ in range(depth - 1)]
    case = draw(st.sampled_from(sorted(OUTPUT_LOSSES)))
    return sizes, hidden, case, draw(st.integers(2, 12)), draw(st.integers(0, 2**20)), draw(st.floats(0.1, 1.5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problem())
def test_property_random_networks(problem):
    sizes, hidden, case, batch, seed, scale = problem
    output_activation, loss_fn, target_kind = OUTPUT_LOSSES[case]
    assume(output_activation != "softmax" or sizes[-1] > 1)  # a softmax of one output is refused where it is built
    net = MLP(sizes, activation=hidden, output_activation=output_activation, init="normal", init_scale=scale,
              bias_init="normal", dtype=F64, seed=seed)
    x, y = make_problem(sizes, target_kind, batch, F64, "cpu", seed=seed)
    if output_activation == "softmax" and isinstance(loss_fn, SquaredError):
        assume(float(1.0 - net(x).max()) > 1e-4)  # the agreement suite's conditioning exclusion, same reason
    v = random_vector(net, seed=seed)
    hv = flat(hessian_vector_product(net, x, y, loss_fn, v))
    expected = flat(hvp_double_backward(net, x, y, loss_fn, v))
    assert norm_relative_error(hv, expected) <= 1e-10 or (expected.norm() < 1e-300 and hv.norm() < 1e-300)
    mine = in_parameter_order(per_sample_gradients(net, x, y, loss_fn))
    for i, theirs in enumerate(per_sample_contributions(net, x, y, loss_fn)):
        assert_tensors_agree(f"parameter {i} per-sample", mine[i], theirs)
