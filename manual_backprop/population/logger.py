"""PopulationLogger: TensorBoard curves of a population, aggregated per group of members and per member."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..checks import check_int
from .history import PopulationHistory

__all__ = ["PopulationLogger"]


class PopulationLogger:
    """TensorBoard runs for a population: aggregate curves per group of members, per-member runs when K is small.

    Folders (RunLogger layout ``<logdir>/<experiment>/<run>/<folder>``):
    - ``<mode>`` (or ``<mode>_<group>`` for each named group, e.g. one per learning rate): per epoch
      ``loss/train/mean``, ``loss/train/median``, ``loss/train/q10``, ``loss/train/q90`` (and the same for
      ``loss/test``), ``accuracy/train/mean``, ``success/fraction`` (members that have reached the target loss),
      ``diverged/fraction``; hparams of the group (mode, lr, K, ...), with its last success fraction, median
      training loss and diverged fraction as HPARAMS metrics;
    - ``<mode>_m<i>`` for each member when K <= ``member_runs``: its own ``loss/train``, ``loss/test``,
      ``accuracy/...`` curves (ending where the member stopped), and its hparams (mode, lr, seed, order seed) with
      its last losses and accuracies, so the HPARAMS dashboard has one row per member.

    Args:
        logdir, experiment, run: as for RunLogger.
        groups: {name: member indices}; None: one group of all members, written to the folder ``<mode>``.
        member_runs: the largest K that still gets one run per member.
        log_every: write the curves every this many epochs (and always epoch 0 and the last one): a sweep of
            thousands of epochs does not need a point per epoch.
        dashboard: a tblog.Dashboard every folder gets (its layout; its HPARAMS keys and metric tags).
        enabled: False makes it a no-op.
        resume: the folders may hold this run's events already (a population continued from its checkpoint).
    """

    def __init__(self, logdir, experiment: str, run: str, *, groups: Optional[dict] = None, member_runs: int = 16,
                 log_every: int = 1, dashboard=None, enabled: bool = True, resume: bool = False):
        self.log_every = check_int("log_every", log_every, minimum=1)
        self._last_logged: Optional[int] = None
        self.logdir, self.experiment, self.run = logdir, experiment, run
        self.groups = None if groups is None else {str(k): list(v) for k, v in groups.items()}
        self.member_runs = check_int("member_runs", member_runs, minimum=0)
        self.enabled, self.resume = enabled, resume
        self.dashboard = dashboard
        self._group_loggers: dict = {}
        self._member_loggers: dict = {}
        self._mode: Optional[str] = None

    def start(self, mode: str, size: int, updates_per_epoch: int) -> None:
        """Open the run folders for a population of ``size`` members trained in ``mode``."""
        from ..tblog import RunLogger

        self._mode = mode
        groups = self.groups if self.groups is not None else {"": list(range(size))}
        for name, members in groups.items():
            if not members or min(members) < 0 or max(members) >= size:
                raise ValueError(f"group {name!r} must list member indices in [0, {size - 1}], but got {members!r}")
            folder = mode if name == "" else f"{mode}_{name}"
            self._group_loggers[name] = (RunLogger(self.logdir, self.experiment, self.run, folder,
                                                   updates_per_epoch=updates_per_epoch, dashboard=self.dashboard,
                                                   enabled=self.enabled, resume=self.resume), members)
        if size <= self.member_runs:
            width = len(str(size - 1))
            for i in range(size):
                self._member_loggers[i] = RunLogger(self.logdir, self.experiment, self.run, f"{mode}_m{i:0{width}d}",
                                                    updates_per_epoch=updates_per_epoch, dashboard=self.dashboard,
                                                    enabled=self.enabled, resume=self.resume)

    def log_epoch(self, epoch: int, history: PopulationHistory, row: int, *, force: bool = False) -> None:
        """Aggregates (and member curves) of history row ``row`` (= epoch), if the epoch is one to log."""
        if not (force or epoch % self.log_every == 0) or self._last_logged == epoch:
            return
        self._last_logged = epoch
        for logger, members in self._group_loggers.values():
            logger.log_epoch(epoch, _aggregate(history, row, members))
        for i, logger in self._member_loggers.items():
            if history.stop_reason[i] and row > history.last_epoch[i]:
                continue  # the member's own record ended: its curve stops where a single run's would
            metrics = {"loss/train": history.train_loss[row][i].item(), "loss/test": history.test_loss[row][i].item()}
            if history.train_accuracy[row] is not None:
                metrics.update({"accuracy/train": history.train_accuracy[row][i].item(),
                                "accuracy/test": history.test_accuracy[row][i].item()})
            logger.log_epoch(epoch, metrics)

    def log_hparams(self, history: PopulationHistory, common: dict) -> None:
        """Hparams, one row per group and one per member run; the metric columns are the curves' last values."""
        # Every run gets the same keys (TensorBoard takes the columns from one run); -1 marks "not one value".
        for name, (logger, members) in self._group_loggers.items():
            lrs = sorted({history.lr[i] for i in members})
            hp = {**common, "group": name or "all", "K": len(members), "member": -1,
                  "lr": lrs[0] if len(lrs) == 1 else -1.0, "seed": -1, "order_seed": -1}
            logger.log_hparams(hp, ["success/fraction", "loss/train/median", "diverged/fraction",
                                    "accuracy/train/mean"])
        for i, logger in self._member_loggers.items():
            hp = {**common, "group": f"m{i}", "K": 1, "member": i, "lr": history.lr[i], "seed": history.seeds[i],
                  "order_seed": history.order_seeds[i]}
            logger.log_hparams(hp, ["loss/train", "loss/test", "accuracy/train", "accuracy/test"])

    def folders(self) -> list:
        return [lg.path for lg, _ in self._group_loggers.values()] + [lg.path for lg in self._member_loggers.values()]

    def close(self) -> None:
        for logger, _ in self._group_loggers.values():
            logger.close()
        for logger in self._member_loggers.values():
            logger.close()

    def __enter__(self) -> "PopulationLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quantiles(values: Tensor) -> dict:
    """mean, median, 10% and 90% quantiles of the finite values of a 1-D tensor ({} if none is finite)."""
    t = values[torch.isfinite(values)].to(torch.float64)
    if t.numel() == 0:
        return {}
    q = torch.quantile(t, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"mean": t.mean().item(), "median": q[1], "q10": q[0], "q90": q[2]}


def _aggregate(history: PopulationHistory, row: int, members: list) -> dict:
    """The aggregate scalars of one epoch over ``members``."""
    idx = torch.as_tensor(members, dtype=torch.long)
    metrics = {}
    for split in ("train", "test"):
        for stat, value in _quantiles(getattr(history, f"{split}_loss")[row][idx]).items():
            metrics[f"loss/{split}/{stat}"] = value
        accuracy = getattr(history, f"{split}_accuracy")[row]
        if accuracy is not None:
            metrics[f"accuracy/{split}/mean"] = accuracy[idx].mean().item()
    epoch = history.epoch[row]
    reached = [history.epochs_to_target[i] is not None and history.epochs_to_target[i] <= epoch for i in members]
    diverged = [history.stop_reason[i] == "diverged" and history.last_epoch[i] < epoch for i in members]
    if history.target_loss is not None:
        metrics["success/fraction"] = sum(reached) / len(members)
    metrics["diverged/fraction"] = sum(diverged) / len(members)
    return metrics
