"""PopulationHistory: the per-epoch record of every member of a population, and each member's own History."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..training import History

__all__ = ["PopulationHistory"]


@dataclass
class PopulationHistory:
    """Per-epoch record of every member. Row e of a per-epoch field is a (K,) float64 tensor of all members at
    epoch e (row 0: the initial networks); a member that stopped keeps its frozen figures in later rows (a diverged
    one: the figures of the parameters it was put back to).

    Member i's own record, the one a single Trainer would write, is rows 0..last_epoch[i]: ``member(i)`` returns it
    as a training.History.
    """

    mode: str
    lr: list  # (K,) learning rates
    seeds: list  # (K,) weight seeds
    order_seeds: list  # (K,) sample-order seeds
    target_loss: Optional[float] = None
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)  # [epoch] -> (K,) tensor
    test_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)  # [epoch] -> (K,) tensor, or None for regression
    test_accuracy: list = field(default_factory=list)
    updates: list = field(default_factory=list)  # cumulative updates of an active member at each epoch
    seconds: list = field(default_factory=list)  # cumulative wall time of the lockstep epochs (evaluation included)
    last_epoch: list = field(default_factory=list)  # (K,) the last epoch of each member's own record
    stop_reason: list = field(default_factory=list)  # (K,) "max_epochs", "target_loss" or "diverged"
    epochs_to_target: list = field(default_factory=list)  # (K,) the epoch its train loss reached the target, else None
    diverged_update: list = field(default_factory=list)  # (K,) the first non-finite update (1-based), else None
    message: list = field(default_factory=list)  # (K,) what happened, in Trainer's words

    @property
    def size(self) -> int:
        return len(self.lr)

    def __repr__(self) -> str:
        """One line: the population's size, how far it went and how its members ended, not every (K,) row."""
        if not self.epoch:
            return f"PopulationHistory(mode={self.mode!r}, K={self.size}, no epochs recorded)"
        stops = ", ".join(f"{reason} {count}" for reason, count in Counter(self.stop_reason).most_common())
        losses = self.train_loss[-1]
        finite = losses[torch.isfinite(losses)]
        median = f", median final train_loss={finite.median().item():.4g}" if finite.numel() else ""
        target = f", success_rate={self.success_rate():.3g}" if self.target_loss is not None else ""
        return (f"PopulationHistory(mode={self.mode!r}, K={self.size}, epochs={self.epoch[-1]}{target}{median}, "
                f"stop_reason: {stops or 'running'})")

    def add_rows(self, epochs: Sequence[int], figures: Sequence[Optional[Tensor]], updates: Sequence[int],
                 seconds: Sequence[float]) -> None:
        """Record E epochs at once. figures: four (E, K) float64 CPU tensors, the train loss, train accuracy, test
        loss and test accuracy of each epoch (an accuracy None for a regression); each row kept is a view of them, one
        view for a tensor given twice."""
        unbound: dict = {}  # a tensor given twice (the test split is the training split) gives its rows once
        for f in figures:
            if f is not None and id(f) not in unbound:
                unbound[id(f)] = f.unbind(0)
        rows = [None if f is None else unbound[id(f)] for f in figures]
        count = len(epochs)
        for name, r in zip(("train_loss", "train_accuracy", "test_loss", "test_accuracy"), rows):
            getattr(self, name).extend([None] * count if r is None else r)
        self.epoch.extend(epochs)
        self.updates.extend(updates)
        self.seconds.extend(seconds)

    def table(self, name: str) -> Optional[Tensor]:
        """A per-epoch field as one (epochs + 1, K) tensor (None for the accuracies of a regression)."""
        rows = getattr(self, name)
        return None if not rows or rows[0] is None else torch.stack(rows)

    def member(self, i: int) -> History:
        """Member i's record as the History a single Trainer run writes (seconds are the population's)."""
        last = self.last_epoch[i]

        def column(name):
            t = self.table(name)
            return [None] * (last + 1) if t is None else t[:last + 1, i].tolist()

        return History(mode=self.mode, epoch=list(self.epoch[:last + 1]), train_loss=column("train_loss"),
                       test_loss=column("test_loss"), train_accuracy=column("train_accuracy"),
                       test_accuracy=column("test_accuracy"), updates=list(self.updates[:last + 1]),
                       seconds=list(self.seconds[:last + 1]), stop_reason=self.stop_reason[i],
                       message=self.message[i])

    def succeeded(self) -> list:
        """Per member: whether it reached the target loss."""
        return [e is not None for e in self.epochs_to_target]

    def success_rate(self, members: Optional[Sequence[int]] = None) -> float:
        """The fraction of the members (of ``members``) that reached the target loss."""
        members = range(self.size) if members is None else members
        hits = [self.epochs_to_target[i] is not None for i in members]
        return sum(hits) / len(hits) if hits else float("nan")

    def median_epochs_to_target(self, members: Optional[Sequence[int]] = None) -> Optional[float]:
        """Median epochs to the target over the members (of ``members``) that reached it; None if none did."""
        members = range(self.size) if members is None else members
        reached = [self.epochs_to_target[i] for i in members if self.epochs_to_target[i] is not None]
        return float(statistics.median(reached)) if reached else None

    def diverged(self) -> list:
        return [r == "diverged" for r in self.stop_reason]

    def to_dict(self) -> dict:
        """JSON-friendly: per-epoch fields become lists of lists [epoch][member]."""
        d = {k: v for k, v in self.__dict__.items()}
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            d[name] = [row.tolist() if row is not None else None for row in d[name]]
        return d
