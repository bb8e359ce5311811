"""Several epochs of the Trainer in one call of the C loop: the updates, the evaluation and the Trainer's rules inside.

A declared derivative of ``Trainer._run_epoch`` (training/trainer.py) on the C loop, otherwise identical to it: for
each epoch, its updates in the learning mode's order (modes.epoch_order, drawn from the Trainer's own generator),
then the loss and accuracy of the training split (and of the test split unless it is the same), then the Trainer's
rules in its order: a non-finite loss or figure is a divergence (the parameters go back to the epoch's start, the
last good state, and the run stops with the Trainer's own message); else the parameters are the new good state,
and the run stops once the training loss is at most ``target_loss``. History rows, logging, checkpoints, progress
and Ctrl-C stay the Trainer's: a call ends at the next epoch that checkpoints, draws histograms or ends the run,
and after about ``WALL_CAP`` seconds, so that Ctrl-C (which rewinds to the call's start, as to an epoch's) is prompt.

Orders: online orders of up to ``REPLAY_MAX`` samples, in a call of more than ``REPLAY_FROM`` epochs per sample (below
it torch.randperm an epoch costs less), are drawn in bulk, one draw of the generator per call,
replaying torch.randperm's shuffle (for i < n - 1: swap r[i] and r[i + u_i % (n - i)], u_i one 32-bit output of
the Mersenne twister) on the same outputs, so the orders and the generator's state are bit-identical to
``epoch_order`` epoch by epoch (checked against torch.randperm once per process; if it ever disagreed, the orders
come from epoch_order). Other modes call epoch_order once an epoch.

What agrees with what (tests/proof/test_epoch_chunks.py): the updates are the C loop's (C_ULPS of network.py's, per
update); a call of E epochs is bit-equal to E calls of one epoch (same C arithmetic); the evaluation sums its rows
in double, within ``EVAL_ULPS`` of torch's evaluation of the same parameters (relative). Nothing is kept across
calls: the parameters, the data and the last good state are read afresh at every call, so ``net.to``, a user's
edit, a divergence rewind or a resume between calls is always seen.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import time
from typing import Optional

import torch
from torch import Tensor

from ..modes import epoch_order
from ..network import Gradients
from .c_loop import CKernel, EpochsCall

__all__ = ["EpochChunks", "next_boundary", "REPLAY_MAX", "WALL_CAP", "EVAL_ULPS", "replay_randperm"]

REPLAY_MAX = 256  # online orders of at most this many samples are replayed from bulk draws
REPLAY_FROM = 8  # ... in calls of more than this many epochs per sample: the replay costs about 15 us a sample
# whatever E, a torch.randperm about 2 us an epoch (measured at one thread; XOR at 1 epoch a call: 79 against 6 us)
WALL_CAP = 0.05  # seconds a call aims at: Ctrl-C waits at most about this long
EVAL_ULPS = 8  # the in-loop evaluation's loss against torch's, in ulps of the loss (relative)


def next_boundary(trainer) -> int:
    """The epoch a call must end at: the run's last, the next checkpoint, the next histogram (with a logger)."""
    t, e = trainer, trainer.epoch
    stops = [t.epochs]
    if t.checkpoint_path is not None:
        stops.append((e // t.checkpoint_every + 1) * t.checkpoint_every)
    if t.logger is not None:
        stops.append((e // t.histogram_every + 1) * t.histogram_every)
    return min(stops)


def _pointers(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * max(1, len(tensors)))(*[p.data_ptr() for p in tensors])


def _draw_u32(generator: torch.Generator, count: int) -> Tensor:
    """The next ``count`` 32-bit outputs of the generator, in order, as int64 (count,), consuming exactly ``count``:
    pairs through random64 (first output in the high half); an odd last one only as randperm(2) sees it (u % 2),
    which is all a shuffle's last swap uses."""
    v = torch.empty(count // 2, dtype=torch.int64).random_(-(2 ** 63), None, generator=generator)
    pairs = torch.stack([(v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF], dim=1).reshape(-1)
    if count % 2:
        pairs = torch.cat([pairs, torch.randperm(2, generator=generator)[:1]])
    return pairs


def replay_randperm(draws: Tensor, n: int) -> Tensor:
    """torch.randperm(n)'s shuffle on draws (E, n - 1): (E, n), one permutation per row."""
    E = draws.shape[0]
    r = torch.arange(n).repeat(E, 1)  # (E, n)
    rows = torch.arange(E)
    for i in range(n - 1):
        j = draws[:, i] % (n - i) + i
        a = r[:, i].clone()
        r[:, i] = r[rows, j]
        r[rows, j] = a
    return r


_REPLAY_OK: Optional[bool] = None


def _replay_agrees() -> bool:
    """Whether the bulk replay reproduces this torch's randperm and leaves the generator where it would (once)."""
    global _REPLAY_OK
    if _REPLAY_OK is None:
        ok = True
        for seed, n, E in ((0, 4, 3), (1, 5, 2), (7, 17, 5), (3, 2, 3)):
            g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            expected = torch.stack([torch.randperm(n, generator=g1) for _ in range(E)])
            got = replay_randperm(_draw_u32(g2, E * (n - 1)).reshape(E, n - 1), n)
            ok = ok and torch.equal(got, expected) and torch.equal(g1.get_state(), g2.get_state())
        _REPLAY_OK = ok
    return _REPLAY_OK


class EpochChunks:
    """The Trainer's epochs through ``mbp_train_epochs``, several per call (see the module docstring)."""

    def __init__(self, kernel: CKernel, keep_grads: bool):
        self.kernel = kernel
        self.keep_grads = keep_grads
        self.grads = None
        self._per_epoch = None  # measured seconds per epoch of a call, for the wall-time cap
        self.reached_target = False

    # ------------------------------------------------------------------ orders
    def orders(self, t, E: int) -> tuple:
        """(orders (E * S,), offsets (U + 1,)) of the Trainer's next E epochs, drawn from its generator."""
        n = t.x_train.shape[0]
        if t.mode == "online" and not t.replacement and 2 <= n <= REPLAY_MAX and E > REPLAY_FROM * n \
                and _replay_agrees():
            draws = _draw_u32(t.generator, E * (n - 1)).reshape(E, n - 1)
            return replay_randperm(draws, n).reshape(-1), torch.arange(n + 1)
        if t.mode == "batch":  # the same order every epoch, nothing drawn
            order, offsets = epoch_order("batch", n, t.batch_size, t.generator)
            return order.repeat(E), offsets
        epochs = [epoch_order(t.mode, n, t.batch_size, t.generator, replacement=t.replacement) for _ in range(E)]
        return torch.cat([o for o, _ in epochs]), epochs[0][1]

    def _skip(self, t, state: Tensor, E: int) -> None:
        """Put the generator where E epochs' orders from ``state`` leave it."""
        t.generator.set_state(state)
        if E:
            self.orders(t, E)

    @staticmethod
    def _labels_of(labels: Optional[Tensor]) -> Optional[Tensor]:
        return None if labels is None else labels.to(torch.int64).contiguous()  # no copy when it is one already

    # ------------------------------------------------------------------ one call
    def _begin(self, t, until: int) -> tuple:
        """(E, the generator's state): the call's epochs (to ``until`` at most, under the wall-time cap), and the
        start that Ctrl-C before this call's epochs are recorded rewinds to, as to the start of an epoch."""
        self.reached_target = False
        E = max(1, until - t.epoch)
        E = max(1, min(E, int(WALL_CAP / self._per_epoch))) if self._per_epoch else min(E, 4)
        start_state = t.generator.get_state()
        t._epoch_start = (start_state, t.epoch, t.updates, t.train_seconds, len(t.history.epoch))
        t._optimizer_start = t.optimizer.state_dict()
        return E, start_state

    def _buffers(self, t, E: int, n_losses: int) -> tuple:
        """What a call writes, and the pointer arrays it reads them through: (good (the last good state, a copy),
        losses, figures (E, 4), seconds (E,), keep (the pointer arrays, held), grad_w, grad_b (their addresses, or
        None without kept gradients))."""
        net = t.net
        params = net.parameters()
        good_init = t._good_state if t._good_state is not None else params
        good = [p.clone() for p in params]
        losses = torch.empty(n_losses, dtype=net.dtype)
        figures = torch.empty(E, 4, dtype=torch.float64)
        seconds = torch.empty(E, dtype=torch.float64)
        if self.keep_grads and self.grads is None:
            self.grads = Gradients([torch.zeros_like(w) for w in net.weights], [torch.zeros_like(b) for b in net.biases])
        keep = [_pointers(good_init), _pointers(good)]
        grad_w = grad_b = None
        if self.keep_grads:
            keep += [_pointers(self.grads.weights), _pointers(self.grads.biases)]
            grad_w, grad_b = ctypes.addressof(keep[2]), ctypes.addressof(keep[3]) if net.bias else None
        return good, losses, figures, seconds, keep, grad_w, grad_b

    def run(self, t, until: int) -> int:
        """Run the Trainer ``t``'s epochs from t.epoch up to ``until`` at most (fewer for the wall-time cap or a
        stop), recording them as ``Trainer._run_epoch`` does; returns how many epochs the run advanced."""
        kernel = self.kernel
        E, start_state = self._begin(t, until)
        orders, offsets = self.orders(t, E)
        U = offsets.numel() - 1
        x, y = t.x_train.contiguous(), t.y_train.contiguous()
        kernel.bind(x, y)
        good, losses, figures, seconds, keep, grad_w, grad_b = self._buffers(t, E, E * U)
        test = None if t._test_is_train else (t.x_test.contiguous(), t.y_test.contiguous(),
                                               self._labels_of(t.labels_test))
        train_labels = self._labels_of(t.labels_train)
        call = EpochsCall(n_epochs=E, n_updates=U, offsets=offsets.data_ptr(), orders=orders.data_ptr(), lr=t.lr,
                          target_loss=math.nan if t.target_loss is None else t.target_loss,
                          train_labels=train_labels.data_ptr() if train_labels is not None else None,
                          test_x=test[0].data_ptr() if test else None, test_y=test[1].data_ptr() if test else None,
                          test_labels=test[2].data_ptr() if test and test[2] is not None else None,
                          test_n=test[0].shape[0] if test else 0, good_init=ctypes.addressof(keep[0]),
                          good=ctypes.addressof(keep[1]), losses=losses.data_ptr(), figures=figures.data_ptr(),
                          seconds=seconds.data_ptr(), grad_w=grad_w, grad_b=grad_b)
        began = time.perf_counter()
        kernel.call_epochs(call)
        elapsed = time.perf_counter() - began
        ran, stop = call.epochs_run, call.stop
        self._per_epoch = elapsed / max(ran, 1)
        return self._record(t, losses.view(E, U)[:ran], figures[:ran], seconds[:ran].tolist(), ran, stop,
                            start_state, good, E)

    def _record(self, t, losses: Tensor, figures: Tensor, seconds: list, ran: int, stop: int, start_state: Tensor,
                good: list, E: int) -> int:
        """The Trainer's bookkeeping of ``ran`` epochs: History rows, log, last good state, stop, generator.
        figures: (ran, 4) float64, each epoch's train loss, train accuracy, test loss, test accuracy."""
        kept = ran - 1 if stop == 2 else ran
        if kept < E:
            self._skip(t, start_state, kept)  # the generator as after the kept epochs' orders
        h, U = t.history, losses.shape[1]
        labels = t.labels_train is not None
        if t.logger is None:  # the rows at once: the same values as the loop below, without a call per epoch
            columns = [figures[:kept, c].tolist() for c in range(4)]
            moments = list(itertools.accumulate(seconds[:kept], initial=t.train_seconds))[1:]  # the same sums
            h.record_many(range(t.epoch + 1, t.epoch + kept + 1), columns[0], columns[2],
                          columns[1] if labels else None, columns[3] if t.labels_test is not None else None,
                          range(t.updates + U, t.updates + U * kept + 1, U), moments)
            t.epoch, t.updates = t.epoch + kept, t.updates + U * kept
            if moments:
                t.train_seconds = moments[-1]
        else:  # epoch by epoch: the logger takes each row with its update losses
            rows = figures.tolist()
            for j in range(kept):
                first_update = t.updates
                t.updates += U
                t.epoch += 1
                t.train_seconds += seconds[j]
                train_loss, train_acc, test_loss, test_acc = rows[j]
                if not labels:
                    train_acc = None
                if t.labels_test is None:
                    test_acc = None
                metrics = h.record(t.epoch, train_loss, test_loss, train_acc, test_acc, t.updates, t.train_seconds)
                if j == kept - 1:
                    t.last_grads = self.grads
                    if stop == 1:
                        t.history.stop_reason = "target_loss"
                t._log_epoch(metrics, losses[j], first_update)
        t.last_grads = self.grads
        t._good_state = good
        if stop == 2:
            # the diverged epoch, as Trainer._run_epoch meets it: rewound to its start by the Trainer's own rule
            t._epoch_start = (t.generator.get_state(), t.epoch, t.updates, t.train_seconds, len(h.epoch))
            t.epoch += 1
            t._diverged(losses[ran - 1], t.updates)
            return kept
        t._epoch_start = None
        self.reached_target = stop == 1  # the Trainer words the stop (training/loop.py's target_message)
        return kept
