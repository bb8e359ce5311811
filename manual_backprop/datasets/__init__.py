"""Datasets for the lecture's networks: generated from a seed, shipped inside a package, or read from the user's file.

Nothing is ever downloaded.

- Logic gates ``xor``, ``and``, ``or``: the four points (0,0), (0,1), (1,0), (1,1) with the gate's output as a
  class index. The lecture's logic problems have no unseen data, so the test split IS the training set (a copy),
  and the inputs stay 0/1 (not standardized) unless ``standardize=True`` is asked for. ``n_samples``, ``noise``
  and ``test_fraction`` do not change them. ``and``/``or`` are linearly separable, ``xor`` is not.
- Synthetic 2-D clouds, drawn from a seeded CPU ``torch.Generator`` (scikit-learn is not needed):
  ``xor_noisy`` (Gaussian clouds around the four corners, XOR labels), ``moons`` (two interleaved half circles),
  ``circles`` (a small circle inside a large one), ``spirals`` (two interleaved spirals), ``blobs`` (Gaussian
  blobs, ``num_classes`` of them, 3 by default).
- Real and offline (the ``datasets`` extra): ``digits`` (scikit-learn's 8x8 handwritten digits, 1797 x 64,
  10 classes, read from the file that ships inside scikit-learn) and ``mnist1d`` (MNIST-1D, 40 features,
  10 classes, generated procedurally by the ``mnist1d`` package's ``make_dataset``, never its downloading
  ``get_dataset``).
- The user's own data: ``load_csv`` and ``load_npz``, validated with errors that name the file, the line and the
  column.

Every dataset is split into train and test (seeded; stratified by class for classification) and, by default,
standardized with the mean and std of the TRAINING split only, applied to both splits (so the test mean is close
to, not exactly, 0). The statistics are kept in ``info["mean"]`` and ``info["std"]``. Targets are class indices
(int64, shape (N,)) for classification and float columns (N, k) for regression; ``Dataset.targets`` gives the
one-hot or binary (N, 1) encodings the losses want. The same seed gives identical tensors.

Example:
    >>> ds = load_dataset("moons", n_samples=200, noise=0.1, seed=0)
    >>> ds.x_train.shape, ds.num_classes
    (torch.Size([150, 2]), 2)
    >>> y = ds.targets("train", "binary")          # (150, 1) float 0/1 for a sigmoid output
"""

from __future__ import annotations

import csv
import importlib
import math
import numbers
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .checks import resolve_dtype

__all__ = [
    "Dataset", "DATASETS", "load_dataset", "load_csv", "load_npz", "train_test_split", "standardize",
    "encode_targets", "ENCODINGS",
]

ENCODINGS = ("index", "onehot", "binary")
_EXTRA_HINT = "pip install 'manual-backprop[datasets]' (or: bash install.sh datasets)"
_TASKS = ("auto", "classification", "regression")


# ---------------------------------------------------------------------------------------------------- the container
@dataclass
class Dataset:
    """A train/test pair of inputs and targets, with rows as samples.

    Args:
        name: the dataset's name (a file's stem for user data).
        x_train, x_test: inputs, (N_train, d) and (N_test, d), floating.
        y_train, y_test: class indices (N,) int64 for classification; (N, k) floating for regression.
        num_classes: number of classes; None for regression.
        info: free-form description: source, noise, seed, split, standardization mean/std, class labels, ...
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: Optional[int]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 2:
                got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"x_{split} must be a 2-D floating-point tensor (N, d), but got {got}")
            if not isinstance(y, Tensor) or y.shape[:1] != x.shape[:1]:
                got = f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(f"y_{split} must be a tensor with one row per sample ({x.shape[0]}), but got {got}")
            if self.num_classes is None:
                if not y.is_floating_point() or y.dim() != 2:
                    raise ValueError(
                        f"y_{split} of a regression dataset (num_classes None) must be a floating (N, k) tensor, "
                        f"but got shape {tuple(y.shape)}, dtype {y.dtype}"
                    )
            elif y.dtype != torch.int64 or y.dim() != 1:
                raise ValueError(
                    f"y_{split} of a classification dataset must hold class indices, an int64 (N,) tensor, "
                    f"but got shape {tuple(y.shape)}, dtype {y.dtype}"
                )
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x_test must have the {self.x_train.shape[1]} features of x_train, but got {self.x_test.shape[1]}"
            )
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or not isinstance(self.num_classes, numbers.Integral)
            or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int or None, but got {self.num_classes!r}")

    @property
    def n_features(self) -> int:
        """d, the width of the network's input layer."""
        return int(self.x_train.shape[1])

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    def to(self, device=None, dtype=None) -> "Dataset":
        """A new Dataset on ``device`` with inputs (and regression targets) of ``dtype``; class indices stay int64."""
        dtype = None if dtype is None else resolve_dtype(dtype)

        def move(t: Tensor, cast: bool) -> Tensor:
            return t.to(device=device, dtype=dtype if cast else None)

        regression = self.num_classes is None
        return Dataset(
            name=self.name,
            x_train=move(self.x_train, True), y_train=move(self.y_train, regression),
            x_test=move(self.x_test, True), y_test=move(self.y_test, regression),
            num_classes=self.num_classes, info=dict(self.info),
        )

    def targets(self, split: str, encoding: str = "index") -> Tensor:
        """The targets of ``split`` ("train" or "test") in ``encoding``.

        encoding: "index" the class indices (N,) int64; "onehot" (N, num_classes); "binary" (N, 1) 0/1 for a
        two-class problem (one sigmoid output). The float encodings take the dtype of x. A regression dataset's
        targets are returned as stored, (N, k), for "index"; the class encodings do not apply to it.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
        y = getattr(self, f"y_{split}")
        if self.num_classes is None:
            if encoding != "index":
                raise ValueError(
                    f"encoding {encoding!r} needs class labels, but dataset {self.name!r} is a regression dataset "
                    f"(num_classes None); use encoding='index' to get its (N, {y.shape[1]}) float targets"
                )
            return y
        return encode_targets(y, self.num_classes, encoding, self.x_train.dtype)

    def __repr__(self) -> str:
        task = f"num_classes={self.num_classes}" if self.is_classification else f"regression k={self.y_train.shape[1]}"
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"{task}, dtype={self.x_train.dtype}, device={self.x_train.device})"
        )


# ---------------------------------------------------------------------------------------------------- building blocks
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
    test_fraction = _check_fraction(test_fraction)
    seed = _check_seed(seed)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must have at least 2 rows to split into train and test, but got {n}")
    if stratify is None:
        stratify = y.dim() == 1 and not y.is_floating_point() and not y.is_complex()
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = _split_indices(y.cpu(), _n_test(n, test_fraction), generator, stratify)
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


def encode_targets(y: Tensor, num_classes: int, encoding: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """Class indices y (N,) as "index" (N,) int64, "onehot" (N, num_classes) or "binary" (N, 1), floats of dtype.

    "binary" is the 0/1 target of a single sigmoid output and needs num_classes == 2.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, but got {encoding!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, but got {num_classes!r}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"shape {tuple(y.shape)}, dtype {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D integer tensor of class indices, but got {got}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"y must hold class indices in [0, {num_classes - 1}], but got values from {int(y.min())} to {int(y.max())}"
        )
    y = y.long()
    if encoding == "index":
        return y
    dtype = resolve_dtype(dtype)
    if encoding == "onehot":
        return torch.nn.functional.one_hot(y, num_classes).to(dtype)    # (N, num_classes)
    if num_classes != 2:
        raise ValueError(
            f"encoding 'binary' (one 0/1 output) needs num_classes == 2, but got {num_classes}; use 'onehot'"
        )
    return y.to(dtype).unsqueeze(1)                                       # (N, 1)


# ---------------------------------------------------------------------------------------------------- generators
# Each maker returns (x_train, y_train, x_test, y_test, info) with float64 inputs and int64 class indices; it owns
# its split because the logic gates have none (test = train) and MNIST-1D keeps its package's own.

_GATES = {
    "xor": ([0, 1, 1, 0], "XOR of two bits: not linearly separable, needs a hidden layer"),
    "and": ([0, 0, 0, 1], "AND of two bits: linearly separable"),
    "or": ([0, 1, 1, 1], "OR of two bits: linearly separable"),
}
_CORNERS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


def _make_gate(gate: str):
    def make(n_samples, noise, seed, test_fraction):
        labels, description = _GATES[gate]
        x = _CORNERS.clone()                                         # (4, 2)
        y = torch.tensor(labels, dtype=torch.int64)                 # (4,)
        info = {
            "description": description,
            "split": "none: the test split is a copy of the four training points (the lecture's logic problems "
                     "have no unseen data)",
        }
        return x, y, x.clone(), y.clone(), info
    return make


def _make_xor_noisy(n_samples, noise, seed, test_fraction):
    g = torch.Generator().manual_seed(seed)
    corner = torch.arange(n_samples) % 4                              # balanced: n/4 points per corner
    x = _CORNERS[corner] + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)   # (N, 2)
    y = torch.tensor(_GATES["xor"][0], dtype=torch.int64)[corner]
    info = {"description": "XOR clouds: Gaussian noise of std `noise` around the four corners of the unit square"}
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_moons(n_samples, noise, seed, test_fraction):
    g = torch.Generator().manual_seed(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    t_outer = torch.linspace(0, math.pi, n_outer, dtype=torch.float64)
    t_inner = torch.linspace(0, math.pi, n_inner, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_outer), torch.sin(t_outer)], dim=1)
    inner = torch.stack([1 - torch.cos(t_inner), 0.5 - torch.sin(t_inner)], dim=1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_outer, dtype=torch.int64), torch.ones(n_inner, dtype=torch.int64)])
    info = {"description": "two interleaved half circles (moons) with Gaussian noise of std `noise`"}
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_circles(n_samples, noise, seed, test_fraction, factor=0.5):
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor < 1:
        raise ValueError(f"factor (inner radius / outer radius) must be a number in (0, 1), but got {factor!r}")
    g = torch.Generator().manual_seed(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    t_outer = torch.arange(n_outer, dtype=torch.float64) * (2 * math.pi / n_outer)
    t_inner = torch.arange(n_inner, dtype=torch.float64) * (2 * math.pi / n_inner)
    outer = torch.stack([torch.cos(t_outer), torch.sin(t_outer)], dim=1)
    inner = factor * torch.stack([torch.cos(t_inner), torch.sin(t_inner)], dim=1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_outer, dtype=torch.int64), torch.ones(n_inner, dtype=torch.int64)])
    info = {"description": f"a circle of radius {factor} (class 1) inside one of radius 1 (class 0), "
                           f"Gaussian noise of std `noise`", "factor": float(factor)}
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_spirals(n_samples, noise, seed, test_fraction, turns=1.5):
    if isinstance(turns, bool) or not isinstance(turns, numbers.Real) or not 0 < turns <= 10:
        raise ValueError(f"turns must be a number in (0, 10], but got {turns!r}")
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n_c in enumerate((n_samples // 2, n_samples - n_samples // 2)):
        t = torch.arange(1, n_c + 1, dtype=torch.float64) / n_c                 # radius in (0, 1]
        theta = 2 * math.pi * turns * t + math.pi * c                              # the second arm is turned by pi
        xs.append(torch.stack([t * torch.cos(theta), t * torch.sin(theta)], dim=1))
        ys.append(torch.full((n_c,), c, dtype=torch.int64))
    x = torch.cat(xs) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat(ys)
    info = {"description": f"two interleaved spirals of {turns} turns, radius 0 to 1, Gaussian noise of std `noise`",
            "turns": float(turns)}
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_blobs(n_samples, noise, seed, test_fraction, num_classes=3, n_features=2):
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, but got {num_classes!r}")
    if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral) or n_features < 2:
        raise ValueError(f"n_features must be an int >= 2, but got {n_features!r}")
    if n_samples < 2 * num_classes:
        raise ValueError(
            f"n_samples must be at least 2 * num_classes = {2 * num_classes} for 'blobs', but got {n_samples}"
        )
    g = torch.Generator().manual_seed(seed)
    # Centres evenly on a circle in the first two features, its radius grown with num_classes so neighbouring
    # centres stay about 4 std apart (for noise 1); further features get uniform offsets in [-3, 3].
    radius = max(3.0, 2.0 / math.sin(math.pi / num_classes))
    phase = float(torch.rand(1, generator=g, dtype=torch.float64)) * 2 * math.pi
    angles = phase + 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
    centres = torch.zeros(num_classes, n_features, dtype=torch.float64)
    centres[:, 0], centres[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    if n_features > 2:
        centres[:, 2:] = 6 * torch.rand(num_classes, n_features - 2, generator=g, dtype=torch.float64) - 3
    y = torch.arange(n_samples) % num_classes                                     # balanced classes
    x = centres[y] + noise * torch.randn(n_samples, n_features, generator=g, dtype=torch.float64)
    info = {"description": f"{num_classes} Gaussian blobs of std `noise` in {n_features} features",
            "centres": centres.tolist()}
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_digits(n_samples, noise, seed, test_fraction):
    sklearn_datasets = _import_extra("sklearn.datasets", "scikit-learn", "digits")
    bunch = sklearn_datasets.load_digits()
    x = torch.as_tensor(np.asarray(bunch.data, dtype=np.float64))                # (1797, 64), pixel values 0..16
    y = torch.as_tensor(np.asarray(bunch.target, dtype=np.int64))                # (1797,)
    if n_samples > x.shape[0]:
        raise ValueError(f"n_samples must be at most {x.shape[0]} for 'digits' (all it has), but got {n_samples}")
    info = {"description": "8x8 handwritten digits shipped with scikit-learn (sklearn.datasets.load_digits), "
                           "64 pixel intensities 0..16, 10 classes; read from scikit-learn's own files, no download"}
    if n_samples < x.shape[0]:           # a seeded, stratified subset
        g = torch.Generator().manual_seed(seed)
        _, keep = _split_indices(y, n_samples, g, stratify=True)
        x, y = x[keep], y[keep]
        info["subset"] = f"{n_samples} of 1797 samples, stratified, seeded"
    return (*train_test_split(x, y, test_fraction, seed), info)


def _make_mnist1d(n_samples, noise, seed, test_fraction, **options):
    if n_samples % 10:
        raise ValueError(
            f"n_samples must be a multiple of 10 for 'mnist1d' (the package draws n_samples // 10 per digit), "
            f"but got {n_samples}"
        )
    mnist1d_data = _import_extra("mnist1d.data", "mnist1d", "mnist1d")
    args = mnist1d_data.get_dataset_args()
    args.num_samples, args.seed, args.train_split = n_samples, seed, 1.0      # we cut the test split ourselves
    for key, value in options.items():
        setattr(args, key, value)
    # make_dataset seeds numpy's and Python's global generators; put the caller's state back afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = mnist1d_data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = torch.as_tensor(np.asarray(data["x"], dtype=np.float64))                  # (N, 40), shuffled by the package
    y = torch.as_tensor(np.asarray(data["y"], dtype=np.int64))
    n_train = x.shape[0] - _n_test(x.shape[0], test_fraction)
    info = {
        "description": "MNIST-1D: 10 one-dimensional digit templates, padded, shifted, sheared, scaled and made "
                       "noisy, 40 features; generated procedurally by mnist1d.data.make_dataset, no download",
        "split": "the package's own: its seeded shuffle, the last round(N * test_fraction) samples are the test "
                 "split (n_samples=5000, seed=42, test_fraction=0.2 gives the reference MNIST-1D split)",
        "mnist1d_args": {k: v for k, v in vars(args).items() if k != "url"},
    }
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], info


@dataclass(frozen=True)
class _Spec:
    make: Callable
    n_samples: Optional[int]        # default size; None: fixed (the four points of a logic gate)
    noise: Optional[float]          # default noise; None: the dataset has no noise option
    standardize: bool               # the default of load_dataset(standardize=None)
    options: dict                   # extra keyword options and their defaults
    source: str
    min_samples: int = 4
    noise_ignored: bool = False     # logic gates accept (and ignore) noise


_MNIST1D_OPTIONS = {
    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2,
    "shear_scale": 0.75, "shuffle_seq": False, "final_seq_length": 40, "padding": [36, 60],
}

_SPECS = {
    "xor": _Spec(_make_gate("xor"), None, None, False, {}, "generated", noise_ignored=True),
    "and": _Spec(_make_gate("and"), None, None, False, {}, "generated", noise_ignored=True),
    "or": _Spec(_make_gate("or"), None, None, False, {}, "generated", noise_ignored=True),
    "xor_noisy": _Spec(_make_xor_noisy, 200, 0.2, True, {}, "generated"),
    "moons": _Spec(_make_moons, 200, 0.1, True, {}, "generated"),
    "circles": _Spec(_make_circles, 200, 0.05, True, {"factor": 0.5}, "generated"),
    "spirals": _Spec(_make_spirals, 400, 0.05, True, {"turns": 1.5}, "generated"),
    "blobs": _Spec(_make_blobs, 300, 1.0, True, {"num_classes": 3, "n_features": 2}, "generated"),
    "digits": _Spec(_make_digits, 1797, None, True, {}, "scikit-learn (shipped)", min_samples=20),
    "mnist1d": _Spec(_make_mnist1d, 5000, None, True, _MNIST1D_OPTIONS, "mnist1d (procedural)", min_samples=20),
}

DATASETS = tuple(_SPECS)


def load_dataset(
    name,
    *,
    n_samples: Optional[int] = None,
    noise: Optional[float] = None,
    seed: int = 0,
    test_fraction: float = 0.25,
    standardize: Optional[bool] = None,
    dtype=torch.float32,
    **kwargs,
) -> Dataset:
    """A named dataset (see DATASETS), or a user's file when ``name`` is a path ending in .csv or .npz.

    Args:
        name: one of DATASETS, or a path to a .csv (load_csv) or .npz (load_npz) file; kwargs go to that loader.
        n_samples: total samples before the split; None takes the dataset's default (xor_noisy 200, moons 200,
            circles 200, spirals 400, blobs 300, digits all 1797, mnist1d 5000, about 3 s to generate on one
            CPU core; a multiple of 10). The logic gates always have their four points.
        noise: std of the Gaussian noise of the synthetic sets; None takes the default (xor_noisy 0.2, moons 0.1,
            circles 0.05, spirals 0.05, blobs 1.0). Ignored by the logic gates; digits and mnist1d have no noise
            option (mnist1d's own are the keyword options iid_noise_scale and corr_noise_scale).
        seed: seeds both the generation and the train/test split; the same seed gives identical tensors.
        test_fraction: share of the samples in the test split, in (0, 1). Not used by the logic gates, whose test
            split is their training set.
        standardize: scale the features with the training split's mean and std; None takes the dataset's
            default: False for the logic gates xor/and/or (0/1 inputs, as in the lecture), True for all others.
        dtype: floating dtype of the inputs (class indices are always int64).
        kwargs: options of one dataset: circles ``factor`` (0.5), spirals ``turns`` (1.5), blobs ``num_classes``
            (3) and ``n_features`` (2), mnist1d the fields of ``mnist1d.data.get_dataset_args()``.

    Raises:
        ValueError: an unknown name (the message lists DATASETS) or an argument out of range.
        ModuleNotFoundError: digits without scikit-learn, mnist1d without mnist1d; install the ``datasets`` extra.
    """
    if isinstance(name, os.PathLike) or (isinstance(name, str) and name.lower().endswith((".csv", ".npz"))):
        for arg, value in (("n_samples", n_samples), ("noise", noise)):
            if value is not None:
                raise ValueError(f"{arg} does not apply to a file ({os.fspath(name)}), but got {arg}={value!r}")
        loader = load_npz if os.fspath(name).lower().endswith(".npz") else load_csv
        return loader(name, test_fraction=test_fraction, seed=seed,
                      standardize=True if standardize is None else standardize, dtype=dtype, **kwargs)
    if not isinstance(name, str) or name.lower() not in _SPECS:
        raise ValueError(
            f"name must be one of {', '.join(DATASETS)}, or a path ending in .csv or .npz, but got {name!r}"
        )
    key = name.lower()
    spec = _SPECS[key]
    seed = _check_seed(seed)
    test_fraction = _check_fraction(test_fraction)
    dtype = resolve_dtype(dtype)
    if standardize is None:
        standardize = spec.standardize
    elif not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True, False or None (the dataset's default), but got {standardize!r}")
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        valid = ", ".join(spec.options) if spec.options else "none"
        raise ValueError(f"unknown option {unknown[0]!r} for dataset {key!r}; its options are: {valid}")

    if n_samples is not None:
        n_samples = _check_n_samples(n_samples, spec.min_samples if spec.n_samples is not None else 1)
    if noise is not None:
        noise = _check_noise(noise)
        if spec.noise is None and not spec.noise_ignored:
            hint = " (its own noise options are iid_noise_scale and corr_noise_scale)" if key == "mnist1d" else ""
            raise ValueError(f"noise does not apply to dataset {key!r}{hint}, but got noise={noise!r}")
    used_n = spec.n_samples if n_samples is None or spec.n_samples is None else n_samples
    used_noise = spec.noise if noise is None or spec.noise is None else noise

    options = {**spec.options, **kwargs}
    x_tr, y_tr, x_te, y_te, info = spec.make(used_n, used_noise, seed, test_fraction, **options)
    num_classes = int(options.get("num_classes", 10 if key in ("digits", "mnist1d") else 2))
    info = {
        "source": spec.source, **info, "seed": seed,
        "n_samples": int(x_tr.shape[0] + (x_te.shape[0] if spec.n_samples is not None else 0)),
        "noise": used_noise, "test_fraction": None if spec.n_samples is None else test_fraction,
        **kwargs,
    }
    if spec.n_samples is None and (n_samples is not None or noise is not None):
        info["ignored"] = "n_samples and noise do not change a logic gate's four points"
    return _finish(key, x_tr, y_tr, x_te, y_te, num_classes, standardize, dtype, info)


# ---------------------------------------------------------------------------------------------------- user files
def load_csv(
    path,
    *,
    target_column: Union[int, str] = -1,
    header: Union[bool, str] = "auto",
    delimiter: str = ",",
    task: str = "auto",
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype=torch.float32,
    name: Optional[str] = None,
) -> Dataset:
    """The user's data from a CSV file: one sample per line, numeric feature columns and one target column.

    Args:
        path: the .csv file. Blank lines are skipped; a UTF-8 byte-order mark is accepted.
        target_column: the target's column, an index (0-based, negative counts from the end) or a header name.
        header: True, False, or "auto": the first line is a header when any of its fields is not a number.
        delimiter: the field separator.
        task: "auto": integer-valued (or text) targets are class labels, any other number a regression target;
            "classification" or "regression" to say so. Class labels (numbers or text) are mapped, sorted, to the
            indices 0..K-1; ``info["classes"]`` keeps the labels. Regression targets become a (N, 1) float column,
            never standardized.
        test_fraction, seed: the seeded (stratified for classes) train/test split.
        standardize: scale the features with the training split's mean and std.
        dtype: floating dtype of the inputs.
        name: the Dataset's name; default the file's stem.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and line (1-based, as an editor counts) and the column, for a row with the
            wrong number of fields, a NaN, infinite or empty value, or a feature column that is not numeric.
    """
    path = _check_file(path, "CSV")
    if header not in (True, False, "auto"):
        raise ValueError(f"header must be True, False or 'auto', but got {header!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, but got {delimiter!r}")
    task = _check_task(task)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file: {err}") from None
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from None
    rows = [(line, row) for line, row in rows if any(row)]               # skip blank lines
    if not rows:
        raise ValueError(f"{path} is empty: expected a header or data lines")

    first_line, first = rows[0]
    second = rows[1][1] if len(rows) > 1 else None
    has_header = header is True or (header == "auto" and _looks_like_header(first, second))
    names = first if has_header else None
    data = rows[1:] if has_header else rows
    width = len(first)
    for line, row in data:
        if len(row) != width:
            what = "the header" if has_header else "the first line"
            raise ValueError(
                f"{path}, line {line}: expected {width} fields like {what} (line {first_line}), but got {len(row)}"
            )
    if len(data) < 2:
        raise ValueError(f"{path} must hold at least 2 data lines to split into train and test, but has {len(data)}")
    if width < 2:
        raise ValueError(f"{path} must have at least 2 columns (features and a target), but has {width}")

    target = _resolve_target_column(target_column, width, names, path)

    def column_name(j: int) -> str:
        return f"column {names[j]!r} (index {j})" if names else f"column index {j}"

    feature_cols = [j for j in range(width) if j != target]
    x = np.empty((len(data), len(feature_cols)), dtype=np.float64)
    for i, (line, row) in enumerate(data):
        for k, j in enumerate(feature_cols):
            x[i, k] = _parse_float(row[j], path, line, column_name(j), what="feature")

    labels = [row[target] for _, row in data]
    lines = [line for line, _ in data]
    if "" in labels:
        raise ValueError(f"{path}, line {lines[labels.index('')]}, {column_name(target)}: empty target value; "
                         f"fill or remove missing values")
    numeric = [_is_number(v) for v in labels]
    if all(numeric):
        values = np.array([_parse_float(v, path, ln, column_name(target), what="target")
                           for v, ln in zip(labels, lines)])
        integral = np.all(values == np.round(values))
        if task == "classification" and not integral:
            i = int(np.nonzero(values != np.round(values))[0][0])
            raise ValueError(
                f"{path}, line {lines[i]}, {column_name(target)}: task='classification' needs integer class labels, "
                f"but got {labels[i]!r}"
            )
        if task == "regression" or (task == "auto" and not integral):
            y, classes = values.reshape(-1, 1), None
        else:
            y, classes = _class_indices([int(v) for v in values], path, column_name(target))
    elif not any(numeric) and task != "regression":
        y, classes = _class_indices(labels, path, column_name(target))
    else:
        bad = numeric.index(False) if task == "regression" or numeric.count(True) > numeric.count(False) \
            else numeric.index(True)
        expected = "numbers" if task == "regression" else "all numbers or all text class labels"
        raise ValueError(
            f"{path}, line {lines[bad]}, {column_name(target)}: the target must be {expected}, "
            f"but got {labels[bad]!r}"
        )

    info = {
        "source": f"CSV file {path}",
        "feature_names": [names[j] for j in feature_cols] if names else None,
        "target_name": names[target] if names else None,
        "target_column": target,
    }
    return _from_arrays(name or path.stem, x, y, classes, None, None, test_fraction, seed, standardize, dtype, info)


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
    path = _check_file(path, "NPZ")
    task = _check_task(task)
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
        y, classes = _class_indices(labels, path, f"array {y_key!r}")
    else:
        if kind not in "biuf":
            raise ValueError(
                f"{path}, array {y_key!r}: task='regression' needs numeric targets, but got dtype {y_all.dtype}"
            )
        y, classes = y_all.astype(np.float64).reshape(len(y_all), -1), None
    info = {"source": f"NPZ file {path}", "x_key": x_key, "y_key": y_key}
    if len(splits) == 2:
        n_train = xs[0].shape[0]
        return _from_arrays(name or path.stem, xs[0], y[:n_train], classes, xs[1], y[n_train:],
                            test_fraction, seed, standardize, dtype, info)
    return _from_arrays(name or path.stem, xs[0], y, classes, None, None, test_fraction, seed, standardize, dtype, info)


# ---------------------------------------------------------------------------------------------------- helpers
def _from_arrays(name, x, y, classes, x_test, y_test, test_fraction, seed, standardize, dtype, info) -> Dataset:
    """Split (unless a test split is given), standardize and wrap numpy arrays read from a user's file."""
    test_fraction = _check_fraction(test_fraction)
    seed = _check_seed(seed)
    dtype = resolve_dtype(dtype)
    if not isinstance(standardize, bool):
        raise ValueError(f"standardize must be True or False, but got {standardize!r}")
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
    return _finish(name, x_tr, y_tr, x_te, y_te, num_classes, standardize, dtype, info)


def _finish(name, x_tr, y_tr, x_te, y_te, num_classes, do_standardize, dtype, info) -> Dataset:
    """Standardize in float64 (when asked), record the statistics, cast the inputs to dtype."""
    if do_standardize:
        x_tr, x_te, mean, std = standardize(x_tr, x_te)
        info = {**info, "standardized": True, "mean": mean.tolist(), "std": std.tolist()}
    else:
        info = {**info, "standardized": False}
    if num_classes is None:
        y_tr, y_te = y_tr.to(dtype), y_te.to(dtype)
    return Dataset(name, x_tr.to(dtype), y_tr, x_te.to(dtype), y_te, num_classes, info)


def _n_test(n: int, test_fraction: float) -> int:
    """round(n * test_fraction), kept in [1, n - 1] so neither split is empty."""
    return min(max(int(math.floor(n * test_fraction + 0.5)), 1), n - 1)


def _split_indices(y: Tensor, n_test: int, generator: torch.Generator, stratify: bool):
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


def _class_indices(labels: list, path, column: str):
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


def _resolve_target_column(target_column, width: int, names, path) -> int:
    if isinstance(target_column, str):
        if not names:
            raise ValueError(
                f"target_column {target_column!r} is a column name, but {path} has no header line; "
                f"pass an index (0 to {width - 1}, or -1 for the last) or header=True"
            )
        if target_column not in names:
            raise ValueError(
                f"target_column must be one of the header's names ({', '.join(names)}) of {path}, "
                f"but got {target_column!r}"
            )
        return names.index(target_column)
    if isinstance(target_column, bool) or not isinstance(target_column, numbers.Integral):
        raise ValueError(f"target_column must be a column index or a header name, but got {target_column!r}")
    if not -width <= target_column < width:
        raise ValueError(
            f"target_column must be an index from {-width} to {width - 1} for the {width} columns of {path}, "
            f"but got {target_column}"
        )
    return int(target_column) % width


def _looks_like_header(first: list, second: Optional[list]) -> bool:
    """A header has text where the next line has a number (a text class column alone is no evidence)."""
    text = [c != "" and not _is_number(c) for c in first]
    if second is None or len(second) != len(first):
        return any(text)
    return any(t and _is_number(c) for t, c in zip(text, second))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_float(cell: str, path, line: int, column: str, what: str) -> float:
    if cell == "":
        raise ValueError(f"{path}, line {line}, {column}: empty {what} value; fill or remove missing values")
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(
            f"{path}, line {line}, {column}: {what} columns must be numeric, but got {cell!r}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}, {column}: {what} value is {cell!r}; values must be finite numbers")
    return value


def _check_finite_array(a: np.ndarray, path, key: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{path}, array {key!r}: values must be finite, but row {row}, column {col} (0-based) is {a[row, col]}"
        )


def _check_file(path, kind: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, but got {type(path).__name__}: {path!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{kind} file {path} is not a regular file")
    return path


def _check_task(task) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, but got {task!r}")
    return task


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, but got {seed!r}")
    return int(seed)


def _check_fraction(test_fraction) -> float:
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real)
            or not 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, but got {test_fraction!r}")
    return float(test_fraction)


def _check_n_samples(n_samples, minimum: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < minimum:
        raise ValueError(f"n_samples must be an int >= {minimum} (or None for the default), but got {n_samples!r}")
    return int(n_samples)


def _check_noise(noise) -> float:
    if (isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise)
            or noise < 0):
        raise ValueError(f"noise must be a finite number >= 0 (a std), or None for the default, but got {noise!r}")
    return float(noise)


def _import_extra(module: str, package: str, dataset: str):
    """Import an optional package, or say which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"dataset {dataset!r} needs the package {package!r}, which could not be imported ({err}); "
            f"install the datasets extra: {_EXTRA_HINT}",
            name=module,
        ) from err
