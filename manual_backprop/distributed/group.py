"""The process group of data-parallel training: joining it (backend, this rank's device, the timeout), rank 0's
objects and parameters on every rank, and each rank's shard of a batch (see the package docstring)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.distributed as dist

from ..checks import resolve_device
from ..network import MLP

__all__ = ["DistInfo", "init_distributed", "from_rank0", "shard_bounds", "broadcast_parameters", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)


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
