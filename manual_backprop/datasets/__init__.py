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

Each kind of dataset (generated, packaged, the user's files) has its module, beside the Dataset, the split and the
catalog of names that ``load_dataset`` reads.

Example:
    >>> ds = load_dataset("moons", n_samples=200, noise=0.1, seed=0)
    >>> ds.x_train.shape, ds.num_classes
    (torch.Size([150, 2]), 2)
    >>> y = ds.targets("train", "binary")          # (150, 1) float 0/1 for a sigmoid output
"""

from .catalog import DATASETS, load_dataset
from .csv_file import load_csv
from .dataset import ENCODINGS, Dataset, encode_targets
from .npz_file import load_npz
from .splitting import standardize, train_test_split

__all__ = [
    "Dataset", "DATASETS", "load_dataset", "load_csv", "load_npz", "train_test_split", "standardize",
    "encode_targets", "ENCODINGS",
]
