"""`manual-backprop grade`'s run: one student's function (the table printed, and written to --csv / --json where
asked), or a class (several files or folders: grade_class.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .grade_report import RECORD_FIELDS, write_rows

__all__ = ["run_grade"]


# The longest wait for one submission (11.6 days; inf or 1e300 overflow the process machinery's wait).
MAX_TIMEOUT = 10**6


def run_grade(args) -> int:
    from .grade import Unusable, grade, load_function, parse_loss

    losses = [parse_loss(spec) for spec in args.loss]  # a bad name is a bad flag (exit 2) before anything runs
    class_mode = len(args.target) > 1 or os.path.isdir(args.target[0])
    for flag, path in (("--csv", args.csv or ("grades.csv" if class_mode else None)),
                       ("--json", args.json or ("grades.json" if class_mode else None))):
        _check_writable(flag, path)  # before a class is graded, not after
    if not 0 < args.timeout <= MAX_TIMEOUT:  # checked for one file too: a bad flag is a bad flag
        raise ValueError(f"--timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], but got {args.timeout}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1 (submissions graded at once), but got {args.jobs}")
    if args.fd_samples is not None and args.fd_samples < 0:
        raise ValueError(f"--fd-samples must be 0 (every entry) or a positive count, but got {args.fd_samples}")
    if class_mode:
        from .grade_class import grade_class

        options = {"losses": list(args.loss), "dtype": args.dtype, "device": args.device, "seed": args.seed,
                   "finite_diff": not args.no_fd, "fd_max_per_tensor": args.fd_samples or None}
        return grade_class(args.target, args.function, options, timeout=args.timeout,
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


def _check_writable(flag: str, path) -> None:
    """ValueError naming the flag unless ``path`` can be written (its folder exists or can be made, and takes
    files; the path is no folder)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path!r} is a folder; expected a file to write")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path!r} cannot be written: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path!r} cannot be written: its folder {str(folder)!r} is not writable")
