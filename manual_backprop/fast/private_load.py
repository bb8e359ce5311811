"""Loading compiled code this process will run: only from a folder nobody but this user can change, and only the
very file that was checked.

Three steps, each closing a way in for another local user (issue 20 item 1):

1. ``private_folder`` checks the folder by path: the current user owns it and nobody else can write to it, nor to
   any folder on the way (which could rename it and put another in its place).
2. ``open_private_folder`` opens that folder again by handle, one component at a time from ``/`` with
   O_DIRECTORY | O_NOFOLLOW relative opens, and checks every handle with fstat by the same rules: a folder swapped
   for a link or for another folder after step 1 is refused, and what the handle names cannot change afterwards.
3. ``load_private_library`` opens the library relative to that handle with O_RDONLY | O_NOFOLLOW, checks the open
   file with fstat (a regular file of this user's that nobody else can write) and dlopens that open file itself,
   ``/proc/self/fd/N``; where there is no /proc, it copies the bytes it read into a fresh private folder, checks
   the copy's sha256 against them, and loads the copy. A file swapped in by path after the check is never loaded.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Optional

from .common import FastPathUnavailable

__all__ = ["private_folder", "open_private_folder", "load_private_library", "PROC_FD"]

PROC_FD = "/proc/self/fd"  # where an open file can be named (Linux); elsewhere the verified private copy
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# The libraries loaded through /proc/self/fd/N keep their descriptor open for the life of the process: dlopen
# finds an already loaded library by its name, so a number closed and reused by the next kernel would hand back
# the earlier library.
_KEPT_OPEN: list = []


def _refuse(folder, path, why):
    raise FastPathUnavailable(f"the cache folder {folder} is not private to this user: {path} {why}; not loading "
                              "code from it")


def _check_folder(folder, path, info, last: bool) -> None:
    """The rules for one folder: the last one this user's and writable by nobody else; every one on the way owned
    by root or this user and writable by nobody else unless sticky (like /tmp, where others cannot rename ours)."""
    uid = os.getuid()
    writable = info.st_mode & 0o022
    if last and (info.st_uid != uid or writable):
        _refuse(folder, path, f"has owner uid {info.st_uid} and mode {oct(info.st_mode & 0o7777)} (it must be this "
                              f"user's, uid {uid}, and writable by nobody else)")
    if not last and (info.st_uid not in (0, uid) or (writable and not info.st_mode & stat.S_ISVTX)):
        _refuse(folder, path, f"on the way has owner uid {info.st_uid} and mode {oct(info.st_mode & 0o7777)}: "
                              "another user could replace what lies below it")


def private_folder(folder: Optional[Path]) -> Path:
    """``folder``, created with mode 0700 if missing, if the current user owns it and nobody else can write to it,
    nor to any folder on the way to it (``_check_folder``); returned without symbolic links. Links on the way are
    followed only where they lie in such a folder and belong to root or this user. None: a fresh private temporary
    folder, whose parents are checked the same way."""
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="manual_backprop_"))
    folder = Path(os.path.abspath(folder))
    uid = os.getuid()
    parts, current, hops = list(folder.parts[1:]), Path(folder.anchor), 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        path = current / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if info.st_uid not in (0, uid) or hops > 40:
                _refuse(folder, path, f"is a symbolic link of uid {info.st_uid}")
            target = Path(os.readlink(path))
            target = target if target.is_absolute() else current / target
            parts, current = [*target.parts[1:], *parts], Path(target.anchor)
            continue
        if not stat.S_ISDIR(info.st_mode):
            _refuse(folder, path, "is not a folder")
        last = not parts
        if last and info.st_uid == uid and info.st_mode & 0o022:
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o022)  # our own folder, made group- or world-writable
            info = os.lstat(path)
        _check_folder(folder, path, info, last)
        current = path
    return current


def open_private_folder(folder: Path) -> int:
    """A descriptor of ``folder`` (as ``private_folder`` returned it: absolute, no links), opened one component at
    a time from its root with O_NOFOLLOW, every handle checked with fstat by ``_check_folder``'s rules. The caller
    closes it. Raises FastPathUnavailable when a component is (now) a link, not a folder, or not private."""
    folder = Path(folder)
    if os.open not in os.supports_dir_fd:
        raise FastPathUnavailable("this system cannot open files relative to a folder handle; not loading code")
    fd = os.open(folder.anchor, _DIR_FLAGS)
    try:
        path, parts = Path(folder.anchor), folder.parts[1:]
        for i, part in enumerate(parts):
            path = path / part
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    _refuse(folder, path, "changed after it was checked (it is now a symbolic link, a file or "
                                          "gone)")
                raise
            os.close(fd)
            fd = child
            _check_folder(folder, path, os.fstat(fd), last=i == len(parts) - 1)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _copy_bytes(data: bytes) -> bytes:
    """What the private copy is written with (the identity; a test replaces it to show the digest is checked)."""
    return data


def load_private_library(dir_fd: int, name: str, shown: Path) -> ctypes.CDLL:
    """dlopen the library ``name`` of the folder ``dir_fd`` (``shown``: its path, for messages): the very file
    opened and checked. FileNotFoundError when there is none (the caller compiles it); FastPathUnavailable when it
    is a link or not a regular file of this user's that only this user can write."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FastPathUnavailable(f"{shown} is a symbolic link; not loading it") from None
        raise
    keep = False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise FastPathUnavailable(f"{shown} is not a regular file of this user that only this user can write "
                                      f"(owner uid {info.st_uid}, mode {oct(info.st_mode & 0o7777)}); not loading it")
        if os.path.isdir(PROC_FD):
            lib = ctypes.CDLL(f"{PROC_FD}/{fd}")
            keep = True
            _KEPT_OPEN.append(fd)
            return lib
        return _load_copy(fd, name, shown)
    finally:
        if not keep:
            os.close(fd)


def _load_copy(fd: int, name: str, shown: Path) -> ctypes.CDLL:
    """No /proc: the bytes read from the checked file, copied into a fresh private folder, checked by sha256 and
    loaded from there (nobody but this user can write that folder); the copy is removed once loaded."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    folder = private_folder(Path(tempfile.mkdtemp(prefix="manual_backprop_load_")))
    try:
        copy = folder / name
        out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o700)
        with os.fdopen(out, "wb") as f:
            f.write(_copy_bytes(data))
        with open(copy, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                raise FastPathUnavailable(f"the private copy of {shown} does not match the digest of the file that "
                                          "was checked; not loading it")
        return ctypes.CDLL(str(copy))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
