"""A population sharded over processes: each rank trains its own members, rank 0 gathers one PopulationHistory.

Members never mix (each follows its own loss, weights and sample order), so K members split over R ranks (one
process per GPU or per CPU core group, started by torchrun) train exactly as they would in one population; no
collective runs during training, only one gather at the end:

    info = init_distributed(device="auto")
    start, stop = member_shard(K, info.rank, info.world_size)
    pop = Population(sizes, seeds=seeds[start:stop], ...)
    history = PopulationTrainer(pop, data, ..., lr=lrs[start:stop], order_seeds=order_seeds[start:stop]).run()
    whole = gather_population_history(history)        # the whole population's record on rank 0, None elsewhere

A rank whose members all stopped early has fewer epoch rows; its members' frozen figures repeat in the rows it
did not run, which is what one population records for a stopped member. ``seconds`` is the slowest rank's.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from ..distributed import shard_bounds
from .history import PopulationHistory

__all__ = ["member_shard", "gather_population_history", "merge_histories"]

_PER_MEMBER = ("lr", "seeds", "order_seeds", "last_epoch", "stop_reason", "epochs_to_target", "diverged_update",
               "message")
_PER_EPOCH = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")


def member_shard(K: int, rank: int, world_size: int) -> tuple:
    """[start, stop) of the members rank trains: contiguous blocks, the first K % world_size one member larger.

    Refused when a rank would get no member (a population needs at least one)."""
    if K < world_size:
        raise ValueError(f"a population of K={K} members cannot be sharded over {world_size} ranks: each rank needs "
                         f"at least one member; start at most {K} processes")
    return shard_bounds(K, rank, world_size)


def _padded(rows: list, length: int) -> list:
    return rows + [rows[-1]] * (length - len(rows))


def merge_histories(parts: list) -> PopulationHistory:
    """One PopulationHistory of the members of ``parts`` (histories of consecutive member blocks), in order."""
    first = parts[0]
    longest = max(parts, key=lambda h: len(h.epoch))
    rows = len(longest.epoch)
    merged = PopulationHistory(mode=first.mode, lr=[], seeds=[], order_seeds=[], target_loss=first.target_loss)
    for name in _PER_MEMBER:
        setattr(merged, name, [v for h in parts for v in getattr(h, name)])
    merged.epoch, merged.updates = list(longest.epoch), list(longest.updates)
    merged.seconds = [max(_padded(h.seconds, rows)[r] for h in parts) for r in range(rows)]
    for name in _PER_EPOCH:
        columns = [_padded(getattr(h, name), rows) for h in parts]
        if columns[0][0] is None:  # regression: no accuracies
            setattr(merged, name, [None] * rows)
        else:
            setattr(merged, name, [torch.cat([c[r] for c in columns]) for r in range(rows)])
    return merged


def gather_population_history(history: PopulationHistory, group=None) -> Optional[PopulationHistory]:
    """Every rank's history gathered on rank 0 and merged in rank order (rank r holds member block r); None on the
    other ranks. In one process (no process group) the history itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return history
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    parts = [None] * world if rank == 0 else None
    dist.gather_object(history, parts, dst=0, group=group)
    return merge_histories(parts) if rank == 0 else None
