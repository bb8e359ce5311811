"""What every trainer shares around its epochs: the data a run trains on, its progress bar, the words it stops with.

The Trainer (one network), the PopulationTrainer (K networks in lockstep) and the single-layer rules each run their
own epoch, but they take a Dataset's splits, show their progress and say why they stopped the same way, here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Union

import torch
from torch import Tensor

from ..checks import check_finite, check_input
from ..losses import Loss
from .history import encode_for

__all__ = ["check_data", "prepare_split", "check_progress", "epoch_bar", "epoch_limit_message", "target_message",
           "first_bad_update", "diverged_message"]


# ------------------------------------------------------------------------------------------------ the data
def check_data(data) -> None:
    """data must be a Dataset (tensors x_train, y_train, x_test, y_test) whose splits are not empty."""
    names = ("x_train", "y_train", "x_test", "y_test")
    if not all(isinstance(getattr(data, n, None), Tensor) for n in names):
        raise TypeError(f"data must be a Dataset (tensors x_train, y_train, x_test, y_test and num_classes), "
                        f"such as manual_backprop.datasets.load_dataset gives, but got {type(data).__name__}")
    for split in ("train", "test"):
        if getattr(data, f"x_{split}").shape[0] == 0:
            raise ValueError(f"data.x_{split} is empty (0 samples): the {split} split needs at least one sample")


def prepare_split(data, split: str, loss_fn: Loss, *, sizes: list, dtype: torch.dtype, device: torch.device,
                  names: tuple = ("x", "y")) -> tuple:
    """(x (N, n_0), y (N, n_L), labels (N,) or None) of the "train" or "test" split, on ``device`` in ``dtype``.

    x must fit the input layer and be finite; y is encoded for the loss (encode_for) and prepared by it as (N, n_L)
    rows, finite; labels are the class indices for the accuracy (None for floating targets). Detached where the
    data enters: the epoch's ops must never see a tensor that requires grad. ``names`` are what an error calls x
    and y.
    """
    # resolve_neg: the C paths read memory, where a real tensor with the neg bit (z.conj().imag) holds -x
    x = getattr(data, f"x_{split}").detach().to(device=device, dtype=dtype).resolve_neg()
    y = getattr(data, f"y_{split}").detach().to(device).resolve_neg()
    x = check_input(names[0], x, n_features=sizes[0], dtype=dtype, device=device, sizes=sizes)
    labels = None if y.is_floating_point() else y
    y = encode_for(loss_fn, y, getattr(data, "num_classes", None), sizes[-1], dtype)
    if x.shape[0] == 1 and y.is_floating_point() and y.shape == (sizes[-1],):
        y = y.unsqueeze(0)  # the target of one sample given as a 1-D tensor
    y = loss_fn.prepare_target(y, (x.shape[0], sizes[-1]), dtype)
    check_finite(names[1], y)
    return x, y, labels


# ------------------------------------------------------------------------------------------------ the bar
def check_progress(progress) -> Union[bool, str]:
    if not isinstance(progress, (bool, str)):
        raise TypeError(f"progress must be True, False or a label string, but got {type(progress).__name__}: "
                        f"{progress!r}")
    return progress


@contextmanager
def epoch_bar(progress: Union[bool, str], *, total: int, initial: int, label: str):
    """A tqdm bar over epochs, or None when ``progress`` is False; a string ``progress`` is its label (else
    ``label``). Closed on the way out, however the run ends."""
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=progress if isinstance(progress, str) else label, unit="epoch",
               leave=True, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------ why it stopped
def epoch_limit_message(epochs: int) -> str:
    return f"stopped at the epoch limit ({epochs})"


def target_message(target_loss: float, epoch: int, train_loss: float) -> str:
    return f"reached the target loss {target_loss:g} at epoch {epoch} (train loss {train_loss:.6g})"


def first_bad_update(losses: Tensor, first_update: int) -> tuple:
    """(number, where): the first update of an epoch's losses (U,) whose loss is not finite, counted from 1 over the
    run (the epoch's first is ``first_update + 1``), and where that is in words; (None, "the end-of-epoch
    evaluation") when every update's loss is finite (then the evaluation after them was not)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if not bad.numel():
        return None, "the end-of-epoch evaluation"
    i = int(bad[0])
    return first_update + i + 1, f"update {first_update + i + 1} (loss {losses[i].item()})"


def diverged_message(epoch: int, lr: float, where: Optional[str] = None, *, quantity: str = "the loss",
                     note: str = "") -> str:
    """The one sentence of a divergence: in which epoch (and ``where``) ``quantity`` stopped being finite, that the
    parameters are those at the end of the epoch before, and the advice (``note`` is added to it)."""
    at = f" at {where}" if where else ""
    return (f"diverged in epoch {epoch}{at}: {quantity} is not finite; the parameters were restored to the end of "
            f"epoch {epoch - 1}, the last good state. Try a smaller learning rate (lr={lr:g}{note}).")
