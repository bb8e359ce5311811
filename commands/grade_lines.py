"""Where in the student's file a wrong number is made: the student's function run once more under ``sys.settrace``.

The tracer watches every frame of the student's own files (not torch's, not the library's, not the grader's) and
notes each tensor a line assigns, to a name or to an item of a list held by a name (``grad_w[k] = ...``), with an
in-place change (``delta *= c``) counted as an assignment. The line of a mistake is the first line whose tensor is
the mistake's intermediate (its output delta, a hidden delta, a dE/dW or dE/db, computed by grade_mistakes.py) where
that differs from the right one; without a diagnosis, the first line that made a tensor the student returned wrong.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from reference.compare import norm_relative_error

__all__ = ["Made", "record_assignments", "mistake_line", "first_line_of", "first_not_finite", "describe_line"]

_ROOT = Path(__file__).resolve().parent.parent
_NOT_STUDENT = tuple({str(_ROOT / d) + os.sep for d in ("commands", "manual_backprop", "reference")}
                     | {p + os.sep for p in (sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"],
                                             sysconfig.get_paths()["stdlib"])})


@dataclass
class Made:
    """One tensor a student's line assigned."""

    filename: str
    line: int
    name: str  # "delta", or "grad_w[1]" for an item of a list
    value: Tensor  # a copy, as it was just after the line
    alias: bool = False  # the line stored a tensor another name already held (grad_b[k] = delta)


def _is_student(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    return not os.path.abspath(filename).startswith(_NOT_STUDENT)


def _tensors(frame) -> dict:
    out = {}
    for name, v in frame.f_locals.items():
        if isinstance(v, Tensor):
            out[name] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 64:
            for i, item in enumerate(v):
                if isinstance(item, Tensor):
                    out[f"{name}[{i}]"] = item
    return out


def _flat(value) -> list:
    """The tensors of a value, a list of them, or a tuple of lists (one backward's return value)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        return [t for v in value for t in (_flat(v) if isinstance(v, (list, tuple)) else [v])
                if isinstance(t, Tensor)]
    return []


def _key(t: Tensor) -> tuple:
    return id(t), t._version  # a new tensor, or the same one changed in place


def record_assignments(fn, args: tuple) -> list:
    """Run fn(*args) under a tracer and return, in execution order, every tensor its lines assigned (Made).
    Whatever fn raises is swallowed: the grader has already reported it."""
    made, states, known = [], {}, set()

    def local(frame, event, arg):
        last, seen = states[frame]
        if event in ("line", "return"):
            for name, v in _tensors(frame).items():
                key = _key(v)
                if seen.get(name) != key:
                    seen[name] = key
                    made.append(Made(frame.f_code.co_filename, last, name, v.detach().clone(), key in known))
                    known.add(key)
            if event == "return":  # a tensor made in the return statement itself: return [g * 2 for g in w]
                for i, v in enumerate(_flat(arg)):
                    made.append(Made(frame.f_code.co_filename, frame.f_lineno, f"returned[{i}]", v.detach().clone()))
            states[frame] = (frame.f_lineno, seen)
        return local

    def on_call(frame, event, arg):
        if event != "call" or not _is_student(frame.f_code.co_filename):
            return None
        states[frame] = (frame.f_lineno, {n: _key(v) for n, v in _tensors(frame).items()})
        return local

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        fn(*args)
    except Exception:
        pass
    finally:
        sys.settrace(previous)
    return made


def _same(a: Tensor, b: Tensor, tol: float) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and norm_relative_error(a, b) <= tol


def mistake_line(made: list, wrong: dict, right: dict, tol: float, kinds=None):
    """The first Made whose tensor is one of the mistake's intermediates (``wrong``, by role) that differ from the
    right ones (``right``, same roles), and is none of the right ones; None if no line made one. ``kinds``: only
    the roles of these kinds ("delta", "dW", "db", ...), where one step of the mistake is looked for."""
    changed = {role: w for role, w in wrong.items() if (role not in right or not _same(w, right[role], 10 * tol))
               and (kinds is None or role[0] in kinds)}
    rights = list(right.values())
    matching = [rec for rec in made if any(_same(rec.value, w, tol) for w in changed.values())]
    for rec in matching:  # a wrong number that is none of the right ones
        if not any(_same(rec.value, r, tol) for r in rights):
            return rec
    answers = [w for role, w in changed.items() if role[0] in ("dW", "db")]
    for rec in matching:  # a right number stored as an answer where another belongs: grad_b[k] = delta
        if rec.alias and any(_same(rec.value, w, tol) for w in answers):
            return rec
    return matching[0] if matching else None


def first_line_of(made: list, returned: list):
    """The first Made whose tensor equals one of ``returned`` (the student's wrong answers), else None."""
    for rec in made:
        if any(rec.value.shape == t.shape and rec.value.dtype == t.dtype and bool((rec.value == t).all())
               for t in returned):
            return rec
    return None


def first_not_finite(made: list):
    """The first Made whose tensor (floating point) holds a NaN or an inf, else None."""
    for rec in made:
        if rec.value.is_floating_point() and not bool(rec.value.isfinite().all()):
            return rec
    return None


def describe_line(rec: Made) -> str:
    """'path:line: code', the path relative to the current folder where it lies below it."""
    try:
        rel = os.path.relpath(rec.filename)
    except ValueError:
        rel = rec.filename
    path = rec.filename if rel.startswith("..") else rel
    code = linecache.getline(rec.filename, rec.line).strip()
    return f"{path}:{rec.line}" + (f": {code}" if code else "")
