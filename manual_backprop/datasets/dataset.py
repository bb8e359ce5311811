"""The Dataset container (a train/test pair, rows as samples) and the target encodings the losses want.

Targets are class indices (int64, shape (N,)) for classification and float columns (N, k) for regression;
``encode_targets`` (and ``Dataset.targets``) turns class indices into one-hot (N, K) or binary (N, 1) floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ..checks import check_int, resolve_dtype

ENCODINGS = ("index", "onehot", "binary")


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
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, minimum=1, note="or None")

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


def encode_targets(y: Tensor, num_classes: int, encoding: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """Class indices y (N,) as "index" (N,) int64, "onehot" (N, num_classes) or "binary" (N, 1), floats of dtype.

    "binary" is the 0/1 target of a single sigmoid output and needs num_classes == 2.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, but got {encoding!r}")
    check_int("num_classes", num_classes, minimum=1)
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
