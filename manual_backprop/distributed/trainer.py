"""DistributedTrainer: a Trainer whose every update and evaluation is split over the ranks of a process group and
reduced with one all_reduce (see the package docstring for why the update is the single-process one)."""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from ..losses import Loss
from ..network import MLP, Gradients, forward_phase, loss_and_gradients, update
from ..training import MODES, Trainer
from .group import broadcast_parameters, shard_bounds

__all__ = ["DistributedTrainer", "ONLINE_IS_SEQUENTIAL"]

ONLINE_IS_SEQUENTIAL = (
    "online learning is sequential by nature and cannot be distributed: every update needs the weights left by "
    "the previous sample's update, and one sample cannot be split over ranks. Use batch or minibatch mode with "
    "several processes, or run online mode in a single process"
)


class DistributedTrainer(Trainer):
    """A Trainer whose every batch is split over the ranks of a process group; Trainer's arguments plus ``group``.

    Every rank of the group constructs it with the same network seed, data, mode, lr, batch size and sample-order
    seed (checked: a mismatch raises ValueError on every rank). The initial weights of the group's rank 0 are
    broadcast to all its ranks. Only that rank keeps ``logger``, ``checkpoint_path`` and the progress bar; the
    others train silently. ``history``, the parameters and the stopping decision are the same on every rank.

    Args:
        group: the process group to split the batches over (None: the default group, all ranks). ``rank`` and
            ``world_size`` are this process's place in it.

    Raises:
        ValueError: mode "online" (``ONLINE_IS_SEQUENTIAL``), settings that differ between ranks, or a process
            that is not in ``group``.
        RuntimeError: no process group (call ``init_distributed`` first).

    Example (a script that torchrun starts once per rank)::

        with init_distributed("auto") as info:  # nccl and cuda:LOCAL_RANK with GPUs, gloo and cpu without
            net = MLP([2, 16, 2], activation="tanh", output_activation="softmax", device=info.device, seed=0)
            data = load_dataset("moons", n_samples=2000, seed=0)
            trainer = DistributedTrainer(net, data, mode="minibatch", batch_size=64, lr=0.3, epochs=20)
            history = trainer.run()  # the same History and parameters on every rank
    """

    def __init__(self, net: MLP, data, *, mode: str, group=None, **kwargs):
        if mode == "online":
            raise ValueError(ONLINE_IS_SEQUENTIAL)
        if mode not in MODES:
            raise ValueError(f"mode must be 'batch' or 'minibatch' for distributed training, but got {mode!r}")
        if kwargs.get("fast"):  # Trainer's fast paths run whole epochs in one process, past the all_reduce
            raise ValueError(f"fast must be False for distributed training (every update is reduced over the "
                             f"ranks), but got fast={kwargs['fast']!r}")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedTrainer needs a process group: call "
                               "manual_backprop.distributed.init_distributed() first (and launch with torchrun)")
        super().__init__(net, data, mode=mode, **{**kwargs, "fast": False})  # every update goes through all_reduce
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        if self.rank < 0:
            raise ValueError(f"this process (global rank {dist.get_rank()}) is not a member of group; construct "
                             f"the DistributedTrainer only on the group's ranks")
        if self.rank != 0:
            self.logger, self.checkpoint_path, self.progress = None, None, False  # only rank 0 writes
        self._sum_loss, self._per_sample = _sum_reduction(self.loss_fn, net.sizes[-1])
        self._check_same_setup()
        src = 0 if group is None else dist.get_global_rank(group, 0)
        broadcast_parameters(net, src=src, group=group)

    # ------------------------------------------------------------------ one update, data-parallel
    def _update(self, idx: Optional[Tensor]) -> Tensor:
        """One gradient-descent step on the samples idx (None: all), of which this rank computes its shard."""
        n = self.x_train.shape[0] if idx is None else idx.shape[0]
        start, stop = shard_bounds(n, self.rank, self.world_size)
        if idx is None:
            x, y = self.x_train[start:stop], self.y_train[start:stop]  # (n_r, n_0), a view: batch mode's shard
        else:
            mine = idx[start:stop]
            x, y = self.x_train.index_select(0, mine), self.y_train.index_select(0, mine)  # (n_r, n_0)
        loss_sum, grads = loss_and_gradients(self.net, x, y, self._sum_loss)  # sums over this shard; zeros if empty
        pieces = grads.weights + grads.biases
        count = torch.full((1,), stop - start, dtype=loss_sum.dtype, device=loss_sum.device)
        # One buffer, one collective: [dE/dW[0], ..., dE/db[L-1], loss sum, sample count]. A float32 count is exact
        # up to 2**24 samples in one batch.
        flat = torch.cat([p.reshape(-1) for p in pieces] + [loss_sum.reshape(1), count])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        # The single-process mean over the whole batch: divide the global sums by the global count (no host sync).
        factor = self._per_sample / flat[-1] if self._per_sample is not None else 1.0
        flat = flat[:-1] * factor
        sizes = [p.numel() for p in pieces]
        reduced = [piece.view_as(p) for piece, p in zip(flat[:-1].split(sizes), pieces)]
        L = self.net.num_layers
        global_grads = Gradients(weights=reduced[:L], biases=reduced[L:], deltas=[])
        update(self.net.weights, self.net.biases, global_grads, self.lr)
        self.last_grads = global_grads  # the whole batch's gradient, for the histograms
        # E on the whole batch, the same number on every rank. A copy: the view flat[-1] would keep the whole reduced
        # gradient buffer alive as long as the epoch keeps its losses (about 2 GB for an epoch of 784-256-256-10).
        return flat[-1].clone()

    # ------------------------------------------------------------------ evaluation, sharded
    @torch.no_grad()
    def evaluate(self, split: str, *, reference: bool = True) -> tuple:
        """(loss, accuracy or None) on the whole split, from shard sums reduced over the ranks (same on every rank);
        always through network.py's forward phase, so ``reference`` changes nothing here."""
        x, y, labels = (self.x_train, self.y_train, self.labels_train) if split == "train" else \
            (self.x_test, self.y_test, self.labels_test)
        start, stop = shard_bounds(x.shape[0], self.rank, self.world_size)
        cache = forward_phase(self.net.weights, self.net.biases, self.net.activation_functions, x[start:stop])
        loss_sum = self._sum_loss.value(cache.logits, cache.output, y[start:stop])
        if labels is not None:
            out = cache.output  # the rule of training.accuracy: output >= 0.5 for one output, else argmax
            predicted = (out[:, 0] >= 0.5).long() if out.shape[1] == 1 else out.argmax(dim=1)
            correct = (predicted == labels[start:stop]).sum().to(torch.float64)
        else:
            correct = torch.zeros((), dtype=torch.float64, device=x.device)
        # float64 whatever the network's dtype: counts of any size stay exact.
        sums = torch.stack([loss_sum.to(torch.float64), correct,
                            torch.tensor(float(stop - start), dtype=torch.float64, device=x.device)])
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.group)
        loss = sums[0] * (self._per_sample / sums[2] if self._per_sample is not None else 1.0)
        acc = (sums[1] / sums[2]).to(self.net.dtype) if labels is not None else None
        return loss.to(self.net.dtype), acc

    # ------------------------------------------------------------------ agreement between ranks
    def _run_epoch(self) -> None:
        super()._run_epoch()
        self._check_agreement()

    def _check_agreement(self) -> None:
        """Every rank must end the epoch at the same epoch, update count and stop decision; else fail everywhere.

        The reduced losses make this hold by construction; the check turns a broken invariant (parameters that
        drifted apart) into an error on every rank rather than ranks that stop at different epochs and hang.
        """
        reasons = ("", "max_epochs", "target_loss", "diverged", "interrupted")
        h = self.history
        code = reasons.index(h.stop_reason) if h.stop_reason in reasons else len(reasons)
        values = [float(self.epoch), float(self.updates), float(code), h.train_loss[-1], h.test_loss[-1]]
        names = ["epoch", "updates", "stop reason", "train loss", "test loss"]
        spread = _min_max(values, self.net.device, self.group)
        for name, (lo, hi) in zip(names, spread):
            if not (lo == hi or (math.isnan(lo) and math.isnan(hi))):
                raise RuntimeError(f"the ranks disagree on the {name} after epoch {self.epoch} (from {lo!r} to "
                                   f"{hi!r}); their parameters have drifted apart, so training stops on every rank")

    def _check_same_setup(self) -> None:
        """Raise ValueError on every rank if the ranks were given different settings or data."""
        x = self.x_train.to(torch.float64)
        n_params = sum(p.numel() for p in self.net.parameters())
        fields = {
            "mode": float(MODES.index(self.mode)), "batch_size": float(self.batch_size), "lr": self.lr,
            "epochs": float(self.epochs), "sample-order seed": float(self.seed), "replacement": float(self.replacement),
            "training samples": float(self.x_train.shape[0]), "test samples": float(self.x_test.shape[0]),
            "parameters": float(n_params), "training inputs (sum)": float(x.sum()),
            "training inputs (sum of squares)": float((x * x).sum()),
        }
        spread = _min_max(list(fields.values()), self.net.device, self.group)
        for (name, value), (lo, hi) in zip(fields.items(), spread):
            # Exact for settings; the data sums may round differently on different CPUs or GPUs.
            tolerance = 1e-9 * max(abs(lo), abs(hi), 1.0) if "inputs" in name else 0.0
            if not hi - lo <= tolerance:
                raise ValueError(f"every rank must train with the same settings and data, but the {name} ranges "
                                 f"from {lo!r} to {hi!r} over the ranks (rank {self.rank} has {value!r})")


def _min_max(values: list, device: torch.device, group) -> list:
    """[(min over ranks, max over ranks)] for each value, with one all_reduce(MAX) of [v, -v]."""
    v = torch.tensor(values, dtype=torch.float64, device=device)
    both = torch.cat([v, -v])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    return list(zip((-both[len(values):]).tolist(), both[:len(values)].tolist()))


def _sum_reduction(loss_fn: Loss, n_out: int) -> tuple:
    """A copy of loss_fn that sums over samples, and the per-sample factor g with E = g * E_sum / B (None: E = E_sum).

    mean: g = 1; elementwise_mean: g = 1 / n_out; a 1/2 (half=True) stays in the copy. "sum" needs no division.
    """
    if loss_fn.reduction == "sum":
        return loss_fn, None
    if "sum" not in loss_fn.reductions:
        raise ValueError(f"distributed training needs a loss that can sum over samples, but {loss_fn!r} cannot")
    summed = copy.copy(loss_fn)
    summed.reduction = "sum"
    g = loss_fn.scale(1, n_out) / summed.scale(1, n_out)
    for batch in (2, 3, 7):  # the split is exact only for a loss that is a plain mean over samples
        if not math.isclose(loss_fn.scale(batch, n_out) * batch, loss_fn.scale(1, n_out), rel_tol=1e-15):
            raise ValueError(f"distributed training needs a loss that is a sum or a mean over samples, but {loss_fn!r} "
                             f"scales a batch of {batch} by {loss_fn.scale(batch, n_out)!r}")
    return summed, g
