"""Data-parallel batch and minibatch learning over several processes (torch.distributed), gradients by hand.

The lecture says of batch learning: "Computation of weights can be carried out in parallel, saving computation
time." A batch's gradient is a sum over its samples, so it splits over processes ("ranks") with no approximation:

    every rank       holds the same weights (broadcast from rank 0 at the start) and draws the same sample order
                     (the Trainer's generator, seeded with the same seed on every rank);
    per update       the batch's sorted index list is cut into world_size contiguous shards (unequal when the batch
                     does not divide; a rank may even get 0 samples and then contributes zeros);
                     rank r runs the forward and backward phase on shard r for the SUM over its samples,
                     sum_{i in shard r} dE_i/dW, and the sum of its losses;
                     one all_reduce(SUM) adds the shards' gradient sums, loss sums and sample counts;
                     every rank divides by the global count exactly as the single-process mean does and takes the
                     same step W <- W - lr * dE/dW.

So the update is the single-process update on the whole batch, up to the rounding of adding the samples in a
different order (float64 tests agree to 1e-12 relative after several epochs). Averaging the ranks' averaged
gradients instead would be wrong whenever the shards are unequal: a sample on a smaller shard would weigh more.

Why one flat buffer and one all_reduce per update: every collective costs a fixed latency (a network round trip
between machines, a kernel launch and a synchronisation between GPUs). The layers of a small MLP are tiny, so
reducing 2L + 2 tensors one by one would cost 2L + 2 latencies; one buffer costs one (DDP's gradient buckets do the
same). The loss sum and the sample count ride in that buffer for free, and because a NaN or inf on any rank makes
the reduced loss non-finite on every rank, all ranks see the same update losses and take the divergence path at
the same update, with the same message.

Online learning (one update per sample) is sequential by nature: update t+1 needs the weights after update t, and
one sample cannot be split over ranks. ``DistributedTrainer`` refuses it (``ONLINE_IS_SEQUENTIAL``).

Evaluation is sharded the same way (loss sums, correct counts and sample counts reduced), so every rank records
the same History and makes the same decision to stop (epoch limit, target loss, divergence); a check after every
epoch turns any disagreement into an error on every rank instead of a hang.

Launch with torchrun (env:// rendezvous, one process per GPU or per CPU slot)::

    torchrun --standalone --nproc_per_node=2 -m experiments.learning_modes --distributed --modes batch minibatch

Backends: nccl when the device is CUDA (rank r uses cuda:LOCAL_RANK), gloo on the CPU. Every collective is bounded
by the process group's timeout: a rank that dies or hangs makes the others fail with an error instead of waiting
forever (torchrun then ends the whole job). Only rank 0 writes TensorBoard logs and checkpoints.

Left out: model parallelism (the network is small and replicated on every rank), overlapping communication with the
backward phase, and torch.nn.parallel (there is no autograd graph for it to hook into). Every rank holds the whole
dataset (they are generated or shipped, and small); each rank computes on its shard only.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

from .losses import Loss
from .checks import resolve_device
from .network import MLP, Gradients, forward_phase, loss_and_gradients, update
from .training import MODES, Trainer

__all__ = ["DistributedTrainer", "DistInfo", "init_distributed", "shard_bounds", "broadcast_parameters",
           "from_rank0", "ONLINE_IS_SEQUENTIAL", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)

ONLINE_IS_SEQUENTIAL = (
    "online learning is sequential by nature and cannot be distributed: every update needs the weights left by "
    "the previous sample's update, and one sample cannot be split over ranks. Use batch or minibatch mode with "
    "several processes, or run online mode in a single process"
)


# ---------------------------------------------------------------------------------------------- process group
@dataclass
class DistInfo:
    """Where this process stands in the process group; a context manager that ends the group it started.

    rank: 0 .. world_size - 1, over all machines; local_rank: the index on this machine (picks the GPU);
    device: this rank's device (cuda:LOCAL_RANK with nccl, cpu with gloo); owns_group: whether
    ``init_distributed`` created the group (then ``close`` destroys it; a group made by the caller is left alone).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    owns_group: bool

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes logs, checkpoints and results."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False

    def __enter__(self) -> "DistInfo":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def init_distributed(device: Union[str, torch.device] = "auto", *, init_method: str = "env://",
                     rank: Optional[int] = None, world_size: Optional[int] = None,
                     timeout: Union[float, datetime.timedelta] = DEFAULT_TIMEOUT,
                     backend: Optional[str] = None) -> DistInfo:
    """Join the process group (nccl for CUDA, gloo for the CPU) and return this rank's DistInfo.

    Args:
        device: "cpu", "cuda" (this rank's GPU, cuda:LOCAL_RANK) or "auto" (CUDA when present).
        init_method: "env://" reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, as torchrun sets
            them; "file:///tmp/x/rendezvous" (with rank and world_size) needs no network port, for tests.
        rank, world_size: override the environment (needed with file://).
        timeout: seconds (or a timedelta) the rendezvous and every collective wait for the other ranks before
            raising; what turns a dead or hung rank into an error instead of a hang.
        backend: override the choice ("gloo" or "nccl").

    If a default process group exists already, it is used as it is (``owns_group`` is False).
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed (torch.distributed.is_available() is False)")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        if not timeout > 0 or timeout == float("inf"):
            raise ValueError(f"timeout must be a finite number of seconds > 0, but got {timeout!r}")
        timeout = datetime.timedelta(seconds=timeout)
    if not isinstance(timeout, datetime.timedelta):
        raise TypeError(f"timeout must be seconds or a datetime.timedelta, but got {type(timeout).__name__}")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        device = _rank_device(device, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # as below: nccl's broadcast_object_list uses the current device
        return DistInfo(rank, world_size, local_rank, device, dist.get_backend(), False)

    if rank is None or world_size is None:
        missing = [k for k in ("RANK", "WORLD_SIZE") if k not in os.environ]
        if init_method.startswith("env://"):
            missing += [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(
                f"distributed training needs the environment variables {', '.join(missing)}, which torchrun sets; "
                f"launch with e.g. `torchrun --standalone --nproc_per_node=2 -m experiments.learning_modes "
                f"--distributed --modes batch minibatch`"
            )
    rank = int(os.environ["RANK"]) if rank is None else rank
    world_size = int(os.environ["WORLD_SIZE"]) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}] for world_size {world_size}, but got {rank}")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = _rank_device(device, local_rank)
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        _check_one_gpu_per_rank()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives and broadcast_object_list use the current device
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timeout)
    return DistInfo(rank, world_size, local_rank, device, backend, True)


def _rank_device(device, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK for "cuda"/"auto" with CUDA present, else the CPU: one GPU per rank (cuda:0 where the
    process sees exactly one GPU, as launchers that give each task its own GPU arrange)."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto' for distributed training, but got {str(device)!r}")
    if device.index is not None:
        raise ValueError(f"device must be 'cuda' (each rank takes cuda:LOCAL_RANK) for distributed training, "
                         f"but got {str(device)!r}; choose the GPUs with CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if count == 1:
        # A launcher (Slurm, a container per task) that shows each rank only its own GPU: that GPU is cuda:0,
        # whatever LOCAL_RANK says.
        return resolve_device("cuda:0")
    if local_rank >= count:
        raise ValueError(f"LOCAL_RANK {local_rank} needs GPU cuda:{local_rank}, but this process sees {count} GPUs; "
                         f"start at most that many processes per node, or show each rank one GPU "
                         f"(CUDA_VISIBLE_DEVICES)")
    return resolve_device(f"cuda:{local_rank}")


def _check_one_gpu_per_rank() -> None:
    """NCCL needs a GPU of its own for every rank of a node: refuse (one line) where this node's ranks outnumber
    the GPUs they all see. A process that sees one GPU takes cuda:0 whatever its LOCAL_RANK, which is right where a
    launcher hides the others (CUDA_VISIBLE_DEVICES per task) and wrong where every rank sees the same single GPU:
    NCCL then refuses or hangs (issue 22)."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    count = torch.cuda.device_count()
    if local_world > count and (count > 1 or "CUDA_VISIBLE_DEVICES" not in os.environ):
        raise ValueError(f"nccl needs one GPU per rank, but this node starts {local_world} ranks "
                         f"(LOCAL_WORLD_SIZE) and they all see {count} GPU{'s' if count != 1 else ''}; start at most "
                         f"{count} per node (torchrun --nproc_per_node={count}), or use --device cpu (gloo)")


def from_rank0(obj):
    """Rank 0's ``obj`` on every rank (any picklable object); ``obj`` itself in a single process.

    For decisions only rank 0 can make, such as whether a checkpoint file exists on its disk: every rank must take
    the same branch, or the ranks that skip a collective leave the others waiting until the timeout.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_bounds(n: int, rank: int, world_size: int) -> tuple:
    """[start, stop) of rank's contiguous shard when n samples are cut into world_size shards.

    The first n % world_size ranks get one sample more (torch.tensor_split's rule); a rank gets 0 samples when
    n < world_size.
    """
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"shard_bounds needs n >= 0 and 0 <= rank < world_size, but got n={n}, rank={rank}, "
                         f"world_size={world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@torch.no_grad()
def broadcast_parameters(net: MLP, src: int = 0, group=None) -> None:
    """Copy the weights and biases of rank ``src`` (a global rank) into ``net`` on every rank of the group."""
    params = net.parameters()
    flat = torch.cat([p.reshape(-1) for p in params])  # one broadcast for all layers
    dist.broadcast(flat, src=src, group=group)
    for p, piece in zip(params, flat.split([p.numel() for p in params])):
        p.copy_(piece.view_as(p))


# ---------------------------------------------------------------------------------------------- the trainer
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
