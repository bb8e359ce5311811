"""The classic mistakes of a hand-written backward phase, each computed with the library's own functions, and the
diagnosis that says which of them reproduces a student's numbers.

A mistake is a change to one step of the backward phase (network.py), so its gradients are computed by the same
``output_delta``, ``hidden_delta``, ``weight_gradient`` and ``bias_gradient`` with one argument or one factor
changed, exactly as a student's slip changes it:

    f' missing                      hidden_delta(Identity(), ...), or the output delta without f'
    the wrong sign                  the lecture's delta = -dE/dnet returned as if it were the gradient
    W where W^T belongs             delta @ W.T in the hidden delta (square layers), or x^T @ delta for dE/dW
    a missing 1/m                   the output delta without the loss's reduction factor (1/B for "mean")
    bias gradient not summed        the deltas (B, n) themselves, the first sample's row, or their mean
    f' taken of net, not of x       the code's f'(x) formula (x (1 - x) for sigmoid) applied to net
    f' evaluated at the activity    sigma'(x) = sigma(x)(1 - sigma(x)) where sigma'(net) belongs
    a factor 2 off                  the 2 of d(e^2)/dx dropped, or doubled against a loss with the 1/2

The f' mistakes come in three scopes (every layer, the hidden layers only, the output layer only); two mistakes
on different steps combine. ``diagnose`` finds the mistakes whose numbers equal the student's at every
disagreeing layer.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, fields, replace
from itertools import combinations
from typing import Optional

import torch

from manual_backprop.activations import Identity, Softmax
from manual_backprop.losses import Loss, SquaredError
from manual_backprop.network import (MLP, ForwardCache, bias_gradient, hidden_delta, net_input, output_delta,
                                     weight_gradient)

from reference.compare import norm_relative_error

__all__ = ["Mistake", "MISTAKES", "mistaken_gradients", "match_tolerance", "fits", "diagnose", "Diagnosis"]

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
    factor: str = "ok"  # ok | no_mean (no 1/m) | half (the 2 dropped) | double
    sign: int = 1
    weight: str = "ok"  # dE/dW: ok | transposed
    bias: str = "ok"  # dE/db: ok | unsummed | first | mean

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
    Mistake("bias gradient not summed over the samples", "(the deltas themselves)", "dE/db[k] is the layer's "
            "deltas summed over the sample axis, delta.sum(0), shape (n_{k+1},).", bias="unsummed"),
    Mistake("bias gradient not summed over the samples", "(the first sample only)", "dE/db[k] is the layer's "
            "deltas summed over the sample axis, delta.sum(0), not delta[0].", bias="first"),
    Mistake("bias gradient not summed over the samples", "(averaged instead)", "dE/db[k] is delta.sum(0): the "
            "loss's 1/m is in delta already, and mean(0) divides by m a second time.", bias="mean"),
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


def _with_fprime(how: str, f, x, net, grad_x):
    """dE/dnet = f'(.) * dE/dx with f' done as ``how`` says, by the activation's own backward."""
    if how == "none":
        return Identity().backward(x, grad_x)
    if how == "of_net":
        return f.backward(net, grad_x)  # the f'(x)-formula applied to net
    if how == "at_x":
        return f.backward(f.forward(x), grad_x)  # f' at the point x: the net-formula applied to the activity
    return f.backward(x, grad_x)


def mistaken_gradients(net: MLP, cache: ForwardCache, y, loss_fn: Loss, m: Mistake):
    """(grad_weights, grad_biases) of the backward phase with mistake ``m``; None where it cannot happen here."""
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
        elif m.factor in ("half", "double"):
            delta = delta * (0.5 if m.factor == "half" else 2.0)
        delta = delta * m.sign
        grad_w, grad_b = [None] * L, [None] * L
        for k in range(L - 1, -1, -1):
            grad_w[k] = weight_gradient(delta, xs[k])
            if m.weight == "transposed":
                grad_w[k] = grad_w[k].transpose(-2, -1)
            grad_b[k] = {"ok": bias_gradient, "unsummed": lambda d: d, "first": lambda d: d[0],
                         "mean": lambda d: d.mean(dim=0)}[m.bias](delta)
            if k == 0:
                break
            f = fs[k - 1]
            if m.hidden == "w_t":
                if W[k].shape[0] != W[k].shape[1]:
                    return None  # delta @ W.T does not even run on a layer that is not square
                delta = hidden_delta(f, xs[k], delta, W[k].transpose(0, 1))
            elif m.hidden == "ok":
                delta = hidden_delta(f, xs[k], delta, W[k])
            else:
                delta = _with_fprime(m.hidden, f, xs[k], nets[k - 1], delta @ W[k])
    return grad_w, grad_b if b else []


def fits(student, mistaken, correct, tol: float, agree_tol: float = 0.0) -> bool:
    """Whether the student's tensor equals the mistake's within ``tol``, and the mistake's is clearly not the right
    answer (ten times further from it than from the student's, and than the agreement tolerance)."""
    if student is None or mistaken is None or student.shape != mistaken.shape:
        return False
    near = norm_relative_error(student, mistaken)
    if near > tol:
        return False
    return mistaken.shape != correct.shape or norm_relative_error(mistaken, correct) > 10 * max(near, agree_tol)


@dataclass
class Diagnosis:
    """The mistakes that reproduce every disagreeing layer (``explains``), else the best partial fits."""

    failing: int  # disagreeing (case, layer, quantity) entries
    explains: list  # Mistake, each fitting every failing entry
    partial: list  # (Mistake, number of failing entries it fits), best first, when none explains them all

    def lines(self) -> list:
        if not self.failing:
            return []
        if self.explains:
            head = (f"Diagnosis: all {self.failing} disagreeing tensors (dE/dW, dE/db) are what this classic mistake "
                    "gives, computed with the library's own functions:")
            out = [head]
            for m in self.explains:
                out += [f"  - {m.label}", _indented(m.hint)]
            return out
        if not self.partial:
            return [f"Diagnosis: none of the classic mistakes (f' missing, the wrong sign, W where W^T belongs, "
                    f"a missing 1/m, a bias gradient not summed, f' of net instead of x, a factor 2) reproduces the "
                    f"{self.failing} disagreeing tensors; compare them with the autograd column."]
        out = [f"Diagnosis: no single classic mistake reproduces all {self.failing} disagreeing tensors; these fit "
               "some of them:"]
        for m, n in self.partial:
            out += [f"  - {m.label}: {n} of {self.failing}", _indented(m.hint)]
        return out


def _indented(text: str) -> str:
    return textwrap.fill(text, 110, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)


def diagnose(entries: list, variants_of) -> Diagnosis:
    """entries: (case, layer index k, quantity "dW"/"db", student tensor, correct tensor, ok) for every compared
    tensor; variants_of(case, mistake) -> (grad_w, grad_b) or None. Singles first, then pairs of mistakes."""
    failing = [e for e in entries if not e[5]]
    if not failing:
        return Diagnosis(0, [], [])

    def value(case, m, k, q):
        grads = variants_of(case, m)
        return None if grads is None else (grads[0] if q == "dW" else grads[1])[k]

    def fit(m, entry) -> bool:
        c, k, q, s, ok_t, _ = entry
        return fits(s, value(c, m, k, q), ok_t, c.match_tol, c.agree_tol)

    def count(m, pool) -> int:
        return sum(fit(m, e) for e in pool)

    def best(candidates):
        full = [m for m in candidates if all(fit(m, e) for e in failing)]  # stops at the first misfit
        if not full:
            return []
        scores = {m: count(m, entries) for m in full}  # tie-break: also matches the layers that agree
        top = max(scores.values())
        return [m for m in full if scores[m] == top]

    explains = best(MISTAKES)
    if not explains:
        pairs = [p for a, b in combinations(MISTAKES, 2) if (p := a.combine(b)) is not None]
        explains = best(pairs)
    partial = []
    if not explains:
        counts = [(m, count(m, failing)) for m in MISTAKES]
        partial = sorted([mc for mc in counts if mc[1]], key=lambda mc: -mc[1])[:3]
    return Diagnosis(len(failing), explains, partial)


def fitting_labels(case, k: int, q: str, student, correct, variants_of, candidates=None) -> list:
    """Names of the mistakes (the diagnosis's, else every single one) that reproduce one disagreeing tensor."""
    names = []
    for m in candidates or MISTAKES:
        grads = variants_of(case, m)
        if grads is not None and fits(student, (grads[0] if q == "dW" else grads[1])[k], correct, case.match_tol,
                                      case.agree_tol):
            name = m.name if candidates is None else m.label
            if name not in names:
                names.append(name)
    return names
