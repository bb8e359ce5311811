"""The grader's report: the per-layer table of a student's gradients against autograd and finite differences
(norm-relative errors, and the factor c where the student's tensor is c times autograd's), the messages for answers
it could not use, the diagnosis, the verdict and the exit status (grade.py runs it); the same table as records for
a CSV or a JSON."""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field

from manual_backprop.checkpoint import atomic_write

__all__ = ["Row", "GradeReport", "SIGNATURE", "RECORD_FIELDS", "format_factor", "write_rows"]

SIGNATURE = "FUNCTION(net, cache, y, loss_fn) returning a Gradients or (grad_weights, grad_biases)"
RECORD_FIELDS = ("case", "network", "loss", "B", "layer", "dW_vs_autograd", "dW_vs_fd", "dW_yours_over_autograd",
                 "db_vs_autograd", "db_vs_fd", "db_yours_over_autograd", "ok", "fits")
_COLUMNS = (("dW~autograd", 11), ("dW~fd", 8), ("dW", 17), ("db~autograd", 11), ("db~fd", 8), ("db", 17))


def format_factor(c) -> str:
    """A factor as the table shows it: 3 significant digits ("0.2", "-1", "5"), as many as it takes to differ from
    1 where it is not 1 ("1.000001"), "-" where there is none."""
    if c is None:
        return "-"
    text = f"{c:.3g}"
    return f"{c:.7g}" if text == "1" and c != 1.0 else text


@dataclass
class Row:
    case: object  # grade.Case
    k: int  # layer index into weights (layer k+1)
    errors: dict  # "dW~autograd", "dW~fd", "db~autograd", "db~fd" -> float, or a string ("shape (5, 4)")
    ok: bool
    fits: list = field(default_factory=list)
    factors: dict = field(default_factory=dict)  # "dW", "db" -> c with yours = c * autograd's, or None

    def record(self) -> dict:
        """This row for a CSV or a JSON (RECORD_FIELDS)."""
        c, e = self.case, self.errors
        out = {"case": c.index, "network": c.description, "loss": repr(c.loss_fn), "B": c.x.shape[0],
               "layer": f"{self.k + 1}/{c.net.num_layers}"}
        for q in ("dW", "db"):
            out[f"{q}_vs_autograd"] = e.get(f"{q}~autograd", "-")
            out[f"{q}_vs_fd"] = e.get(f"{q}~fd", "-")
            c_q = self.factors.get(q)
            out[f"{q}_yours_over_autograd"] = None if c_q is None else float(f"{c_q:.6g}")
        out.update(ok=self.ok, fits="; ".join(self.fits))
        return out


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
                f"{'dW yours/autograd':>17}  {'db~autograd':>11}  {'db~fd':>8}  {'db yours/autograd':>17}  ok   fits")
        lines, loss = [], None
        for r in self.rows:
            if r.case.loss_fn != loss:
                loss = r.case.loss_fn
                lines += ["", f"loss {loss!r}", head]
            first = r.k == 0
            cells = [f"{r.case.index:>4}" if first else " " * 4, f"{r.case.description if first else '':<40}",
                     f"{r.case.x.shape[0] if first else '':>2}", f"{r.k + 1:>3}/{r.case.net.num_layers}"]
            for key, width in _COLUMNS:
                if key in r.factors:
                    cells.append(f"{format_factor(r.factors[key]):>{width}}")
                    continue
                v = r.errors.get(key, "-")
                cells.append(f"{v:>{width}}" if isinstance(v, str) else f"{v:>{width}.1e}")
            cells.append("yes" if r.ok else "NO ")
            cells.append(", ".join(r.fits))
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def records(self) -> list:
        """The per-layer table as dicts (RECORD_FIELDS), for a CSV or a JSON."""
        return [r.record() for r in self.rows]

    def text(self) -> str:
        n_layers = len(self.rows)
        bad = [r for r in self.rows if not r.ok]
        fd = any(c.fd is not None for c in self.cases)  # finite differences off (--no-fd): none is claimed
        out = [f"grade {self.name}: {len(self.cases)} networks, {n_layers} layers; norm-relative tolerance "
               f"{self.tolerance:.0e} vs autograd, "
               + (f"{self.fd_tolerance:.0e} vs finite differences" if fd else "no finite differences")
               + "; yours/autograd: "
               "c where your tensor is c times autograd's (0.2 = 1/B at B = 5), - where it is no multiple",
               self.table(), ""]
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
            out.append(f"PASS: every layer of all {len(self.cases)} networks agrees with autograd"
                       + (" and finite differences" if fd else " (finite differences not run)"))
        elif code == 1:
            out.append(f"FAIL: {len(bad)} of {n_layers} layers disagree{'s' if len(bad) == 1 else ''}" if bad else
                       "FAIL: every layer agrees, but the function changed its inputs")
        else:
            unusable = sum(len(v) for v in self.problems().values())
            if unusable and not shapes and self.diagnosis.raised == unusable:  # the named mistake's shape error
                out.append(f"UNUSABLE: {unusable} of {len(self.cases)} calls raised the shape error that the mistake "
                           "named above makes, so they gave nothing to grade")
            else:
                what = [f"{unusable} of {len(self.cases)} calls gave no usable answer"] if unusable else []
                what += [f"{len(shapes)} layer{'s have' if len(shapes) > 1 else ' has'} wrong shapes"] if shapes else []
                out.append(f"UNUSABLE: {' and '.join(what)}; expected {SIGNATURE}, with tensors shaped like "
                           "net.weights and net.biases")
        return "\n".join(out)


def _more(cases: list) -> str:
    n = len(cases) - 1
    return f" (and in {n} more case{'s' if n > 1 else ''})" if n else ""


def write_rows(rows: list, fields, csv_path=None, json_path=None) -> None:
    """Rows (dicts) to a CSV of ``fields`` and a JSON list, each written atomically; None skips that file. A value
    the CSV cannot hold (a list) is left to the JSON."""
    try:
        if csv_path:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: ("-" if r.get(k) is None else r.get(k)) for k in fields} for r in rows)
            atomic_write(csv_path, lambda f: f.write(buf.getvalue()), binary=False)
        if json_path:
            atomic_write(json_path, lambda f: f.write(json.dumps(rows, indent=1) + "\n"), binary=False)
    except OSError as err:  # one line naming the file, as every bad path gets
        raise ValueError(str(err)) from None
