"""The lecture's modes of learning, each defined once, as the sample order of one epoch.

    batch       "All weight updates over all samples are computed and then GD is run once, at the end of the
                epoch": one update on all N samples, in their stored order.
    online      "GD computed immediately ... for each sample" (stochastic learning): N updates of one sample
                each, in a fresh random order every epoch (``torch.randperm``).
    minibatch   "batch learning with small batch sizes and stochastically selected samples in each batch": the
                epoch's shuffled order cut into batches of b (the last one partial), or, with replacement, ceil(N/b)
                batches of b samples drawn uniformly with replacement. The indices of a batch are sorted (a batch
                is a set), so minibatch with b = N is exactly batch mode and b = 1 is exactly online mode.

Every function returns ``(order, offsets)``: update u uses the samples ``order[offsets[u]:offsets[u + 1]]``. The
order is drawn on a CPU generator, so it does not depend on the device. ``Trainer``, every fast path, the
population and the single-layer rules take their orders from here. ``EpochOrders`` is the one derivative: the same
orders for K generators at once (a population's members), replaying ``torch.randperm`` on bulk draws, checked
equal to ``online_order`` / ``minibatch_order`` member by member (tests/core/test_modes.py).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .checks import check_seeds

__all__ = ["MODES", "batch_order", "online_order", "minibatch_order", "epoch_order", "samples_per_update",
           "EpochOrders", "Generators"]

MODES = ("batch", "online", "minibatch")

# Sample orders of up to this many samples are drawn for a population by replaying torch.randperm's Fisher-Yates
# shuffle on bulk draws of each member's generator (exact, see EpochOrders); larger ones call torch.randperm.
_EMULATE_RANDPERM_UP_TO = 512


def samples_per_update(mode: str, batch_size: Optional[int], n: int) -> int:
    """b of a learning mode on n training samples: n for batch, 1 for online, the checked batch_size for minibatch."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, but got {mode!r}")
    if mode == "minibatch":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an int in [1, {n}] (the training set has {n} samples) "
                             f"for minibatch mode, but got {batch_size!r}")
        return batch_size
    return n if mode == "batch" else 1


def batch_order(n: int) -> tuple:
    """Batch learning: one update on all n samples in their stored order."""
    return torch.arange(n), torch.tensor([0, n])


def online_order(n: int, generator: Optional[torch.Generator], *, replacement: bool = False) -> tuple:
    """Online (stochastic) learning: n updates of one sample, in the order of ``torch.randperm(n)``.

    ``generator=None`` keeps the stored order (the single-layer rules' ``shuffle=False``); ``replacement=True``
    draws each update's sample uniformly with replacement (minibatch with replacement at b = 1).
    """
    if replacement:
        return minibatch_order(n, 1, generator, replacement=True)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order, torch.arange(n + 1)


def minibatch_order(n: int, b: int, generator: torch.Generator, *, replacement: bool = False) -> tuple:
    """Minibatch learning: the shuffled order cut into batches of b (the last one partial), each batch sorted; with
    ``replacement``, ceil(n / b) batches of b indices drawn uniformly (``torch.randint``), each sorted."""
    if replacement:
        rows = math.ceil(n / b)
        order = torch.randint(0, n, (rows, b), generator=generator).sort(dim=1).values.view(-1)
        return order, torch.arange(0, rows * b + 1, b)
    return sorted_batches(torch.randperm(n, generator=generator), b), torch.cat([torch.arange(0, n, b),
                                                                                 torch.tensor([n])])


def sorted_batches(order: Tensor, b: int) -> Tensor:
    """Sort the indices inside each run of b entries of order (..., n); the last run may be shorter."""
    if b == 1:
        return order
    n = order.shape[-1]
    full = (n // b) * b
    head = order[..., :full].reshape(*order.shape[:-1], -1, b).sort(dim=-1).values.flatten(-2)
    return torch.cat([head, order[..., full:].sort(dim=-1).values], dim=-1)


def epoch_order(mode: str, n: int, batch_size: int, generator: torch.Generator, *,
                replacement: bool = False) -> tuple:
    """(order, offsets) of one epoch of ``mode`` with b = ``batch_size`` (see samples_per_update)."""
    if mode == "batch":
        return batch_order(n)
    if mode == "online":
        return online_order(n, generator, replacement=replacement)
    if mode == "minibatch":
        return minibatch_order(n, batch_size, generator, replacement=replacement)
    raise ValueError(f"mode must be one of {list(MODES)}, but got {mode!r}")


# ---------------------------------------------------------------------------------------------------- K generators
class Generators(Sequence):
    """K CPU generators, member i's seeded with seeds[i], each made at its first use: a population's C kernel
    replays its members' Mersenne twisters itself (population/c_engine.py), and K torch.Generator objects, seeded
    and later given their states back, cost a population run more than its updates. Until a member's generator is
    made, its state is its seed, or the row that ``set_states`` gave it; once made, the generator is the state.
    Indexing and iteration give torch.Generator objects exactly as ``[torch.Generator().manual_seed(s) ...]``
    followed by the same draws would."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self._made: list = [None] * len(self.seeds)
        self._states: Optional[Tensor] = None  # (K, state bytes) uint8 of the members not made, or None: seeds

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        g = self._made[i]
        if g is None:
            g = torch.Generator()
            if self._states is None:
                g.manual_seed(self.seeds[i])
            else:
                g.set_state(self._states[i].clone())  # set_state misreads a row view with a storage offset
            self._made[i] = g
        return g

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def untouched(self) -> bool:
        """Whether every member's state is still its seed (no generator made, no states set)."""
        return self._states is None and all(g is None for g in self._made)

    def states(self) -> Tensor:
        """(K, state bytes) uint8: every member's generator state now, a new tensor."""
        if self._states is not None and all(g is None for g in self._made):
            return self._states.clone()
        return torch.stack([g.get_state() for g in self])

    def set_states(self, states: Tensor) -> None:
        """Every member's state from a (K, state bytes) uint8 tensor (kept, not copied): the generators already
        made are set, the others are made from it when first used."""
        for g, row in zip(self._made, states):
            if g is not None:
                g.set_state(row.clone())
        self._states = states


def _raw_draws(generators: Sequence[torch.Generator], m: int) -> Tensor:
    """The next m 32-bit outputs of each CPU generator's Mersenne twister, in order: (len(generators), m) int64.

    ``random_`` over the full int64 range returns random64() = (first draw << 32) | second draw with no modulo, so
    the high and low halves of each value are two consecutive draws of the raw stream that randperm and randint
    consume. An odd m still takes m + 1 draws from each generator.
    """
    v = torch.empty(len(generators), (m + 1) // 2, dtype=torch.int64)
    for row, g in zip(v, generators):
        row.random_(-(2 ** 63), None, generator=g)
    return torch.stack([(v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF], dim=2).reshape(len(generators), -1)[:, :m]


def _fisher_yates(draws: Tensor, n: int) -> Tensor:
    """torch.randperm(n)'s CPU shuffle replayed on draws (..., n-1): for i < n-1, swap r[i] and r[i + u_i % (n-i)]."""
    lead = draws.shape[:-1]
    u = draws.reshape(math.prod(lead), n - 1).t()  # (n-1, M): one column per permutation, rows contiguous
    r = torch.arange(n).unsqueeze(1).repeat(1, u.shape[1])  # (n, M)
    for i in range(n - 1):
        j = (u[i] % (n - i)).add_(i).unsqueeze(0)  # (1, M): the position swapped with i
        a = r[i].clone()
        r[i] = r.gather(0, j)[0]
        r.scatter_(0, j, a.unsqueeze(0))
    return r.t().reshape(*lead, n)


class EpochOrders:
    """online_order / minibatch_order for K generators at once: member i's orders are those of a generator seeded
    with order_seeds[i], epoch by epoch (what Trainer(seed=order_seeds[i]) draws).

    ``epoch()`` returns a (K, S) int64 tensor: member i's samples of one epoch in update order (S = n without
    replacement, ceil(n / b) * b with it); consecutive runs of b entries are one minibatch, already sorted.

    One torch.Generator per member, as a Trainer has. Calling ``torch.randperm`` K times per epoch would cost more
    than the K updates it orders, so for n <= 512 the orders are computed from bulk draws of each generator (one call
    per member per few hundred epochs), replaying randperm's shuffle for all members and epochs at once. The replay
    is checked against torch.randperm once; if it ever disagreed (another torch), the orders come from randperm.
    """

    def __init__(self, order_seeds: Sequence[int], n: int, batch_size: int, *, replacement: bool = False,
                 block_draws: int = 1024):
        self.n, self.b, self.replacement = int(n), int(batch_size), bool(replacement)
        self.seeds = check_seeds("order_seeds", order_seeds)
        self.generators = Generators(self.seeds)  # each made at its first use
        self.batches_per_epoch = math.ceil(self.n / self.b)
        # Draws one epoch consumes: randperm(n) takes n - 1; randint (m, b) with n < 2^32 takes one per entry.
        self.draws_per_epoch = self.batches_per_epoch * self.b if self.replacement else self.n - 1
        self.emulate = self.replacement or (self.n <= _EMULATE_RANDPERM_UP_TO and _randperm_replay_agrees())
        self._block = max(2 * self.draws_per_epoch, int(block_draws))
        self._block += self._block % 2
        self._draws = torch.empty(len(self.seeds), 0, dtype=torch.int64)
        self._cursor = 0

    @property
    def epoch_length(self) -> int:
        """S, the number of sample indices of one epoch (the updates times the batch size)."""
        return self.batches_per_epoch * self.b if self.replacement else self.n

    def epochs(self, count: int) -> Tensor:
        """The orders of the next ``count`` epochs: (count, K, S)."""
        if not self.emulate:
            return torch.stack([self._epoch_by_randperm() for _ in range(count)])
        d = self.draws_per_epoch
        need = count * d
        if self._cursor + need > self._draws.shape[1]:
            rest = self._draws[:, self._cursor:]
            more = max(self._block, need - rest.shape[1])
            more += more % 2
            fresh = _raw_draws(self.generators, more)  # (K, more)
            self._draws, self._cursor = torch.cat([rest, fresh], dim=1), 0
        draws = self._draws[:, self._cursor:self._cursor + need].reshape(len(self.seeds), count, d)
        self._cursor += need
        draws = draws.transpose(0, 1)  # (count, K, d)
        if self.replacement:
            order = (draws % self.n).reshape(count, len(self.seeds), self.batches_per_epoch, self.b)
            return order.sort(dim=-1).values.reshape(count, len(self.seeds), -1)
        return sorted_batches(_fisher_yates(draws, self.n), self.b)

    def epoch(self) -> Tensor:
        return self.epochs(1)[0]

    def _epoch_by_randperm(self) -> Tensor:
        mode = "online" if self.b == 1 else "minibatch"  # the reference itself, one generator at a time
        return torch.stack([epoch_order(mode, self.n, self.b, g)[0] for g in self.generators])  # (K, n)


_REPLAY_CHECKED: Optional[bool] = None


def _randperm_replay_agrees() -> bool:
    """Whether the bulk-draw replay reproduces this torch's randperm (checked once, on a few seeds and sizes)."""
    global _REPLAY_CHECKED
    if _REPLAY_CHECKED is None:
        ok = True
        for seed, n in ((0, 4), (1, 17), (12345, 40)):
            g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            expected = torch.stack([torch.randperm(n, generator=g1) for _ in range(3)])
            draws = _raw_draws([g2], 3 * n)[0, :3 * (n - 1)].reshape(3, n - 1)
            ok = ok and torch.equal(_fisher_yates(draws, n), expected)
        _REPLAY_CHECKED = ok
    return _REPLAY_CHECKED
