"""One submission of a class, graded in its own process (grade_class.py starts it): a child forked from a server
that has torch and the grader imported already (multiprocessing's forkserver), so a submission costs its grading,
not a fresh interpreter's imports. The child leaves the grader's process group, works in the submission's folder
with that folder first on the import path, as ``python FILE`` would have it, and sends its summary through a pipe
of the grader's own. The student's prints go to a log, never to that pipe, so a submission that prints a verdict,
exits early (``os._exit(0)``) or hangs gives no summary and gets no verdict.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .grade_report import format_factor

__all__ = ["PRELOAD", "OPTIONS", "child"]

# grade()'s settings for every submission of a class: the losses by name, the dtype by name
OPTIONS = {"losses": ["squared_error"], "dtype": "float64", "device": "cpu", "seed": 0, "finite_diff": True,
           "fd_max_per_tensor": None}

PRELOAD = ["torch", "commands.grade"]  # what the fork server imports once for every submission


def _summary(report) -> dict:
    code = report.exit_code
    verdict = {0: "pass", 1: "fail"}.get(code, "unusable")
    layers = len(report.rows)
    right = sum(r.ok for r in report.rows)
    d = report.diagnosis
    mistakes = d.names()
    named = list(dict.fromkeys([line for label, at in d.where.items() for line in [at, *d.also.get(label, [])]]))
    # no mistake's line: the line of the first wrong number, and which tensor that is ("first_wrong")
    first = not named and d.first_wrong_at and d.first_wrong_at != d.not_finite_at
    lines = ([d.not_finite_at] if d.not_finite_at else []) + (named or ([d.first_wrong_at] if first else []))
    problems = list(report.problems())
    notes = sorted({n for c in report.cases for n in c.notes})
    return {"verdict": verdict, "layers_right": right, "layers_total": layers, "mistakes": mistakes,
            "lines": lines, "first_wrong": d.first_wrong_tensor if first else "", "factors": _factors(report),
            "problems": problems[:3], "notes": notes[:3], "layers": report.records()}


def _factors(report) -> str:
    """The factors yours / autograd of the disagreeing tensors, e.g. "dW 0.2" or "dW 0.2; db -" ("-": no multiple)."""
    seen = []
    for r in report.rows:
        if r.ok or r.case.student is None:  # an answer that could not be used has no factor
            continue
        for q in ("dW", "db"):
            c = r.factors.get(q)
            if q in r.factors and (c is None or abs(c - 1) > 1e-6):
                label = f"{q} {format_factor(c)}"
                if label not in seen:
                    seen.append(label)
    return "; ".join(seen[:6])


def child(conn, path: str, function: str, options: dict, log: str) -> None:
    """The forked child: grade ``path``'s ``function`` with ``options`` (OPTIONS), send the summary (JSON) on
    ``conn``."""
    os.setsid()  # its own process group: Ctrl-C of the class reaches the grader only, which kills this group
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    folder = os.path.dirname(os.path.abspath(path))
    os.chdir(folder)
    sys.path.insert(0, folder)  # as `python file.py` would have it: the submission's helper files import
    sys.argv = [path]
    start = time.perf_counter()

    import torch

    from .grade import Unusable, grade, load_function, parse_loss

    settings = {**OPTIONS, **options}
    try:
        fn, name = load_function(f"{os.path.basename(path)}:{function}")  # from its folder: its messages short
        report = grade(fn, name, [parse_loss(spec) for spec in settings["losses"]],
                       dtype=getattr(torch, settings["dtype"]), device=settings["device"], seed=settings["seed"],
                       finite_diff=settings["finite_diff"], fd_max_per_tensor=settings["fd_max_per_tensor"])
        result = _summary(report)
    except Unusable as err:
        result = {"verdict": "unusable", "layers_right": 0, "layers_total": 0, "mistakes": [],
                  "problems": [str(err)], "notes": []}
    result["seconds"] = round(time.perf_counter() - start, 2)
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send_bytes(json.dumps(result).encode())
    conn.close()
