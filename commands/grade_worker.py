"""One submission of a class, graded in its own process (grade_class.py starts it): ``python -m
commands.grade_worker FILE FUNCTION [grade flags]``, in the submission's folder with that folder first on the import
path, as ``python FILE`` would have it.

The grader's secret token arrives on stdin before any student code runs; the only line the class grader accepts is
the last one, ``TOKEN {json}``. A submission that prints a verdict of its own, exits early (``os._exit(0)``) or hangs
gives no such line, so it gets no verdict.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .grade_report import format_factor


def _summary(report) -> dict:
    code = report.exit_code
    verdict = {0: "pass", 1: "fail"}.get(code, "unusable")
    layers = len(report.rows)
    right = sum(r.ok for r in report.rows)
    d = report.diagnosis
    mistakes = [m.label for m in d.explains] or [m.label for m, _ in d.partial]
    lines = list(dict.fromkeys(d.where.values())) or ([d.first_wrong] if d.first_wrong else [])
    problems = list(report.problems())
    notes = sorted({n for c in report.cases for n in c.notes})
    return {"verdict": verdict, "layers_right": right, "layers_total": layers, "mistakes": mistakes,
            "lines": lines, "factors": _factors(report), "problems": problems[:3], "notes": notes[:3],
            "layers": report.records()}


def _factors(report) -> str:
    """The factors yours / autograd of the disagreeing tensors, e.g. "dW 0.2" or "dW 0.2; db -" ("-": no multiple)."""
    seen = []
    for r in report.rows:
        if r.ok:
            continue
        for q in ("dW", "db"):
            c = r.factors.get(q)
            if q in r.factors and (c is None or abs(c - 1) > 1e-6):
                label = f"{q} {format_factor(c)}"
                if label not in seen:
                    seen.append(label)
    return "; ".join(seen[:6])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    token = sys.stdin.readline().strip()
    sys.stdin.close()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the grader's own copy of stdout, kept from the student
    path, function, *flags = argv
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # as `python file.py` would have it: the submission's helper files import
    start = time.perf_counter()

    from .cli import DTYPES, build_parser
    from .grade import Unusable, grade, load_function, parse_loss

    args = build_parser().parse_args(["grade", f"{path}:{function}", *flags])
    losses = [parse_loss(spec) for spec in args.loss]
    try:
        fn, name = load_function(f"{path}:{function}")
        report = grade(fn, name, losses, dtype=DTYPES[args.dtype], device=args.device, seed=args.seed,
                       finite_diff=not args.no_fd, fd_max_per_tensor=args.fd_samples or None)
        result = _summary(report)
    except Unusable as err:
        result = {"verdict": "unusable", "layers_right": 0, "layers_total": 0, "mistakes": [],
                  "problems": [str(err)], "notes": []}
    result["seconds"] = round(time.perf_counter() - start, 2)
    sys.stdout.flush()
    out.write("\n" + token + " " + json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
