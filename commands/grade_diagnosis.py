"""Which classic mistake (grade_mistakes.py) gives a student's numbers, and how the grader says so.

A mistake fits a tensor when the student's equals the mistake's within the match tolerance; ``diagnose`` keeps the
mistakes that fit every disagreeing tensor (single mistakes first, then pairs). A call that raised a shape error in
a matrix product is explained by the operand shapes (``shape_slips``): (B, n_{k+1}) @ (B, n_k) is delta @ x, and so
on. ``factor`` is the "yours / autograd" column: the number c with yours = c * autograd's, where there is one.
A tensor holding NaN or inf fits no mistake: the diagnosis says the gradient of that layer is not finite, and
diagnoses the other disagreeing tensors without it.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from itertools import combinations
from typing import Optional

import torch

from reference.compare import norm_relative_error
from .grade_mistakes import MISTAKES, Mistake

__all__ = ["fits", "factor", "diagnose", "Diagnosis", "fitting_labels", "shape_slips", "explain_raised"]


def fits(student, mistaken, correct, tol: float, agree_tol: float = 0.0) -> bool:
    """Whether the student's tensor equals the mistake's within ``tol``, and the mistake's is clearly not the right
    answer (ten times further from it than from the student's, and than the agreement tolerance)."""
    if student is None or mistaken is None or student.shape != mistaken.shape:
        return False
    near = norm_relative_error(student, mistaken)
    if near > tol:
        return False
    return mistaken.shape != correct.shape or norm_relative_error(mistaken, correct) > 10 * max(near, agree_tol)


def factor(student, truth, tol: float) -> Optional[float]:
    """c with student = c * truth within ``tol`` (norm-relative), the least-squares c; None where there is none
    (other shapes, or numbers that are not a multiple of autograd's)."""
    if student is None or student.shape != truth.shape:
        return None
    tt = float((truth * truth).sum())
    if tt == 0.0:
        return 1.0 if not bool(student.any()) else None
    c = float((student * truth).sum()) / tt
    return c if norm_relative_error(student, c * truth) <= tol else None


# ----------------------------------------------------------------------------------- shape errors, by operands
_MATMUL = re.compile(r"\((\d+)x(\d+) and (\d+)x(\d+)\)")


def _by(**step) -> Mistake:
    return next(m for m in MISTAKES if all(getattr(m, k) == v for k, v in step.items()))


def _delta_at_x(sizes, B, a, b):  # delta @ x^k: (B, n_{k+1}) @ (B, n_k)
    return any(a == (B, sizes[k + 1]) and b == (B, sizes[k]) for k in range(len(sizes) - 1))


def _delta_at_w_t(sizes, B, a, b):  # delta @ W[k].T: (B, n_{k+1}) @ (n_k, n_{k+1})
    return any(a == (B, sizes[k + 1]) and b == (sizes[k], sizes[k + 1]) for k in range(1, len(sizes) - 1))


def _summed_delta_t_at_x(sizes, B, a, b):  # a summed delta (1, n_{k+1}), transposed, @ x^k (B, n_k)
    return B > 1 and any(a == (sizes[k + 1], 1) and b == (B, sizes[k]) for k in range(len(sizes) - 1))


SHAPE_SLIPS = [(_delta_at_x, _by(weight="no_t")), (_delta_at_w_t, _by(hidden="w_t")),
               (_summed_delta_t_at_x, _by(batch="summed"))]


def shape_slips(sizes, batch: int, message: str) -> Optional[list]:
    """The mistakes whose matrix product has the operand shapes of a "mat1 and mat2 shapes cannot be multiplied"
    error; None where the message is no such error."""
    found = _MATMUL.search(message)
    if not found:
        return None
    r1, c1, r2, c2 = map(int, found.groups())
    return [m for test, m in SHAPE_SLIPS if test(list(sizes), batch, (r1, c1), (r2, c2))]


def explain_raised(cases) -> tuple:
    """(mistakes, calls): the slips that give every shape error the student's calls raised, and how many raised."""
    raised = [c for c in cases if c.error is not None and _MATMUL.search(c.error)]
    common = None
    for c in raised:
        slips = shape_slips(c.net.sizes, c.x.shape[0], c.error)
        common = slips if common is None else [m for m in common if m in slips]
    return (common or []), len(raised)


# ------------------------------------------------------------------------------------------------ the diagnosis
@dataclass
class Diagnosis:
    """The mistakes that reproduce every disagreeing layer and every shape error (``explains``), else the best
    partial fits; ``where`` names the student's line for each, ``first_wrong`` the line of the first wrong tensor."""

    failing: int  # disagreeing (case, layer, quantity) entries
    explains: list  # Mistake, each fitting every failing entry
    partial: list  # (Mistake, number of failing entries it fits), best first, when none explains them all
    raised: int = 0  # calls that raised a shape error which ``explains`` gives
    where: dict = field(default_factory=dict)  # mistake label -> "file:line: code"
    also: dict = field(default_factory=dict)  # mistake label -> its other lines, where its steps are apart
    first_wrong: str = ""  # "dE/dW of layer 2 (case 4), made at file:line: code", when no mistake explains all
    pattern: str = ""  # what the student's numbers show, where ``explains`` comes from their form, not its numbers
    detail: str = ""  # which layers the mistake leaves right, where that says where it is made
    not_finite: list = field(default_factory=list)  # (layer k, "dW"/"db", {"NaN", "inf"}, networks), by layer
    networks: int = 0  # how many networks were graded, for "in 3 of 36 networks"
    not_finite_networks: int = 0  # in how many of them a tensor holds NaN or inf
    not_finite_at: str = ""  # "file:line: code", the student's first line that made a NaN or an inf
    first_wrong_at: str = ""  # "file:line: code" of ``first_wrong``
    first_wrong_tensor: str = ""  # "dW of layer 1 in case 4 (3-5-2 tanh out, B=5)", the tensor of ``first_wrong``

    @property
    def not_finite_label(self) -> str:
        """'the gradient of layer 1 is not finite (NaN)', 'the gradients of layers 1 and 2 are not finite (NaN and
        inf)', '' where every tensor is finite."""
        if not self.not_finite:
            return ""
        layers = sorted({k + 1 for k, _, _, _ in self.not_finite})
        kinds = sorted(set().union(*(kind for _, _, kind, _ in self.not_finite)))
        named = (f"layer {layers[0]}" if len(layers) == 1 else
                 f"layers {', '.join(map(str, layers[:-1]))} and {layers[-1]}")
        verb = "gradient of {} is" if len(layers) == 1 else "gradients of {} are"
        return f"the {verb.format(named)} not finite ({' and '.join(kinds)})"

    def names(self) -> list:
        """What the diagnosis names, for a class's row: the gradient not finite, then the mistakes (or the partial
        fits, each with how many of the disagreeing tensors it gives: it is not the whole story)."""
        return ([self.not_finite_label] if self.not_finite else []) + (
            [m.label for m in self.explains] or [f"partly {m.label} ({n} of {self.failing} tensors)"
                                                 for m, n in self.partial])

    def _not_finite_lines(self) -> list:
        if len({k for k, _, _, _ in self.not_finite}) == 1:  # one layer: which of its tensors, and how often
            what = "; ".join(f"dE/d{q[1]} holds {' and '.join(sorted(kind))} in {n} of {self.networks} networks"
                             for _, q, kind, n in self.not_finite)
        else:
            what = (f"in {self.not_finite_networks} of {self.networks} networks (the table's rows marked "
                    "'not finite' say which tensors)")
        head = (f"Diagnosis: {self.not_finite_label}: {what}"
                + (f", at {self.not_finite_at}" if self.not_finite_at else ""))
        return [head, _indented(
            "NaN comes from 0/0, inf - inf, 0 * inf, or the log or square root of a negative number; inf from a "
            "division by zero or an overflow (exp of a large net). "
            + ("The line named is the first of yours that made a tensor holding one; every number computed from "
               "it is NaN or inf too." if self.not_finite_at else
               "Print your tensors' torch.isfinite(t).all() step by step to find the first that holds one."))]

    def lines(self) -> list:
        out = self._not_finite_lines() if self.not_finite else []
        if not self.failing and not self.explains:
            return out
        if self.not_finite:
            n = self.failing
            if not self.explains and self.first_wrong_at and self.first_wrong_at == self.not_finite_at:
                return out + [f"  The other {n} disagreeing tensor{'s are' if n > 1 else ' is'} finite but wrong, and "
                              "made at the same line."]
            out.append(f"The other {n} disagreeing tensor{'s hold' if n > 1 else ' holds'} finite numbers:")
        if self.explains:
            for m in self.explains:
                out.append(f"Diagnosis: {m.label}" + (f", at {self.where[m.label]}" if m.label in self.where else ""))
                out += [f"  and at {line}" for line in self.also.get(m.label, [])]
            what = [self.pattern] if self.pattern else []
            if self.failing and not self.pattern:
                what.append((f"all {self.failing} disagreeing tensors (dE/dW, dE/db) are" if self.failing > 1 else
                             "the one disagreeing tensor is")
                            + f" what {'this mistake gives' if len(self.explains) == 1 else 'each of these gives'}, "
                            "computed with the library's own functions")
            if self.raised:
                what.append(f"the shape error of the {self.raised} call{'s' if self.raised > 1 else ''} that raised "
                            "is the one it makes")
            out.append("  " + "; ".join(what))
            if self.detail:
                out.append(textwrap.fill(self.detail, 110, initial_indent="  ", subsequent_indent="  "))
            return out + [_indented(h) for h in dict.fromkeys(m.hint for m in self.explains)]
        if not self.partial:
            out += ["Diagnosis: none of the classic mistakes (f' missing, the wrong sign, W where W^T belongs, "
                    "a 1/m missing or extra, a bias gradient not summed, the deltas summed over the samples, f' of "
                    "net instead of x, a factor 2) "
                     + (f"reproduces the {self.failing} disagreeing tensors; compare them" if self.failing > 1 else
                       "reproduces the one disagreeing tensor; compare it") + " with the autograd column."]
        else:
            out += [f"Diagnosis: no single classic mistake reproduces all {self.failing} disagreeing tensors; these "
                   "fit some of them:"]
            for m, n in self.partial:
                out += [f"  - {m.label}: {n} of {self.failing}", _indented(m.hint)]
        return out + ([f"  The first wrong number, {self.first_wrong}"] if self.first_wrong else [])


def _indented(text: str) -> str:
    return textwrap.fill(text, 110, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)


def diagnose(entries: list, variants_of, cases=()) -> Diagnosis:
    """entries: (case, layer index k, quantity "dW"/"db", student tensor, correct tensor, ok) for every compared
    tensor; variants_of(case, mistake) -> (grad_w, grad_b) or None; cases: every case, for the shape errors.
    Singles first, then pairs of mistakes. A tensor holding NaN or inf is no mistake's: it is reported as not
    finite, and the others are diagnosed without it."""
    bad = [e for e in entries if not e[5] and not bool(torch.isfinite(e[3]).all())]
    not_finite = _not_finite(bad)
    entries = [e for e in entries if not any(e is b for b in bad)]
    networks = len(cases) or len({e[0].index for e in entries + bad})
    nonfinite = dict(not_finite=not_finite, networks=networks, not_finite_networks=len({e[0].index for e in bad}))
    failing = [e for e in entries if not e[5]]
    slips, raised = explain_raised(cases)
    if not failing:
        return Diagnosis(0, slips, [], raised if slips else 0, **nonfinite)

    def value(case, m, k, q):
        grads = variants_of(case, m)
        return None if grads is None else (grads[0] if q == "dW" else grads[1])[k]

    def fit(m, entry) -> bool:
        c, k, q, s, ok_t, _ = entry
        return fits(s, value(c, m, k, q), ok_t, c.match_tol, c.agree_tol)

    def count(m, pool) -> int:
        return sum(fit(m, e) for e in pool)

    def contradicts(m, entry) -> bool:  # the mistake changes a tensor the student got right
        c, k, q, s, _, _ = entry
        v = value(c, m, k, q)
        return v is not None and (v.shape != s.shape or norm_relative_error(s, v) > c.match_tol)

    def best(candidates):
        full = [m for m in candidates if all(fit(m, e) for e in failing)]  # stops at the first misfit
        if not full:
            return []
        agreeing = [e for e in entries if e[5]]
        # tie-break: also matches the layers that agree, and leaves the right ones right
        scores = {m: count(m, entries) - sum(contradicts(m, e) for e in agreeing) for m in full}
        top = max(scores.values())
        return [m for m in full if scores[m] == top]

    explains = best([m for m in MISTAKES if not raised or m in slips])  # the slip behind a shape error, first
    if not explains:
        explains = best(MISTAKES)
        raised = 0
    if not explains:
        pairs = [p for a, b in combinations(MISTAKES, 2) if (p := a.combine(b)) is not None]
        explains = best(pairs)
    if not explains and _batch_collapsed(failing, entries):
        return Diagnosis(len(failing), [_by(batch="summed")], [], pattern=_COLLAPSED, **nonfinite)
    partial = []
    if not explains:
        counts = [(m, count(m, failing)) for m in MISTAKES]
        partial = sorted([mc for mc in counts if mc[1]], key=lambda mc: -mc[1])[:3]
    return Diagnosis(len(failing), explains, partial, raised if explains else 0,
                     detail=_layers_right(explains, entries), **nonfinite)


def _not_finite(bad: list) -> list:
    """(layer k, quantity, {"NaN", "inf"}, networks) for the tensors holding NaN or inf, by layer then quantity."""
    found = {}
    for c, k, q, s, _, _ in bad:
        kinds, nets = found.setdefault((k, q), (set(), set()))
        kinds.update(["NaN"] * bool(torch.isnan(s).any()) + ["inf"] * bool(torch.isinf(s).any()))
        nets.add(c.index)
    return [(k, q, kinds, len(nets)) for (k, q), (kinds, nets) in sorted(found.items())]


def _layers_right(explains: list, entries: list) -> str:
    """For deltas summed in the hidden step: that the output layer agrees everywhere and only the layers below it
    disagree, where the numbers show it (the sum is made on the way down, not at the output)."""
    if len(explains) != 1 or explains[0].batch not in ("hidden", "hidden_top"):
        return ""
    top = [e for e in entries if e[1] == e[0].net.num_layers - 1]
    below = [e for e in entries if e[1] < e[0].net.num_layers - 1 and not e[5]]
    if not top or not below or not all(e[5] for e in top):
        return ""
    where = ("on the way down, from each layer to the one below" if explains[0].batch == "hidden" else
             "as the output layer's delta goes down to the layer below it (the steps below that sum nothing)")
    return ("Your output layer's dE/dW and dE/db agree in every network; only the layers below it disagree, and only "
            f"where B > 1: the deltas are summed over the samples {where}.")


_COLLAPSED = ("in every case with B > 1 your output layer's dE/dW is one outer product (sum_i delta_i) v^T, and only "
              "those cases disagree: the samples' deltas were summed before they met their own activities")


def _batch_collapsed(failing: list, entries: list) -> bool:
    """Whether the deltas were summed over the samples before back-propagating, however the student went on: every
    disagreeing tensor is in a case with B > 1, and in each the output layer's dE/dW is (sum_i delta_i) v^T for
    some v, where the right sum_i delta_i x_i^T is (in one case at least) no such outer product."""
    if not failing or any(e[0].x.shape[0] == 1 for e in failing):
        return False
    evidence = 0
    for c in {e[0].index: e[0] for e in failing}.values():
        top = c.net.num_layers - 1
        dw = next((e for e in entries if e[0] is c and e[1] == top and e[2] == "dW"), None)
        if dw is None or not c.autograd.biases:
            return False
        s, t, d = dw[3], dw[4], c.autograd.biases[top]  # d = sum_i delta_i, dE/db of the output layer
        dd = float(d @ d)
        if dd == 0.0:
            return False
        if norm_relative_error(s, torch.outer(d, s.T @ d / dd)) > c.match_tol:
            return False
        # where the right answer is one such product too (two softmax outputs: each delta_i is (a_i, -a_i)), the
        # case fits but proves nothing
        evidence += norm_relative_error(t, torch.outer(d, t.T @ d / dd)) > 10 * c.match_tol
    return evidence > 0


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
