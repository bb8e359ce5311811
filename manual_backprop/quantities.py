"""What one hand-written backward phase gives beyond the batch gradient: per-sample gradients, their norms and
noise, and Hessian-vector products (Pearlmutter's R-operator).

The lecture closes its derivation with "Above is the formula to compute weight changes for a single sample. How do
we compute the weight changes over the entire training set?" The backward phase already holds the answer: row i of
``deltas[k]`` is sample i's error term, so sample i's share of dE/dW[k] is the outer product delta_i x_i^T, and
``weight_gradient`` (deltas^T @ x) is the sum of these shares. Autograd adds the samples up inside that one matrix
product; getting them apart again takes B backward passes or torch.func.vmap.

Conventions, said once:

    contribution    ``per_sample_gradients`` returns sample i's contribution to the batch gradient: the terms whose
                    sum over the B samples is exactly ``loss_and_gradients``' dE/dW and dE/db, for every loss and
                    reduction. For reduction "mean" (and "elementwise_mean") it is 1/B times the gradient of sample
                    i's own loss; for "sum" it is that gradient. ``per_sample_norms`` measures these contributions.
    per-sample      ``gradient_noise`` works with g_i, the gradient of sample i's loss as if the batch held sample i
    gradient g_i    alone: contribution * scale(1)/scale(B) of the loss (B for the mean reductions, 1 for "sum").
                    It is the direction an online update on sample i follows, and the mean of the g_i is the batch
                    gradient of the mean reductions.
    noise           Sigma = covariance of the g_i over the batch, estimated entry by entry as
                    sum_i (g_i - G)^2 / (B - correction), G = mean_i g_i (correction=1: Bessel's, like torch.var;
                    correction=0: the batch is the whole distribution, as in the experiment on XOR's four points).
                    B_simple = tr(Sigma) / |G|^2, the simple noise scale of McCandlish et al. (2018), a
                    plug-in estimate on this batch. Both numbers are invariant to rescaling the g_i, so the choice
                    of reduction does not change B_simple.
    Hv              ``hessian_vector_product`` returns H v for the Hessian H of E (the loss as reduced) with respect
                    to all parameters, v and H v as lists in ``net.parameters()`` order: W[0], b[0], W[1], ...

Every function works over the leading axes of network.py: a ``Population`` (weights (K, n_{k+1}, n_k)) gives
per-sample gradients (K, B, n_{k+1}, n_k), norms (K, B), one B_simple per member (K,), and H v block by block, each
member's own Hessian. All of it runs under ``torch.no_grad()`` and builds no graph; the oracles (torch.func vmap,
double backward through the autograd twin, finite differences) live in reference/oracles.py.

The R-operator (Pearlmutter 1994): R{q} = d/dt q(theta + t v) at t = 0, the directional derivative of any quantity
q of the forward and backward phase along v. Applying it to each line of the two phases gives a second forward pass
(R{net}, R{x}) and a second backward pass (R{delta}), and R{dE/dW} = H v:

    R{net^{k+1}}  = V[k] x^k + W[k] R{x^k} + v_b[k]               R{x^0} = 0
    R{x^{k+1}}    = f'(net) R{net}                                (J R{net} for softmax: J is symmetric)
    R{delta^L}    = R of the loss's output delta                  (r_output_delta, one rule per loss)
    R{delta^k}    = f''(net) R{net} * (delta W) + f'(net) * (R{delta} W + delta V)
    R{dE/dW[k]}   = R{delta}^T x^k + delta^T R{x^k}               R{dE/db[k]} = sum over samples of R{delta}

f'' is read off the output x = f(net), as network.py reads f' (SECOND_DERIVATIVES, keyed by activation class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from .checks import check_int
from .activations import Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredError
from .parameter_state import in_layer_order
from .network import Gradients, backward_phase, bias_gradient, forward_phase, net_input, weight_gradient

__all__ = ["per_sample_gradients", "per_sample_norms", "GradientNoise", "gradient_noise", "hessian_vector_product",
           "second_derivative", "SECOND_DERIVATIVES", "r_forward_phase", "r_output_delta", "r_hidden_delta",
           "r_backward_phase"]


# ---------------------------------------------------------------------------------------------------- checked entry
def _phases(net, x, y, loss_fn):
    """Checked data and both phases: (loss_fn, cache, y, Gradients). ``net`` is an MLP or a Population."""
    if not all(hasattr(net, a) for a in ("check_loss", "check_x", "check_y", "weights", "activation_functions")):
        raise TypeError(f"net must be a manual_backprop MLP or Population, but got {type(net).__name__}")
    loss_fn = net.check_loss(loss_fn)
    cache = forward_phase(net.weights, net.biases, net.activation_functions, net.check_x(x))
    y = net.check_y(y, tuple(cache.output.shape), loss_fn)
    grads = backward_phase(net.weights, net.activation_functions, cache, y, loss_fn, bias=net.bias)
    return loss_fn, cache, y, grads


def _per_sample_factor(loss_fn: Loss, batch: int, n_out: int) -> float:
    """scale(1) / scale(B): from sample i's contribution to the gradient of sample i's own loss."""
    return loss_fn.scale(1, n_out) / loss_fn.scale(batch, n_out)


# ---------------------------------------------------------------------------------------------------- per sample
@torch.no_grad()
def per_sample_gradients(net, x: Tensor, y: Tensor, loss_fn=None) -> Gradients:
    """Sample i's contribution to dE/dW[k] and dE/db[k]: delta_i x_i^T and delta_i, one backward phase for all.

    The contributions sum over the sample axis to exactly the gradients of ``loss_and_gradients`` (the reduction's
    factor, 1/B for "mean", is inside each delta), for every loss and reduction.

    Returns:
        Gradients with weights[k] (..., B, n_{k+1}, n_k), biases[k] (..., B, n_{k+1}) (empty without biases) and
        the batch's deltas[k] (..., B, n_{k+1}).
    """
    _, cache, _, grads = _phases(net, x, y, loss_fn)
    xs = cache.activations
    weights = [d.unsqueeze(-1) * xk.unsqueeze(-2) for d, xk in zip(grads.deltas, xs)]  # (..., B, n_{k+1}, n_k)
    biases = [d.clone() for d in grads.deltas] if net.bias else []  # a bias's input activity is 1
    return Gradients(weights=weights, biases=biases, deltas=grads.deltas)


@torch.no_grad()
def per_sample_norms(net, x: Tensor, y: Tensor, loss_fn=None, *, squared: bool = False) -> Tensor:
    """||contribution of sample i|| over all parameters, (..., B), without forming any (B, n_{k+1}, n_k) tensor.

    ||delta_i x_i^T||_F^2 = ||delta_i||^2 ||x_i||^2, so per layer it is ||delta_i||^2 (||x_i||^2 + 1), the 1 being
    the bias's input activity (left out without biases). ``squared=True`` returns the squared norms.
    """
    _, cache, _, grads = _phases(net, x, y, loss_fn)
    total = None
    for d, xk in zip(grads.deltas, cache.activations):
        activity = (xk * xk).sum(dim=-1)  # ||x_i||^2: (..., B)
        if net.bias:
            activity = activity + 1.0
        term = (d * d).sum(dim=-1) * activity  # ||delta_i||^2 (||x_i||^2 + 1): (..., B)
        total = term if total is None else total + term
    return total if squared else total.sqrt()


@dataclass
class GradientNoise:
    """Per-sample gradient statistics of one batch (see the module docstring for the conventions).

    mean, variance: lists in ``net.parameters()`` order; mean G = mean_i g_i, variance = the diagonal of Sigma.
    trace: tr(Sigma) (...,); grad_norm_sq: |G|^2 (...,); b_simple: tr(Sigma) / |G|^2 (...,); batch: B;
    correction: the divisor is B - correction.
    """

    mean: list
    variance: list
    trace: Tensor
    grad_norm_sq: Tensor
    b_simple: Tensor
    batch: int
    correction: int


@torch.no_grad()
def gradient_noise(net, x: Tensor, y: Tensor, loss_fn=None, *, correction: int = 1) -> GradientNoise:
    """The per-parameter variance of the per-sample gradients g_i and the simple noise scale B_simple.

    sum_i g_i^2 is formed entry by entry without the per-sample tensors: for W[k] it is (delta^2)^T (x^2) times
    the square of the per-sample factor (BackPACK's SumGradSquared); variance = (sum_i g_i^2 - B G^2)
    / (B - correction), clamped at 0 against rounding. This one-pass formula loses relative accuracy where the
    variance is tiny next to G^2 (all samples agreeing); near a minimum, where G is small, it is accurate.
    """
    check_int("correction", correction, minimum=0)
    loss_fn, cache, _, grads = _phases(net, x, y, loss_fn)
    batch, n_out = cache.output.shape[-2:]
    if batch - correction <= 0:
        raise ValueError(f"gradient_noise needs more than {correction} samples for correction={correction}, "
                         f"but got a batch of {batch}")
    r = _per_sample_factor(loss_fn, batch, n_out)
    means, variances = [], []
    for k, (d, xk) in enumerate(zip(grads.deltas, cache.activations)):
        pairs = [(grads.weights[k], weight_gradient(d * d, xk * xk))]  # (sum of contributions, sum of squares)
        if net.bias:
            pairs.append((grads.biases[k], bias_gradient(d * d)))
        for g_sum, sq_sum in pairs:
            mean = g_sum * (r / batch)  # G = mean_i g_i
            second = sq_sum * (r * r)  # sum_i g_i^2
            variance = (second - batch * mean * mean).clamp_min_(0.0) / (batch - correction)
            means.append(mean)
            variances.append(variance)
    lead = cache.output.dim() - 2  # the leading axes (K for a population)
    trace = sum(v.sum(dim=tuple(range(lead, v.dim()))) for v in variances)
    grad_norm_sq = sum((m * m).sum(dim=tuple(range(lead, m.dim()))) for m in means)
    return GradientNoise(mean=means, variance=variances, trace=trace, grad_norm_sq=grad_norm_sq,
                         b_simple=trace / grad_norm_sq, batch=batch, correction=correction)


# ---------------------------------------------------------------------------------------------------- f''
def _zero_second_derivative(f: Activation, x: Tensor) -> Optional[Tensor]:
    return None  # piecewise linear: f'' = 0 wherever f' exists (relu at 0 follows autograd: f'' = 0 there too)


# f''(net) read off the output x = f(net), as activations.py reads f'. None stands for 0 (no term to add).
SECOND_DERIVATIVES: dict = {
    Sigmoid: lambda f, x: x * (1.0 - x) * (1.0 - 2.0 * x),  # d/dnet [x (1 - x)] = (1 - 2x) x (1 - x)
    Tanh: lambda f, x: -2.0 * x * ((1.0 - x) * (1.0 + x)),  # d/dnet [1 - x^2] = -2x (1 - x^2)
    ReLU: _zero_second_derivative,
    LeakyReLU: _zero_second_derivative,
    Identity: _zero_second_derivative,
}


def second_derivative(f: Activation, x: Tensor) -> Optional[Tensor]:
    """f''(net) from x = f(net), shape of x; None where f'' is 0. Softmax has no element-wise f'' (see
    ``r_hidden_delta``'s softmax rule). Raises TypeError for an activation without an entry in SECOND_DERIVATIVES."""
    for cls in type(f).__mro__:
        if cls in SECOND_DERIVATIVES:
            return SECOND_DERIVATIVES[cls](f, x)
    raise TypeError(f"hessian_vector_product needs f'' of activation {type(f).__name__}: add it to "
                    f"manual_backprop.quantities.SECOND_DERIVATIVES (read off the output x = f(net))")


def r_backward(f: Activation, x: Tensor, r_net: Tensor, r_x: Tensor, g: Tensor, r_g: Tensor) -> Tensor:
    """R{f.backward(x, g)}: the R-operator applied to dE/dnet = f'(net) * dE/dx, given R{net}, R{x} and R{dE/dx}.

    Element-wise f: f''(net) R{net} * g + f'(net) * R{g}. Softmax, f.backward = x * (g - sum(g x)), by the product
    rule: R{x} * (g - sum(g x)) + x * (R{g} - sum(R{g} x) - sum(g R{x})). Shapes (..., B, n).
    """
    if isinstance(f, Softmax):
        s = (g * x).sum(dim=-1, keepdim=True)
        r_s = (r_g * x).sum(dim=-1, keepdim=True) + (g * r_x).sum(dim=-1, keepdim=True)
        return r_x * (g - s) + x * (r_g - r_s)
    out = f.backward(x, r_g)
    f2 = second_derivative(f, x)
    return out if f2 is None else out + f2 * r_net * g


# ---------------------------------------------------------------------------------------------------- R-operator
def r_forward_phase(weights: Sequence[Tensor], functions: Sequence[Activation], activations: Sequence[Tensor],
                    v_weights: Sequence[Tensor], v_biases: Sequence[Tensor]) -> tuple:
    """The forward phase's directional derivatives along v: (r_nets, r_xs).

    r_nets[k] = R{net^{k+1}} (..., B, n_{k+1}); r_xs[k] = R{x^k}, r_xs[0] = None (the input does not move).
    """
    r_nets, r_xs = [], [None]
    for k, f in enumerate(functions):
        r_net = net_input(activations[k], v_weights[k], v_biases[k] if v_biases else None)  # V x + v_b
        if r_xs[k] is not None:
            r_net = r_net + r_xs[k] @ weights[k].transpose(-2, -1)  # + W R{x}: (..., B, n_{k+1})
        r_nets.append(r_net)
        r_xs.append(f.backward(activations[k + 1], r_net))  # f'(net) R{net}; softmax: J R{net}, J = J^T
    return r_nets, r_xs


def r_output_delta(loss_fn: Loss, x: Tensor, y: Tensor, f: Activation, r_net: Tensor, r_x: Tensor) -> Tensor:
    """R{dE/dnet^L}, (..., B, n_L), one rule per loss, from the same formulas as losses.py's output_delta.

    Squared error: dE/dx = 2c (x - y), R{dE/dx} = 2c R{x}, then ``r_backward`` through f. Cross-entropy on softmax
    and binary cross-entropy on sigmoid have the fused delta c (x - y), so R{delta} = c R{x} (for cross-entropy this
    takes the rows of y to sum to 1, as output_delta does).
    """
    c = loss_fn.scale(*x.shape[-2:])
    if isinstance(loss_fn, SquaredError):
        g = (x - y) * (2.0 * c)  # dE/dx, as SquaredError.output_delta computes it
        return r_backward(f, x, r_net, r_x, g, r_x * (2.0 * c))
    if isinstance(loss_fn, (CrossEntropy, BinaryCrossEntropy)):
        return r_x * c
    raise TypeError(f"hessian_vector_product has no R-rule for loss {type(loss_fn).__name__}; add one to "
                    f"manual_backprop.quantities.r_output_delta")


def r_hidden_delta(f: Activation, x: Tensor, r_net: Tensor, r_x: Tensor, delta: Tensor, r_delta: Tensor,
                   weight: Tensor, v_weight: Tensor) -> Tensor:
    """R{delta^k} of an earlier layer, from delta_j = f'(net_j) sum_c delta_c w_cj: the sum moves by
    R{delta} W + delta V, and f'(net) by f''(net) R{net}. Shapes as ``hidden_delta``'s."""
    back = delta @ weight  # sum_c delta_c w_cj: (..., B, n_k)
    r_back = r_delta @ weight + delta @ v_weight  # its R: (..., B, n_k)
    return r_backward(f, x, r_net, r_x, back, r_back)


def r_backward_phase(weights, functions, activations, deltas, y, loss_fn: Loss, v_weights, v_biases, r_nets, r_xs,
                     *, bias: bool = True) -> Gradients:
    """The backward phase's directional derivatives: Gradients of H v (weights[k], biases[k]) and R{deltas}."""
    L = len(weights)
    r_deltas = [None] * L
    hv_w = [None] * L
    hv_b = [None] * L if bias else []
    r_deltas[L - 1] = r_output_delta(loss_fn, activations[L], y, functions[L - 1], r_nets[L - 1], r_xs[L])
    for k in range(L - 1, -1, -1):
        hv_w[k] = weight_gradient(r_deltas[k], activations[k])  # R{delta}^T x
        if r_xs[k] is not None:
            hv_w[k] = hv_w[k] + weight_gradient(deltas[k], r_xs[k])  # + delta^T R{x}
        if bias:
            hv_b[k] = bias_gradient(r_deltas[k])
        if k > 0:
            r_deltas[k - 1] = r_hidden_delta(functions[k - 1], activations[k], r_nets[k - 1], r_xs[k], deltas[k],
                                             r_deltas[k], weights[k], v_weights[k])
    return Gradients(weights=hv_w, biases=hv_b, deltas=r_deltas)


@torch.no_grad()
def hessian_vector_product(net, x: Tensor, y: Tensor, loss_fn=None, v: Optional[Sequence[Tensor]] = None) -> list:
    """H v for the Hessian of E with respect to the parameters, by hand: one forward phase, one R-forward phase,
    one backward phase and one R-backward phase (Pearlmutter's R-operator), about the cost of two gradients.

    Args:
        net: an MLP or a Population (then H is block-diagonal, one block per member).
        x, y, loss_fn: as ``loss_and_grads`` takes them.
        v: tensors in ``net.parameters()`` order (W[0], b[0], W[1], ...), each of its parameter's shape.

    Returns:
        H v as a list in the same order.
    """
    params = net.parameters()
    _check_vector(v, params, net.bias)
    loss_fn, cache, y, grads = _phases(net, x, y, loss_fn)
    step = 2 if net.bias else 1
    v_weights, v_biases = list(v[0::step]), list(v[1::step]) if net.bias else []
    r_nets, r_xs = r_forward_phase(net.weights, net.activation_functions, cache.activations, v_weights, v_biases)
    hv = r_backward_phase(net.weights, net.activation_functions, cache.activations, grads.deltas, y, loss_fn,
                          v_weights, v_biases, r_nets, r_xs, bias=net.bias)
    return in_layer_order(hv.weights, hv.biases if net.bias else [])


def _check_vector(v, params: list, bias: bool) -> None:
    names = [f"{'W' if i % 2 == 0 else 'b'}[{i // 2}]" if bias else f"W[{i}]" for i in range(len(params))]
    if isinstance(v, Tensor) or not isinstance(v, (list, tuple)) or len(v) != len(params):
        got = f"a list of {len(v)}" if isinstance(v, (list, tuple)) else type(v).__name__
        raise ValueError(f"v must be a list of {len(params)} tensors in net.parameters() order, but got {got}")
    for i, (t, p) in enumerate(zip(v, params)):
        if not isinstance(t, Tensor):
            raise TypeError(f"v[{i}] must be a torch.Tensor, but got {type(t).__name__}")
        if t.shape != p.shape:
            raise ValueError(f"v[{i}] must have the shape of {names[i]}, {tuple(p.shape)}, but got {tuple(t.shape)}")
        if t.dtype != p.dtype or t.device != p.device:
            raise ValueError(f"v[{i}] must have dtype {p.dtype} on {p.device} like {names[i]}, but got {t.dtype} on "
                             f"{t.device}")

