"""One run of an experiment, from its first write to its end or its Ctrl-C: what every script that trains shares.

    with start_run(EXPERIMENT, cfg, default_name) as session:   # checks --run, opens and locks the folder
        for key in units:                                        # the run's pieces: a mode, a seed, a network
            if session.is_done(key):
                result = session.result(key)                     # kept from before the Ctrl-C
                continue
            session.begin(key, *its_subfolders)                  # a half-written piece's folders are removed
            result = train(...)
            session.finish(key, result)                          # progress.json, written atomically

``start_run`` (run_folder.py does the folder): the name is checked before anything is written; without --run a new
folder of the default name; an explicit --run that already holds a run is refused unless ``--resume``. With
``--resume`` the saved config.json must hold the same settings (each difference is named, with the --config that
replays them); the session says what it resumes and from where. Every piece is seeded on its own, so a piece
restarted from its beginning gives the numbers an unbroken run gives: a resumed run ends with the same results. A
piece that checkpoints itself (a sweep's population) continues from its checkpoint instead, and says so through
``partial`` in the Ctrl-C line.

Ctrl-C inside the ``with`` block becomes ``Interrupted`` (a KeyboardInterrupt): common.run_main prints what was
saved and the exact command that continues the run, with no traceback, and exits 130.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional

from experiments.run_folder import RunFolder, check_run_name, open_run_folder, read_json
from manual_backprop.checkpoint import write_json

__all__ = ["RunSession", "start_run", "Interrupted", "NOT_SETTINGS", "PROGRESS_NAME", "current_session"]

PROGRESS_NAME = "progress.json"
# Config fields that say how a run is shown or where it goes, not what it computes: a resume may change them.
NOT_SETTINGS = ("run", "resume", "quiet", "plots", "logdir", "device", "threads", "dist_timeout", "allow_changes",
                "log_seeds", "image_seeds")

_CURRENT: list = []  # the session of this process while it runs (for run_main's Ctrl-C message)


def current_session() -> Optional["RunSession"]:
    return _CURRENT[-1] if _CURRENT else None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: carries the session, so the message can name its folder and what it kept."""

    def __init__(self, session: "RunSession"):
        super().__init__()
        self.session = session


class RunSession:
    """An open, locked run folder and the pieces of the run finished in it (see the module docstring)."""

    def __init__(self, experiment: str, folder: RunFolder, settings: dict, resumed: bool, done: dict):
        self.experiment, self.folder, self.settings, self.resumed = experiment, folder, settings, resumed
        self.done = done  # {piece: its result}, in the order they finished
        self.complete = False  # a resumed run that had ended whole (mark_complete): it trains and writes nothing
        self.interrupted_in: Optional[str] = None
        self.partial: Optional[str] = None  # what the piece in progress saved of itself (a checkpoint), in words
        self._current: Optional[str] = None

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def name(self) -> str:
        return self.folder.name

    def is_done(self, key: str) -> bool:
        return key in self.done

    def result(self, key: str) -> Any:
        return self.done[key]

    def begin(self, key: str, *subfolders: str) -> None:
        """Start piece ``key``; folders an interrupted earlier attempt left half-written are removed first."""
        self._current = key
        for name in subfolders:
            check_run_name(name)
            target = self.path / name
            if target.is_symlink():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)

    def finish(self, key: str, result: Any) -> None:
        """Record piece ``key`` as done with its (JSON) result: a resume after this point keeps it."""
        self.done[key] = result
        self._current = None
        write_json({"done": self.done}, self.path / PROGRESS_NAME)

    def mark_complete(self) -> None:
        """Record that the run ended whole (results and summary written): a resume then says so and writes
        nothing. A script calls it last, once everything it writes is written."""
        write_json({"done": self.done, "complete": True}, self.path / PROGRESS_NAME)

    def announce(self) -> None:
        """Say what a resumed run resumes and from where (a script that checks its checkpoints first calls this
        itself, after the check: ``start_run(..., announce=False)``)."""
        if not self.resumed:
            return
        if self.folder.chosen:
            print(self.folder.chosen)
        if self.complete:
            print(f"{self.experiment}: run {self.name!r} ({self.path}) is already complete: {self.saved()}; nothing "
                  f"was trained or written")
        else:
            print(f"resuming {self.experiment} run {self.name!r} ({self.path}): {self.saved()}; the rest runs now")

    def saved(self) -> str:
        """What an interruption keeps, in words."""
        partial = f"; {self.partial}" if self.partial else ""
        if not self.done:
            return "nothing was finished yet" + partial
        shown = ", ".join(list(self.done)[-3:])
        last = "the last three: " if len(self.done) > 3 else ""
        return f"{len(self.done)} finished piece{'s' * (len(self.done) != 1)} kept ({last}{shown}){partial}"

    def __enter__(self) -> "RunSession":
        _CURRENT.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if _CURRENT and _CURRENT[-1] is self:
            _CURRENT.pop()
        self.folder.release()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            self.interrupted_in = self._current
            raise Interrupted(self) from None
        return False


def settings_of(cfg, extra: Optional[dict] = None) -> dict:
    """The settings a run's config.json records: every Config field, plus ``extra`` (resolved sizes, ...)."""
    return {**asdict(cfg), **(extra or {})}


def start_run(experiment: str, cfg, default: str, *, extra: Optional[dict] = None,
              compare: Optional[Iterable[str]] = None, announce: bool = True) -> RunSession:
    """Open (or, with cfg.resume, reopen) the run folder and write config.json; see the module docstring.

    ``cfg`` needs ``logdir``, ``run`` and ``resume``. ``compare``: the keys a resume must find unchanged (default:
    every setting but NOT_SETTINGS). Raises ValueError (one line) for a bad name, a folder in use, an explicit --run
    that exists without --resume, a --resume with nothing to resume or with changed settings.
    """
    check_run_name(cfg.run)  # before anything is written
    if cfg.resume and cfg.run is not None and not (Path(cfg.logdir) / experiment / cfg.run).exists():
        raise ValueError(f"--resume: there is no run {cfg.run!r} in {Path(cfg.logdir) / experiment} to resume; check "
                         f"--run and --logdir, or leave --resume out to start it")
    folder = open_run_folder(cfg.logdir, experiment, cfg.run, default, resume=cfg.resume)
    try:
        settings = settings_of(cfg, extra)
        config_path = folder.path / "config.json"
        saved = read_json(config_path, "the settings file")
        progress = read_json(folder.path / PROGRESS_NAME, "the progress file")
        if not cfg.resume:
            if folder.existed and folder.holds_files():
                hint = " pass --resume to continue it," if saved is not None else ""
                raise ValueError(f"run {folder.name!r} already exists in {folder.path};{hint} pass another --run "
                                 f"NAME, or leave --run out for a new folder")
            done, complete = {}, False
        else:
            if saved is None:
                raise ValueError(f"--resume: {folder.path} holds no run to resume (no config.json); leave --resume "
                                 f"out to start one")
            keys = compare if compare is not None else [k for k in settings if k not in NOT_SETTINGS]
            changed = {k: (saved[k], settings[k]) for k in keys if k in saved and saved[k] != settings[k]}
            if changed:
                listed = ", ".join(f"--{k.replace('_', '-')} {_shown(a)} (now {_shown(b)})"
                                   for k, (a, b) in changed.items())
                raise ValueError(f"--resume: run {folder.name!r} in {folder.path} was started with other settings: "
                                 f"{listed}; resume with its own (--config {config_path} replays them), or start a "
                                 f"new run with --run NAME")
            done = dict((progress or {}).get("done") or {})
            complete = bool((progress or {}).get("complete")) and (folder.path / "results.json").is_file()
        if not cfg.resume or saved is None:
            write_json({**settings, "run": folder.name}, config_path)
    except BaseException:
        folder.release()
        raise
    session = RunSession(experiment, folder, settings, bool(cfg.resume), done)
    session.complete = bool(cfg.resume) and complete
    if announce and not getattr(cfg, "quiet", False):
        session.announce()
    return session


def _shown(value) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)
