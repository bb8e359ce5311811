"""``load_npz``: the user's data from a NumPy .npz file, validated with errors that name the file and the array."""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch

from .dataset import Dataset
from .user_files import check_file, check_task, class_indices, dataset_from_arrays


def load_npz(
    path,
    *,
    x_key: str = "x",
    y_key: str = "y",
    task: str = "auto",
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype=torch.float32,
    name: Optional[str] = None,
) -> Dataset:
    """The user's data from a NumPy .npz file (``np.savez(path, x=..., y=...)``).

    Args:
        path: the .npz file (read with allow_pickle=False: numeric or text arrays only).
        x_key, y_key: names of the input array (N, d) (or (N,), one feature) and the target array (N,) or (N, k).
            When the file also holds ``{x_key}_test`` and ``{y_key}_test``, those are the test split and
            test_fraction is not used.
        task: "auto": integer, bool or text targets are class labels (mapped, sorted, to indices 0..K-1, labels in
            ``info["classes"]``), floating targets are regression targets (N, k); or "classification" /
            "regression" to say so.
        test_fraction, seed, standardize, dtype, name: as in load_csv.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the array, for a missing key, a wrong shape, a non-numeric array, or a
            NaN/infinite value (with its row and column).
    """
    path = check_file(path, "NPZ")
    task = check_task(task)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # a bad zip, a plain .npy, ...: all mean "not an npz we can read"
        raise ValueError(f"{path} is not a readable .npz file: {err}") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{path} holds a single array, not an .npz archive of named arrays; save it with np.savez")
    with archive:
        keys = list(archive.files)
        has_test = [k in keys for k in (f"{x_key}_test", f"{y_key}_test")]
        if any(has_test) and not all(has_test):
            raise ValueError(
                f"{path} must hold both {x_key}_test and {y_key}_test for a given test split, or neither, "
                f"but holds only {(f'{x_key}_test', f'{y_key}_test')[has_test.index(True)]}"
            )
        splits = ["", "_test"] if all(has_test) else [""]
        arrays = {}
        for suffix in splits:
            for role, key in (("x", x_key), ("y", y_key)):
                k = key + suffix
                if k not in keys:
                    raise ValueError(
                        f"{path} has no array {k!r} ({role}_key); its arrays are: {', '.join(keys) or 'none'}"
                    )
                _check_array_header(archive, k, path)
                try:
                    arrays[role + suffix] = np.asarray(archive[k])
                except ValueError as err:
                    raise ValueError(f"{path}, array {k!r}: cannot be read without pickle ({err})") from None

    xs, ys = [], []
    for suffix in splits:
        x, y = arrays["x" + suffix], arrays["y" + suffix]
        xk, yk = x_key + suffix, y_key + suffix
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{path}, array {xk!r}: features must be numeric, but got dtype {x.dtype}")
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{path}, array {xk!r}: must have shape (N, d) with N, d > 0, but got {x.shape}")
        x = x.astype(np.float64)
        _check_finite_array(x, path, xk)
        if y.ndim == 2 and y.shape[1] == 1 and y.dtype.kind != "f":
            y = y[:, 0]
        if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{path}, array {yk!r}: must have shape ({x.shape[0]},) or ({x.shape[0]}, k), one row per row of "
                f"{xk!r}, but got {y.shape}"
            )
        if y.dtype.kind not in "biufUS":
            raise ValueError(f"{path}, array {yk!r}: targets must be numbers or text labels, but got dtype {y.dtype}")
        if y.dtype.kind == "f":
            _check_finite_array(y.reshape(len(y), -1), path, yk)
        xs.append(x)
        ys.append(y)
    if xs[0].shape[0] < 2 and len(splits) == 1:
        raise ValueError(f"{path}, array {x_key!r}: needs at least 2 rows to split into train and test, got 1")
    if len(splits) == 2 and xs[1].shape[1] != xs[0].shape[1]:
        raise ValueError(
            f"{path}: {x_key}_test must have the {xs[0].shape[1]} features of {x_key!r}, but has {xs[1].shape[1]}"
        )

    y_all = np.concatenate(ys) if ys[0].ndim == ys[-1].ndim else None
    if y_all is None:
        raise ValueError(f"{path}: {y_key!r} and {y_key}_test must have the same number of dimensions")
    kind = y_all.dtype.kind
    classify = task == "classification" or (task == "auto" and kind in "biuUS")
    if classify:
        if y_all.ndim == 2 and y_all.shape[1] == 1:
            y_all = y_all[:, 0]
        if y_all.ndim != 1:
            raise ValueError(f"{path}, array {y_key!r}: class labels must have shape (N,), but got {y_all.shape}")
        if kind == "f":
            if not np.all(y_all == np.round(y_all)):
                raise ValueError(f"{path}, array {y_key!r}: task='classification' needs integer labels, but "
                                 f"got values like {y_all[y_all != np.round(y_all)][0]!r}")
            y_all = y_all.astype(np.int64)
        labels = y_all.tolist()
        y, classes = class_indices(labels, path, f"array {y_key!r}")
    else:
        if kind not in "biuf":
            raise ValueError(
                f"{path}, array {y_key!r}: task='regression' needs numeric targets, but got dtype {y_all.dtype}"
            )
        y, classes = y_all.astype(np.float64).reshape(len(y_all), -1), None
    info = {"source": f"NPZ file {path}", "x_key": x_key, "y_key": y_key}
    names = {"columns": [f"array {x_key!r}, column {j}" for j in range(xs[0].shape[1])],
             "target": f"array {y_key!r}"}
    if len(splits) == 2:
        n_train = xs[0].shape[0]
        return dataset_from_arrays(name or path.stem, xs[0], y[:n_train], classes, xs[1], y[n_train:],
                                   test_fraction, seed, standardize, dtype, info, **names)
    return dataset_from_arrays(name or path.stem, xs[0], y, classes, None, None, test_fraction, seed, standardize,
                               dtype, info, **names)


def _check_finite_array(a: np.ndarray, path, key: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}, array {key!r}: values must be finite, but row {row}, column {col} (0-based) is {a[row, col]}"
        )


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _memory_bytes() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_array_header(archive, key: str, path) -> None:
    """Read array ``key``'s .npy header only and refuse an array the file cannot hold (a header claiming more data
    than its zip entry has) or that would not fit in memory, before numpy allocates it."""
    member = key + ".npy"
    try:
        info = archive.zip.getinfo(member)
        with archive.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
            data_bytes = info.file_size - f.tell()
    except (KeyError, AttributeError):
        return  # not a plain .npy member: numpy's own reading says what is wrong
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}, array {key!r}: its .npy header cannot be read ({err})") from None
    claimed = math.prod(shape) * dtype.itemsize
    what = f"{path}, array {key!r}: its header claims shape {tuple(shape)} {dtype} ({_bytes(claimed)})"
    if dtype.itemsize and claimed > data_bytes:
        raise ValueError(f"{what}, but the file holds {data_bytes} bytes of data: it is damaged or not written by "
                         "np.savez")
    memory = _memory_bytes()
    if memory is not None and claimed > memory:
        raise ValueError(f"{what}, more than this machine's memory ({_bytes(memory)})")
