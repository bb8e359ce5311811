"""What training loops call: one step with or without an optimizer, checks at construction, snapshots for a
rewound epoch, and the optimizer's part of a checkpoint."""

from __future__ import annotations

from ..network import Gradients, update
from .base import Optimizer, _plain, _same_numbers

__all__ = ["apply_step", "attach_optimizer", "optimizer_snapshot", "restore_optimizer", "optimizer_checkpoint",
           "check_optimizer_checkpoint", "load_optimizer_checkpoint"]


# ---------------------------------------------------------------------------------------------------- training loops
# What Trainer (and PopulationTrainer's eager engine) call, one line each, so that a training loop takes an optimizer
# and plain SGD stays its default with the same numbers.
def apply_step(optimizer: "Optimizer | None", weights, biases, grads: Gradients, lr, members=None) -> None:
    """One update: network.update (plain gradient descent, bit for bit as before) without an optimizer, else its
    step. ``weights`` and ``biases`` must be the optimizer's network's own tensors; ``members`` (populations): the
    (K,) bool mask of the members that move (the plain update gets that mask inside lr, as lr * active)."""
    if optimizer is None:
        update(weights, biases, grads, lr)
    elif members is None:
        optimizer.step(grads)
    else:
        optimizer.step(grads, members=members)


def attach_optimizer(optimizer: "Optimizer | None", net, lr, fast, *, switch: str = "fast") -> tuple:
    """(optimizer, lr, fast) for a trainer of ``net``: the optimizer checked; lr, when given, must be the
    optimizer's (None takes it); the fast paths run plain SGD, so "auto"/True turn off and a named one is refused.
    ``switch="engine"`` (PopulationTrainer): ``fast`` is the engine, and only "eager" runs an optimizer."""
    if optimizer is None:
        return None, lr, fast
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


def optimizer_snapshot(optimizer: "Optimizer | None"):
    """A copy of the optimizer's state (None without one), for rewinding an unfinished epoch."""
    return None if optimizer is None else optimizer.state_dict()


def restore_optimizer(optimizer: "Optimizer | None", snapshot) -> None:
    """Put back a snapshot taken by ``optimizer_snapshot``."""
    if optimizer is not None and snapshot is not None:
        optimizer.load_state_dict(snapshot)


def optimizer_checkpoint(optimizer: "Optimizer | None"):
    """What a checkpoint holds of the optimizer: None for plain SGD, else its settings and its state dict."""
    return None if optimizer is None else {"settings": optimizer.settings(), "state": optimizer.state_dict()}


def check_optimizer_checkpoint(optimizer: "Optimizer | None", saved) -> None:
    """Raise ValueError unless a checkpoint's optimizer entry fits this run: the same optimizer (or none on both
    sides) with the same settings, the learning rate aside (a resume may change lr, as a plain Trainer's may),
    and a state that fits the network. Changes nothing."""
    mine = "no optimizer (plain SGD)" if optimizer is None else repr(optimizer)
    if saved is None:
        if optimizer is not None:
            raise ValueError(f"the checkpoint was written with no optimizer (plain SGD), but this run has {mine}")
        return
    if not isinstance(saved, dict) or set(saved) != {"settings", "state"} or not isinstance(saved["settings"], dict):
        raise ValueError("the checkpoint's optimizer entry is damaged: it must hold 'settings' and 'state'")
    if optimizer is None or {**saved["settings"], "lr": None} != {**optimizer.settings(), "lr": None}:
        theirs = ", ".join(f"{k}={v!r}" for k, v in saved["settings"].items())
        raise ValueError(f"the checkpoint was written with optimizer {theirs}, but this run has {mine}")
    optimizer.load_state_dict(saved["state"], check_only=True)


def load_optimizer_checkpoint(optimizer: "Optimizer | None", saved) -> None:
    """Resume the optimizer from a checkpoint entry that ``check_optimizer_checkpoint`` accepts (it is called
    first); the optimizer keeps this run's learning rate."""
    check_optimizer_checkpoint(optimizer, saved)
    if optimizer is not None:
        lr = optimizer.lr
        optimizer.load_state_dict(saved["state"])
        optimizer.lr = lr
