"""`manual-backprop grade MODULE:FUNCTION`: an autograder for a student's own backward phase.

The student writes ``FUNCTION(net, cache, y, loss_fn)``: ``net`` an MLP, ``cache`` its ForwardCache for the inputs
(``cache.activations[k]`` is x^k, (B, n_k); ``cache.logits`` is net^L), ``y`` the targets (B, n_L) (one-hot rows
for cross_entropy) and ``loss_fn`` the Loss. It returns a Gradients, or a tuple (grad_weights, grad_biases) of
lists shaped like ``net.weights`` and ``net.biases``: dE/dW and dE/db, autograd's sign.

The grader calls it on a battery: depths 1 to 4, every hidden activation, each loss asked for, batch sizes 1 and 5
(square layers at B = 1, uneven ones at B = 5), and networks whose hidden units are saturated. It compares every
layer with autograd (the torch.nn twin) and with central finite differences, prints the per-layer table, and names
the classic mistake that reproduces any disagreeing layer (grade_mistakes.py). Exit status: 0 when every layer
agrees within the dtype's tolerance (float64: 1e-10 norm-relative vs autograd, 1e-6 vs finite differences),
1 for a wrong answer, 2 for unusable input (the function cannot be loaded, raises, or returns the wrong type or
an unexplained shape); a student's exception is reported as one message with its line, never a traceback.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from manual_backprop.losses import Loss, get_loss
from manual_backprop.network import MLP, ForwardCache, Gradients

from reference.compare import FD_TOLERANCE, norm_relative_error, tolerance_for
from reference.finite_diff import finite_differences
from .grade_mistakes import diagnose, fitting_labels, match_tolerance, mistaken_gradients
from .grade_report import SIGNATURE, GradeReport, Row
from reference.torch_mlp import TorchMLP

__all__ = ["Unusable", "load_function", "parse_loss", "battery", "grade", "GradeReport", "HIDDEN_ACTIVATIONS"]

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
_OUTPUTS = {"squared_error": ("sigmoid", "identity", "tanh"), "cross_entropy": ("softmax",),
            "binary_cross_entropy": ("sigmoid",)}
_SQUARE = {1: [3, 4], 2: [3, 4, 4], 3: [3, 4, 4, 4], 4: [3, 4, 4, 4, 4]}  # hidden and output layers square
_UNEVEN = {1: [3, 2], 2: [3, 5, 2], 3: [3, 5, 4, 2], 4: [3, 5, 4, 6, 2]}
SATURATION = 6.0  # hidden weights and biases times this: |net| of a few units, f' of 1e-2 to 1e-4


class Unusable(Exception):
    """The student's function cannot be graded: not found, raised, or returned something of the wrong kind."""


# ------------------------------------------------------------------------------------------- loading the function
def load_function(target: str):
    """(function, display name) from "module.dotted:FUNCTION" or "path/to/file.py:FUNCTION" (FUNCTION defaults to
    backward). A dotted module is imported from the current folder, like ``python -m``."""
    module_part, sep, func_name = target.rpartition(":")
    if not sep:
        module_part, func_name = target, "backward"
    if not module_part or not func_name:
        raise Unusable("expected MODULE:FUNCTION (a dotted module or a .py file, then the function), "
                       f"but got {target!r}")
    is_path = module_part.endswith(".py") or "/" in module_part or os.sep in module_part
    try:
        if is_path:
            path = Path(module_part)
            if not path.is_file():
                raise Unusable(f"no file {module_part!r} (from {target!r}); give a .py file or a dotted module name")
            if path.suffix != ".py":
                raise Unusable(f"{module_part!r} (from {target!r}) is not a Python file: expected a .py file (or a "
                               "dotted module name), then :FUNCTION")
            name = f"_graded_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_part)
    except Unusable:
        raise
    except ModuleNotFoundError as err:
        raise Unusable(f"cannot import {module_part!r}: {err}; give a module importable from the current folder "
                       "or a path to a .py file") from None
    except (Exception, SystemExit) as err:  # the student's module raised while it was imported
        raise Unusable(f"importing {module_part} raised {_describe(err, module_part)}") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise Unusable(f"{module_part} has no function {func_name!r}; it defines {defined or 'no functions'}")
    if not callable(fn):
        raise Unusable(f"{module_part}:{func_name} is not a function but {type(fn).__name__} {fn!r}; expected "
                       f"{SIGNATURE}")
    return fn, f"{module_part}:{func_name}"


def _describe(err: BaseException, module_hint: Optional[str] = None) -> str:
    """'TypeError: message, at file:line in function: code' with the frame in the student's own code."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SyntaxError) and err.filename:
        return f"{text} (at {err.filename}:{err.lineno})"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(_HERE)]
    user = [f for f in frames if "site-packages" not in f.filename and "/torch/" not in f.filename] or frames
    if user:
        f = user[-1]
        text += f", at {_short(f.filename)}:{f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "")
    return text


_HERE = str(Path(__file__).resolve().parent)


def _short(filename: str) -> str:
    """The path relative to the current folder where it lies below it, else as it is."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


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
    notes: list = field(default_factory=list)

    @property
    def description(self) -> str:
        fs = self.net.activation_functions
        hidden = f"{fs[0].spec()}, " if len(fs) > 1 else ""
        return (f"{'-'.join(map(str, self.net.sizes))} {hidden}{fs[-1].spec()} out"
                + (" saturated" if self.saturated else ""))


def _targets(net: MLP, loss_fn: Loss, batch: int, g: torch.Generator) -> Tensor:
    n_out, out = net.sizes[-1], net.output_activation.name
    if loss_fn.name == "cross_entropy":
        y = torch.nn.functional.one_hot(torch.randint(0, n_out, (batch,), generator=g), n_out).to(torch.float64)
    elif out in ("sigmoid", "softmax") or loss_fn.name == "binary_cross_entropy":
        y = torch.rand(batch, n_out, generator=g, dtype=torch.float64)
    elif out == "tanh":
        y = torch.rand(batch, n_out, generator=g, dtype=torch.float64) * 1.8 - 0.9
    else:
        y = torch.randn(batch, n_out, generator=g, dtype=torch.float64)
    return y


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


def _call(fn, name: str, case: Case) -> None:
    """Run the student's function on copies (so it cannot change the battery) under no_grad, as the library does."""
    net = case.net.copy()
    cache = ForwardCache(activations=[a.clone() for a in case.cache.activations], logits=case.cache.logits.clone())
    try:
        with torch.no_grad():  # a fresh Loss each call: a student who changes it changes nothing the grader uses
            result = fn(net, cache, case.y.clone(), copy.deepcopy(case.loss_fn))
    except (Exception, SystemExit) as err:
        hint = ""
        if isinstance(err, RuntimeError) and "shape" in str(err):
            hint = (" (a shape error in a matrix product: the hidden delta is delta @ W, (B, n_{k+1}) @ "
                    "(n_{k+1}, n_k); delta @ W.T runs only where the layer is square)")
        elif "does not require grad" in str(err):
            hint = " (autograd is off here, as in the library: the backward phase is written by hand)"
        raise Unusable(f"{name} raised {_describe(err)}{hint}") from None
    case.student = _as_pair(result, name, case.net)
    changed = [f"net.{kind}[{k}]" for kind in ("weights", "biases")
               for k, (p, p0) in enumerate(zip(getattr(net, kind), getattr(case.net, kind)))
               if p.shape != p0.shape or not torch.equal(p, p0)]
    if len(net.weights) != len(case.net.weights) or len(net.biases) != len(case.net.biases):
        changed.append("the number of layers")
    if changed:  # every parameter compared
        case.notes.append(f"{name} changed {changed[0]} in place: the backward phase must be pure "
                          "(only an update step changes the parameters)")


# ------------------------------------------------------------------------------------------------------ grading
def _compare(student: Optional[Tensor], truth: Tensor, fd_est: Optional[Tensor], mask, tol: float,
             fd_tol: float, label: str, errors: dict) -> bool:
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
                errors, ok = {}, True
                for q, attr in (("dW", "weights"), ("db", "biases")):
                    student = None if c.student is None else c.student[0 if q == "dW" else 1][k]
                    truth = getattr(c.autograd, attr)[k]
                    fd_est = getattr(c.fd, attr)[k] if c.fd is not None else None
                    mask = c.fd.masks[attr][k] if c.fd is not None else None
                    q_ok = _compare(student, truth, fd_est, mask, tol, fd_tol, q, errors)
                    ok = ok and q_ok
                    if student is not None:
                        entries.append((c, k, q, student, truth, q_ok))
                rows.append(Row(case=c, k=k, errors=errors, ok=ok))
        diagnosis = diagnose(entries, variants_of)
        for row in rows:  # each disagreeing layer: the mistakes that give its numbers
            c, k = row.case, row.k
            if not row.ok and c.student is not None:
                for q, s, t in (("dW", c.student[0][k], c.autograd.weights[k]),
                                ("db", c.student[1][k], c.autograd.biases[k])):
                    found = fitting_labels(c, k, q, s, t, variants_of, diagnosis.explains or None)
                    row.fits += [n for n in found if n not in row.fits]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        torch.set_num_threads(threads)
    return GradeReport(name=name, cases=cases, rows=rows, diagnosis=diagnosis, tolerance=tol, fd_tolerance=fd_tol)
