"""`manual-backprop grade`'s run: one student's function (the table printed, and written to --csv / --json where
asked), or a class (several files or folders: grade_class.py)."""

from __future__ import annotations

import os
import sys

import torch

from .grade_report import RECORD_FIELDS, write_rows

__all__ = ["run_grade"]


def run_grade(args) -> int:
    from .grade import Unusable, grade, load_function, parse_loss

    losses = [parse_loss(spec) for spec in args.loss]  # a bad name is a bad flag (exit 2) before anything runs
    if len(args.target) > 1 or os.path.isdir(args.target[0]):
        from .grade_class import grade_class

        if not args.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, but got {args.timeout}")
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1 (submissions graded at once), but got {args.jobs}")
        flags = ["--loss", *args.loss, "--dtype", args.dtype, "--device", args.device, "--seed", str(args.seed),
                 "--fd-samples", str(args.fd_samples)] + (["--no-fd"] if args.no_fd else [])
        return grade_class(args.target, args.function, flags, timeout=args.timeout,
                           csv_path=args.csv or "grades.csv", json_path=args.json or "grades.json", jobs=args.jobs)
    target = args.target[0]
    try:
        fn, name = load_function(target)
    except Unusable as err:
        print(f"manual-backprop grade: {err}", file=sys.stderr)
        return 2
    report = grade(fn, name, losses, dtype=getattr(torch, args.dtype), device=args.device, seed=args.seed,
                   finite_diff=not args.no_fd, fd_max_per_tensor=args.fd_samples or None)
    print(report.text())
    if args.csv or args.json:
        write_rows(report.records(), RECORD_FIELDS, args.csv, args.json)
        print("per-layer table in " + " and ".join(p for p in (args.csv, args.json) if p))
    return report.exit_code
