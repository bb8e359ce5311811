"""The grader's report: the per-layer table of a student's gradients against autograd and finite differences,
the messages for answers it could not use, the diagnosis, the verdict and the exit status (grade.py runs it)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["Row", "GradeReport", "SIGNATURE"]

SIGNATURE = "FUNCTION(net, cache, y, loss_fn) returning a Gradients or (grad_weights, grad_biases)"


@dataclass
class Row:
    case: object  # grade.Case
    k: int  # layer index into weights (layer k+1)
    errors: dict  # "dW~autograd", "dW~fd", "db~autograd", "db~fd" -> float, or a string ("shape (5, 4)")
    ok: bool
    fits: list = field(default_factory=list)


@dataclass
class GradeReport:
    name: str
    cases: list
    rows: list
    diagnosis: object
    tolerance: float
    fd_tolerance: float

    def problems(self) -> "OrderedDict[str, list]":
        """Why answers were unusable, each message with the cases it happened in."""
        grouped = OrderedDict()
        for c in self.cases:
            if c.problem:
                grouped.setdefault(c.problem, []).append(c)
        return grouped

    @property
    def unexplained_shapes(self) -> list:
        return [r for r in self.rows if not r.ok and not r.fits
                and any(isinstance(v, str) and v.startswith("shape") for v in r.errors.values())]

    @property
    def exit_code(self) -> int:
        if self.problems() or self.unexplained_shapes:
            return 2
        if any(not r.ok for r in self.rows) or any(c.notes for c in self.cases):
            return 1
        return 0

    def table(self) -> str:
        head = (f"{'case':>4}  {'network':<40} {'B':>2}  {'layer':>5}  {'dW~autograd':>11}  {'dW~fd':>8}  "
                f"{'db~autograd':>11}  {'db~fd':>8}  ok   fits")
        lines, loss = [], None
        for r in self.rows:
            if r.case.loss_fn != loss:
                loss = r.case.loss_fn
                lines += ["", f"loss {loss!r}", head]
            first = r.k == 0
            cells = [f"{r.case.index:>4}" if first else " " * 4, f"{r.case.description if first else '':<40}",
                     f"{r.case.x.shape[0] if first else '':>2}", f"{r.k + 1:>3}/{r.case.net.num_layers}"]
            for key, width in (("dW~autograd", 11), ("dW~fd", 8), ("db~autograd", 11), ("db~fd", 8)):
                v = r.errors.get(key, "-")
                cells.append(f"{v:>{width}}" if isinstance(v, str) else f"{v:>{width}.1e}")
            cells.append("yes" if r.ok else "NO ")
            cells.append(", ".join(r.fits))
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def text(self) -> str:
        n_layers = len(self.rows)
        bad = [r for r in self.rows if not r.ok]
        out = [f"grade {self.name}: {len(self.cases)} networks, {n_layers} layers; norm-relative tolerance "
               f"{self.tolerance:.0e} vs autograd, {self.fd_tolerance:.0e} vs finite differences", self.table(), ""]
        for message, cases in self.problems().items():
            first = cases[0]
            out.append(f"case {first.index} ({first.description}, B={first.x.shape[0]}): {message}{_more(cases)}")
        notes = OrderedDict()
        for c in self.cases:
            for note in c.notes:
                notes.setdefault(note, []).append(c)
        out += [f"case {cases[0].index}: {note}{_more(cases)}" for note, cases in notes.items()]
        shapes = self.unexplained_shapes
        for r in shapes[:3]:
            out.append(f"case {r.case.index}, layer {r.k + 1}: " + "; ".join(
                f"{key[:2]} has {v}" for key, v in r.errors.items() if isinstance(v, str) and v.startswith("shape")))
        if len(shapes) > 3:
            out.append(f"... and {len(shapes) - 3} more layers with shapes that no classic mistake explains")
        out += self.diagnosis.lines()
        code = self.exit_code
        if code == 0:
            out.append(f"PASS: every layer of all {len(self.cases)} networks agrees with autograd and finite "
                       "differences")
        elif code == 1:
            out.append(f"FAIL: {len(bad)} of {n_layers} layers disagree" if bad else
                       "FAIL: every layer agrees, but the function changed its inputs")
        else:
            unusable = sum(len(v) for v in self.problems().values())
            what = [f"{unusable} of {len(self.cases)} calls gave no usable answer"] if unusable else []
            what += [f"{len(shapes)} layers have wrong shapes"] if shapes else []
            out.append(f"UNUSABLE: {' and '.join(what)}; expected {SIGNATURE}, with tensors shaped like "
                       "net.weights and net.biases")
        return "\n".join(out)


def _more(cases: list) -> str:
    n = len(cases) - 1
    return f" (and in {n} more case{'s' if n > 1 else ''})" if n else ""
