"""What every experiment script shares: flags derived from its Config, --config FILE, error handling, tables.

A script declares its settings once, as a dataclass whose fields carry their help text::

    @dataclass
    class Config:
        seeds: int = option(20, help="seeds 0 .. N-1", check=at_least(1))
        dtype: str = option("float64", help="float64 shows e(w) = 0.25 to the last digit", choices=DTYPES)
        run: Optional[str] = option(None, help="run folder name (default: <mode>-seeds<N>)")

    def parse_args(argv=None) -> Config:
        return parse_config(Config, argv, prog="python -m experiments.xor", description=__doc__)

    def main(argv=None) -> int:
        return run_main("xor", parse_args, run, argv)

``parse_config`` gives every field a flag, ``--field-name``: its type from the annotation (int, float, str;
bool as ``--x``/``--no-x``; ``Optional[...]``; ``list[T]`` as one or more T), its help from the field's metadata
with the default shown, its choices from the metadata. Metadata keys (``option`` sets them; a plain
``field(metadata={...})`` works too): ``help`` (required), ``choices``, ``flags`` (option strings other than
``--field-name``) and ``check`` (a validator, see ``at_least``).

``--config FILE`` reads a config.json a script wrote into its run folder (or a results file that holds one
under "config") and takes its values as the defaults; flags on the command line override them. A key that is not
a setting refuses the file, except the keys the script itself writes beside its settings (``extra_keys``).

``run_main`` runs a script: a bad flag, file or setting (ValueError, TypeError, OSError, ImportError,
RuntimeError, raised by the script or the library) ends in one line, ``<script>: error: <message>``, and exit
status 2; Ctrl-C ends in exit status 130, no traceback, what the run kept and the command that resumes it
(``resume_command``, the same flags with ``--run NAME --resume``). A script may give its own status for a finished
run (``status``): learning_modes exits 3 when a mode diverged.

How a run uses its folder (names checked before any write, a new folder for the default name, a lock, the pieces
kept across Ctrl-C and --resume) is session.py, on top of run_folder.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

DTYPES = ("float32", "float64")
# The same words for the same flags in every script.
QUIET_HELP = "print nothing but errors: no progress bars, no table, no links"
RESUME_HELP = ("continue the run --run names (default: your newest run of the default name) from what it saved; "
               "the settings must be the run's own")
# What run_main turns into one line and exit status 2: bad flags, files and settings, however deep they surface.
# RuntimeError: what torch raises for a tensor that does not fit (a damaged checkpoint's state, a wrong dtype).
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)


# ---------------------------------------------------------------------------------------------------- declaring
def option(default: Any = MISSING, *, help: str, choices: Optional[Iterable] = None,
           flags: Optional[Sequence[str]] = None, check: Optional[Callable[[Any], Optional[str]]] = None,
           factory: Optional[Callable[[], Any]] = None):
    """A Config field with its help text (and optional choices, option strings and validator) as metadata.

    A list default is copied for every Config (no shared mutable default); ``factory`` computes a default at
    construction time instead (for a default that depends on the machine).
    """
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if flags is not None:
        metadata["flags"] = tuple(flags)
    if check is not None:
        metadata["check"] = check
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(low):
    """Validator: the value (when set) is >= low."""
    def check(value):
        return None if value is None or value >= low else f"must be >= {low}"
    return check


def seed_range(value) -> Optional[str]:
    """Validator: a seed torch.Generator takes, an int in [0, 2**63 - 1]."""
    return None if value is None or 0 <= value <= 2 ** 63 - 1 else "must be an int in [0, 2**63 - 1]"


def distinct(value) -> Optional[str]:
    """Validator: a list (when set) names each value once (``--modes batch batch`` would train a mode twice)."""
    if value is None:
        return None
    repeated = sorted({str(v) for v in value if list(value).count(v) > 1})
    return f"must name each value once ({', '.join(repeated)} repeated)" if repeated else None


def finite_positive(value) -> Optional[str]:
    """Validator: the value (when set) is a finite number > 0 (NaN fails the comparison)."""
    return None if value is None or (value > 0 and value != math.inf) else "must be a finite number > 0"


def flag_name(name: str) -> str:
    """The flag of a Config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_config(cfg) -> None:
    """Run every field's validator; the first failure raises ValueError("--flag must ..., but got value")."""
    for f in fields(cfg):
        check = f.metadata.get("check")
        value = getattr(cfg, f.name)
        problem = check(value) if check is not None else None
        if problem:
            shown = repr(value) if isinstance(value, str) else value
            raise ValueError(f"{_flags(f)[0]} {problem}, but got {shown}")


# ---------------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class _Kind:
    """What a field's annotation allows: a scalar type, optionally None, optionally a list of them."""
    scalar: type
    optional: bool
    is_list: bool


def _kind(annotation) -> _Kind:
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, f"a Config field must be one type or Optional[one type], not {annotation}"
        annotation, optional = args[0], True
        origin = typing.get_origin(annotation)
    if annotation is list or origin is list:
        args = typing.get_args(annotation)
        assert args, "a list field needs its element type: list[int], list[str], ..."
        return _Kind(args[0], optional, True)
    assert annotation in (int, float, str, bool), f"unsupported Config field type {annotation}"
    return _Kind(annotation, optional, False)


def _kinds(config_class) -> dict:
    hints = typing.get_type_hints(config_class)
    return {f.name: _kind(hints[f.name]) for f in fields(config_class)}


_TYPE_NAMES = {int: "an int", float: "a number", str: "a string", bool: "true or false"}
_PLURALS = {int: "ints", float: "numbers", str: "strings", bool: "true/false values"}


def _coerce(value, kind: _Kind, choices):
    """(fits, value): a value read from JSON checked against the field's type and choices (ints widen to floats)."""
    def one(v):
        if kind.scalar is bool:
            ok = isinstance(v, bool)
        elif kind.scalar is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif kind.scalar is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, kind.scalar)
        if ok and choices is not None and v not in choices:
            ok = False
        return ok, v

    if value is None:
        return kind.optional, None
    if kind.is_list:
        if not isinstance(value, list):
            return False, value
        converted = [one(v) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    return one(value)


def _describe(kind: _Kind, choices) -> str:
    if kind.is_list:
        what = f"a list of {_PLURALS[kind.scalar]}" if choices is None else f"a list of values from {list(choices)}"
    else:
        what = f"one of {list(choices)}" if choices is not None else _TYPE_NAMES[kind.scalar]
    return what + (" or null" if kind.optional else "")


# ---------------------------------------------------------------------------------------------------- --config
def load_config_file(path, config_class, extra_keys: Iterable[str] = ()) -> dict:
    """The settings a saved config.json holds, checked against ``config_class``: {field name: value}.

    A results file that holds its settings under "config" works too. Keys in ``extra_keys`` (what the script
    writes beside its settings, such as the resolved mode or network) are ignored; any other key that is not a
    field, a value of the wrong type, a missing or unreadable file or bad JSON raise ValueError naming the file.
    """
    where = f"--config {path}"
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise ValueError(f"{where}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{where}: not a UTF-8 text file (byte {err.start}: {err.reason}); pass a config.json a "
                         f"run wrote") from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
        saved = saved["config"]
    if not isinstance(saved, dict):
        raise ValueError(f"{where}: must hold a JSON object of settings, but holds {type(saved).__name__}")
    kinds = _kinds(config_class)
    by_name = {f.name: f for f in fields(config_class)}
    values = {}
    for key, value in saved.items():
        if key not in kinds:
            if key in extra_keys:
                continue
            raise ValueError(f"{where}: unknown setting {key!r} (not a field of {config_class.__module__}."
                             f"{config_class.__qualname__})")
        choices = by_name[key].metadata.get("choices")
        ok, converted = _coerce(value, kinds[key], choices)
        if ok and kinds[key].is_list and converted == [] and _default_of(by_name[key]) != []:
            # the flag itself takes one or more values: [] would silently mean the default
            raise ValueError(f"{where}: {key!r} must be a non-empty list (or null for the default), but got []")
        if not ok:
            raise ValueError(f"{where}: {key!r} must be {_describe(kinds[key], choices)}, but got {value!r}")
        values[key] = converted
    return values


# ---------------------------------------------------------------------------------------------------- parsing
class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout (examples, lists) as the description."""


class _OnOff(argparse.BooleanOptionalAction):
    """--x / --no-x, with the help text as given (Python < 3.13 would append a second default to it)."""

    def __init__(self, *args, help=None, **kwargs):
        super().__init__(*args, help=help, **kwargs)
        self.help = help


_METAVARS = {int: "N", float: "X"}  # a string's is its flag's name in capitals


def _flags(f) -> tuple:
    return tuple(f.metadata.get("flags") or (flag_name(f.name),))


def _default_of(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise AssertionError(f"Config field {f.name} needs a default")


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def build_parser(config_class, *, prog: str, description: Optional[str] = None,
                 defaults: Optional[dict] = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``config_class`` (and --config); ``defaults`` replace the
    dataclass defaults (the values of a --config file), and the help shows the defaults in force."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter)
    kinds = _kinds(config_class)
    defaults = defaults or {}
    for f in fields(config_class):
        kind, meta = kinds[f.name], f.metadata
        assert meta.get("help"), f"Config field {f.name} needs help text: option(..., help='...')"
        default = defaults[f.name] if f.name in defaults else _default_of(f)
        text = meta["help"]
        if "(default" not in text:
            text += f" (default: {_shown(default)})"
        kwargs = dict(dest=f.name, default=default, help=text.replace("%", "%%"))
        if kind.scalar is bool and not kind.is_list:
            kwargs["action"] = _OnOff
        else:
            kwargs["type"] = kind.scalar
            if kind.is_list:
                kwargs["nargs"] = "+"
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]  # argparse shows them as the metavar: {a,b,c}
            else:
                kwargs["metavar"] = _METAVARS.get(kind.scalar) or _flags(f)[0].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*_flags(f), **kwargs)
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="a config.json a run wrote: its settings become the defaults, flags override them")
    return parser


def parse_config(config_class, argv=None, *, prog: str, description: Optional[str] = None,
                 extra_keys: Iterable[str] = ()):
    """Parse ``argv`` (None: sys.argv[1:]) into a checked ``config_class``.

    With --config FILE the file's settings are the defaults (so --help shows them too); raises ValueError for a
    bad file or a value that fails its field's check. argparse itself handles unknown flags and --help.
    """
    pre = argparse.ArgumentParser(prog=prog, add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    defaults = load_config_file(known.config, config_class, extra_keys) if known.config else {}
    parser = build_parser(config_class, prog=prog, description=description, defaults=defaults)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    cfg = config_class(**args)
    check_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------- running
def progress_bars(quiet: bool = False) -> bool:
    """Whether a script draws progress bars: not with --quiet, and not when stderr (where tqdm draws) is not a
    terminal, where every redraw would be one more line of a log file."""
    return not quiet and sys.stderr.isatty()


def resume_command(name: str, argv: Sequence[str], run_name: str) -> str:
    """The command that continues run ``run_name``: the same flags, ``--run NAME --resume`` in place of any
    ``--run`` / ``--resume`` given (under torchrun, the same launcher line)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--run", "--run-name"):
            skip = True
            continue
        if arg.startswith(("--run=", "--run-name=")) or arg in ("--resume", "--no-resume"):
            continue
        kept.append(arg)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    launcher = (f"torchrun --standalone --nproc_per_node={world} -m" if world > 1 else "python -m")
    return f"{launcher} experiments.{name} " + shlex.join([*kept, "--run", run_name, "--resume"])


def run_main(name: str, parse: Callable, run: Callable, argv=None, *, errors: tuple = (),
             status: Optional[Callable[[Any], int]] = None) -> int:
    """Parse, run, and turn a bad flag, file or setting into one line and exit status 2; Ctrl-C into exit 130.

    ``errors``: further exception types this script reports the same way. ``status(result)``: the exit status of a
    run that finished (default 0), from what ``run`` returned. On Ctrl-C (KeyboardInterrupt, no traceback) it
    prints what was saved and the command that resumes the run (session.py), exactly as it must be typed.
    """
    from experiments import _interrupted_while_starting
    from experiments.session import Interrupted, current_session

    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, Ctrl-C is handled below
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = None
    try:
        cfg = parse(argv)
        result = run(cfg)
    except (*USER_ERRORS, *errors) as err:
        if not getattr(err, "reported_by_rank0", False):  # under torchrun, one line for the job, not one per rank
            print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        session = interrupt.session if isinstance(interrupt, Interrupted) else current_session()
        run_name = session.name if session is not None else getattr(cfg, "_run_name", None)
        if run_name is None:
            print(f"\n{name}: interrupted before a run folder was opened; nothing was written", file=sys.stderr)
        else:
            saved = session.saved() if session is not None else getattr(cfg, "_saved", "the checkpoints are saved")
            print(f"\n{name}: interrupted; {saved}. Continue with:\n  {resume_command(name, argv, run_name)}",
                  file=sys.stderr)
        return 130
    return status(result) if status is not None else 0


# ---------------------------------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Column:
    """A table column: its title, the least width, alignment ("<" or ">"), the format spec of its values
    (None prints as "-") and the spaces before it."""
    title: str
    width: int = 0
    align: str = ">"
    spec: str = ""
    gap: int = 1


def format_table(columns: Sequence[Column], rows: Iterable[Sequence], *, markdown: bool = False) -> str:
    """Rows under a header: fixed-width text with a rule under the header, or a markdown table.

    A column is as wide as the widest of its least width, its title and its cells.
    """
    cells = [["-" if v is None else format(v, c.spec) for v, c in zip(row, columns)] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(c.title for c in columns) + " |",
                 "|" + "|".join("---:" if c.align == ">" else "---" for c in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max([c.width, len(c.title)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "".join((" " * c.gap if i else "") + f"{v:{c.align}{w}}"
                       for i, (v, c, w) in enumerate(zip(values, columns, widths))).rstrip()

    head = line([c.title for c in columns])
    return "\n".join([head, "-" * len(head)] + [line(row) for row in cells])
