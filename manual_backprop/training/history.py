"""What a training run records and the targets it trains on: History, Diverged, the encoding of class labels for
each loss, and accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ..losses import CrossEntropy, Loss

__all__ = ["History", "Diverged", "encode_for", "accuracy"]


class Diverged(RuntimeError):
    """Raised by ``Trainer.run(raise_on_divergence=True)``; the network holds its last good parameters."""


@dataclass
class History:
    """Per-epoch record of a run. Index 0 is the network before any update (epoch 0)."""

    mode: str
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    updates: list = field(default_factory=list)  # cumulative number of updates at the end of each epoch
    seconds: list = field(default_factory=list)  # cumulative wall time of training (evaluation excluded)
    stop_reason: str = ""  # "max_epochs", "target_loss", "diverged", "interrupted"
    message: str = ""

    def record(self, epoch: int, train_loss, test_loss, train_accuracy, test_accuracy, updates: int,
               seconds: float) -> dict:
        """Append one epoch's row; returns its figures as the logger's metrics (accuracies only where there are)."""
        for name, value in (("epoch", epoch), ("train_loss", train_loss), ("test_loss", test_loss),
                            ("train_accuracy", train_accuracy), ("test_accuracy", test_accuracy),
                            ("updates", updates), ("seconds", seconds)):
            getattr(self, name).append(value)
        metrics = {"loss/train": train_loss, "loss/test": test_loss}
        if train_accuracy is not None:
            metrics.update({"accuracy/train": train_accuracy, "accuracy/test": test_accuracy})
        return metrics

    def record_many(self, epochs, train_loss: list, test_loss: list, train_accuracy: Optional[list],
                    test_accuracy: Optional[list], updates, seconds) -> None:
        """Append several epochs' rows at once (``record`` for each, without the metrics): each argument a sequence
        of one value per epoch, an accuracy None where there is none."""
        n = len(train_loss)
        self.epoch.extend(epochs)
        self.train_loss.extend(train_loss)
        self.test_loss.extend(test_loss)
        self.train_accuracy.extend(train_accuracy if train_accuracy is not None else [None] * n)
        self.test_accuracy.extend(test_accuracy if test_accuracy is not None else [None] * n)
        self.updates.extend(updates)
        self.seconds.extend(seconds)

    @property
    def final(self) -> dict:
        """The last epoch's figures."""
        keys = ["epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates", "seconds"]
        return {k: getattr(self, k)[-1] if getattr(self, k) else None for k in keys}

    def to_dict(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:
        """One line: the mode, how far the run went and its last figures, not every epoch's (``to_dict`` has them)."""
        if not self.epoch:
            return f"History(mode={self.mode!r}, no epochs recorded)"
        f = self.final
        figures = ", ".join(f"{k}={f[k]:.4g}" for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
                            if f[k] is not None)
        stop = f", stop_reason={self.stop_reason!r}" if self.stop_reason else ""
        return f"History(mode={self.mode!r}, epochs={f['epoch']}, updates={f['updates']}, {figures}{stop})"


def encode_for(loss_fn: Loss, y: Tensor, num_classes: Optional[int], n_out: int, dtype: torch.dtype) -> Tensor:
    """Targets in the form the loss and the output layer want.

    Class indices stay indices for cross-entropy; for one output they become (N, 1) 0/1 floats; otherwise one-hot.
    Regression targets (floating) are only cast; cross-entropy refuses them unless every row is a probability
    distribution (soft labels).
    """
    if y.is_floating_point():
        y = y.to(dtype)
        if isinstance(loss_fn, CrossEntropy) and not _probability_rows(y):
            raise ValueError(
                f"cross_entropy needs class labels, but the data holds regression targets (floating-point y of shape "
                f"{tuple(y.shape)}, not rows of class probabilities); use loss 'squared_error' with output_activation "
                f"'identity' for a regression target, or give class labels"
            )
        return y
    if isinstance(loss_fn, CrossEntropy):
        return y
    if n_out == 1:
        if num_classes not in (None, 2):
            raise ValueError(f"a network with one output can only learn 2 classes, but the data has {num_classes}")
        return y.to(dtype).unsqueeze(1)
    classes = num_classes if num_classes is not None else n_out
    if classes != n_out:
        raise ValueError(f"sizes[-1] must equal the number of classes ({classes}) for one-hot targets, but got {n_out}")
    return torch.nn.functional.one_hot(y.long(), n_out).to(dtype)


def _probability_rows(y: Tensor) -> bool:
    """Whether y (N, k) with k >= 2 holds rows of class probabilities: no negative entry, each row sums to 1."""
    if y.dim() != 2 or y.shape[1] < 2 or not bool(torch.isfinite(y).all()):
        return False
    tol = 16 * y.shape[1] * torch.finfo(y.dtype).eps
    return bool((y >= 0).all()) and bool(((y.sum(dim=1) - 1).abs() <= tol).all())


def accuracy(output: Tensor, labels: Tensor) -> Tensor:
    """Fraction of samples whose predicted class (argmax, or output >= 0.5 for one output) equals the label:
    output (..., N, n), labels (N,) -> (...), one figure per network (a population's K members: (K,))."""
    predicted = (output[..., 0] >= 0.5).long() if output.shape[-1] == 1 else output.argmax(dim=-1)  # (..., N)
    return (predicted == labels).to(output.dtype).mean(dim=-1)


def same_split(a: tuple, b: tuple) -> bool:
    """Whether two (x, y, labels) splits hold the same samples in the same order."""
    return all((u is None and v is None) or (u is not None and v is not None and u.shape == v.shape
                                             and u.dtype == v.dtype and torch.equal(u, v)) for u, v in zip(a, b))
