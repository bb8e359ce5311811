"""The classic mistakes of a hand-written backward phase, each computed with the library's own functions, and the
diagnosis that says which of them reproduces a student's numbers.

A mistake is a change to one step of the backward phase (network.py), so its gradients are computed by the same
``output_delta``, ``hidden_delta``, ``weight_gradient`` and ``bias_gradient`` with one argument or one factor
changed, exactly as a student's slip changes it:

    f' missing                      hidden_delta(Identity(), ...), or the output delta without f'
    the wrong sign                  the lecture's delta = -dE/dnet returned as if it were the gradient
    W where W^T belongs             delta @ W.T in the hidden delta (square layers), or x^T @ delta for dE/dW
    a missing 1/m                   the output delta without the loss's reduction factor (1/B for "mean")
    an extra 1/m                    the output delta divided by B once more
    dE/dW divided by m              delta^T @ x / B, the 1/m already being in delta
    delta @ x                       dE/dW without the transpose (raises unless n_{k+1} = B)
    bias gradient not summed        the deltas (B, n) themselves, the first sample's row, their mean, or
                                    delta.sum(1) over the units
    deltas summed first             the output delta summed over the samples, (1, n_L), and back-propagated
                                    with the mean sample's activities; or, the output layer right, each delta
                                    summed over the samples as it is back-propagated to the layer below (in
                                    every step, or in the step out of the output layer only)
    f' taken of net, not of x       the code's f'(x) formula (x (1 - x) for sigmoid) applied to net
    f' evaluated at the activity    sigma'(x) = sigma(x)(1 - sigma(x)) where sigma'(net) belongs
    a factor 2 off                  the 2 of d(e^2)/dx dropped, or doubled against a loss with the 1/2

The f' mistakes come in three scopes (every layer, the hidden layers only, the output layer only); two mistakes
on different steps combine; grade_diagnosis.py finds the mistakes whose numbers equal the student's at every
disagreeing layer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch

from manual_backprop.activations import Identity, Softmax
from manual_backprop.losses import Loss, SquaredError
from manual_backprop.network import (MLP, ForwardCache, bias_gradient, hidden_delta, net_input, output_delta,
                                     weight_gradient)

__all__ = ["Mistake", "MISTAKES", "RIGHT", "SAME_NUMBERS", "mistaken_gradients", "match_tolerance"]

_MATCH = {torch.float64: 1e-8, torch.float32: 1e-4}


def match_tolerance(dtype: torch.dtype) -> float:
    """How close a student's numbers must be to a mistake's to say that mistake fits (rounding, not a new error)."""
    return _MATCH.get(dtype, 1e-2)


@dataclass(frozen=True)
class Mistake:
    """One slip in the backward phase: each field names how one step is done ("ok" where it is right)."""

    name: str
    where: str = ""
    hint: str = ""
    output: str = "ok"  # the output delta's f': ok | none | of_net | at_x
    hidden: str = "ok"  # the hidden delta: ok | none | of_net | at_x | w_t
    factor: str = "ok"  # ok | no_mean (no 1/m) | extra_m (delta / B) | half (the 2 dropped) | double
    sign: int = 1
    weight: str = "ok"  # dE/dW: ok | transposed (x^T @ delta) | no_t (delta @ x) | over_m (divided by B)
    bias: str = "ok"  # dE/db: ok | unsummed | first | mean | units (delta.sum(1))
    batch: str = "ok"  # ok | summed: the output delta summed over the samples before back-propagating | hidden:
    # each delta summed over the samples in the hidden step, delta.sum(0) @ W, the output layer right | hidden_top:
    # the same in the step out of the output layer only

    @property
    def label(self) -> str:
        return f"{self.name} {self.where}".strip()

    def steps(self) -> set:
        """The steps this mistake changes."""
        base = Mistake(name="")
        return {f.name for f in fields(self)[3:] if getattr(self, f.name) != getattr(base, f.name)}

    def combine(self, other: "Mistake") -> Optional["Mistake"]:
        """Both mistakes at once, or None where they change the same step."""
        if self.steps() & other.steps():
            return None
        changes = {s: getattr(other, s) for s in other.steps()}
        return replace(self, name=f"{self.label} and {other.label}", where="", hint=f"{self.hint} {other.hint}",
                       **changes)


_FP = "The slide's delta_j has the factor f'(net_j) in every layer: the output delta is 2c (x - y) f'(net) " \
      "(c: the loss's factor), and a hidden delta is f'(net_j) * sum_c delta_c w_cj."
_OF_NET = ("f' is read off the activity: x (1 - x) for sigmoid and 1 - x^2 for tanh take x = f(net), which "
           "cache.activations holds; applied to net they give another number.")
_AT_X = ("f'(net) is wanted; sigmoid(x) (1 - sigmoid(x)) with x the activity is f' at the wrong point. Either write "
         "f'(net) = x (1 - x) with the activity x, or apply the net-formula to net (cache.logits, or W x + b).")

MISTAKES = [
    Mistake("f' missing", "in every layer", _FP, output="none", hidden="none"),
    Mistake("f' missing", "in the hidden layers", _FP, hidden="none"),
    Mistake("f' missing", "at the output layer", _FP, output="none"),
    Mistake("the wrong sign", "", "Return the gradient dE/dW, what autograd computes: the lecture's delta is "
            "-dE/dnet, so its 2(y - x) f'(net) becomes 2c (x - y) f'(net) in the code's sign.", sign=-1),
    Mistake("W where W^T belongs", "in the hidden delta", "sum_c delta_c w_cj over the layer above is delta @ W, "
            "(B, n_{k+1}) @ (n_{k+1}, n_k); delta @ W.T only runs when the layer is square.", hidden="w_t"),
    Mistake("W where W^T belongs", "in dE/dW", "dE/dW[k] is delta^T @ x^k, shaped like net.weights[k] "
            "(n_{k+1}, n_k); x^T @ delta is its transpose.", weight="transposed"),
    Mistake("a missing 1/m", "", "The loss's reduction divides by the number of samples (loss_fn.scale(B, n) is "
            "the whole factor c): the output delta is c * 2 (x - y) f'(net).", factor="no_mean"),
    Mistake("an extra 1/m in the output delta", "", "loss_fn.scale(B, n) is the whole factor c (1/B for the default "
            "mean, so the 1/m is there already; 1 for sum): dividing the output delta by B once more makes every "
            "gradient 1/B of autograd's (the same numbers as dE/dW and dE/db each divided by B).", factor="extra_m"),
    Mistake("dE/dW divided by m", "", "dE/dW[k] is delta^T @ x^k, summed over the samples, not averaged: the "
            "loss's 1/m is in delta already.", weight="over_m"),
    Mistake("delta @ x where delta^T @ x belongs", "in dE/dW", "dE/dW[k] = delta^T @ x^k, (n_{k+1}, B) @ (B, n_k): "
            "the product sums over the samples; delta @ x multiplies (B, n_{k+1}) by (B, n_k), which runs only "
            "when n_{k+1} = B.", weight="no_t"),
    Mistake("the deltas summed over the samples before back-propagating", "", "Each sample has its own delta "
            "(B, n): dE/dW[k] = sum_i delta_i x_i^T is delta^T @ x^k, a sum of products, which is not the summed "
            "delta times one (mean) activity; sum over the samples only in the last step, dE/dW and dE/db.",
            batch="summed"),
    Mistake("the deltas summed over the samples before back-propagating", "to the layer below", "Each sample "
            "has its own delta: the hidden delta of sample i is f'(net_i) * (delta_i @ W), (B, n_{k+1}) @ "
            "(n_{k+1}, n_k) with a row per sample; delta.sum(0) @ W gives every sample the same sum, so the layers "
            "below the output get wrong gradients. Sum over the samples only in dE/dW and dE/db.", batch="hidden"),
    Mistake("the deltas summed over the samples before back-propagating", "from the output layer (there only)",
            "Each sample has its own delta: the delta of sample i in the layer below the output is f'(net_i) * "
            "(delta_i @ W), a row per sample; delta.sum(0) @ W gives every sample the same sum. Sum over the samples "
            "only in dE/dW and dE/db.", batch="hidden_top"),
    Mistake("bias gradient not summed over the samples", "(the deltas themselves)", "dE/db[k] is the layer's "
            "deltas summed over the sample axis, delta.sum(0), shape (n_{k+1},).", bias="unsummed"),
    Mistake("bias gradient not summed over the samples", "(the first sample only)", "dE/db[k] is the layer's "
            "deltas summed over the sample axis, delta.sum(0), not delta[0].", bias="first"),
    Mistake("bias gradient not summed over the samples", "(averaged instead)", "dE/db[k] is delta.sum(0): the "
            "loss's 1/m is in delta already, and mean(0) divides by m a second time.", bias="mean"),
    Mistake("bias gradient not summed over the samples", "(summed over the units instead)", "dE/db[k] is "
            "delta.sum(0), (n_{k+1},): axis 0 holds the samples; delta.sum(1) sums a sample's units, (B,).",
            bias="units"),
    Mistake("f' taken of net instead of the activity x", "in every layer", _OF_NET, output="of_net", hidden="of_net"),
    Mistake("f' taken of net instead of the activity x", "in the hidden layers", _OF_NET, hidden="of_net"),
    Mistake("f' taken of net instead of the activity x", "at the output layer", _OF_NET, output="of_net"),
    Mistake("f' evaluated at the activity x instead of net", "in every layer", _AT_X, output="at_x", hidden="at_x"),
    Mistake("f' evaluated at the activity x instead of net", "in the hidden layers", _AT_X, hidden="at_x"),
    Mistake("f' evaluated at the activity x instead of net", "at the output layer", _AT_X, output="at_x"),
    Mistake("a factor 2 off", "(the 2 of d(e^2)/dx dropped)", "d(y - x)^2/dx = -2 (y - x): the output delta of "
            "squared error has the factor 2 (times the loss's c, which is 1/2 with half=True).", factor="half"),
    Mistake("a factor 2 off", "(doubled)", "With half=True the loss is 1/2 sum (y - x)^2, whose output delta is "
            "(x - y) f'(net): c = loss_fn.scale(B, n) already holds the 1/2.", factor="double"),
]

# A mistake whose numbers another gives exactly, made in other lines: the grader names the one whose own step it
# finds in the student's code (an extra 1/m in the output delta, or the same 1/m put into dE/dW and dE/db each).
SAME_NUMBERS = {
    "an extra 1/m in the output delta": Mistake(
        "dE/dW and dE/db each divided by m", "", "dE/dW[k] = delta^T @ x^k and dE/db[k] = delta.sum(0) are sums over "
        "the samples, not averages: the loss's 1/m is in delta already (loss_fn.scale(B, n) is the whole factor "
        "c), so dividing each by m once more makes every gradient 1/m of autograd's.", weight="over_m", bias="mean"),
}

RIGHT = Mistake("no mistake")  # every step done right: its trail is the right intermediates


def _with_fprime(how: str, f, x, net, grad_x):
    """dE/dnet = f'(.) * dE/dx with f' done as ``how`` says, by the activation's own backward."""
    if how == "none":
        return Identity().backward(x, grad_x)
    if how == "of_net":
        return f.backward(net, grad_x)  # the f'(x)-formula applied to net
    if how == "at_x":
        return f.backward(f.forward(x), grad_x)  # f' at the point x: the net-formula applied to the activity
    return f.backward(x, grad_x)


def mistaken_gradients(net: MLP, cache: ForwardCache, y, loss_fn: Loss, m: Mistake, trail: Optional[dict] = None):
    """(grad_weights, grad_biases) of the backward phase with mistake ``m``; None where it cannot happen here.
    ``trail`` gets every intermediate by role: ("delta", k) the delta of layer k (1..L), ("dW", k), ("db", k)."""
    trail = {} if trail is None else trail
    W, b, fs, L = net.weights, net.biases, net.activation_functions, net.num_layers
    xs = cache.activations
    batch, n_out = cache.output.shape
    fused = not isinstance(loss_fn, SquaredError)
    if m.output != "ok" and (fused or isinstance(fs[-1], Softmax)):
        return None  # f' cancels in a fused output delta; softmax has no element-wise f'
    if m.factor in ("half", "double") and fused:
        return None
    nets = [net_input(xs[k], W[k], b[k] if b else None) for k in range(L - 1)] + [cache.logits]
    with torch.no_grad():
        if m.output == "ok":
            delta = output_delta(loss_fn, cache, y, fs[-1])
        else:
            grad_x = loss_fn.output_delta(cache.logits, cache.output, y, Identity())  # dE/dx^L
            delta = _with_fprime(m.output, fs[-1], xs[L], nets[L - 1], grad_x)
        if m.factor == "no_mean":
            reduction = Loss.scale(loss_fn, batch, n_out)  # 1/B or 1/(B n), without the 1/2
            if reduction == 1.0:
                return None
            delta = delta / reduction
        elif m.factor == "extra_m":
            delta = delta / batch
        elif m.factor in ("half", "double"):
            delta = delta * (0.5 if m.factor == "half" else 2.0)
        delta = delta * m.sign
        if m.batch in ("hidden", "hidden_top") and (batch == 1 or L == 1):
            return None  # one sample, or no hidden step: nothing to sum
        if m.batch == "summed":  # the batch collapsed: one summed delta, the mean sample's activities
            if batch == 1:
                return None
            delta = delta.sum(dim=0, keepdim=True)  # (1, n_L)
            trail[("delta", "summed")] = delta[0]  # the same, as a student who writes .sum(0) holds it: (n_L,)
            xs = [x.mean(dim=0, keepdim=True) for x in xs]
            nets = [v.mean(dim=0, keepdim=True) for v in nets]
        trail[("delta", L)] = delta
        grad_w, grad_b = [None] * L, [None] * L
        for k in range(L - 1, -1, -1):
            if m.weight == "no_t":
                if delta.shape[-1] != xs[k].shape[-2]:
                    return None  # delta @ x does not run unless n_{k+1} = B
                grad_w[k] = delta @ xs[k]
            else:
                grad_w[k] = weight_gradient(delta, xs[k])
            if m.weight == "transposed":
                grad_w[k] = grad_w[k].transpose(-2, -1)
            elif m.weight == "over_m":
                grad_w[k] = grad_w[k] / batch
            grad_b[k] = {"ok": bias_gradient, "unsummed": lambda d: d, "first": lambda d: d[0],
                         "mean": lambda d: d.mean(dim=0), "units": lambda d: d.sum(dim=-1)}[m.bias](delta)
            trail[("dW", k)], trail[("db", k)] = grad_w[k], grad_b[k]
            if k == 0:
                break
            f = fs[k - 1]
            if m.batch == "hidden" or (m.batch == "hidden_top" and k == L - 1):  # one summed delta for every sample
                summed = delta.sum(dim=0, keepdim=True)
                trail[("summed", k)] = summed  # delta.sum(0, keepdim=True), (1, n_{k+1}); its (n,) is dE/db's own
                trail[("back", k)] = summed @ W[k]  # delta.sum(0, keepdim=True) @ W, (1, n_k), as a student holds it
                trail[("back flat", k)] = trail[("back", k)][0]  # delta.sum(0) @ W, (n_k,)
                delta = summed.expand(batch, -1)
            if m.hidden == "w_t":
                if W[k].shape[0] != W[k].shape[1]:
                    return None  # delta @ W.T does not even run on a layer that is not square
                delta = hidden_delta(f, xs[k], delta, W[k].transpose(0, 1))
            elif m.hidden == "ok":
                delta = hidden_delta(f, xs[k], delta, W[k])
            else:
                delta = _with_fprime(m.hidden, f, xs[k], nets[k - 1], delta @ W[k])
            trail[("delta", k)] = delta
    return grad_w, grad_b if b else []
