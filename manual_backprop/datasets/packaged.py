"""The real sets that ship inside a package (the ``datasets`` extra): scikit-learn's ``digits`` and ``mnist1d``.

Nothing is downloaded: digits is read from the file inside scikit-learn, MNIST-1D is generated procedurally by the
``mnist1d`` package's ``make_dataset`` (never its downloading ``get_dataset``). A missing package is reported with
the extra to install.
"""

from __future__ import annotations

import importlib
import random

import numpy as np
import torch

from .splitting import n_test_rows, split_indices, train_test_split

_EXTRA_HINT = "pip install 'manual-backprop[datasets]' (or: bash install.sh datasets)"


def make_digits(n_samples, noise, seed, test_fraction):
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
        _, keep = split_indices(y, n_samples, g, stratify=True)
        x, y = x[keep], y[keep]
        info["subset"] = f"{n_samples} of 1797 samples, stratified, seeded"
    return (*train_test_split(x, y, test_fraction, seed), info)


def make_mnist1d(n_samples, noise, seed, test_fraction, **options):
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
    n_train = x.shape[0] - n_test_rows(x.shape[0], test_fraction)
    info = {
        "description": "MNIST-1D: 10 one-dimensional digit templates, padded, shifted, sheared, scaled and made "
                       "noisy, 40 features; generated procedurally by mnist1d.data.make_dataset, no download",
        "split": "the package's own: its seeded shuffle, the last round(N * test_fraction) samples are the test "
                 "split (n_samples=5000, seed=42, test_fraction=0.2 gives the reference MNIST-1D split)",
        "mnist1d_args": {k: v for k, v in vars(args).items() if k != "url"},
    }
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], info


MNIST1D_OPTIONS = {
    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2,
    "shear_scale": 0.75, "shuffle_seq": False, "final_seq_length": 40, "padding": [36, 60],
}


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
