"""The Trainer's checkpoints: its whole state as a dict, checked all or nothing before anything changes, written
and read through checkpoint.py (atomic, weights_only)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, save_checkpoint
from .history import History

__all__ = ["TrainerCheckpoints"]


class TrainerCheckpoints:
    """state_dict / load_state_dict / save_checkpoint / resume for Trainer (which holds net, mode, lr, generator,
    history, optimizer and the last good state)."""

    def state_dict(self) -> dict:
        """Everything needed to continue this run to the same numbers: parameters, counters, sample-order RNG."""
        return {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "net_spec": self.net.spec(),
            "mode": self.mode, "lr": self.lr, "batch_size": self.batch_size, "replacement": self.replacement,
            "seed": self.seed, "epoch": self.epoch, "updates": self.updates, "train_seconds": self.train_seconds,
            "generator": self.generator.get_state(), "history": self.history.to_dict(),
            "good_state": [p.cpu() for p in self._good_state] if self._good_state is not None else None,
            "loss": self.loss_fn.spec(), "optimizer": self.optimizer.checkpoint_entry(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s dict. Everything is checked before anything changes (all or nothing).

        A run that diverged continues from its last good state when this Trainer has another lr; with the same lr
        it would only diverge again, so it stays finished (``run`` returns at once, with the divergence message).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a Trainer.state_dict() dict, but got {type(state).__name__}")
        required = ("net", "mode", "lr", "batch_size", "replacement", "epoch", "updates", "train_seconds",
                    "generator", "history")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"state is not a Trainer checkpoint: it lacks {missing}")
        for key in ("mode", "batch_size", "replacement"):
            if state[key] != getattr(self, key):
                raise ValueError(f"checkpoint was written with {key}={state[key]!r}, but this run has "
                                 f"{key}={getattr(self, key)!r}")
        if "loss" in state and state["loss"] != self.loss_fn.spec():
            raise ValueError(f"checkpoint was written with loss {state['loss']!r}, but this run has "
                             f"{self.loss_fn.spec()!r}")
        generator = state["generator"]
        if not isinstance(generator, Tensor) or generator.dtype != torch.uint8:
            raise ValueError("checkpoint's sample-order generator state must be a uint8 tensor")
        if not isinstance(state["history"], dict):
            raise ValueError(f"checkpoint's history must be a dict, but got {type(state['history']).__name__}")
        try:
            history = History(**state["history"])
        except TypeError as err:
            raise ValueError(f"checkpoint's history does not fit History: {err}") from None
        good = state.get("good_state")
        if good is not None:
            own = self.net.parameters()
            if not isinstance(good, list) or len(good) != len(own) or not all(
                    isinstance(g, Tensor) and g.shape == p.shape for g, p in zip(good, own)):
                raise ValueError("checkpoint's good_state does not fit the network's parameters")
        self.optimizer.check_checkpoint_entry(state.get("optimizer"))
        self.net.load_state_dict(state["net"])  # all or nothing itself: checks every key first
        self.epoch, self.updates, self.train_seconds = state["epoch"], state["updates"], state["train_seconds"]
        self.generator.set_state(generator)
        self.optimizer.load_checkpoint_entry(state.get("optimizer"))
        self.history = history
        if self.history.stop_reason == "max_epochs" and self.epoch < self.epochs:
            self.history.stop_reason, self.history.message = "", ""  # a longer run continues a finished one
        if self.history.stop_reason == "interrupted":
            self.history.stop_reason, self.history.message = "", ""
        if self.history.stop_reason == "diverged" and state["lr"] != self.lr:
            self.history.stop_reason, self.history.message = "", ""  # the last good state, with another lr
        if good is not None:
            self._good_state = [g.to(device=self.net.device, dtype=self.net.dtype) for g in good]

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        save_checkpoint(self.state_dict(), path)

    def resume(self, path: Union[str, Path]) -> "TrainerCheckpoints":
        self.load_state_dict(load_checkpoint(path))
        return self
