"""`manual-backprop grade MODULE:FUNCTION`: an autograder for a student's own backward phase.

The student writes ``FUNCTION(net, cache, y, loss_fn)``: ``net`` an MLP, ``cache`` its ForwardCache for the inputs
(``cache.activations[k]`` is x^k, (B, n_k); ``cache.logits`` is net^L), ``y`` the targets (B, n_L) (one-hot rows
for cross_entropy) and ``loss_fn`` the Loss. It returns a Gradients, or a tuple (grad_weights, grad_biases) of
lists shaped like ``net.weights`` and ``net.biases``: dE/dW and dE/db, autograd's sign.

The grader calls it on a battery: depths 1 to 4, every hidden activation, each loss asked for, batch sizes 1 and 5
(square layers at B = 1, uneven ones at B = 5), and networks whose hidden units are saturated. It compares every
layer with autograd (the torch.nn twin) and with central finite differences, prints the per-layer table, and names
the classic mistake that reproduces any disagreeing layer (grade_mistakes.py, grade_diagnosis.py) with the student's
line that makes it (grade_lines.py), or says that a gradient is not finite (NaN or inf) at the line that first made
one; the table's "yours / autograd" columns give the factor between the student's
numbers and autograd's where there is one (0.2 = 1/B at B = 5). Exit status: 0 when every layer
agrees within the dtype's tolerance (float64: 1e-10 norm-relative vs autograd, 1e-6 vs finite differences),
1 for a wrong answer, 2 for unusable input (the function cannot be loaded, raises, or returns the wrong type or
an unexplained shape); a student's exception is reported as one message with its line, never a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from manual_backprop.losses import Loss, get_loss
from manual_backprop.network import MLP, ForwardCache, Gradients

from reference.compare import FD_TOLERANCE, norm_relative_error, tolerance_for
from reference.finite_diff import finite_differences
from reference.targets import draw_targets, output_target_kind
from reference.torch_mlp import TorchMLP
from .grade_diagnosis import diagnose, factor, fitting_labels
from .grade_lines import describe_line, first_line_of, first_not_finite, mistake_line, record_assignments
from .grade_load import Unusable, describe_error, load_function, student_frame
from .grade_mistakes import RIGHT, SAME_NUMBERS, match_tolerance, mistaken_gradients
from .grade_report import GradeReport, Row

__all__ = ["Unusable", "load_function", "parse_loss", "battery", "grade", "GradeReport", "HIDDEN_ACTIVATIONS"]

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
_OUTPUTS = {"squared_error": ("sigmoid", "identity", "tanh"), "cross_entropy": ("softmax",),
            "binary_cross_entropy": ("sigmoid",)}
_SQUARE = {1: [3, 4], 2: [3, 4, 4], 3: [3, 4, 4, 4], 4: [3, 4, 4, 4, 4]}  # hidden and output layers square
_UNEVEN = {1: [3, 2], 2: [3, 5, 2], 3: [3, 5, 4, 2], 4: [3, 5, 4, 6, 2]}
SATURATION = 6.0  # hidden weights and biases times this: |net| of a few units, f' of 1e-2 to 1e-4


# ----------------------------------------------------------------------------------------------------- battery
def parse_loss(spec: str) -> Loss:
    """"squared_error", "sse", "mse", "cross_entropy", ... optionally with ":REDUCTION" and ":half"
    ("squared_error:sum:half" is Mazur's and Nielsen's convention)."""
    name, *options = spec.split(":")
    half = None
    reduction = None
    for opt in options:
        if opt == "half":
            if half:
                raise ValueError(f"--loss {spec!r} gives :half twice")
            half = True
        elif reduction is not None:
            raise ValueError(f"--loss {spec!r} gives two reductions ({reduction!r} and {opt!r}); give one, as in "
                             "squared_error:sum:half")
        else:
            reduction = opt
    return get_loss(name, reduction=reduction, half=half)


@dataclass
class Case:
    """One network of the battery, its data, and what the student and the oracles made of it."""

    index: int
    net: MLP
    x: Tensor
    y: Tensor  # (B, n_L), one-hot for cross_entropy
    loss_fn: Loss
    saturated: bool = False
    match_tol: float = 1e-8  # a mistake fits when the student's numbers are this close to it
    agree_tol: float = 1e-10  # the dtype's tolerance against autograd
    cache: Optional[ForwardCache] = None
    student: Optional[tuple] = None  # (grad_weights, grad_biases) as returned, None if unusable
    autograd: Optional[Gradients] = None
    fd: object = None
    problem: Optional[str] = None  # why the student's answer could not be used
    error: Optional[str] = None  # what the student's function raised ("mat1 and mat2 shapes ..."), if it did
    error_at: str = ""  # the student's line that raised
    notes: list = field(default_factory=list)

    @property
    def description(self) -> str:
        fs = self.net.activation_functions
        hidden = f"{fs[0].spec()}, " if len(fs) > 1 else ""
        return (f"{'-'.join(map(str, self.net.sizes))} {hidden}{fs[-1].spec()} out"
                + (" saturated" if self.saturated else ""))


def _targets(net: MLP, loss_fn: Loss, batch: int, g: torch.Generator) -> Tensor:
    """(B, n_L) float64 targets inside the output's range (one-hot rows for cross-entropy)."""
    kind = output_target_kind(loss_fn, net.output_activation.name, classes="onehot")
    return draw_targets(kind, (batch,), net.sizes[-1], g)


def battery(losses: list, dtype: torch.dtype = torch.float64, device="cpu", seed: int = 0) -> list:
    """The networks a backward phase is graded on: for each loss, depths 1-4 x every hidden activation x batch
    sizes 1 (square layers) and 5 (uneven layers), then saturated sigmoid and tanh networks."""
    specs = []
    for loss_fn in losses:
        for depth in (1, 2, 3, 4):
            for act in (HIDDEN_ACTIVATIONS if depth > 1 else ("sigmoid",)):
                for batch in (1, 5):
                    specs.append((loss_fn, (_SQUARE if batch == 1 else _UNEVEN)[depth], act, batch, False))
        for depth in (2, 3):
            for act in ("sigmoid", "tanh"):
                specs.append((loss_fn, _UNEVEN[depth], act, 5, True))
    cases = []
    for i, (loss_fn, sizes, act, batch, saturated) in enumerate(specs):
        outs = _OUTPUTS[loss_fn.name]
        net = MLP(sizes, activation=act, output_activation=outs[i % len(outs)], bias_init="uniform",
                  init_scale=0.5, dtype=torch.float64, seed=seed + i)
        if saturated:
            for k in range(net.num_layers - 1):
                net.weights[k].mul_(SATURATION)
                net.biases[k].mul_(SATURATION)
        g = torch.Generator().manual_seed(seed + 1000 + i)
        x = torch.randn(batch, sizes[0], generator=g, dtype=torch.float64)
        y = _targets(net, loss_fn, batch, g)
        net.to(device=device, dtype=dtype)
        cases.append(Case(index=i + 1, net=net, x=x.to(device=net.device, dtype=dtype),
                          y=y.to(device=net.device, dtype=dtype), loss_fn=loss_fn, saturated=saturated,
                          match_tol=match_tolerance(dtype), agree_tol=tolerance_for(dtype)))
    return cases


# ------------------------------------------------------------------------------------------- calling the student
def _as_pair(result, name: str, net: MLP) -> tuple:
    """The student's return value as (grad_weights, grad_biases) lists, or Unusable saying what was expected."""
    if isinstance(result, Gradients):
        grad_w, grad_b = result.weights, result.biases
    elif isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(r, (list, tuple)) for r in result):
        grad_w, grad_b = result
    else:
        got = (f"a {type(result).__name__} of length {len(result)}" if isinstance(result, (tuple, list))
               else type(result).__name__)
        raise Unusable(f"{name} must return a Gradients or a tuple (grad_weights, grad_biases) of two lists, "
                       f"but returned {got}")
    L = net.num_layers
    for label, given, params in (("grad_weights", grad_w, net.weights), ("grad_biases", grad_b, net.biases)):
        if len(given) != len(params):
            raise Unusable(f"{name} returned {label} with {len(given)} entries, but the network has {L} "
                           f"layer{'s' if L > 1 else ''} "
                           f"(one tensor per layer, shaped like net.{label[5:]})")
        for k, (g, p) in enumerate(zip(given, params)):
            if g is Ellipsis:
                raise Unusable(f"{name} returned {label}[{k}] = ... (a TODO left unfilled?); expected a tensor of "
                               f"shape {tuple(p.shape)}")
            if not isinstance(g, Tensor):
                raise Unusable(f"{name} returned {label}[{k}] as a {type(g).__name__}; expected a torch.Tensor "
                               f"of shape {tuple(p.shape)} like net.{label[5:]}[{k}]")
            if g.dtype != p.dtype or g.device != p.device:
                raise Unusable(f"{name} returned {label}[{k}] with dtype {g.dtype} on {g.device}; expected "
                               f"{p.dtype} on {p.device}, like net.{label[5:]}[{k}]")
    return [g.detach() for g in grad_w], [g.detach() for g in grad_b]


def _arguments(case: Case) -> tuple:
    """Copies of the case's (net, cache, y, loss_fn), so that the student cannot change the battery; a fresh Loss
    each call: a student who changes it changes nothing the grader uses."""
    cache = ForwardCache(activations=[a.clone() for a in case.cache.activations], logits=case.cache.logits.clone())
    return case.net.copy(), cache, case.y.clone(), copy.deepcopy(case.loss_fn)


def _call(fn, name: str, case: Case) -> None:
    """Run the student's function on copies under no_grad, as the library does."""
    args = _arguments(case)
    net = args[0]
    try:
        with torch.no_grad():
            result = fn(*args)
    except (Exception, SystemExit) as err:
        hint = ""
        if "does not require grad" in str(err):
            hint = " (autograd is off here, as in the library: the backward phase is written by hand)"
        case.error, case.error_at = str(err), student_frame(err)  # a shape error is diagnosed by its operands
        raise Unusable(f"{name} raised {describe_error(err)}{hint}") from None
    case.student = _as_pair(result, name, case.net)
    changed = [f"net.{kind}[{k}]" for kind in ("weights", "biases")
               for k, (p, p0) in enumerate(zip(getattr(net, kind), getattr(case.net, kind)))
               if p.shape != p0.shape or not torch.equal(p, p0)]
    if len(net.weights) != len(case.net.weights) or len(net.biases) != len(case.net.biases):
        changed.append("the number of layers")
    if changed:  # every parameter compared
        case.notes.append(f"{name} changed {changed[0]} in place: the backward phase must be pure "
                          "(only an update step changes the parameters)")
    cache, y = args[1], args[2]  # the forward's activities and the targets: a caller's, read again after backward
    inputs = [(f"cache.activations[{k}]", a, a0) for k, (a, a0) in
              enumerate(zip(cache.activations, case.cache.activations))]
    inputs += [("cache.logits", cache.logits, case.cache.logits), ("y", y, case.y)]
    touched = [what for what, a, a0 in inputs if not isinstance(a, Tensor) or a.shape != a0.shape
               or not torch.equal(a, a0)]
    if len(cache.activations) != len(case.cache.activations):
        touched.append("the number of cache.activations")
    if touched:  # x[L] -= y, delta = x[L]; delta *= ...: the caller's activities or targets overwritten
        case.notes.append(f"{name} changed {touched[0]} in place: the backward phase must be pure (it reads the "
                          "forward's activities and the targets and changes neither)")


# ------------------------------------------------------------------------------------------------------ grading
def _compare(student: Optional[Tensor], truth: Tensor, fd_est: Optional[Tensor], mask, tol: float,
             fd_tol: float, label: str, errors: dict) -> bool:
    """Fill errors[label~autograd], errors[label~fd]; whether the student's tensor agrees with both."""
    if student is None:
        errors[f"{label}~autograd"] = errors[f"{label}~fd"] = "-"
        return False
    if student.shape != truth.shape:
        errors[f"{label}~autograd"] = f"shape {tuple(student.shape)}, expected {tuple(truth.shape)}"
        errors[f"{label}~fd"] = "-"
        return False
    err = norm_relative_error(student, truth)
    errors[f"{label}~autograd"] = err
    ok = err <= tol
    if fd_est is not None:
        fd_err = norm_relative_error(student, fd_est, mask)
        errors[f"{label}~fd"] = fd_err
        ok = ok and fd_err <= fd_tol
    return ok


def grade(fn, name: str, losses=("squared_error",), dtype: torch.dtype = torch.float64, device="cpu",
          seed: int = 0, finite_diff: bool = True, fd_max_per_tensor: Optional[int] = None) -> GradeReport:
    """Run the battery on the student's function and tabulate; see the module docstring."""
    losses = [parse_loss(s) if isinstance(s, str) else s for s in losses]
    cases = battery(losses, dtype=dtype, device=device, seed=seed)
    tol, fd_tol = tolerance_for(dtype), max(FD_TOLERANCE, tolerance_for(dtype))
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the battery's tensors are tiny: OpenMP's hand-offs would cost more than the work
    try:
        for c in cases:
            c.cache = c.net.forward_cache(c.x)
            _, c.autograd = TorchMLP.from_manual(c.net).loss_and_grads(c.x, c.y, c.loss_fn)
            if finite_diff:
                c.fd = finite_differences(c.net, c.x, c.y, c.loss_fn, max_per_tensor=fd_max_per_tensor,
                                          seed=seed, deltas=False)
            try:
                _call(fn, name, c)
            except Unusable as err:
                c.problem = str(err)
        variants = {}

        def variants_of(case, mistake):
            key = (case.index, mistake)
            if key not in variants:
                variants[key] = mistaken_gradients(case.net, case.cache, case.y, case.loss_fn, mistake)
            return variants[key]

        rows, entries = [], []
        for c in cases:
            for k in range(c.net.num_layers):
                errors, factors, ok = {}, {}, True
                for q, attr in (("dW", "weights"), ("db", "biases")):
                    student = None if c.student is None else c.student[0 if q == "dW" else 1][k]
                    truth = getattr(c.autograd, attr)[k]
                    fd_est = getattr(c.fd, attr)[k] if c.fd is not None else None
                    mask = c.fd.masks[attr][k] if c.fd is not None else None
                    q_ok = _compare(student, truth, fd_est, mask, tol, fd_tol, q, errors)
                    ok = ok and q_ok
                    factors[q] = factor(student, truth, c.match_tol)
                    if student is not None:
                        entries.append((c, k, q, student, truth, q_ok))
                rows.append(Row(case=c, k=k, errors=errors, ok=ok, factors=factors))
        diagnosis = diagnose(entries, variants_of, cases)
        _find_lines(fn, diagnosis, entries, cases)
        for row in rows:  # each disagreeing layer: the mistakes that give its numbers
            c, k = row.case, row.k
            if not row.ok and c.student is not None:
                for q, s, t in (("dW", c.student[0][k], c.autograd.weights[k]),
                                ("db", c.student[1][k], c.autograd.biases[k])):
                    if not bool(torch.isfinite(s).all()):
                        found = [f"{q} not finite"]
                    else:
                        found = fitting_labels(c, k, q, s, t, variants_of, diagnosis.explains or None)
                    row.fits += [n for n in found if n not in row.fits]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        torch.set_num_threads(threads)
    return GradeReport(name=name, cases=cases, rows=rows, diagnosis=diagnosis, tolerance=tol, fd_tolerance=fd_tol)


def _find_lines(fn, diagnosis, entries: list, cases: list, tries: int = 3) -> None:
    """The student's line for each mistake the diagnosis names, or for the first wrong tensor where none explains
    them all: the student's function run again, traced, on a case that fails (grade_lines.py)."""
    finite = [bool(torch.isfinite(e[3]).all()) for e in entries]
    failing = [e for e, ok in zip(entries, finite) if not e[5] and ok]
    failing_cases = list({e[0].index: e[0] for e in failing}.values())[:tries]
    if diagnosis.not_finite:  # the first line of the student's that made a NaN or an inf
        for c in list({e[0].index: e[0] for e, ok in zip(entries, finite) if not ok}.values())[:tries]:
            rec = first_not_finite(_traced(fn, c))
            if rec is not None:
                diagnosis.not_finite_at = describe_line(rec)
                break
    raised = [c for c in cases if c.error is not None and c.error_at]
    for i, m in enumerate(list(diagnosis.explains)):
        if diagnosis.raised and raised:  # the line that raised the shape error the mistake makes, or the line
            # before it that made the mistake's own step (the summed delta that a later product cannot take)
            diagnosis.where[m.label] = _step_before_raise(fn, m, raised[:tries]) or raised[0].error_at
            continue
        for c in failing_cases:
            wrong, right = {}, {}
            if mistaken_gradients(c.net, c.cache, c.y, c.loss_fn, m, trail=wrong) is None:
                continue
            mistaken_gradients(c.net, c.cache, c.y, c.loss_fn, RIGHT, trail=right)
            made = _traced(fn, c)
            rec = mistake_line(made, wrong, right, c.match_tol)
            if rec is None:
                continue
            twin = SAME_NUMBERS.get(m.label)
            if twin is not None and mistake_line(made, wrong, right, c.match_tol, kinds=_DELTAS) is None:
                # no delta of the student's is the mistake's: the same numbers come from the twin's own steps
                twin_wrong = {}
                mistaken_gradients(c.net, c.cache, c.y, c.loss_fn, twin, trail=twin_wrong)
                recs = _step_lines(twin, made, twin_wrong, right, c.match_tol)
                if recs:
                    m = diagnosis.explains[i] = twin
                    rec, wrong = recs[0], twin_wrong
            diagnosis.where[m.label] = describe_line(rec)
            more = [describe_line(r) for r in _step_lines(m, made, wrong, right, c.match_tol)
                    if (r.filename, r.line) != (rec.filename, rec.line)]
            if more:
                diagnosis.also[m.label] = list(dict.fromkeys(more))
            break
    if not diagnosis.explains and failing_cases:
        c = failing_cases[0]
        wrong = [e for e in failing if e[0] is c]
        rec = first_line_of(_traced(fn, c), [e[3] for e in wrong])
        if rec is not None:
            e = next(e for e in wrong if rec.value.shape == e[3].shape and bool((rec.value == e[3]).all()))
            diagnosis.first_wrong_at = describe_line(rec)
            diagnosis.first_wrong_tensor = (f"{e[2]} of layer {e[1] + 1} in case {c.index} ({c.description}, "
                                            f"B={c.x.shape[0]})")
            diagnosis.first_wrong = f"{diagnosis.first_wrong_tensor}, is made at {diagnosis.first_wrong_at}"


def _step_before_raise(fn, m, raised: list) -> str:
    """'file:line: code' of the student's line that made one of the mistake's intermediates in a call that raised
    later, '' where none did (the mistake cannot be run on that network, or its step is the line that raised)."""
    for c in raised:
        wrong, right = {}, {}
        if mistaken_gradients(c.net, c.cache, c.y, c.loss_fn, m, trail=wrong) is None:
            continue
        mistaken_gradients(c.net, c.cache, c.y, c.loss_fn, RIGHT, trail=right)
        rec = mistake_line(_traced(fn, c), wrong, right, c.match_tol)
        if rec is not None:
            return describe_line(rec)
    return ""


_DELTAS = {"delta", "summed", "back", "back flat"}  # the roles of the steps before dE/dW and dE/db


def _step_lines(m, made: list, wrong: dict, right: dict, tol: float) -> list:
    """One line for each of the mistake's steps that changes dE/dW or dE/db apart (a 1/m put into both is two
    lines); [] where it changes one of them, or where a step's line is not found."""
    steps = m.steps()
    if not {"weight", "bias"} <= steps:
        return []
    kinds = ([_DELTAS] if steps - {"weight", "bias"} else []) + [{"dW"}, {"db"}]
    recs = [mistake_line(made, wrong, right, tol, kinds=k) for k in kinds]
    return [] if None in recs else recs


def _traced(fn, case: Case) -> list:
    """The student's function run once more, traced; what it prints this time is not shown again."""
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return record_assignments(fn, _arguments(case))
