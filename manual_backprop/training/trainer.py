"""The lecture's modes of learning, run on an MLP with hand-written gradients.

    batch       all samples, one update per epoch: "all weight updates over all samples are computed and then GD is
                run once, at the end of the epoch"
    online      stochastic: one update per sample, in a fresh random order each epoch
    minibatch   updates from b stochastically selected samples: by default the epoch's shuffled order cut into
                batches of b (the last one partial, averaged over its true size); with ``replacement=True`` each
                batch draws b samples uniformly with replacement, ceil(N / b) batches an epoch

With a mean-over-samples loss (reduction="mean", the lecture's e(w)) a learning rate means the same in every mode:
each update moves the weights by lr times an average gradient. The indices of a minibatch are sorted before use
(a batch is a set), so minibatch with b = N is exactly batch mode and b = 1 is exactly online mode.

Each epoch the trainer evaluates the cost (and accuracy, for classification) on the training split and on the
held-out test split, because the cost that matters is the one on unseen data. It stops at ``epochs``, at
``target_loss`` (on the training split), or on divergence: a NaN or inf loss stops the run with a message naming
the epoch and the update, and the parameters are put back to the last state known good (the end of the previous
epoch, whose losses were all finite).

Per-update losses stay on the device and are read back once an epoch (no host-device synchronisation per update).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from ..activations import Softmax
from ..checks import check_bool, check_choice, check_fits_dtype, check_int, check_positive_number, check_seed
from ..losses import Loss, default_loss_for
from ..modes import MODES, epoch_order, samples_per_update
from ..network import MLP, forward_phase, loss_and_gradients
from .history import Diverged, History, accuracy, same_split
from .checkpoints import TrainerCheckpoints
from .loop import (check_data, check_progress, diverged_message, epoch_bar, epoch_limit_message, first_bad_update,
                   prepare_split, target_message)
from ..optim.hooks import attach_optimizer

__all__ = ["Trainer", "train"]

# What a logger must offer the Trainer (tblog.RunLogger does; a wrapper such as softmax_outputs' may too).
_LOGGER_METHODS = ("log_epoch", "log_update_losses", "log_histograms", "log_decision_boundary", "log_hparams", "flush")


class Trainer(TrainerCheckpoints):
    """Runs one learning mode on one network, with evaluation, stopping, logging and checkpoints.

    Args:
        net: the MLP to train (changed in place).
        data: a Dataset (x_train, y_train, x_test, y_test, num_classes), moved once to the net's device and dtype.
        mode: "batch", "online" or "minibatch".
        lr: the learning rate eta.
        epochs: the maximum number of epochs.
        batch_size: b for minibatch mode (1 <= b <= N).
        loss_fn: a Loss or a name; None picks cross-entropy for softmax outputs and squared error otherwise.
        target_loss: stop once the training loss at the end of an epoch is at most this.
        replacement: minibatch draws with replacement instead of shuffling.
        seed: seeds the sample order (a CPU generator; the weights have their own seed in the MLP).
        logger: a tblog.RunLogger, or None.
        histogram_every: epochs between weight/gradient histograms and decision-boundary images.
        checkpoint_path: where to write the training state atomically at the end of every ``checkpoint_every``
            epochs (and on Ctrl-C); ``resume()`` continues from it to the same numbers as an unbroken run.
        progress: show a tqdm progress bar over epochs; a string is used as its label.
        fast: "auto" (the default: the fastest path proven for this network and device, see manual_backprop.fast),
            "c", "fused" or "cuda_graph", or False for the plain per-update loop of network.py's functions. Every
            fast path makes the plain path's update within a stated bound of a few ulps, proven update by update
            (tests/proof/test_update_proof.py); whole runs agree as far as rounding lets a trajectory.
        optimizer: a manual_backprop.optim optimizer built on ``net`` (SGD with momentum, Adam, AdamW), or None for
            plain gradient descent with lr. Its lr must equal ``lr``; it runs the plain loop (fast "auto" is off);
            checkpoints carry its state, and a resume refuses another optimizer or other settings (lr aside).

    Every argument is checked here, before anything runs. The Trainer follows its network: after ``net.to(...)``
    (another device or dtype) the next epoch moves the data and the last good state along, once.
    """

    def __init__(self, net: MLP, data, *, mode: str, lr: float, epochs: int, batch_size: Optional[int] = None,
                 loss_fn: Union[str, Loss, None] = None, target_loss: Optional[float] = None,
                 replacement: bool = False, seed: int = 0, logger=None, histogram_every: int = 10,
                 checkpoint_path: Union[str, Path, None] = None, checkpoint_every: int = 1,
                 progress: Union[bool, str] = False, fast: Union[bool, str] = "auto", optimizer=None):
        if not isinstance(net, MLP):
            raise TypeError(f"net must be a manual_backprop MLP, but got {type(net).__name__}")
        self.net, self.mode = net, check_choice("mode", mode, MODES)
        self.lr = check_positive_number("lr", lr)
        check_fits_dtype("lr", self.lr, net.dtype)
        self.epochs = check_int("epochs", epochs, minimum=1)
        if isinstance(net.output_activation, Softmax) and net.sizes[-1] == 1:
            raise ValueError("output_activation 'softmax' on a single output is always 1 and learns nothing; use one "
                             "output per class, one 'sigmoid' output for two classes, or an 'identity' output with "
                             "loss 'squared_error' for a regression target")
        self.loss_fn = net.check_loss(loss_fn) if loss_fn is not None else default_loss_for(net.output_activation)
        self.target_loss = None if target_loss is None else check_positive_number("target_loss", target_loss,
                                                                                 allow_zero=True)
        self.replacement = check_bool("replacement", replacement)
        self.seed = check_seed("seed", seed)
        if logger is not None and not all(callable(getattr(logger, m, None)) for m in _LOGGER_METHODS):
            raise TypeError(f"logger must be a tblog.RunLogger (or an object with its methods "
                            f"{', '.join(_LOGGER_METHODS)}) or None, but got {type(logger).__name__}")
        self.histogram_every = check_int("histogram_every", histogram_every, minimum=1)
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
        self.checkpoint_path = self._check_checkpoint_path(checkpoint_path)
        self.progress = check_progress(progress)
        check_data(data)
        place = {"sizes": net.sizes, "dtype": net.dtype, "device": net.device}
        self.x_train, self.y_train, self.labels_train = prepare_split(data, "train", self.loss_fn, **place)
        self.x_test, self.y_test, self.labels_test = prepare_split(data, "test", self.loss_fn, **place)
        # The logic gates train and test on the same four samples: evaluate them once an epoch, not twice.
        self._test_is_train = same_split((self.x_train, self.y_train, self.labels_train),
                                         (self.x_test, self.y_test, self.labels_test))
        self._data_device, self._data_dtype = net.device, net.dtype  # where the data lives: the net's place
        self.batch_size = samples_per_update(mode, batch_size, self.x_train.shape[0])
        self.generator = torch.Generator().manual_seed(self.seed)
        self.logger = logger
        self.history = History(mode=mode)
        self.epoch = 0
        self.updates = 0
        self.train_seconds = 0.0
        self._good_state = None
        self._epoch_start = None
        self.last_grads = None
        self.optimizer, _, fast = attach_optimizer(optimizer, net, self.lr, fast)  # fast paths run plain SGD
        # Fast path switch (manual_backprop.fast): the same updates in the same order, less overhead per update.
        self.fast = fast
        self._fast_runner = None
        self._in_run = False  # inside run(): nothing outside the trainer changes the network or the data
        if fast:
            from ..fast import EpochRunner
            self._fast_runner = EpochRunner(self, fast)

    # ------------------------------------------------------------------ data
    @staticmethod
    def _check_checkpoint_path(path) -> Optional[Path]:
        if path is None:
            return None
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"checkpoint_path must be a file path (str or os.PathLike) or None, but got "
                            f"{type(path).__name__}: {path!r}")
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"checkpoint_path {str(path)!r} is a folder; give a file path such as "
                             f"{str(path / 'checkpoint.pt')!r}")
        return path

    def batches(self) -> list:
        """The index tensors of this epoch's updates, in order, on the net's device (one copy per epoch).

        The order is the learning mode's own (modes.py), drawn from the sample-order generator on the CPU, so it
        does not depend on the device. Batch mode is one update on all samples: [None].
        """
        if self.mode == "batch":
            return [None]  # all samples, in their stored order
        order, offsets = epoch_order(self.mode, self.x_train.shape[0], self.batch_size, self.generator,
                                     replacement=self.replacement)
        return list(order.to(self.net.device).split(offsets.diff().tolist()))

    # ------------------------------------------------------------------ one epoch
    def _update(self, idx: Optional[Tensor]) -> Tensor:
        """Forward, backward and one gradient-descent step on the samples idx; returns the loss (on the device)."""
        x = self.x_train if idx is None else self.x_train.index_select(0, idx)
        y = self.y_train if idx is None else self.y_train.index_select(0, idx)
        loss, grads = loss_and_gradients(self.net, x, y, self.loss_fn)
        self.optimizer.update(self.net.weights, self.net.biases, grads, self.lr)  # network.update, or its step
        self.last_grads = grads  # for the gradient histograms
        return loss

    @torch.no_grad()
    def evaluate(self, split: str, *, reference: bool = False) -> tuple:
        """(loss, accuracy or None) of the current network on the "train" or "test" split, as device tensors.

        ``reference=True`` evaluates through network.py's forward phase even where a fast path would compute it."""
        x, y, labels = (self.x_train, self.y_train, self.labels_train) if split == "train" else \
            (self.x_test, self.y_test, self.labels_test)
        fast = None
        if not reference and self._fast_runner is not None:
            if not self._in_run:  # a call between runs: the user may have changed what the fast path kept
                self._follow_network()
                self._check_fast_runner(begin_run=False)
            fast = self._fast_runner.evaluation(split, labels is not None)
            if not self._in_run:
                self._fast_runner.end_run()  # what it keeps now is the values' as they are
        if fast is not None:  # the narrow kernel: on the training split, the next update's forward phase
            loss, output = fast
            return loss, (accuracy(output, labels) if labels is not None else None)
        cache = forward_phase(self.net.weights, self.net.biases, self.net.activation_functions, x)
        loss = self.loss_fn.value(cache.logits, cache.output, y)
        acc = accuracy(cache.output, labels) if labels is not None else None
        return loss, acc

    def _record_epoch(self, *, reference: bool = False) -> dict:
        train = self.evaluate("train", reference=reference)
        values = [*train, *(train if self._test_is_train else self.evaluate("test", reference=reference))]
        present = [v for v in values if v is not None]
        numbers = torch.stack(present).tolist() if present else []  # one read-back for the epoch's figures
        it = iter(numbers)
        train_loss, train_acc, test_loss, test_acc = [next(it) if v is not None else None for v in values]
        return self.history.record(self.epoch, train_loss, test_loss, train_acc, test_acc, self.updates,
                                   self.train_seconds)

    def _log_epoch(self, metrics: dict, update_losses: Optional[Tensor], first_update: int) -> None:
        if self.logger is None:
            return
        self.logger.log_epoch(self.epoch, {k: v for k, v in metrics.items() if v is not None})
        if update_losses is not None and update_losses.numel():
            self.logger.log_update_losses(first_update + 1, update_losses)  # update numbers count from 1
        if self.epoch % self.histogram_every == 0 or self.epoch == self.epochs or self.history.stop_reason:
            self.logger.log_histograms(self.epoch, self.net, self.last_grads, force=True)
            if self.x_train.shape[1] == 2 and self.labels_train is not None:
                self.logger.log_decision_boundary(self.epoch, self.net, self.x_train, self.labels_train)

    def _follow_network(self) -> None:
        """Move the data and the last good state to the network's device and dtype if ``net.to`` moved it."""
        device, dtype = self.net.device, self.net.dtype
        if (device, dtype) == (self._data_device, self._data_dtype):
            return

        def move(t: Optional[Tensor]) -> Optional[Tensor]:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

        for name in ("x_train", "y_train", "labels_train", "x_test", "y_test", "labels_test"):
            setattr(self, name, move(getattr(self, name)))
        if self._good_state is not None:
            self._good_state = [move(g) for g in self._good_state]
        self.last_grads = None
        self._data_device, self._data_dtype = device, dtype
        if self._fast_runner is not None:  # its engine was built for the old device and dtype
            self._remake_fast_runner()

    def _remake_fast_runner(self) -> None:
        """A new fast runner in place of the old (its engine released): for the network and loss as they are now."""
        from ..fast import EpochRunner
        self._fast_runner.close()
        self._fast_runner = EpochRunner(self, self.fast)

    def _check_fast_runner(self, *, begin_run: bool) -> None:
        """Between runs: make the fast runner again where what its engine copied changed (an f or the loss replaced,
        one of their attributes set, a parameter given new memory by ``.data =`` or ``set_``), and have it check its
        kept results against the values (a write through ``.data`` or numpy bumps no version counter)."""
        if self._fast_runner is None:
            return
        if not self._fast_runner.fits(self):
            self._remake_fast_runner()
        self._fast_runner.check_values(begin_run=begin_run)

    def run(self, *, raise_on_divergence: bool = False) -> History:
        """Train until a stopping condition holds; returns the History (also kept in ``self.history``).

        Calling it again after raising ``epochs`` continues a run that stopped at the epoch limit.
        """
        self._follow_network()
        self._check_fast_runner(begin_run=True)
        if self.history.stop_reason == "max_epochs" and self.epoch < self.epochs:
            self.history.stop_reason, self.history.message = "", ""  # a longer run continues a finished one
        if not self.history.epoch:
            # Epoch 0, the initial network, through network.py in every mode: the modes start from one row.
            metrics = self._record_epoch(reference=True)
            self._log_epoch(metrics, None, 0)
        # The first epoch's start, which a divergence or Ctrl-C puts back: the parameters as they are now (the last
        # run's last good state, unless the user changed them since).
        self._good_state = [p.clone() for p in self.net.parameters()]
        self._in_run = True
        try:
            with epoch_bar(self.progress, total=self.epochs, initial=self.epoch, label=self.mode) as bar:
                while self.epoch < self.epochs and not self.history.stop_reason:
                    self._follow_network()
                    done = self._run_epochs()
                    if bar is not None:
                        bar.update(done)
                        bar.set_postfix(loss=f"{self.history.train_loss[-1]:.4g}",
                                        test=f"{self.history.test_loss[-1]:.4g}")
                    if self.checkpoint_path is not None and (self.epoch % self.checkpoint_every == 0
                                                             or self.history.stop_reason or self.epoch == self.epochs):
                        self.save_checkpoint(self.checkpoint_path)
            if not self.history.stop_reason:
                self.history.stop_reason, self.history.message = "max_epochs", epoch_limit_message(self.epochs)
        except KeyboardInterrupt:
            self.history.stop_reason = "interrupted"
            self.history.message = f"interrupted by the user during epoch {self.epoch + 1}"
            self._rewind_unfinished_epoch()
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            raise
        finally:
            self._in_run = False
        if self._fast_runner is not None:
            self._fast_runner.end_run()
        if self.logger is not None:
            self.logger.log_hparams(self.hparams(), self._final_metrics())
            self.logger.flush()
        if self.history.stop_reason == "diverged" and raise_on_divergence:
            raise Diverged(self.history.message)
        return self.history

    def _run_epochs(self) -> int:
        """One epoch, or through the C loop several in one call (fast/epochs.py: the same epochs, rules and records)
        up to the next epoch that checkpoints, draws histograms or ends the run; returns how many it ran."""
        chunks = self._fast_runner.epoch_chunks() if self._fast_runner is not None else None
        if chunks is None:
            self._run_epoch()
            return 1
        from ..fast.epochs import next_boundary

        done = chunks.run(self, next_boundary(self))
        if chunks.reached_target:
            self.history.stop_reason = "target_loss"
            self.history.message = target_message(self.target_loss, self.epoch, self.history.train_loss[-1])
        return done

    def _run_epoch(self) -> None:
        first_update = self.updates
        # Where this epoch starts: Ctrl-C before the epoch is complete rewinds to it, so a resumed run redoes it.
        self._epoch_start = (self.generator.get_state(), self.epoch, self.updates, self.train_seconds,
                             len(self.history.epoch))
        self._optimizer_start = self.optimizer.state_dict()
        losses = []
        start = time.perf_counter()
        with torch.no_grad():
            if self._fast_runner is not None:
                losses = self._fast_runner.run_epoch()  # (U,) on the device; not read back here
            else:
                for idx in self.batches():
                    losses.append(self._update(idx))
        if self.net.device.type == "cuda":
            torch.cuda.synchronize(self.net.device)
        self.train_seconds += time.perf_counter() - start
        self.updates += len(losses)
        self.epoch += 1
        update_losses = (losses if isinstance(losses, Tensor) else torch.stack(losses)).cpu()  # one read-back
        metrics = self._record_epoch()
        if not bool(torch.isfinite(update_losses).all()) or not all(math.isfinite(v) for v in metrics.values()
                                                                    if v is not None):
            self._diverged(update_losses, first_update)
            return
        self._good_state = [p.clone() for p in self.net.parameters()]
        self._epoch_start = None  # the epoch is complete: nothing to rewind from here on
        if self.target_loss is not None and self.history.train_loss[-1] <= self.target_loss:
            self.history.stop_reason = "target_loss"
            self.history.message = target_message(self.target_loss, self.epoch, self.history.train_loss[-1])
        self._log_epoch(metrics, update_losses, first_update)

    def _diverged(self, update_losses: Tensor, first_update: int) -> None:
        _, where = first_bad_update(update_losses, first_update)
        epoch = self.epoch
        # The failed epoch is undone, so the history and the parameters end on the last good state.
        self._rewind_unfinished_epoch()
        self.history.stop_reason = "diverged"
        self.history.message = diverged_message(epoch, self.lr, where)

    def _rewind_unfinished_epoch(self) -> None:
        """Undo an epoch that was cut short: parameters, sample-order RNG, counters and history as at its start."""
        if self._epoch_start is None:
            return
        generator_state, self.epoch, self.updates, self.train_seconds, n_records = self._epoch_start
        self.generator.set_state(generator_state)
        self._restore_good_state()
        self.optimizer.load_state_dict(self._optimizer_start)
        for name in ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates", "seconds"):
            del getattr(self.history, name)[n_records:]
        self._epoch_start = None

    def _restore_good_state(self) -> None:
        if self._good_state is not None:
            for p, good in zip(self.net.parameters(), self._good_state):
                p.copy_(good)

    def _final_metrics(self) -> dict:
        f = self.history.final
        metrics = {"final/loss_train": f["train_loss"], "final/loss_test": f["test_loss"],
                   "final/updates": float(f["updates"]), "final/seconds": f["seconds"]}
        if f["train_accuracy"] is not None:
            metrics.update({"final/accuracy_train": f["train_accuracy"], "final/accuracy_test": f["test_accuracy"]})
        return metrics

    def hparams(self) -> dict:
        spec = self.net.spec()
        return {"mode": self.mode, "lr": self.lr, "batch_size": self.batch_size, "sizes": str(spec["sizes"]),
                "activation": ",".join(spec["activation"]) or "none", "output_activation": spec["output_activation"],
                "loss": self.loss_fn.name, "reduction": self.loss_fn.reduction, "seed": self.seed,
                "net_seed": spec["seed"] if spec["seed"] is not None else -1, "replacement": self.replacement}


def train(net: MLP, data, *, mode: str, lr: float, epochs: int, **kwargs) -> History:
    """Train ``net`` in place in one learning mode; see ``Trainer`` for the arguments. Returns the History."""
    return Trainer(net, data, mode=mode, lr=lr, epochs=epochs, **kwargs).run()
