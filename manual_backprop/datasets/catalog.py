"""The named datasets (``DATASETS``) and ``load_dataset``, which builds one by name or reads a user's .csv/.npz file.

Each name maps to its maker (generated.py, packaged.py) with its default size, noise, standardization and options.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..checks import check_int, check_seed, resolve_dtype
from .csv_file import load_csv
from .dataset import Dataset
from .generated import make_blobs, make_circles, make_gate, make_moons, make_spirals, make_xor_noisy
from .npz_file import load_npz
from .packaged import MNIST1D_OPTIONS, make_digits, make_mnist1d
from .splitting import check_fraction, finish_dataset


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


_SPECS = {
    "xor": _Spec(make_gate("xor"), None, None, False, {}, "generated", noise_ignored=True),
    "and": _Spec(make_gate("and"), None, None, False, {}, "generated", noise_ignored=True),
    "or": _Spec(make_gate("or"), None, None, False, {}, "generated", noise_ignored=True),
    "xor_noisy": _Spec(make_xor_noisy, 200, 0.2, True, {}, "generated"),
    "moons": _Spec(make_moons, 200, 0.1, True, {}, "generated"),
    "circles": _Spec(make_circles, 200, 0.05, True, {"factor": 0.5}, "generated"),
    "spirals": _Spec(make_spirals, 400, 0.05, True, {"turns": 1.5}, "generated"),
    "blobs": _Spec(make_blobs, 300, 1.0, True, {"num_classes": 3, "n_features": 2}, "generated"),
    "digits": _Spec(make_digits, 1797, None, True, {}, "scikit-learn (shipped)", min_samples=20),
    "mnist1d": _Spec(make_mnist1d, 5000, None, True, MNIST1D_OPTIONS, "mnist1d (procedural)", min_samples=20),
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
    seed = check_seed("seed", seed)
    test_fraction = check_fraction(test_fraction)
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
    return finish_dataset(key, x_tr, y_tr, x_te, y_te, num_classes, standardize, dtype, info)


def _check_n_samples(n_samples, minimum: int) -> int:
    return check_int("n_samples", n_samples, minimum=minimum, note="(or None for the default)")


def _check_noise(noise) -> float:
    if (isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise)
            or noise < 0):
        raise ValueError(f"noise must be a finite number >= 0 (a std), or None for the default, but got {noise!r}")
    return float(noise)
