"""Splitting into train and test (seeded, stratified by class) and standardizing with the training split's statistics.

Shared by every source of data (generated, packaged, the user's files): the seed and test-fraction checks, the
split itself, and ``finish_dataset``, which standardizes (when asked), records the statistics and wraps a Dataset.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from ..checks import check_seed
from .dataset import Dataset


def train_test_split(x: Tensor, y: Tensor, test_fraction: float, seed: int, *, stratify: Optional[bool] = None):
    """Split the rows of x and y into a shuffled training and test set, seeded.

    round(N * test_fraction) rows (at least 1, at most N - 1) go to the test set. With ``stratify`` (default: when y
    holds class indices, a 1-D integer tensor) every class keeps its share in both splits.

    Returns:
        x_train, y_train, x_test, y_test
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"x and y must be torch.Tensors, but got {type(x).__name__} and {type(y).__name__}")
    if x.shape[:1] != y.shape[:1]:
        raise ValueError(f"x and y must have the same number of rows, but got {x.shape[0]} and {y.shape[0]}")
    test_fraction = check_fraction(test_fraction)
    seed = check_seed("seed", seed)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must have at least 2 rows to split into train and test, but got {n}")
    if stratify is None:
        stratify = y.dim() == 1 and not y.is_floating_point() and not y.is_complex()
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = split_indices(y.cpu(), n_test_rows(n, test_fraction), generator, stratify)
    train_idx, test_idx = train_idx.to(x.device), test_idx.to(x.device)
    return x[train_idx], y[train_idx.to(y.device)], x[test_idx], y[test_idx.to(y.device)]


def standardize(x_train: Tensor, x_test: Tensor):
    """Scale each feature to mean 0, std 1 using the TRAINING split's statistics, applied to both splits.

    The std is the population std (divide by N). A constant feature (std 0, or below float rounding of its mean)
    gets std 1, so it becomes 0 rather than NaN. Statistics are computed in float64.

    Returns:
        x_train_s, x_test_s, mean (d,), std (d,), in x_train's dtype.
    """
    for name, t in (("x_train", x_train), ("x_test", x_test)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() != 2:
            got = f"shape {tuple(t.shape)}, dtype {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D floating-point tensor (N, d), but got {got}")
    if x_train.shape[0] < 1 or x_test.shape[1] != x_train.shape[1]:
        raise ValueError(
            f"x_train must have at least one row and x_test its {x_train.shape[1]} features, "
            f"but got x_train {tuple(x_train.shape)} and x_test {tuple(x_test.shape)}"
        )
    x64 = x_train.double()
    mean = x64.mean(dim=0)                                       # (d,)
    std = x64.std(dim=0, correction=0)                           # (d,)
    constant = std <= torch.finfo(x_train.dtype).eps * mean.abs()
    std = torch.where(constant, torch.ones_like(std), std)
    x_train_s = ((x64 - mean) / std).to(x_train.dtype)
    x_test_s = ((x_test.double() - mean.to(x_test.device)) / std.to(x_test.device)).to(x_test.dtype)
    return x_train_s, x_test_s, mean.to(x_train.dtype), std.to(x_train.dtype)


def finish_dataset(name, x_tr, y_tr, x_te, y_te, num_classes, do_standardize, dtype, info, *,
                   columns: Optional[list] = None, target: str = "the target") -> Dataset:
    """Standardize in float64 (when asked), record the statistics, cast the inputs to dtype.

    The final tensors are checked: finite values can still overflow (a column near 1e308 makes the float64 mean
    and std infinite; 1e39 is inf in float32), and the error then names the source and the column (``columns[j]``
    describes feature j, ``target`` the target) instead of leaving NaN for a later error to find.
    """
    source = str(info.get("source", name))
    source = source.split(" ", 2)[2] if source.startswith(("CSV file ", "NPZ file ")) else source
    raw_tr, raw_te = x_tr, x_te
    if do_standardize:
        x_tr, x_te, mean, std = standardize(x_tr, x_te)
        info = {**info, "standardized": True, "mean": mean.tolist(), "std": std.tolist()}
    else:
        info = {**info, "standardized": False}
    x_tr, x_te = x_tr.to(dtype), x_te.to(dtype)
    for x in (x_tr, x_te):
        bad = ~torch.isfinite(x).all(dim=0)  # (d,)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            column = columns[j] if columns is not None else f"column {j}"
            largest = torch.cat([raw_tr[:, j], raw_te[:, j]]).abs().max().item()
            if do_standardize:  # the float64 mean and std overflow, or a scaled outlier exceeds dtype
                raise ValueError(f"{source}, {column}: standardizing gives values that are not finite in {dtype}: "
                                 f"values as large as {largest:g} overflow the arithmetic; rescale the column, or "
                                 f"pass standardize=False")
            raise ValueError(f"{source}, {column}: values as large as {largest:g} do not fit {dtype} (largest finite "
                             f"{torch.finfo(dtype).max:g}); rescale the column, or use dtype float64")
    if num_classes is None:
        raw = torch.cat([y_tr, y_te])
        y_tr, y_te = y_tr.to(dtype), y_te.to(dtype)
        if not (bool(torch.isfinite(y_tr).all()) and bool(torch.isfinite(y_te).all())):
            raise ValueError(f"{source}, {target}: values as large as {raw.abs().max().item():g} do not fit {dtype} "
                             f"(largest finite {torch.finfo(dtype).max:g}); rescale the target, or use dtype float64")
    return Dataset(name, x_tr, y_tr, x_te, y_te, num_classes, info)


def n_test_rows(n: int, test_fraction: float) -> int:
    """round(n * test_fraction), kept in [1, n - 1] so neither split is empty."""
    return min(max(int(math.floor(n * test_fraction + 0.5)), 1), n - 1)


def split_indices(y: Tensor, n_test: int, generator: torch.Generator, stratify: bool):
    """(train_idx, test_idx), each in random order; n_test rows to the test side, shared out by class if stratify."""
    n = y.shape[0]
    perm = torch.randperm(n, generator=generator)
    if not stratify:
        return perm[n_test:], perm[:n_test]
    y_perm = y[perm]
    classes, counts = torch.unique(y_perm, return_counts=True)
    # Largest-remainder shares: each class gets floor(n_c * n_test / n), the rest go to the largest remainders.
    exact = counts.double() * n_test / n
    quota = exact.floor().long()
    rest = n_test - int(quota.sum())
    if rest > 0:
        order = torch.argsort(exact - quota.double(), descending=True, stable=True)
        quota[order[:rest]] += 1
    test_parts, train_parts = [], []
    for c, q in zip(classes, quota.tolist()):
        members = perm[y_perm == c]                  # this class's rows, in random order
        test_parts.append(members[:q])
        train_parts.append(members[q:])
    train_idx, test_idx = torch.cat(train_parts), torch.cat(test_parts)
    # Shuffle again so neither split is sorted by class (minibatches should mix classes).
    train_idx = train_idx[torch.randperm(train_idx.shape[0], generator=generator)]
    test_idx = test_idx[torch.randperm(test_idx.shape[0], generator=generator)]
    return train_idx, test_idx


def check_fraction(test_fraction) -> float:
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real)
            or not 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, but got {test_fraction!r}")
    return float(test_fraction)
