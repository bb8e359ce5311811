"""Checkpoint and JSON files: one atomic writer, and a loader that never runs code from a file.

Every file a run writes (checkpoints, config.json, results.json) goes through ``atomic_write``: the bytes go to a
temporary file in the same folder, are flushed to disk (fsync), and the temporary file is renamed over the target
(os.replace, atomic on POSIX). A reader never sees half a file, and a crash mid-write leaves the previous version
intact. The file gets the mode the user's umask gives (as ``open`` would), not mkstemp's private 0600.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Union

import torch

__all__ = ["atomic_write", "save_checkpoint", "load_checkpoint", "write_json"]

PathLike = Union[str, os.PathLike]  # a path a user may pass: str, pathlib.Path, any os.PathLike


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: PathLike, write: Callable, *, binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a read-only or missing folder: name the file that could not be written
        raise type(err)(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None:  # disk full, folder turned read-only, ...
            raise type(err)(err.errno, f"cannot write {path}: {err.strerror or err}") from None
        raise


def save_checkpoint(obj, path: PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically. The bytes are made in memory and then written: torch's zip writer
    turns a failed write (a full disk) into a RuntimeError that names neither file nor cause, while a plain write
    gives atomic_write the OSError it names the file by."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: PathLike) -> dict:
    """torch.load a checkpoint to the CPU with ``weights_only=True``: plain data only, never code from the file.

    A checkpoint holds tensors (the generator state is a uint8 tensor), numbers, strings, None, lists and dicts,
    all of which the weights-only unpickler accepts. Raises ValueError naming the file for one that holds anything
    else (a pickle that would call a function or build an object: refused, nothing of it runs) and for one that
    is empty, truncated or not a checkpoint at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # the weights-only unpickler met a function or class: never run it
            raise ValueError(
                f"checkpoint {str(path)!r} holds objects that are not plain data (a pickle that would run code when "
                f"loaded), so it was not written by manual_backprop or was altered; refusing to load it. Delete it "
                f"(or the run folder) and start the run again"
            ) from None
        reason = "not a checkpoint"
    except EOFError:
        reason = "the file is empty or cut short"
    except PermissionError as err:
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({err.strerror}); check its permissions") from None
    except Exception as err:  # noqa: BLE001 (zip reader, OS and format errors all mean a damaged file)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = f"{first[:120]}"
    raise ValueError(
        f"checkpoint {str(path)!r} cannot be read ({reason}): it is damaged (empty, truncated or overwritten). "
        f"Restore it from a backup, or delete it to start that run over"
    )


def write_json(obj, path: PathLike) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    def write(f):
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")

    atomic_write(path, write, binary=False)
