"""What training loops hold when they are given no optimizer, and the checks when they are given one.

A Trainer and a PopulationTrainer always hold an optimizer object: the one they were given, or
``PlainGradientDescent``, network.update with the trainer's lr (the lecture's rule, bit for bit as without any
optimizer). Both answer what a loop asks of them: ``update`` once per batch, ``state_dict``/``load_state_dict`` to
rewind an unfinished epoch, and the checkpoint entry (None for plain gradient descent, as checkpoints have always
said it).
"""

from __future__ import annotations

from ..network import Gradients, update
from .base import Optimizer, _plain, _same_numbers, _saved_settings

__all__ = ["PlainGradientDescent", "attach_optimizer"]


class PlainGradientDescent:
    """No optimizer: ``network.update``, W <- W - lr dE/dW, b <- b - lr dE/db with the loop's own lr (for a
    population, lr * active: a frozen member moves by 0). No state, and None in a checkpoint."""

    def update(self, weights, biases, grads: Gradients, lr, members=None) -> None:
        update(weights, biases, grads, lr)

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state, *, check_only: bool = False) -> None:
        """Nothing to put back."""

    def checkpoint_entry(self) -> None:
        return None

    def check_checkpoint_entry(self, saved) -> None:
        """Raise ValueError unless the checkpoint, too, was written with no optimizer."""
        if saved is not None:
            raise ValueError(f"the checkpoint was written with optimizer {_saved_settings(saved)}, but this run has "
                             f"{self!r}")

    def load_checkpoint_entry(self, saved) -> None:
        self.check_checkpoint_entry(saved)

    def __repr__(self) -> str:
        return "no optimizer (plain SGD)"


def attach_optimizer(optimizer: "Optimizer | None", net, lr, fast, *, switch: str = "fast") -> tuple:
    """(optimizer, lr, fast) for a trainer of ``net``: None becomes PlainGradientDescent; an optimizer is checked,
    lr, when given, must be the optimizer's (None takes it), and the fast paths run plain SGD, so "auto"/True turn
    off and a named one is refused. ``switch="engine"`` (PopulationTrainer): ``fast`` is the engine, and only
    "eager" runs an optimizer."""
    if optimizer is None:
        return PlainGradientDescent(), lr, fast
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a manual_backprop.optim optimizer (SGD, Adam, AdamW) or None, but got "
                        f"{type(optimizer).__name__}")
    if optimizer.net is not net:
        raise ValueError("optimizer steps another network: build it on the network this trainer trains, "
                         "e.g. Adam(net, lr=1e-3)")
    if lr is not None and not _same_numbers(lr, optimizer.lr, optimizer.members):
        raise ValueError(f"lr={_plain(lr)} differs from the optimizer's lr={_plain(optimizer.lr)}; give the same "
                         f"number or leave lr out")
    if switch == "engine":
        if fast != "eager":
            raise ValueError(f"engine={fast!r} runs plain SGD; with an optimizer use engine='eager'")
        return optimizer, optimizer.lr, fast
    if fast not in (False, True, "auto"):
        raise ValueError(f"fast={fast!r} runs plain SGD; with an optimizer use fast=False")
    return optimizer, optimizer.lr, False
