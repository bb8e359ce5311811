"""The event files of one RunLogger folder: one run per folder, and write errors that name the file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["EVENT_FILE_PREFIX", "NamedWriter", "check_no_other_run"]

EVENT_FILE_PREFIX = "events.out.tfevents."


def check_no_other_run(path: Path, resume: bool) -> None:
    """Refuse a folder that holds another run's event files (unless this run resumes there) or is not a folder."""
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        raise ValueError(f"RunLogger: {path} exists but is not a folder of its own (a file or a symbolic link)")
    if resume or not path.is_dir():
        return
    events = sorted(p.name for p in path.iterdir() if p.name.startswith(EVENT_FILE_PREFIX))
    if events:
        raise ValueError(f"RunLogger: {path} already holds the events of another run ({events[0]}"
                         f"{f' and {len(events) - 1} more' if len(events) > 1 else ''}); TensorBoard would mix their "
                         f"curves. Pass another run name, remove the folder, or resume=True to continue that run")


class NamedWriter:
    """A SummaryWriter (or its file_writer) whose OSErrors name the event file (a full disk, ``ulimit -f``)."""

    def __init__(self, inner, folder: Path):
        self._inner, self._folder = inner, folder

    def __getattr__(self, name):
        value = getattr(self._inner, name)
        if name == "file_writer":
            return NamedWriter(value, self._folder)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except OSError as err:
                events = sorted(self._folder.glob(EVENT_FILE_PREFIX + "*"), key=lambda p: p.stat().st_mtime)
                where = events[-1] if events else self._folder
                raise OSError(err.errno, f"cannot write the event file {where}: {err.strerror or err}") from None
        return call


def _quiet_writer_threads(args) -> None:
    """TensorBoard's writer thread re-raises a failed write after handing it to the caller's next call, which
    names the file: its own traceback on stderr would be a second, unnamed report of the same error."""
    if args.thread is not None and type(args.thread).__name__ == "_AsyncWriterThread" and \
            issubclass(args.exc_type, OSError):
        return
    _previous_hook(args)


_previous_hook = threading.excepthook
threading.excepthook = _quiet_writer_threads
