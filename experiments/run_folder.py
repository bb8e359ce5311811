"""Run folders, ``<logdir>/<experiment>/<run>``: named safely, never reused by accident, locked while a run uses them.

What every script that writes a run folder gets from ``open_run_folder``:

- the name is checked before anything is written: one folder name, no path separators, not "." or ".." (so
  ``--run ../../x`` is refused before a file appears anywhere);
- the default name (no ``--run``) never collides: when ``<default>`` exists, the run takes ``<default>-2``,
  ``<default>-3``, ... (claimed with an atomic mkdir, so two runs started at once get two folders). With resume it
  is the newest of them that is the user's own (the folder, its settings and checkpoints owned by the user, none a
  link), and ``folder.chosen`` says which and why. Only an explicit ``--run NAME`` can meet an existing run, and
  each script says what then happens (learning_modes resumes or adds modes; the others resume or refuse);
- a run folder that is a symbolic link or another user's is refused;
- a lock: ``fcntl.flock`` on ``<run>/.lock``, held until the run ends (the operating system drops it when the
  process dies, so a killed run never leaves a stale lock), opened with O_NOFOLLOW and refused unless it is the
  user's own regular file. A second run on the same folder is refused with a message that names the folder and the
  process holding it;
- a logdir that is a file, a read-only folder or a folder that cannot be created is one error naming the path.

And what a script needs to keep what a folder already holds: ``read_json`` (a file another run wrote, or an error
naming it; a symbolic link is refused), ``merge_results`` (results.json keeps the entries of earlier runs) and ``changed_settings`` (what a
resume or an added mode would change, compared with the config.json a run wrote).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Iterable, Optional

from manual_backprop.checkpoint import write_json

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the folder rules still hold)
    fcntl = None

__all__ = ["RunFolder", "open_run_folder", "check_run_name", "read_json", "merge_results", "changed_settings",
           "LOCK_NAME"]

LOCK_NAME = ".lock"


def check_run_name(name: Optional[str]) -> None:
    """--run must be one folder name (checked before any write); None is the script's default name."""
    if name is None:
        return
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"--run must be a non-empty folder name, but got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ValueError(f"--run must be one folder name without path separators, but got {name!r}")


class RunFolder:
    """One run's folder, locked (on POSIX) until ``release`` or the end of the ``with`` block.

    Attributes: ``path``; ``name`` (the folder's name, the default's numbered variant included); ``explicit``
    (the name came from --run); ``existed`` (the folder was there before this run).
    """

    def __init__(self, path: Path, name: str, explicit: bool, existed: bool):
        self.path, self.name, self.explicit, self.existed = path, name, explicit, existed
        self.chosen: Optional[str] = None  # with --resume and no --run: which folder was chosen, and why
        self._fd: Optional[int] = None

    def lock(self) -> None:
        """Take ``<run>/.lock``: a regular file of this user's, never followed through a symbolic link."""
        lock = self.path / LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(lock, flags, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ValueError(f"the lock {lock} is a symbolic link; a run folder's lock must be a plain file "
                                 f"(remove the link, or pass --run NAME for another folder)") from None
            raise ValueError(f"cannot use the run folder {self.path}: {err.strerror} ({lock})") from None
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif hasattr(os, "getuid") and info.st_uid != os.getuid():
            problem = f"belongs to another user (uid {info.st_uid})"
        if problem:
            os.close(fd)
            raise ValueError(f"the lock {lock} {problem}; a run folder's lock must be your own plain file (pass "
                             f"--run NAME for another folder)")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                who = f" (process {holder})" if holder.isdigit() else ""
                raise ValueError(f"the run folder {self.path} is in use by another run{who}; wait for it to end, or "
                                 f"pass --run NAME for another folder") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def holds_files(self) -> bool:
        """Whether the folder holds anything besides the lock (a run was written here before)."""
        return any(p.name != LOCK_NAME for p in self.path.iterdir())

    def release(self) -> None:
        """Give the lock up; the lock file stays (removing it would let two runs lock two different files)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, {'locked' if self._fd is not None else 'released'})"


def _make_dir(path: Path, what: str, **kwargs) -> None:
    try:
        path.mkdir(**kwargs)
    except FileExistsError:
        if not path.is_dir():
            raise ValueError(f"{what} {path} exists but is not a folder") from None
        raise
    except OSError as err:
        raise ValueError(f"cannot create {what} {path}: {err.strerror or err}") from None


def open_run_folder(logdir, experiment: str, run: Optional[str], default: str, *, resume: bool = False) -> RunFolder:
    """Check the name, pick (or create) the run folder under ``<logdir>/<experiment>``, and lock it.

    ``run``: the --run name, or None for ``default`` (a fresh numbered folder when it exists, or with ``resume``
    the newest existing one that is the user's own: see ``_resumable``; ``folder.chosen`` says which and why).
    Raises ValueError naming the folder for a bad name, a folder that cannot be made or locked, one that another
    run holds, or one that is a symbolic link or another user's.
    """
    check_run_name(run)
    check_run_name(default)
    base = Path(logdir) / experiment
    for parent in (Path(logdir), base):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--logdir {logdir}: {parent} exists but is not a folder")
    try:
        _make_dir(base, "the log folder", parents=True, exist_ok=True)
    except FileExistsError:
        pass
    if run is not None:
        path = base / run
        existed = os.path.lexists(path)
        if existed:
            problem = _not_own_folder(path)
            if problem:
                raise ValueError(f"--run {run}: {path} {problem}")
        else:
            try:
                _make_dir(path, "the run folder")
            except FileExistsError:  # another run created it a moment ago: the lock decides
                existed = True
        folder = RunFolder(path, run, explicit=True, existed=existed)
    else:
        folder = _default_folder(base, default, resume)
    folder.lock()
    return folder


def _not_own_folder(path: Path) -> Optional[str]:
    """Why ``path`` cannot be this user's run folder (None when it can): a link, not a folder, another's."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link; a run folder must be a folder of its own"
    if not stat.S_ISDIR(info.st_mode):
        return "exists but is not a folder"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"belongs to another user (uid {info.st_uid})"
    return None


def _resumable(path: Path) -> Optional[str]:
    """Why ``path`` is not a run this user can resume (None when it is): the folder and every settings file and
    checkpoint in it (config.json, progress.json, *.pt, one level of subfolders) must be the user's own."""
    problem = _not_own_folder(path)
    if problem:
        return problem
    found = [p for pattern in ("config.json", "progress.json", "*.pt", "*/config.json", "*/*.pt")
             for p in path.glob(pattern)]
    if not found:
        return "holds no settings or checkpoint of a run"
    for p in found:
        info = os.lstat(p)
        if stat.S_ISLNK(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            return f"holds {p.relative_to(path)}, which another user wrote (or a link)"
    return None


def _default_folder(base: Path, default: str, resume: bool) -> RunFolder:
    pattern = re.compile(re.escape(default) + r"(?:-(\d+))?")
    taken = sorted((int(m.group(1) or 1), p.name) for p in base.iterdir() if (m := pattern.fullmatch(p.name)))
    if resume:
        skipped = []
        for _, name in reversed(taken):
            problem = _resumable(base / name)
            if problem is None:
                folder = RunFolder(base / name, name, explicit=False, existed=True)
                folder.chosen = (f"--resume without --run: resuming {base / name}, the newest run of the default "
                                 f"name {default!r} that is yours" + (f" (skipped {', '.join(skipped)})" if skipped
                                                                      else ""))
                return folder
            skipped.append(f"{name}: {problem}")
        listed = f"; skipped {'; '.join(skipped)}" if skipped else ""
        raise ValueError(f"--resume: no run of the default name {default!r} of yours in {base} to resume{listed}; "
                         f"pass --run NAME to name the run")
    number = 1
    while True:
        name = default if number == 1 else f"{default}-{number}"
        try:
            _make_dir(base / name, "the run folder")
            return RunFolder(base / name, name, explicit=False, existed=False)
        except FileExistsError:
            number += 1


# ---------------------------------------------------------------------------------------------------- what it holds
def read_json(path: Path, what: str) -> Optional[dict]:
    """The JSON object in ``path``, None if there is no such file; ValueError naming it if it cannot be used
    (a symbolic link is refused: a run folder's files are the run's own, never another file's keys)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{what} {path} is a symbolic link; a run folder's files must be its own (remove the "
                             f"link)") from None
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); move it away to start over") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} must hold a JSON object, but holds {type(value).__name__}")
    return value


def merge_results(path: Path, entries: dict) -> dict:
    """Write results.json with ``entries`` added to (or replacing the same keys of) what the file already holds."""
    merged = {**(read_json(path, "the results file") or {}), **entries}
    write_json(merged, path)
    return merged


def changed_settings(saved: dict, now: dict, keys: Iterable[str]) -> dict:
    """{key: (saved value, value now)} for each of ``keys`` whose value differs (a key the file lacks is skipped:
    a config.json from an older version of the script)."""
    return {k: (saved[k], now[k]) for k in keys if k in saved and saved[k] != now[k]}
