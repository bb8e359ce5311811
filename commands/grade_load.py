"""Loading a student's backward function for `manual-backprop grade`, and telling what it raised: one line with
the student's file and line, never a traceback. A file that ``python FILE`` would refuse for its bytes (not UTF-8,
no coding line) is refused the same way, though the import machinery would let it pass."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Optional

from .grade_report import SIGNATURE

__all__ = ["Unusable", "load_function", "check_source", "describe_error", "student_frame"]


class Unusable(Exception):
    """The student's function cannot be graded: not found, raised, or returned something of the wrong kind."""


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
            check_source(path, module_part)
            name = f"_graded_{path.stem}"
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # as `python file.py` has it: the helper files beside it import
                sys.path.insert(0, folder)
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            spec = importlib.util.find_spec(module_part)
            if spec is not None and spec.origin and spec.origin.endswith(".py") and os.path.isfile(spec.origin):
                check_source(Path(spec.origin), _short(spec.origin))
            module = importlib.import_module(module_part)
    except Unusable:
        raise
    except ModuleNotFoundError as err:
        if is_path or (err.name and not (module_part == err.name or module_part.startswith(err.name + "."))):
            # the module was found: an import of its own failed (a helper file that is not beside it)
            raise Unusable(f"importing {module_part} raised {describe_error(err, module_part)}") from None
        raise Unusable(f"cannot import {module_part!r}: {err}; give a module importable from the current folder "
                       "or a path to a .py file") from None
    except (Exception, SystemExit) as err:  # the student's module raised while it was imported
        raise Unusable(f"importing {module_part} raised {describe_error(err, module_part)}") from None
    fn = getattr(module, func_name, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise Unusable(f"{module_part} has no function {func_name!r}; it defines {defined or 'no functions'}")
    if not callable(fn):
        raise Unusable(f"{module_part}:{func_name} is not a function but {type(fn).__name__} {fn!r}; expected "
                       f"{SIGNATURE}")
    return fn, f"{module_part}:{func_name}"


_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def check_source(path: Path, shown: str) -> None:
    """Unusable where ``python FILE`` refuses the file's bytes before running it: with neither a coding line
    (PEP 263) nor a BOM, every byte must be UTF-8, but the import machinery lets bytes it cannot decode pass in a
    comment, so the grader checks as the interpreter does (a declared encoding is checked by the import itself)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise Unusable(f"cannot read {shown}: {err.strerror or err}") from None
    if data.startswith(b"\xef\xbb\xbf") or any(_CODING.match(line) for line in data.splitlines()[:2]):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise Unusable(f"cannot load {shown}: SyntaxError: Non-UTF-8 code starting with '\\x{data[err.start]:02x}' "
                       f"on line {line}, but no encoding declared (python {path.name} refuses it too); save the file "
                       "as UTF-8, or declare its encoding in a coding line (PEP 263)") from None


def describe_error(err: BaseException, module_hint: Optional[str] = None) -> str:
    """'TypeError: message, at file:line in function: code' with the frame in the student's own code."""
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, SyntaxError) and err.filename:  # str(err) repeats the place: "msg (file.py, line 3)"
        code = (err.text or "").strip()
        return (f"{type(err).__name__}: {err.msg}, at {_short(err.filename)}:{err.lineno}"
                + (f": {code}" if code else ""))
    at = student_frame(err)
    return text + (f", at {at}" if at else "")


def student_frame(err: BaseException) -> str:
    """'file:line in function: code' of the innermost frame in the student's own code ('' if none)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(_HERE)]
    user = [f for f in frames if "site-packages" not in f.filename and "/torch/" not in f.filename] or frames
    if not user:
        return ""
    f = user[-1]
    return f"{_short(f.filename)}:{f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "")


_HERE = str(Path(__file__).resolve().parent)


def _short(filename: str) -> str:
    """The path relative to the current folder where it lies below it, else as it is."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel
