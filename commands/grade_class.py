"""`manual-backprop grade class/` (or several files): a whole class graded in one command.

Each submission runs in its own process (grade_worker.py) with a timeout, from its own folder with that folder
first on the import path, as ``python file.py`` would have it. One row per submission goes to a CSV and a JSON
(student, verdict, layers right / total, the mistakes named, seconds), then one summary line. The verdict comes only
from the worker's last line, marked with a random token made for this run, so a submission cannot print one, and
one that exits early or hangs gets "error" or "timeout". Ctrl-C stops the class: the rows so far are written, no
traceback, exit 130.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from manual_backprop.checkpoint import atomic_write

__all__ = ["submissions", "grade_one", "grade_class", "FIELDS"]

FIELDS = ("student", "file", "verdict", "layers_right", "layers_total", "mistakes", "problem", "seconds")
_ROOT = str(Path(__file__).resolve().parent.parent)  # the project, so that the worker imports commands/


def submissions(targets: list) -> list:
    """The .py files to grade: each file given, and every .py file directly inside each folder given (sorted)."""
    files = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.py") if not f.name.startswith(("_", ".")))
            if not found:
                raise ValueError(f"folder {t!r} holds no .py submission")
            files += found
        elif p.is_file():
            if p.suffix != ".py":
                raise ValueError(f"{t!r} is not a Python file: expected .py files or folders of them")
            files.append(p)
        else:
            raise ValueError(f"no file or folder {t!r}")
    return files


def _row(path: Path, verdict: str, seconds: float, problem: str = "", **result) -> dict:
    return {"student": path.stem, "file": str(path), "verdict": verdict,
            "layers_right": result.get("layers_right", 0), "layers_total": result.get("layers_total", 0),
            "mistakes": "; ".join(result.get("mistakes", [])), "problem": problem, "seconds": round(seconds, 2)}


def grade_one(path: Path, function: str, flags: list, timeout: float) -> dict:
    """Grade one file in a fresh process; the row for it, whatever the submission does."""
    token = secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "commands.grade_worker", str(path.resolve()), function, *flags],
                            cwd=path.resolve().parent, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(token + "\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return _row(path, "timeout", time.perf_counter() - start, f"no answer within {timeout:g} s (an endless loop?)")
    except BaseException:  # Ctrl-C: the submission's process goes with it
        _kill(proc)
        raise
    seconds = time.perf_counter() - start
    lines = [line for line in out.splitlines() if line.strip()]
    if lines and lines[-1].startswith(token + " "):
        result = json.loads(lines[-1][len(token) + 1:])
        problem = "; ".join(result.pop("problems", []) + result.pop("notes", []))
        result.pop("seconds", None)
        return _row(path, result.pop("verdict"), seconds, problem, **result)
    tail = " ".join(err.strip().splitlines()[-1:])[:200]
    return _row(path, "error", seconds, f"the grading process ended (exit {proc.returncode}) before the grader's "
                                        f"final line" + (f": {tail}" if tail else ""))


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _write(rows: list, csv_path, json_path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, lambda f: f.write(buf.getvalue()), binary=False)
    atomic_write(json_path, lambda f: f.write(json.dumps(rows, indent=1) + "\n"), binary=False)


def grade_class(targets: list, function: str, flags: list, *, timeout: float, csv_path, json_path) -> int:
    """Grade every submission, print one line each and a summary; 0 when all pass, 1 otherwise, 130 on Ctrl-C."""
    files = submissions(targets)
    rows, start, code = [], time.perf_counter(), None
    try:
        for i, path in enumerate(files, 1):
            row = grade_one(path, function, flags, timeout)
            rows.append(row)
            print(f"[{i}/{len(files)}] {row['student']}: {row['verdict']} {row['layers_right']}/"
                  f"{row['layers_total']} layers" + (f", {row['mistakes']}" if row["mistakes"] else "")
                  + (f" ({row['problem'][:120]})" if row["problem"] else "") + f", {row['seconds']:.1f} s",
                  flush=True)
    except KeyboardInterrupt:
        code = 130
    _write(rows, csv_path, json_path)
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    told = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    stopped = f" (stopped by Ctrl-C after {len(rows)} of {len(files)})" if code == 130 else ""
    print(f"graded {len(rows)} submissions in {time.perf_counter() - start:.1f} s: {told or 'none'}{stopped}; "
          f"rows in {csv_path} and {json_path}")
    if code is None:
        code = 0 if all(r["verdict"] == "pass" for r in rows) else 1
    return code
