"""`manual-backprop grade class/` (or several files): a whole class graded in one command.

Each submission runs in its own process (grade_worker.py) with a timeout, from its own folder with that folder
first on the import path, as ``python file.py`` would have it; ``jobs`` of them at once. A file in a folder that
defines no FUNCTION (a helper module a submission imports) is skipped, and the skipped files are named in one line.
One row per submission goes to a CSV and a JSON (student, verdict, layers right / total, the mistakes named, the
student's line, the factors yours / autograd, seconds; the JSON also holds each per-layer table), in the order of
the files, then one summary line. The verdict comes only
from the worker's last line, marked with a random token made for this run, so a submission cannot print one, and
one that exits early or hangs gets "error" or "timeout". Ctrl-C stops the class: the submissions still running are
stopped, the rows finished so far are written, no traceback, exit 130.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from multiprocessing.connection import wait
from pathlib import Path

from .grade_report import write_rows
from .grade_worker import OPTIONS, PRELOAD, child

__all__ = ["submissions", "defines", "grade_one", "grade_class", "FIELDS"]

FIELDS = ("student", "file", "verdict", "layers_right", "layers_total", "mistakes", "line", "factors", "problem",
          "seconds")
_CONTEXT = []  # the forkserver context, made once
_STARTING = threading.Lock()


def _start(proc) -> None:
    """proc.start() without the child running the caller's main script again: multiprocessing re-imports
    ``__main__`` in every child (a teacher's grade_all.py would grade the class again in each, and ``python -``
    cannot be re-imported at all), and the child needs nothing from it (its target is grade_worker.child)."""
    main = sys.modules["__main__"]
    with _STARTING:
        saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
        main.__spec__ = None
        main.__dict__.pop("__file__", None)
        try:
            proc.start()
        finally:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                del main.__spec__


def _context():
    """The forkserver context, its server started and its imports done (once, before any submission's clock)."""
    if not _CONTEXT:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        warm = ctx.Process(target=time.sleep, args=(0,))
        _start(warm)
        warm.join()
        _CONTEXT.append(ctx)
    return _CONTEXT[0]


def defines(path: Path, function: str) -> bool:
    """Whether the file binds ``function`` at its top level (def, class, assignment or import as), read without
    running it; a file that does not parse counts as defining it, so that its error is graded and shown."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return True
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == function:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" or (a.asname or a.name.split(".")[0]) == function for a in node.names):
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == function for t in targets for n in ast.walk(t)):
                return True
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # a definition inside `if`/`try` still counts
            stack += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            stack += [s for h in getattr(node, "handlers", []) for s in h.body]
    return False


def submissions(targets: list, function: str = "backward") -> tuple:
    """(files to grade, files skipped): each file given, and every .py file directly inside each folder given
    (sorted) that defines ``function``."""
    files, skipped = [], []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.py") if not f.name.startswith(("_", ".")))
            if not found:
                raise ValueError(f"folder {t!r} holds no .py submission")
            skipped += [f for f in found if not defines(f, function)]
            found = [f for f in found if f not in skipped]
            if not found:
                raise ValueError(f"folder {t!r} holds no .py file that defines {function!r} (skipped: "
                                 f"{', '.join(f.name for f in skipped)}); give --function NAME")
            files += found
        elif p.is_file():
            if p.suffix != ".py":
                raise ValueError(f"{t!r} is not a Python file: expected .py files or folders of them")
            files.append(p)
        else:
            raise ValueError(f"no file or folder {t!r}")
    return files, skipped


def _row(path: Path, verdict: str, seconds: float, problem: str = "", **result) -> dict:
    return {"student": path.stem, "file": str(path), "verdict": verdict,
            "layers_right": result.get("layers_right", 0), "layers_total": result.get("layers_total", 0),
            "mistakes": "; ".join(result.get("mistakes", [])), "line": "; ".join(result.get("lines", [])),
            "factors": result.get("factors", ""), "problem": problem, "seconds": round(seconds, 2),
            "first_wrong": result.get("first_wrong", ""), "layers": result.get("layers", [])}


def _clip(text: str, width: int) -> str:
    """``text`` cut to about ``width`` characters at a space, with "..." where it was cut."""
    if len(text) <= width:
        return text
    cut = text[:width].rsplit(" ", 1)[0] if " " in text[:width] else text[:width]
    return cut.rstrip(",;:") + " ..."


def progress_line(row: dict, done: int, total: int) -> str:
    """'[3/30] bob: fail 46/102 layers, a missing 1/m at bob.py:60: delta = ..., 0.4 s', one line per row."""
    text = f"[{done}/{total}] {row['student']}: {row['verdict']}"
    if row["layers_total"]:  # none for a file that never ran
        text += f" {row['layers_right']}/{row['layers_total']} layers"
    if row["mistakes"]:
        text += f", {row['mistakes']}"
    if row["line"]:  # the mistake's line, or where no mistake explains all, the first wrong number's
        text += ((";" if row["mistakes"] else ",") + " first wrong number at " if row.get("first_wrong") else
                 " at " if row["mistakes"] else ", at ") + _clip(row["line"], 100)
    if row["problem"]:
        text += f" ({_clip(row['problem'], 160)})"
    return text + f", {row['seconds']:.1f} s"


class _Running:
    """The grading processes alive now, so that Ctrl-C in the main thread can stop every one of them."""

    def __init__(self):
        self.procs, self.lock, self.stopping = set(), threading.Lock(), False

    def add(self, proc) -> None:
        with self.lock:
            self.procs.add(proc)
            stop = self.stopping
        if stop:
            _kill(proc)

    def discard(self, proc) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for proc in procs:
            _kill(proc)


def grade_one(path: Path, function: str, options: dict, timeout: float, running: "_Running | None" = None) -> dict:
    """Grade one file in a process of its own (grade_worker.child); the row for it, whatever the submission does."""
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    fd, log = tempfile.mkstemp(prefix="grade_", suffix=".log")
    os.close(fd)
    start = time.perf_counter()
    proc = ctx.Process(target=child, args=(send, str(path.resolve()), function, options, log), daemon=True)
    try:
        _start(proc)
        send.close()
        if running is not None:
            running.add(proc)
        data = None
        if wait([receive, proc.sentinel], timeout):
            try:
                data = receive.recv_bytes() if receive.poll() else None
            except (EOFError, OSError):
                data = None
        elif proc.is_alive() or proc.exitcode is None:
            _kill(proc)
            return _row(path, "timeout", time.perf_counter() - start,
                        f"no answer within {timeout:g} s (an endless loop?)")
        proc.join(5)
        if proc.exitcode is None:
            _kill(proc)
        seconds = time.perf_counter() - start
        if data is not None:
            result = json.loads(data)
            problem = "; ".join(result.pop("problems", []) + result.pop("notes", []))
            result.pop("seconds", None)
            return _row(path, result.pop("verdict"), seconds, problem, **result)
        tail = " ".join(Path(log).read_text(errors="replace").strip().splitlines()[-1:])[:200]
        return _row(path, "error", seconds, f"the grading process ended (exit {proc.exitcode}) before the grader's "
                                            "final line" + (f"; the submission's last output: {tail}" if tail else ""))
    except BaseException:  # Ctrl-C: the submission's process goes with it
        _kill(proc)
        raise
    finally:
        if running is not None:
            running.discard(proc)
        receive.close()
        os.unlink(log)


def _files(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def _kill(proc) -> None:
    """SIGKILL to the child's process group (its own, from setsid) and to the child itself."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except (ProcessLookupError, OSError, AttributeError):
        pass
    proc.join()


def _hold_ctrl_c():
    """Ignore Ctrl-C until the rows are written (main thread only); the handler to put back, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def grade_class(targets: list, function: str = "backward", options: "dict | None" = None, *, timeout: float = 120.0,
                csv_path="grades.csv", json_path="grades.json", jobs: int = 1) -> int:
    """Grade every submission, ``jobs`` at once, print one line each as it finishes and a summary; 0 when all
    pass, 1 otherwise, 130 on Ctrl-C. ``options``: grade()'s settings (grade_worker.OPTIONS)."""
    options = {**OPTIONS, **(options or {})}
    files, skipped = submissions(targets, function)
    if skipped:
        print(f"skipped {_files(len(skipped))} with no {function!r} "
              f"({'a helper module' if len(skipped) == 1 else 'helper modules'}?): "
              f"{', '.join(str(f) for f in skipped)}", flush=True)
    done, start, code = {}, time.perf_counter(), None
    running = _Running()
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(files))))
    try:
        _context()
        futures = {pool.submit(grade_one, path, function, options, timeout, running): i for i, path in enumerate(files)}
        for future in as_completed(futures):
            row = done[futures[future]] = future.result()
            print(progress_line(row, len(done), len(files)), flush=True)
    except KeyboardInterrupt:
        code = 130
    finally:
        held = _hold_ctrl_c() if code == 130 else None  # a second Ctrl-C: the class is stopping already
        while True:  # the submissions still running go with the class
            try:
                if code == 130:
                    running.stop()
                pool.shutdown(wait=True, cancel_futures=True)
                break
            except KeyboardInterrupt:  # pressed before the hold: stop them, then hold
                code = 130
                held = held or _hold_ctrl_c()
    rows = [done[i] for i in sorted(done)]
    try:
        write_rows(rows, FIELDS, csv_path, json_path)
    finally:
        if held is not None:
            signal.signal(signal.SIGINT, held)
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    told = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    stopped = f" (stopped by Ctrl-C after {len(rows)} of {len(files)})" if code == 130 else ""
    print(f"graded {len(rows)} submission{'s' if len(rows) != 1 else ''} in {time.perf_counter() - start:.1f} s: {told or 'none'}{stopped}; "
          f"rows in {csv_path} and {json_path}")
    if code is None:
        code = 0 if all(r["verdict"] == "pass" for r in rows) else 1
    return code
