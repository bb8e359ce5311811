"""The lecture's single-layer rules: what the mathematics guarantees, asserted for every seed.

- AND and OR are linearly separable, so the perceptron converges, within Novikoff's bound on its corrections.
- XOR is not: a linear threshold unit misclassifies at least one of its four points, at every epoch and for every
  seed, so the perceptron never reaches zero errors and the delta rule's accuracy is at most 75%.
  This holds in floating point too, for units computed as b + x . w on 0/1 inputs: rounding is monotone, so
  out(1,0) >= t > out(0,0) forces w_1 > 0 (likewise w_2 > 0), and then out(1,1) >= out(1,0) >= t.
- The delta rule is gradient descent on a convex quadratic: it settles at the least-squares line (e(w) = 0.25 on
  XOR), never below it, and batch mode diverges above the learning rate 2 / lambda_max of the Hessian.
"""

import math

import numpy as np
import pytest
import torch

from manual_backprop import MLP, SquaredError
from manual_backprop.datasets import load_dataset
from manual_backprop.single_layer import (LinearUnit, Perceptron, collapse_linear_mlp, delta_rule_train,
                                          perceptron_mistake_bound, perceptron_train)
from manual_backprop.tblog import RunLogger, load_run, read_scalars

from helpers import draw_targets

F64 = torch.float64
SEEDS = range(20)


def gate(name):
    data = load_dataset(name, dtype=F64)
    return data.x_train, data.y_train  # (4, 2) of 0/1, (4,) class indices


def augmented(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)  # x~ = [x, 1]: (N, 3)


def least_squares(x, y):
    """The line that minimises e(w) = 1/N sum (y - w . x~)^2, and that minimum."""
    design, target = augmented(x), y.to(F64).unsqueeze(1)
    solution = torch.linalg.lstsq(design, target).solution  # (3, 1): [w_1, w_2, b]
    return solution[:, 0], ((design @ solution - target) ** 2).mean().item()


# ---------------------------------------------------------------------------------------------------- the rules
def test_perceptron_rule_is_error_correction():
    """w <- w + eta (y - yhat) x: a correct sample changes nothing, a mistake moves w by eta x toward its class.
    (Dyadic numbers, so every step is exact in float64.)"""
    unit = Perceptron.from_tensors(torch.tensor([[0.25, -0.5]], dtype=F64), torch.tensor([0.125], dtype=F64))
    corrected = unit.step(torch.tensor([[1.0, 1.0]], dtype=F64), torch.tensor([0]), lr=0.5)  # net -0.125: yhat 0
    assert corrected.item() == 0
    assert unit.weight.tolist() == [[0.25, -0.5]] and unit.bias.tolist() == [0.125]
    corrected = unit.step(torch.tensor([[0.0, 1.0]], dtype=F64), torch.tensor([1]), lr=0.5)  # net -0.375: yhat 0
    assert corrected.item() == 1
    assert unit.weight.tolist() == [[0.25, 0.0]] and unit.bias.tolist() == [0.625]
    # Batch: the mean of the per-sample corrections. Nets 0.875 and 0.625: both yhat 1, both wrong.
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    assert unit.step(x, torch.tensor([0, 0]), lr=1.0).item() == 2
    assert unit.weight.tolist() == [[-0.25, 0.0]] and unit.bias.tolist() == [-0.375]


@pytest.mark.parametrize("batch,n_in,n_out", [(1, 2, 1), (4, 2, 1), (7, 5, 3)])
def test_delta_rule_step_is_backprop_on_a_linear_layer(batch, n_in, n_out):
    """Delta w = 2 eta (y - out) x (mean over samples) is one gradient-descent step of the hand-written MLP with one
    identity layer on SquaredError(reduction="mean"): the lecture's output-layer rule with f' = 1."""
    g = torch.Generator().manual_seed(batch)
    weight, bias = torch.randn(n_out, n_in, generator=g, dtype=F64), torch.randn(n_out, generator=g, dtype=F64)
    x = torch.randn(batch, n_in, generator=g, dtype=F64)
    y = draw_targets("binary", (batch,), n_out, g)
    unit = LinearUnit.from_tensors(weight, bias)
    net = MLP.from_tensors([weight], [bias], activation=[], output_activation="identity")
    e_before = unit.step(x, y, lr=0.05)
    loss, grads = net.loss_and_grads(x, y, SquaredError(reduction="mean"))
    net.step(grads, lr=0.05)
    assert e_before.item() == pytest.approx(loss.item(), rel=1e-14)
    torch.testing.assert_close(unit.weight, net.weights[0], rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(unit.bias, net.biases[0], rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------------- separable gates
# A separating direction u over [w_1, w_2, b] for each gate, found by hand: AND is x_1 + x_2 - 1.5 > 0, OR is
# x_1 + x_2 - 0.5 > 0. Its margin min_i s_i u . x~_i / |u| (s = +1 for class 1, -1 for class 0) goes into the bound.
SEPARATORS = {"and": [1.0, 1.0, -1.5], "or": [1.0, 1.0, -0.5]}


def radius_and_margin(name):
    """R = max |x~| and the margin of the gate's hand-made separator (> 0: it does separate)."""
    x, y = gate(name)
    xt = augmented(x)
    u = torch.tensor(SEPARATORS[name], dtype=F64)
    margin = ((2.0 * y.to(F64) - 1.0) * (xt @ u)).min().item() / u.norm().item()
    assert margin > 0, f"{name}: the hand-made separator must separate"
    return xt.norm(dim=1).max().item(), margin


@pytest.mark.parametrize("name", ["and", "or"])
@pytest.mark.parametrize("mode", ["online", "batch"])
def test_perceptron_converges_on_separable_gates_within_novikoff_bound(name, mode):
    """Perceptron convergence theorem, for every seed: at most (R/gamma)^2 + 2|w0|/(eta gamma) corrections online,
    at most N times that many batch epochs (``perceptron_mistake_bound``); the epoch limit is set above the bound,
    so only the theorem, not the limit, decides the outcome."""
    x, y = gate(name)
    radius, margin = radius_and_margin(name)
    lr = 1.0
    for seed in SEEDS:
        w0 = Perceptron(2, seed=seed)
        initial_norm = torch.cat([w0.weight[0], w0.bias]).norm().item()
        bound = perceptron_mistake_bound(radius, margin, initial_norm=initial_norm, lr=lr)
        if mode == "batch":
            bound *= x.shape[0]
        h = perceptron_train(x, y, mode=mode, lr=lr, epochs=math.ceil(bound) + 1, seed=seed)
        assert h.converged and h.stop_reason == "converged", f"{name} {mode} seed {seed}: {h.message}"
        assert h.final["errors"] == 0 and h.final["accuracy"] == 1.0
        assert h.epochs_to_solve == h.final["epoch"] <= bound, f"seed {seed}: {h.epochs_to_solve} > {bound:.1f}"
        if mode == "online":
            assert h.final["updates"] <= bound, f"seed {seed}: {h.final['updates']} corrections > {bound:.1f}"
        assert torch.equal(h.unit.predict(x)[:, 0], y.to(F64))


@pytest.mark.parametrize("name", ["and", "or"])
def test_perceptron_from_zero_weights_converges_in_any_fixed_order(name):
    """The classic start (w = 0, lr 1, samples in their stored order): integer weights, the same theorem."""
    x, y = gate(name)
    h = perceptron_train(x, y, init="zeros", bias_init="zeros", shuffle=False, epochs=60)
    assert h.converged and h.final["errors"] == 0
    assert h.final["updates"] <= perceptron_mistake_bound(*radius_and_margin(name))


# ---------------------------------------------------------------------------------------------------- XOR
@pytest.mark.parametrize("mode", ["online", "batch"])
def test_perceptron_never_reaches_zero_errors_on_xor(mode):
    """XOR is not linearly separable: every epoch of every seed ends with at least one point misclassified, so the
    run stops at its epoch limit and says it kept misclassifying."""
    x, y = gate("xor")
    for seed in SEEDS:
        h = perceptron_train(x, y, mode=mode, epochs=30, seed=seed)
        assert min(h.errors) >= 1, f"seed {seed}: errors per epoch {h.errors}"
        assert h.best_accuracy <= 0.75
        assert not h.converged and not h.solved and h.epochs_to_solve is None
        assert h.stop_reason == "max_epochs" and h.final["epoch"] == 30
        assert "kept misclassifying" in h.message
        if mode == "online":
            assert all(b > a for a, b in zip(h.updates, h.updates[1:])), "every epoch makes a correction"


@pytest.mark.parametrize("mode,lr", [("online", 0.05), ("batch", 0.2)])
def test_delta_rule_best_accuracy_on_xor_is_at_most_75_percent(mode, lr):
    """For every seed and every epoch: accuracy <= 3/4, and e(w) never below the least-squares minimum 0.25."""
    x, y = gate("xor")
    _, e_min = least_squares(x, y)
    assert e_min == pytest.approx(0.25, abs=1e-15)
    for seed in SEEDS:
        h = delta_rule_train(x, y, mode=mode, lr=lr, epochs=40, seed=seed)
        assert h.best_accuracy <= 0.75, f"seed {seed}: accuracy per epoch {h.accuracy}"
        assert min(h.errors) >= 1 and not h.solved
        assert min(h.squared_error) >= e_min - 1e-12, f"seed {seed}: e(w) {min(h.squared_error)} < {e_min}"


@pytest.mark.parametrize("name", ["xor", "and", "or"])
def test_delta_rule_settles_at_the_least_squares_line(name):
    """Batch gradient descent on the convex e(w) converges to its unique minimiser, the least-squares line: on XOR
    W = 0, b = 0.5 (e = 0.25, every output 0.5: a line with errors); on AND and OR a line with no errors."""
    x, y = gate(name)
    solution, e_min = least_squares(x, y)
    h = delta_rule_train(x, y, mode="batch", lr=0.5, epochs=2000, tol=1e-15, seed=3)
    assert h.converged, h.message
    got = torch.cat([h.unit.weight[0], h.unit.bias])
    torch.testing.assert_close(got, solution, rtol=0, atol=1e-6)
    assert h.final["squared_error"] == pytest.approx(e_min, abs=1e-12)
    assert h.solved == (name != "xor")


def test_delta_rule_batch_diverges_only_above_the_stability_limit():
    """Gradient descent on e(w) = 1/N |X~ w - y|^2 is stable iff lr < N / lambda_max(X~^T X~) (0.628 on the XOR
    points). Above it the run stops as diverged, with the last finite weights put back and a hint."""
    x, y = gate("xor")
    limit = x.shape[0] / torch.linalg.eigvalsh(augmented(x).T @ augmented(x))[-1].item()
    assert limit == pytest.approx(0.6277, abs=1e-4)
    stable = delta_rule_train(x, y, mode="batch", lr=0.95 * limit, epochs=300, seed=0)
    assert stable.stop_reason == "max_epochs" and stable.final["squared_error"] < 0.2501
    h = delta_rule_train(x, y, mode="batch", lr=10 * limit, epochs=400, seed=0)
    assert h.stop_reason == "diverged", h.message
    assert "smaller learning rate" in h.message and "0.628" in h.message
    assert all(math.isfinite(e) for e in h.squared_error)
    assert bool(torch.isfinite(h.unit.weight).all()) and bool(torch.isfinite(h.unit.bias).all())
    assert h.final["epoch"] < 400


# ---------------------------------------------------------------------------------------------------- collapse
@pytest.mark.parametrize("sizes", [[2, 3, 1], [4, 8, 8, 3], [5, 16, 2, 16, 7, 2]])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_mlp_equals_its_collapsed_matrix_to_float64_precision(sizes, bias, device):
    """A linear MLP is one layer: W = W_L ... W_1 and the composed bias give the network's outputs up to float64
    rounding (a norm-relative error of a few eps)."""
    net = MLP(sizes, activation="identity", output_activation="identity", bias=bias, init="normal",
              init_scale=0.8, bias_init="normal", dtype=F64, device=device, seed=len(sizes))
    unit = collapse_linear_mlp(net)
    assert isinstance(unit, LinearUnit) and tuple(unit.weight.shape) == (sizes[-1], sizes[0])
    x = torch.randn(500, sizes[0], generator=torch.Generator().manual_seed(1), dtype=F64).to(device)
    out, collapsed = net(x), unit(x)
    err = ((out - collapsed).norm() / out.norm()).item()
    assert err <= 50 * torch.finfo(F64).eps, f"norm-relative error {err:.2e}"


def test_collapse_refuses_a_nonlinear_network():
    net = MLP([2, 3, 1], activation="tanh", output_activation="identity", dtype=F64, seed=0)
    with pytest.raises(ValueError, match=r"identity activations.*'tanh'"):
        collapse_linear_mlp(net)
    with pytest.raises(TypeError, match="manual_backprop.MLP"):
        collapse_linear_mlp("net")


# ---------------------------------------------------------------------------------------------------- contracts
def test_rules_run_with_autograd_off():
    """Grad mode on, inputs that require grad: no parameter requires grad and no output carries a graph."""
    x, y = gate("and")
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        for train in (perceptron_train, delta_rule_train):
            h = train(x, y, epochs=3, seed=0)
            for p in h.unit.parameters():
                assert not p.requires_grad and p.grad_fn is None
            for out in (h.unit(x), h.unit.net_input(x), h.unit.predict(x), h.unit.step(x, y, lr=0.1)):
                assert out.grad_fn is None and not out.requires_grad


def test_same_seed_same_run_and_float32_agrees():
    x, y = gate("xor")
    a = delta_rule_train(x, y, epochs=10, seed=5)
    b = delta_rule_train(x, y, epochs=10, seed=5)
    assert a.to_dict() | {"seconds": None} == b.to_dict() | {"seconds": None}
    c = delta_rule_train(x.float(), y, epochs=10, seed=5, dtype=torch.float32)
    assert c.unit.weight.dtype == torch.float32 and c.errors == a.errors
    np.testing.assert_allclose(c.squared_error, a.squared_error, rtol=1e-5)
    d = perceptron_train(x, y, epochs=10, seed=5, init="zeros", bias_init="zeros")
    assert d.unit.init == "zeros" and d.errors[0] == 2  # w = 0: every net is 0, every yhat 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("mode", ["online", "batch"])
def test_cuda_run_matches_cpu_run(mode):
    """Weights and the online order are drawn on the CPU, so the CUDA run is the CPU run, step for step."""
    x, y = gate("and")
    for train in (perceptron_train, delta_rule_train):
        cpu = train(x, y, mode=mode, epochs=15, seed=2)
        cuda = train(x, y, mode=mode, epochs=15, seed=2, device="cuda")
        assert cuda.unit.weight.device.type == "cuda"
        assert cuda.errors == cpu.errors and cuda.stop_reason == cpu.stop_reason
        np.testing.assert_allclose(cuda.squared_error, cpu.squared_error, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(cuda.unit.weight.cpu(), cpu.unit.weight, rtol=1e-12, atol=1e-14)


def test_history_is_logged_for_tensorboard(tmp_path):
    x, y = gate("xor")
    with RunLogger(tmp_path, "xor", "t", "delta") as logger:
        h = delta_rule_train(x, y, epochs=12, seed=0, logger=logger, image_every=5)
    scalars = read_scalars(logger.path)
    for tag in ("errors/train", "accuracy/train", "loss/train", "updates/epoch", "weights/w1", "weights/w2",
                "weights/bias"):
        assert tag in scalars, f"missing {tag}: {sorted(scalars)}"
    assert [s for s, _ in scalars["loss/train"]] == list(range(13))
    np.testing.assert_allclose([v for _, v in scalars["loss/train"]], h.squared_error, rtol=1e-6)
    assert [v for _, v in scalars["errors/train"]] == h.errors
    images = load_run(logger.path).Images("decision_boundary")
    assert [e.step for e in images] == [0, 5, 10, 12]


# ---------------------------------------------------------------------------------------------------- bad input
X, Y = torch.zeros(4, 2, dtype=F64), torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize("kwargs,error,match", [
    ({"x": X.numpy()}, TypeError, r"x must be a torch.Tensor.*torch.as_tensor"),
    ({"y": [0, 1, 1, 0]}, TypeError, r"y must be a torch.Tensor, but got list"),
    ({"x": torch.zeros(4, dtype=F64)}, ValueError, r"x must have shape \(N, n_in\), but got \(4,\)"),
    ({"y": torch.tensor([0, 2, 1, 0])}, ValueError, r"y must hold 0/1 targets.*but got 2"),
    ({"y": torch.tensor([0, 1, 1])}, ValueError, r"y must have shape \(4,\) or \(4, 1\).*but got \(3,\)"),
    ({"x": torch.full((4, 2), float("nan"), dtype=F64)}, ValueError, r"x must be finite"),
    ({"mode": "stochastic"}, ValueError, r"mode must be one of \['online', 'batch'\], but got 'stochastic'"),
    ({"lr": -1.0}, ValueError, r"lr must be a finite number > 0, but got -1.0"),
    ({"lr": "big"}, TypeError, r"lr must be a number, but got str"),
    ({"epochs": 0}, ValueError, r"epochs must be an int >= 1, but got 0"),
    ({"epochs": 2.5}, TypeError, r"epochs must be an int, but got float"),
    ({"seed": -3}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got -3"),
    ({"seed": 2 ** 70}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got 1180591620717411303424"),
    ({"init": "bogus"}, ValueError, r"init must be one of"),
    ({"device": "tpu"}, ValueError, r"device must be 'cpu', 'cuda'"),
    ({"unit": LinearUnit(2)}, TypeError, r"unit must be a Perceptron for the perceptron rule, but got LinearUnit"),
])
def test_bad_arguments_name_what_must_hold(kwargs, error, match):
    args = {"x": X, "y": Y, **kwargs}
    with pytest.raises(error, match=match):
        perceptron_train(args.pop("x"), args.pop("y"), **args)


def test_unit_edges_name_what_must_hold():
    unit = LinearUnit(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\) or \(3,\), but got \(5, 2\)"):
        unit(torch.zeros(5, 2, dtype=F64))
    with pytest.raises(TypeError, match=r"dtype torch.float64 on cpu, but got dtype torch.float32"):
        unit(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"y must have shape \(5, 2\)"):
        unit.step(torch.zeros(5, 3, dtype=F64), torch.zeros(5), lr=0.1)
    with pytest.raises(ValueError, match=r"tol must be a finite number > 0"):
        delta_rule_train(X, Y, tol=0.0)
    with pytest.raises(ValueError, match=r"n_in must be an int >= 1, but got 0"):
        Perceptron(0)
    with pytest.raises(ValueError, match=r"bias must be a tensor of shape \(1,\)"):
        Perceptron.from_tensors(torch.zeros(1, 2, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"margin must be a finite number > 0"):
        perceptron_mistake_bound(1.0, 0.0)
