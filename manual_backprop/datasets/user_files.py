"""What the user's-file loaders (load_csv, load_npz) share: the path and task checks, class labels to indices, and
turning the arrays read into a split, standardized Dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..checks import check_bool, check_seed, resolve_dtype
from .dataset import Dataset
from .splitting import check_fraction, finish_dataset, train_test_split

_TASKS = ("auto", "classification", "regression")


def dataset_from_arrays(name, x, y, classes, x_test, y_test, test_fraction, seed, standardize, dtype, info, *,
                        columns=None, target: str = "the target") -> Dataset:
    """Split (unless a test split is given), standardize and wrap numpy arrays read from a user's file.

    ``columns[j]`` names feature j as the file does and ``target`` the target, for errors about the final tensors.
    """
    test_fraction = check_fraction(test_fraction)
    seed = check_seed("seed", seed)
    dtype = resolve_dtype(dtype)
    check_bool("standardize", standardize)
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.int64 if classes is not None else torch.float64)
    if x_test is None:
        x_tr, y_tr, x_te, y_te = train_test_split(x, y, test_fraction, seed)
        info = {**info, "split": "seeded" + (", stratified" if classes is not None else ""),
                "test_fraction": test_fraction}
    else:
        x_tr, y_tr = x, y
        x_te, y_te = torch.as_tensor(x_test, dtype=torch.float64), torch.as_tensor(y_test, dtype=y.dtype)
        info = {**info, "split": "given by the file"}
    info.update(seed=seed, n_samples=int(x_tr.shape[0] + x_te.shape[0]))
    if classes is not None:
        info["classes"] = classes
    num_classes = len(classes) if classes is not None else None
    return finish_dataset(name, x_tr, y_tr, x_te, y_te, num_classes, standardize, dtype, info, columns=columns,
                          target=target)


def class_indices(labels: list, path, column: str):
    """Map class labels (ints or text) to indices 0..K-1 in sorted order; returns (indices int64 array, labels)."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(
            f"{path}, {column}: a classification target needs at least 2 classes, but every sample has the label "
            f"{classes[0]!r}; pass task='regression' for a numeric target"
        )
    index = {c: i for i, c in enumerate(classes)}
    classes = [c.item() if hasattr(c, "item") else c for c in classes]    # numpy scalars -> plain Python
    return np.array([index[v] for v in labels], dtype=np.int64), classes


def check_file(path, kind: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, but got {type(path).__name__}: {path!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{kind} file {path} is not a regular file")
    return path


def check_task(task) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, but got {task!r}")
    return task
