"""The sweep's checkpoints in its run folder: where each mode's population saves itself while it trains (one file
per process under --distributed), and what a resume finds there, checked before anything is trained, written or
said, with the same outcome on every rank (experiments/sweep.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from experiments.common import USER_ERRORS
from manual_backprop.checkpoint import load_checkpoint
from manual_backprop.population.checkpoints import shard_checkpoint_path
from manual_backprop.population.sharding import member_shard

__all__ = ["CheckpointPlan", "refusal"]


class CheckpointPlan:
    """Where each mode's population saves itself in the run folder, and what a resume finds there, checked before
    anything is trained, written or said (every rank agrees on the outcome).

    One process: <run>/checkpoints/<mode>.pt. Under --distributed every process saves its own block of members,
    <run>/checkpoints/<mode>.members<first>-<last>.pt (population/checkpoints.py): blocks never mix, so each
    continues alone to the numbers an unbroken run gives. A file another number of processes wrote is refused."""

    def __init__(self, run_dir: Path, size: int, info):
        self.dir, self.info = run_dir / "checkpoints", info
        self.world, self.rank = (info.world_size, info.rank) if info else (1, 0)
        self.blocks = [member_shard(size, r, self.world) for r in range(self.world)]
        self.epochs, self.missing = {}, {}  # {mode: each rank's saved epoch}, {mode: blocks that saved none}

    def path(self, mode: str, block: Optional[tuple] = None) -> Path:
        whole = self.dir / f"{mode}.pt"
        return whole if self.info is None else shard_checkpoint_path(whole, *(block or self.blocks[self.rank]))

    def own(self, mode: str) -> Path:
        """The file this process's population saves to while it trains the mode (removed once the mode is kept)."""
        return self.path(mode)

    def check(self, modes: list, probe) -> dict:
        """{mode: this rank's checkpoint state} of the ``modes`` to resume; ``probe(mode)`` makes a trainer the
        state must fit. A damaged, foreign or misfit file ends the run in one line naming it, on every rank."""
        states = {}
        for mode in modes:
            outcome, state = self._read(mode, probe)
            outcomes = _every_rank(outcome)
            errors = [text for kind, text in outcomes if kind == "error"]
            if errors:
                raise refusal(errors[0], self.rank == 0)
            found = [kind == "ok" for kind, _ in outcomes]
            if all(found):
                states[mode], self.epochs[mode] = state, [epoch for _, epoch in outcomes]
            elif any(found):  # one process stopped before its first save: the mode starts over on every rank
                self.missing[mode] = [b for b, ok in zip(self.blocks, found) if not ok]
        return states

    def _read(self, mode: str, probe) -> tuple:
        own = self.path(mode)
        try:
            foreign = self._foreign(mode) if self.rank == 0 else None
            if foreign:
                return ("error", foreign), None
            if not own.is_file():
                return ("missing", None), None
            state = load_checkpoint(own)
            try:
                probe(mode).load_state_dict(state)
            except (ValueError, TypeError, RuntimeError, KeyError, IndexError, AttributeError) as err:
                return ("error", f"--resume: {own} does not fit this run: {err}"), None
            return ("ok", state["epoch"]), state
        except USER_ERRORS as err:  # a damaged file: one line naming it (on this rank alone, it must not hang others)
            return ("error", str(err)), None

    def _foreign(self, mode: str) -> Optional[str]:
        """The refusal of a checkpoint of this mode that another number of processes wrote, else None."""
        ours = {self.path(mode, b).name for b in self.blocks}
        pattern = re.compile(rf"{re.escape(mode)}(\.members(\d+)-(\d+))?\.pt")
        theirs = sorted(p for p in (self.dir.glob(f"{mode}.*pt") if self.dir.is_dir() else ())
                        if pattern.fullmatch(p.name) and p.name not in ours)
        if not theirs:
            return None
        first, shards = theirs[0], sum(".members" in p.name for p in theirs)
        wrote = f"{shards} processes (--distributed)" if ".members" in first.name else "one process"
        now = f"{self.world} processes" if self.info else "one process"
        how = (f"torchrun --nproc_per_node={shards} ... --distributed" if shards else "python -m experiments.sweep "
               "without --distributed")
        return (f"--resume: {first} was saved by a sweep of {wrote}, but this one runs in {now}; resume it with "
                f"{how}, or delete {self.dir / mode}.*pt to start {mode} over")

    def resuming(self, mode: str, epochs: int) -> str:
        """What a resumed run says before it trains ``mode``."""
        saved = self.epochs.get(mode)
        if saved is None:
            why = (f"{', '.join(self.path(mode, b).name for b in self.missing[mode])} was not saved"
                   if mode in self.missing else "it saved no checkpoint")
            return f"resuming {mode}: {why}, so it starts from epoch 0 of {epochs}"
        if self.info is None:
            return f"resuming {mode} from epoch {saved[0]} of {epochs} ({self.path(mode)})"
        at = f"epoch {saved[0]}" if len(set(saved)) == 1 else f"epochs {min(saved)} to {max(saved)}"
        return (f"resuming {mode} from {at} of {epochs} ({self.world} checkpoints, one per process: "
                f"{self.dir / mode}.members*.pt)")

    def interrupted(self, mode: str, epoch: int, epochs: int) -> str:
        """What Ctrl-C kept of the mode in training (rank 0 knows its own epoch)."""
        if self.info is None:
            return f"{mode} saved at epoch {epoch} of {epochs} ({self.path(mode)})"
        return (f"{mode} saved by each of the {self.world} processes at its last finished epoch (rank 0 at epoch "
                f"{epoch} of {epochs}; {self.dir / mode}.members*.pt)")


def _every_rank(obj) -> list:
    """Every rank's ``obj`` in rank order, on every rank; [obj] in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def refusal(message: str, main_rank: bool) -> ValueError:
    """The one-line error every rank raises; rank 0 alone prints it (common.run_main)."""
    error = ValueError(message)
    error.reported_by_rank0 = not main_rank
    return error
