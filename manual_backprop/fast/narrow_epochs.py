"""Several batch-mode epochs of the Trainer in one call of the narrow kernel (``narrow_train_epochs``,
_csrc/narrow_epochs.c): the pass, the step, the evaluation and the Trainer's rules inside.

A declared derivative of ``Trainer._run_epoch`` on the narrow path (``NarrowBatch``, fast/narrow.py), otherwise
identical to it: each epoch's update uses the gradients of the pass at the epoch's parameters, the step is
network.update's (W + (-lr) dE/dW rounded once, as torch's add_ rounds it where it fuses the multiply-add: the call
runs only where ``one_update.add_is_fused`` says so), the pass at the new parameters is the training split's
evaluation, then the test split's pass unless it is the training split; a non-finite loss or figure is a divergence
(the Trainer puts the last good state back), else the parameters are the new good state, and a training loss at most
``target_loss`` stops the run. The passes are NarrowBatch's own, so the update losses, the parameters and every
History figure are bit-equal to the epoch-by-epoch path's (tests/proof/test_narrow_epochs.py), which is itself
proven update by update against network.py (test_narrow_kernel.py).

The bookkeeping (History rows, logging, the last good state, a stop, Ctrl-C's rewind to the call's start, the
wall-time cap and the boundaries at checkpoints and histograms) is ``EpochChunks``'s, as for the C loop. It applies
in batch mode without labels (the call computes no accuracy; a classification runs epoch by epoch); ``CHUNKS =
False`` turns it off.
"""

from __future__ import annotations

import ctypes
import math
import time
from typing import Optional

import torch

from .common import mark_written
from .epochs import EpochChunks, _pointers
from .narrow import NarrowBatch, _same_state, load_narrow_kernel
from .one_update import add_is_fused

__all__ = ["CHUNKS", "NarrowChunks", "chunks_unsupported"]

CHUNKS = True  # whether the Trainer's narrow path runs several epochs a call where it can


class _EpochsCall(ctypes.Structure):
    """narrow_epochs of _csrc/narrow.c."""

    p = ctypes.c_void_p
    _fields_ = [("n_epochs", ctypes.c_int64), ("lr", ctypes.c_double), ("target_loss", ctypes.c_double),
                ("good_init", p), ("good", p), ("grad_w", p), ("grad_b", p), ("losses", p), ("figures", p),
                ("seconds", p), ("kept_w", p), ("kept_b", p), ("kept_loss", p), ("next_w", p), ("next_b", p),
                ("next_loss", p), ("kept_seconds", ctypes.c_double), ("next_seconds", ctypes.c_double),
                ("epochs_run", ctypes.c_int64), ("stop", ctypes.c_int32), ("kept_in", ctypes.c_int32),
                ("next_out", ctypes.c_int32)]
    del p


def chunks_unsupported(trainer) -> Optional[str]:
    """Why the Trainer's narrow-path epochs cannot run several to a call, or None when they can."""
    t = trainer
    if not CHUNKS:
        return "narrow_epochs.CHUNKS is off"
    if t.mode != "batch":
        return f"the narrow kernel's epochs run batch mode, not {t.mode!r}"
    if t.labels_train is not None or t.labels_test is not None:
        return "the narrow kernel's epochs compute no accuracy: a classification runs epoch by epoch"
    if not add_is_fused(t.net.dtype):
        return "torch's add_ does not round as one fused multiply-add here: the step stays torch's"
    return None


class NarrowChunks(EpochChunks):
    """The Trainer's batch-mode epochs through ``narrow_train_epochs``, several per call (module docstring)."""

    def __init__(self, engine: NarrowBatch, keep_grads: bool):
        super().__init__(engine, keep_grads)
        self._next = [engine.kernel.new_gradients() for _ in range(2)]  # where a call leaves its last pass (two:
        self._next_loss = [torch.empty((), dtype=engine.net.dtype) for _ in range(2)]  # one may be the kept one)
        self._which = 0
        lib = load_narrow_kernel()
        self._fn = lib.narrow_train_epochs_f64 if engine.net.dtype == torch.float64 else lib.narrow_train_epochs_f32

    def run(self, t, until: int) -> int:
        """Run the Trainer ``t``'s epochs from t.epoch up to ``until`` at most (fewer for the wall-time cap or a
        stop), recording them as ``Trainer._run_epoch`` does; returns how many epochs the run advanced."""
        net, engine = t.net, self.kernel
        E, start_state = self._begin(t, until)
        engine.kernel._bind(t.x_train, t.y_train)  # the plans read the data and the parameters as they are now
        test_plan = None
        if not t._test_is_train:
            engine._held_out._bind(t.x_test, t.y_test)
            test_plan = ctypes.byref(engine._held_out._plan)
        good, losses, figures, seconds, keep, grad_w, grad_b = self._buffers(t, E, E)
        # the pass NarrowBatch kept at these parameters and data (the last call's, or an epoch's evaluation) is the
        # first update's: one pass an epoch however the epochs are cut into calls
        kept = engine._kept
        kept_in = kept is not None and _same_state(kept[0], engine._key(t.x_train, t.y_train))
        if kept_in:
            keep += [_pointers(kept[2].weights), _pointers(kept[2].biases)]
        self._which ^= 1
        nxt, nxt_loss = self._next[self._which], self._next_loss[self._which]
        keep += [_pointers(nxt.weights), _pointers(nxt.biases)]
        call = _EpochsCall(n_epochs=E, lr=t.lr, target_loss=math.nan if t.target_loss is None else t.target_loss,
                           good_init=ctypes.addressof(keep[0]), good=ctypes.addressof(keep[1]), grad_w=grad_w,
                           grad_b=grad_b, losses=losses.data_ptr(), figures=figures.data_ptr(),
                           seconds=seconds.data_ptr(), kept_in=int(kept_in),
                           kept_seconds=engine.kept_seconds if kept_in else 0.0,
                           kept_w=ctypes.addressof(keep[-4]) if kept_in else None,
                           kept_b=ctypes.addressof(keep[-3]) if kept_in and net.bias else None,
                           kept_loss=kept[1].data_ptr() if kept_in else None, next_w=ctypes.addressof(keep[-2]),
                           next_b=ctypes.addressof(keep[-1]) if net.bias else None, next_loss=nxt_loss.data_ptr())
        began = time.perf_counter()
        status = self._fn(ctypes.byref(engine.kernel._plan), test_plan, ctypes.byref(call))
        elapsed = time.perf_counter() - began
        mark_written(net.parameters())  # stepped through their addresses: what is keyed on versions sees it
        if status:
            raise MemoryError("the narrow kernel could not allocate its workspace") if status == 1 else \
                RuntimeError(f"narrow_train_epochs returned status {status}")
        ran, stop = call.epochs_run, call.stop
        engine.passes += ran + (0 if kept_in else 1)  # the training split's passes
        # the pass at the parameters the call left, kept for the next update (keyed on the versions bumped above)
        engine._kept = (engine._key(t.x_train, t.y_train), nxt_loss, nxt, None) if call.next_out else None
        engine.kept_seconds = call.next_seconds if call.next_out else 0.0
        self._per_epoch = elapsed / max(ran, 1)
        return self._record(t, losses.view(E, 1)[:ran], figures[:ran], seconds[:ran].tolist(), ran, stop,
                            start_state, good, E)
