"""The switch ``Trainer(fast=...)``: which fast path runs, and one epoch of updates through it.

The epoch's sample order is the learning mode's own (modes.epoch_order, drawn from the trainer's generator), so a
fast run and a plain run make the same updates in the same order, and checkpoints resume either way.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Union

import torch
from torch import Tensor

from ..derived import changes_made
from ..losses import Loss
from ..modes import epoch_order
from ..network import MLP, Gradients
from .c_loop import CKernel, c_unsupported, load_kernel
from .common import C_WORK_LIMIT, FAST_PATHS, FastPathUnavailable, FastPathWarning, layout_of, work_per_update
from .cuda_graph import CudaGraphRunner
from .epochs import EpochChunks
from .fused import FusedStep
from .narrow import NarrowBatch, load_narrow_kernel, narrow_unsupported
from .narrow_epochs import NarrowChunks, chunks_unsupported

__all__ = ["resolve_fast", "EpochRunner", "kept_bytes"]


def resolve_fast(fast: Union[bool, str], net: MLP, loss_fn: Loss, batch: int, *, warn: bool = True) -> str:
    """The fast path that will run: "c", "fused" or "cuda_graph" (or "" for the plain path, fast=False).

    "auto" (the Trainer's default) picks the best that applies, silently; True asks for a fast path, and it and an
    explicit choice that cannot apply fall back with a FastPathWarning that says why.
    """
    if fast is False or fast is None or fast == "off":
        return ""
    if fast == "auto":
        warn = False  # the default: no warning for a machine without a C compiler
    if fast is True:
        fast = "auto"
    if fast not in ("auto", *FAST_PATHS):
        raise ValueError(f"fast must be False, True, 'auto' or one of {list(FAST_PATHS)}, but got {fast!r}")

    def fall_back(reason: str, to: str) -> str:
        if warn:
            warnings.warn(f"fast={fast!r} cannot run here: {reason}; using the {to!r} fast path instead",
                          FastPathWarning, stacklevel=3)
        return to

    on_cuda = net.device.type == "cuda"
    if fast == "fused":
        return "fused"
    if fast == "cuda_graph":
        if not on_cuda:
            return fall_back(f"CUDA graphs need a CUDA device, but the network is on {net.device}", "fused")
        return "cuda_graph"
    if fast == "auto" and on_cuda:
        return "cuda_graph"
    if fast == "auto" and work_per_update(net, batch) > C_WORK_LIMIT:
        return "fused"
    reason = c_unsupported(net, loss_fn)
    if reason is None:
        try:
            load_kernel()
            return "c"
        except FastPathUnavailable as err:
            reason = str(err)
    if fast == "c" and on_cuda:
        return fall_back(reason, "cuda_graph")
    return fall_back(reason, "fused")


class EpochRunner:
    """What ``Trainer(fast=...)`` runs instead of its per-update loop: one epoch of updates through a fast path.

    Holds its trainer by a weak reference: the trainer owns the runner, and a cycle between them would keep a dead
    trainer's CUDA graph (and its memory pool) alive until Python's cyclic collector ran.
    """

    def __init__(self, trainer, fast: Union[bool, str]):
        self._trainer = weakref.ref(trainer)
        net = trainer.net
        self.path = resolve_fast(fast, net, trainer.loss_fn, trainer.batch_size)
        if fast == "auto" and _all_samples_each_update(trainer) and _narrow_pays(net, trainer.x_train.shape[0]) \
                and _narrow_applies(net, trainer.loss_fn):
            self.path = "narrow"  # one pass an epoch: the evaluation is the next update's forward (fast/narrow.py)
        self.keep_grads = trainer.logger is not None  # the gradient histograms want the last update's gradients
        self._engine = None
        self._made_for = _what_engines_copy(trainer)

    @property
    def trainer(self):
        trainer = self._trainer()
        if trainer is None:
            raise RuntimeError("the Trainer of this EpochRunner no longer exists")
        return trainer

    def _build(self):
        t, net = self.trainer, self.trainer.net
        if self.path == "c":
            engine = CKernel(net, t.loss_fn)
            engine.grads = Gradients(weights=[torch.zeros_like(w) for w in net.weights],
                                     biases=[torch.zeros_like(b) for b in net.biases]) if self.keep_grads else None
        elif self.path == "narrow":
            engine = NarrowBatch(net, t.loss_fn)
        elif self.path == "cuda_graph":
            engine = CudaGraphRunner(net, t.loss_fn, t.batch_size, keep_grads=self.keep_grads)
        else:
            engine = FusedStep(net, t.loss_fn, t.batch_size, keep_grads=self.keep_grads)
        return engine

    def _bound_engine(self):
        net = self.trainer.net
        if self._engine is None or (self.path != "c" and not self._engine.is_bound_to(net)):
            self.close()
            self._engine = self._build()
        return self._engine

    def fits(self, trainer) -> bool:
        """Whether the engines made now would be made as this runner's were: the same f's and loss, none of their
        attributes set since (derived.changes_made), the same parameter tensors with the same memory and layout."""
        made, now = self._made_for, _what_engines_copy(trainer)
        return made[0] == now[0] and len(made[1]) == len(now[1]) and all(
            a[0] is b[0] and a[1:] == b[1:] for a, b in zip(made[1], now[1]))

    def check_values(self, *, begin_run: bool) -> None:
        """Between runs (at the start of a Trainer.run, or before an evaluation outside one): forget the results kept
        for parameters or data whose values changed (NarrowBatch.check_values; the fused step's kept forward phase,
        one a run, is simply dropped)."""
        if self._engine is None:
            return
        t = self.trainer
        if self.path == "narrow":
            self._engine.check_values((t.x_train, t.y_train), (t.x_test, t.y_test), begin_run=begin_run)
        elif self.path == "fused":
            self._engine.forget_kept()

    def end_run(self) -> None:
        """At the end of a Trainer.run (not an interrupted one: then nothing kept is trusted at the next), or of an
        evaluation between runs."""
        if self.path == "narrow" and self._engine is not None:
            self._engine.end_run()

    def epoch_chunks(self):
        """The several-epochs call when this path has one: the C loop's (fast/epochs.py), or the narrow kernel's in
        batch mode without labels (fast/narrow_epochs.py); else None (one epoch at a time)."""
        if self.path == "narrow":
            if chunks_unsupported(self.trainer) is not None:
                return None
            engine = self._bound_engine()
            if getattr(engine, "chunks", None) is None:
                engine.chunks = NarrowChunks(engine, True)  # its last gradients are Trainer.last_grads, as
                # the epoch-by-epoch path leaves them, logger or not
            return engine.chunks
        if self.path != "c":
            return None
        if self._engine is None:
            self._engine = self._build()
        engine = self._engine
        if getattr(engine, "chunks", None) is None:
            engine.chunks = EpochChunks(engine, self.keep_grads)
        return engine.chunks

    def evaluation(self, split: str, with_output: bool):
        """(E, the output (B, n_L) or None) of the "train" or "test" split at the current parameters where this
        path computes it (on the training split in batch mode the next update's forward phase: the narrow kernel's
        pass, the fused step's forward), else None."""
        t = self.trainer
        if self.path == "fused" and t.mode == "batch" and split == "train":  # kept for the next update's forward
            loss = torch.empty((), dtype=t.net.dtype, device=t.net.device)
            output = self._bound_engine().evaluate(t.x_train, t.y_train, loss)
            return loss, (output if with_output else None)
        if self.path != "narrow":
            return None
        engine = self._bound_engine()
        if split == "train":
            return engine.evaluate(t.x_train, t.y_train, with_output)
        return engine.evaluate_held_out(t.x_test, t.y_test, with_output)

    def run_epoch(self) -> Tensor:
        """Make one epoch of updates; returns their losses (U,) on the network's device (not read back)."""
        t, net = self.trainer, self.trainer.net
        engine = self._bound_engine()
        if self.path == "narrow":
            if t.mode != "batch":  # minibatch with b = N: its order (sorted, so all samples in order) draws as always
                epoch_order(t.mode, t.x_train.shape[0], t.batch_size, t.generator, replacement=t.replacement)
            losses = engine.update(t.x_train, t.y_train, t.lr).reshape(1)
            t.train_seconds += engine.shared_seconds  # its pass, where the last evaluation made it
            t.last_grads = engine.grads
            return losses
        n = t.x_train.shape[0]
        order, offsets = epoch_order(t.mode, n, t.batch_size, t.generator, replacement=t.replacement)
        n_updates = offsets.numel() - 1
        if self.path == "c":
            losses = engine.run(t.x_train.contiguous(), t.y_train.contiguous(), order, offsets, t.lr,
                                grads=engine.grads)
            t.last_grads = engine.grads
            return losses
        losses = torch.empty(n_updates, dtype=net.dtype, device=net.device)
        order = order.to(net.device)
        bounds = offsets.tolist()
        if self.path == "cuda_graph":
            engine.run(t.x_train, t.y_train, order, bounds, t.lr, losses)
        else:
            for u in range(n_updates):
                idx = None if t.mode == "batch" else order[bounds[u]:bounds[u + 1]]
                engine.update(t.x_train, t.y_train, idx, t.lr, losses[u])
                t.train_seconds += engine.shared_seconds  # a forward phase the last evaluation made for it
        t.last_grads = engine.grads
        return losses

    def close(self) -> None:
        """Release the engine (a CUDA graph and its memory pool) now."""
        if self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()
        self._engine = None


def _what_engines_copy(trainer) -> tuple:
    """What a fast path's engine copies when it is built, as ``EpochRunner.fits`` compares it: (the change count,
    the loss and the f's by identity, [(parameter, *its layout_of)])."""
    net = trainer.net
    objects = (changes_made(), id(trainer.loss_fn), *map(id, net.activation_functions))
    return objects, [(p, *layout_of(p)) for p in net.parameters()]


def _all_samples_each_update(trainer) -> bool:
    """Batch mode, or minibatch with b = N without replacement (the same single update on every sample in order)."""
    return trainer.mode == "batch" or (trainer.mode == "minibatch" and not trainer.replacement
                                       and trainer.batch_size == trainer.x_train.shape[0])


# What batch mode costs an epoch on each path, measured at one thread on the development machine (Xeon, AVX-512):
# the narrow kernel returned to Python every epoch (about 50 us of the Trainer's own work: the pass, the evaluation
# call, the History row; still so with labels: without them it now runs several epochs a call, fast/narrow_epochs.py,
# and these figures were not measured again), where the C loop runs several epochs a call at about 70 ns a sample
# plus 0.75 ns per multiply-add of its forward phase. Below the crossover the C loop is faster: XOR's four samples
# take 0.6 us an epoch there and 45 us through the narrow kernel; 10,000 samples of 4-32-16-4 take 0.9 ms
# through the narrow kernel and about 6 ms in the C loop. Either path is proven; this only picks the faster.
NARROW_EPOCH_OVERHEAD_S = 50e-6
C_LOOP_SAMPLE_S, C_LOOP_MAC_S = 70e-9, 0.75e-9


def _narrow_pays(net: MLP, n_samples: int) -> bool:
    """Whether the narrow kernel's epoch beats the C loop's for n_samples on net (the cost model above)."""
    macs = sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))  # one sample's forward phase
    return n_samples * (C_LOOP_SAMPLE_S + C_LOOP_MAC_S * macs) > NARROW_EPOCH_OVERHEAD_S


def _narrow_applies(net: MLP, loss_fn: Loss) -> bool:
    """Whether the narrow kernel runs this network and loss here (and builds)."""
    if narrow_unsupported(net, loss_fn) is not None:
        return False
    try:
        load_narrow_kernel()
        return True
    except FastPathUnavailable:
        return False


def kept_bytes(cache) -> int:
    """Bytes a plain ForwardCache keeps for the backward phase: its activations and logits (distinct storages)."""
    seen, total = set(), 0
    for t in [*cache.activations, cache.logits]:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total
