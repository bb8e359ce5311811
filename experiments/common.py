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
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

# Re-exported: every script imports its helpers from here.
from experiments.running import USER_ERRORS, progress_bars, resume_command, run_main  # noqa: F401
from experiments.tables import Column, format_table  # noqa: F401
from manual_backprop.init import INITS
from manual_backprop.optim import OPTIMIZERS

DTYPES = ("float32", "float64")
# The same words for the same flags in every script.
QUIET_HELP = "print nothing but errors: no progress bars, no table, no links"
RESUME_HELP = ("continue the run --run names (default: your newest run of the default name) from what it saved; "
               "the settings must be the run's own")


# ---------------------------------------------------------------------------------------------------- declaring
def option(default: Any = MISSING, *, help: str, choices: Optional[Iterable] = None,
           flags: Optional[Sequence[str]] = None, check: Optional[Callable[[Any], Optional[str]]] = None,
           factory: Optional[Callable[[], Any]] = None, group: Optional[str] = None):
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
    if group is not None:
        metadata["group"] = group  # a titled section of --help (TRAINER_GROUP: the Trainer's settings)
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


def unit_interval(value) -> Optional[str]:
    """Validator: the value (when set) lies in [0, 1) (a decay rate such as Adam's betas)."""
    return None if value is None or 0 <= value < 1 else "must be in [0, 1)"


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
CONFIG_MAX_BYTES = 1 << 20  # a run folder's config.json is a few KB


def load_config_file(path, config_class, extra_keys: Iterable[str] = ()) -> dict:
    """The settings a saved config.json holds, checked against ``config_class``: {field name: value}.

    A results file that holds its settings under "config" works too. Keys in ``extra_keys`` (what the script
    writes beside its settings, such as the resolved mode or network) are ignored; any other key that is not a
    field, a value of the wrong type, a missing or unreadable file or bad JSON raise ValueError naming the file.
    """
    where = f"--config {path}"
    try:
        if (size := Path(path).stat().st_size) > CONFIG_MAX_BYTES:  # refused before a huge file is read whole
            raise ValueError(f"{where}: {size} bytes, expected a config.json of at most {CONFIG_MAX_BYTES} bytes")
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
    sections: dict = {}
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
        title = meta.get("group")
        if title is not None and title not in sections:
            sections[title] = parser.add_argument_group(title)
        (sections[title] if title is not None else parser).add_argument(*_flags(f), **kwargs)
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


# ------------------------------------------------------------------------------------------------- the Trainer's flags
TRAINER_GROUP = "the Trainer's settings (the same flags, defaults and checks in every script that trains)"


@dataclass
class TrainerFlags:
    """The Trainer's settings users change, declared once: a script's Config inherits them (``class
    Config(TrainerFlags)``), so every script that trains has the same flags, defaults, help and checks, shown in
    one section of --help. A script whose training has its own meaning for one redeclares that field (the sweep's
    target loss is its success criterion) with ``group=TRAINER_GROUP``; ``check_trainer_flags`` refuses, in one
    line, a flag the script's training cannot honour."""
    init: str = option("xavier_uniform", help="initial weights", choices=INITS, group=TRAINER_GROUP)
    optimizer: str = option("sgd", help="the update rule: sgd (the lecture's w -= lr g, plus --momentum), adam, "
                                        "adamw", choices=sorted(OPTIMIZERS), group=TRAINER_GROUP)
    momentum: float = option(0.0, help="sgd's momentum mu (0: plain gradient descent)", check=at_least(0),
                             group=TRAINER_GROUP)
    beta1: float = option(0.9, help="adam/adamw: decay of the first-moment average", check=unit_interval,
                          group=TRAINER_GROUP)
    beta2: float = option(0.999, help="adam/adamw: decay of the second-moment average", check=unit_interval,
                          group=TRAINER_GROUP)
    eps: float = option(1e-8, help="adam/adamw: added to the denominator", check=finite_positive, group=TRAINER_GROUP)
    weight_decay: float = option(0.0, help="L2 factor (adamw: decoupled)", check=at_least(0), group=TRAINER_GROUP)
    target_loss: Optional[float] = option(None, help="stop once the training loss is at most this (default: none, "
                                                     "run every epoch)", check=at_least(0), group=TRAINER_GROUP)
    replacement: bool = option(False, help="minibatch draws its batches with replacement", group=TRAINER_GROUP)
    threads: Optional[int] = option(None, help="CPU threads torch uses (default: torch's own)", check=at_least(1),
                                    group=TRAINER_GROUP)


def check_trainer_flags(cfg, script: str, *, modes: Sequence[str]) -> None:
    """Refuse (ValueError, one line) a Trainer flag that the script's training, in ``modes``, cannot honour."""
    if cfg.replacement and "minibatch" not in modes and "online" not in modes:
        raise ValueError(f"--replacement draws samples with replacement, but {script} trains in batch mode, which "
                         f"uses every sample once an epoch; leave --replacement out")
    if cfg.optimizer != "sgd" and cfg.momentum:
        raise ValueError(f"--momentum is sgd's, but --optimizer is {cfg.optimizer}; leave --momentum out or pass "
                         f"--optimizer sgd")


def apply_threads(cfg) -> None:
    """--threads: torch's CPU threads for this process (the default leaves torch's own)."""
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)


def trainer_settings(cfg, model, lr) -> dict:
    """The Trainer's (or PopulationTrainer's) keyword arguments from the flags: lr, target_loss, replacement and,
    unless the update is the lecture's plain one (sgd without momentum or weight decay, which keeps the fast paths),
    the optimizer built on ``model`` (an MLP or a Population; ``lr`` one number or one per member)."""
    settings = {"lr": lr, "target_loss": cfg.target_loss, "replacement": cfg.replacement}
    if cfg.optimizer == "sgd" and cfg.momentum == 0 and cfg.weight_decay == 0:
        return settings
    from manual_backprop.optim import get_optimizer

    if cfg.optimizer == "sgd":
        optimizer = get_optimizer("sgd", model, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = get_optimizer(cfg.optimizer, model, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                  weight_decay=cfg.weight_decay)
    return {**settings, "optimizer": optimizer}
