"""PopulationTrainer: every member of a Population trained in one learning mode, in lockstep, as a Trainer would.

One epoch is one function (epoch.py's ``EpochFunction``) of plain tensors: every update through network.py's forward_phase,
backward_phase and update on the stacked parameters, the evaluation, and the freeze bookkeeping, all on the device.
The three engines run that same function:

    eager       as it is (torch.bmm and element-wise ops; CPU or CUDA);
    compiled    through torch.compile (one graph per epoch; the updates are unrolled into it, so compile time grows
                with the updates per epoch: refused above COMPILED_MAX_UPDATES);
    cuda_graph  captured once as a CUDA graph on static buffers and replayed each epoch (CUDA only).

and one more, a declared derivative of that function: ``c`` (c_engine.py), many epochs of online learning per call
of one C kernel, members innermost, the orders replayed from each member's generator. ``auto`` (the default) picks
``c`` where it applies (CPU float32/float64, online, plain gradient descent, element-wise activations, squared
error or binary cross-entropy) and ``eager`` elsewhere, silently; ``c`` asked for and not applicable warns.
"""

from __future__ import annotations

import time
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_int, check_positive_number, check_seeds
from ..fast.common import FastPathWarning, mark_written
from ..fast.cuda_graph import capture_graph
from ..modes import MODES, EpochOrders, samples_per_update
from ..optim.hooks import attach_optimizer
from ..training.history import same_split
from ..training.loop import (check_data, check_progress, diverged_message, epoch_bar, epoch_limit_message,
                             first_bad_update, prepare_split, target_message)
from .checkpoints import PopulationCheckpoints
from .history import PopulationHistory
from .logger import PopulationLogger
from .c_engine import PopulationCKernel, population_c_unsupported, run_c_epochs
from .epoch import EpochFunction, compile_epoch, evaluate_members
from .stack import Population

__all__ = ["PopulationTrainer", "ENGINES", "COMPILED_MAX_UPDATES"]

ENGINES = ("auto", "eager", "compiled", "cuda_graph", "c")

# torch.compile unrolls the epoch's Python loop over updates into one graph: compile time grows with the number of
# updates per epoch (about a second per 10 updates on a small CPU). Above this, the compiled engine is refused.
COMPILED_MAX_UPDATES = 256


class PopulationTrainer(PopulationCheckpoints):
    """Trains every member of a Population in one learning mode, in lockstep, each exactly as a Trainer would.

    Args:
        population: the Population (changed in place).
        data: a Dataset, moved once to the population's device and dtype.
        mode: "batch", "online" or "minibatch".
        lr: one learning rate for all members, or K of them (sequence or tensor).
        epochs: the maximum number of epochs.
        batch_size: b for minibatch mode.
        loss_fn: a Loss or a name (squared_error, cross_entropy, binary_cross_entropy); None: the default for the
            output activation.
        target_loss: a member whose training loss at the end of an epoch is at most this reaches its target: it
            is frozen there (a Trainer stops there) and counts as a success.
        replacement: minibatch draws with replacement.
        order_seeds: one sample-order seed per member (Trainer's ``seed``); None: the population's weight seeds.
        logger: a PopulationLogger, or None.
        engine: "eager" (network.py's functions with bmm, CPU or CUDA), "compiled" (the same epoch function
            through torch.compile; compiles once, tens of seconds; needs a C++ compiler on the CPU; at most
            COMPILED_MAX_UPDATES updates an epoch), "cuda_graph" (CUDA only: the eager epoch is captured once as a
            CUDA graph and replayed), "c" (c_engine.py: many online epochs per call of one C kernel) or "auto"
            (the default: "c" where it applies, else "eager"; ``self.engine`` says which runs).
        epochs_per_draw: epochs whose sample orders are drawn and gathered at once (the C engine: epochs per call).
        optimizer: a manual_backprop.optim optimizer built on this population (settings one per member or shared);
            None: plain gradient descent. Only the eager engine runs one.
        progress: a tqdm bar over epochs; a string is its label.
        checkpoint_path: where the whole state is written atomically (checkpoints.py) every ``checkpoint_every``
            epochs, at the end, and on Ctrl-C (back to the last finished epoch first); ``resume(path)`` continues
            it to the numbers an unbroken run gives. None: no checkpoints.
    """

    def __init__(self, population: Population, data, *, mode: str, lr, epochs: int,
                 batch_size: Optional[int] = None, loss_fn=None, target_loss: Optional[float] = None,
                 replacement: bool = False, order_seeds: Optional[Sequence[int]] = None,
                 logger: Optional[PopulationLogger] = None, engine: str = "auto", epochs_per_draw: int = 64,
                 progress: Union[bool, str] = False, optimizer=None, checkpoint_path=None,
                 checkpoint_every: int = 100):
        if not isinstance(population, Population):
            raise TypeError(f"population must be a Population, but got {type(population).__name__}")
        self.pop, self.mode, self.engine = population, check_choice("mode", mode, MODES), check_choice(
            "engine", engine, ENGINES)
        requested = engine
        if engine == "auto":  # the C engine where it applies (checked below, once the data is in), else eager
            engine = self.engine = "c" if optimizer is None and population.device.type == "cpu" else "eager"
        if engine == "cuda_graph" and population.device.type != "cuda":
            raise ValueError(f"engine 'cuda_graph' needs a population on CUDA, but it is on {population.device}")
        self.replacement = check_bool("replacement", replacement)
        K = population.size
        self.lr = population.check_lr(lr)
        self.optimizer, _, _ = attach_optimizer(optimizer, population, self.lr, engine, switch="engine")
        self.epochs = check_int("epochs", epochs, minimum=1)
        self.loss_fn = population.check_loss(loss_fn)
        self.target_loss = None if target_loss is None else check_positive_number("target_loss", target_loss,
                                                                                 allow_zero=True)
        self.order_seeds = list(population.seeds) if order_seeds is None else check_seeds("order_seeds", order_seeds)
        if len(self.order_seeds) != K:
            raise ValueError(f"order_seeds must hold one seed per member ({K}), but got {len(self.order_seeds)}")
        check_data(data)
        place = {"sizes": population.sizes, "dtype": population.dtype, "device": population.device}
        self.x_train, self.y_train, self.labels_train = prepare_split(data, "train", self.loss_fn, **place,
                                                                      names=("x_train", "y_train"))
        self.x_test, self.y_test, self.labels_test = prepare_split(data, "test", self.loss_fn, **place,
                                                                   names=("x_test", "y_test"))
        n = self.x_train.shape[0]
        self.batch_size = samples_per_update(mode, batch_size, n)
        self.epochs_per_draw = check_int("epochs_per_draw", epochs_per_draw, minimum=1)
        self.orders = None if mode == "batch" else EpochOrders(self.order_seeds, n, self.batch_size,
                                                               replacement=self.replacement)
        S = n if self.orders is None else self.orders.epoch_length
        b = self.batch_size
        self.chunks = [(s, min(s + b, S)) for s in range(0, S, b)]
        if engine == "compiled" and len(self.chunks) > COMPILED_MAX_UPDATES:
            raise ValueError(f"engine 'compiled' unrolls every update of an epoch into one graph, so it takes at most "
                             f"{COMPILED_MAX_UPDATES} updates an epoch, but this run has {len(self.chunks)}; use "
                             f"engine='eager' (or 'cuda_graph' on CUDA), or a larger batch_size")
        self.logger = logger
        self.progress = check_progress(progress)
        dtype, device = population.dtype, population.device
        self.history = PopulationHistory(mode=mode, lr=self.lr.to("cpu", torch.float64).tolist(),
                                         seeds=list(population.seeds), order_seeds=list(self.order_seeds),
                                         target_loss=self.target_loss, last_epoch=[-1] * K,
                                         stop_reason=[""] * K, epochs_to_target=[None] * K,
                                         diverged_update=[None] * K, message=[""] * K)
        self.epoch = 0
        self.active = torch.ones(K, dtype=torch.bool, device=device)
        self._active_host = torch.ones(K, dtype=torch.bool)  # the same mask, on the CPU, updated once an epoch
        self._any_active = True
        self.good_w = [w.clone() for w in population.weights]
        self.good_b = [b_.clone() for b_ in population.biases]
        evals = {"train": (self.x_train, self.y_train, self.labels_train),
                 "test": (self.x_test, self.y_test, self.labels_test)}
        if same_split(evals["train"], evals["test"]):
            evals["test"] = None  # the logic gates: evaluating the same samples twice would give the same figures
        self._fn = EpochFunction(population, self.loss_fn, self.lr, self.chunks, evals, self.target_loss,
                                  self.optimizer)
        self._call = self._fn
        if engine == "compiled":
            self._call = compile_epoch(self._fn)  # its own code object: never silently eager (issue 22)
        self._graph, self._graph_bound_to = None, None
        self._c_kernel = None
        if engine == "c":
            reason = population_c_unsupported(population, self.loss_fn, mode, self.replacement, optimizer, n)
            if reason is None:
                self._c_kernel = PopulationCKernel(population, self.loss_fn, self.lr, self.x_train, self.y_train,
                                                   evals, self.target_loss, self.orders.generators,
                                                   fresh_seeds=self.orders.seeds)  # nothing drew from them yet
            else:
                if requested == "c":
                    warnings.warn(f"engine='c' cannot run here: {reason}; using the 'eager' engine instead",
                                  FastPathWarning, stacklevel=2)
                self.engine = "eager"
        self._pending: list = []  # gathered epochs not yet trained: (xs, ys)
        self.train_seconds = 0.0
        self._dtype = dtype
        self._init_checkpoints(checkpoint_path, checkpoint_every)

    # ------------------------------------------------------------------ data
    def _next_epoch_data(self):
        """(xs (K, S, n_0), ys (K, S, n_L)) of the next epoch, from blocks of epochs drawn and gathered at once."""
        K = self.pop.size
        if self.orders is None:  # batch mode: every member sees all samples in their stored order
            return self.x_train.unsqueeze(0).expand(K, -1, -1), self.y_train.unsqueeze(0).expand(K, -1, -1)
        if not self._pending:
            count = min(self.epochs_per_draw, self.epochs - self.epoch)
            order = self.orders.epochs(count).to(self.pop.device)  # (count, K, S)
            xs = self.x_train[order]  # (count, K, S, n_0)
            ys = self.y_train[order]  # (count, K, S, n_L)
            xs, ys = xs.contiguous(), ys.contiguous()  # the same strides every block: no recompilation
            self._pending = [(xs[e], ys[e]) for e in range(count)]
        return self._pending.pop(0)

    # ------------------------------------------------------------------ running
    def run(self) -> PopulationHistory:
        """Train until every member has stopped or ``epochs`` ran; returns the PopulationHistory.

        Calling it again after raising ``epochs`` continues the members that stopped at the epoch limit.
        """
        K = self.pop.size
        h = self.history
        for i in range(K):
            if h.stop_reason[i] == "max_epochs":  # a longer run continues a finished one
                h.stop_reason[i], h.message[i] = "", ""
        if self.logger is not None:
            self.logger.start(self.mode, K, len(self.chunks))
        with torch.no_grad():
            if not h.epoch:
                self._record_initial()
            with epoch_bar(self.progress, total=self.epochs, initial=self.epoch, label=self.mode) as bar, \
                    self._checkpointing():  # Ctrl-C: back to the last finished epoch, saved (checkpoints.py)
                while self.epoch < self.epochs and self._any_active:
                    self._epoch_boundary()
                    advanced = self._run_epoch()
                    if bar is not None:
                        bar.update(advanced)
                        bar.set_postfix(active=int(self._active_host.sum()),
                                        reached=sum(e is not None for e in h.epochs_to_target))
        if self._c_kernel is not None:  # the kernel held the generators' states: each as torch.randperm leaves it
            self._c_kernel.write_generators()
        for i in range(K):
            if not h.stop_reason[i]:
                h.stop_reason[i], h.message[i] = "max_epochs", epoch_limit_message(self.epochs)
                h.last_epoch[i] = self.epoch
        self._checkpoint_at_end()
        if self.logger is not None:
            self.logger.log_epoch(self.epoch, h, len(h.epoch) - 1, force=True)  # the curves end at the last epoch
            self.logger.log_hparams(h, self.hparams())
            self.logger.close()
        return h

    def _record_initial(self) -> None:
        figures = []
        for split in ("train", "test"):
            if self._fn.evals[split] is None:
                figures += figures[:2]
                continue
            x, y, labels = self._fn.evals[split]
            loss, acc = evaluate_members(self.pop.weights, self.pop.biases, self.pop.activation_functions, self.loss_fn,
                                  x, y, labels)
            figures += [loss, acc if acc is not None else torch.zeros_like(loss)]
        self._append_row(torch.stack(figures).to("cpu", torch.float64), updates=0)

    def _append_row(self, figures: Tensor, updates: int) -> None:
        """Record one epoch: figures is (4, K) on the CPU (train loss, train accuracy, test loss, test accuracy)."""
        h = self.history
        classification = self.labels_train is not None
        h.epoch.append(self.epoch)
        h.train_loss.append(figures[0])
        h.test_loss.append(figures[2])
        h.train_accuracy.append(figures[1] if classification else None)
        h.test_accuracy.append(figures[3] if classification else None)
        h.updates.append(updates)
        h.seconds.append(self.train_seconds)
        if self.logger is not None:
            self.logger.log_epoch(self.epoch, h, len(h.epoch) - 1, force=self.epoch == 0)

    def _run_epoch(self) -> int:
        """One epoch (the C engine: a chunk of epochs in one call); returns the epochs run."""
        if self._c_kernel is not None:
            return run_c_epochs(self)
        xs, ys = self._next_epoch_data()
        start = time.perf_counter()
        if self.engine == "cuda_graph":
            outputs = self._replay(xs, ys)
        else:
            outputs = self._call(self.pop.weights, self.pop.biases, self.good_w, self.good_b, self.active, xs, ys)
        update_losses, figures, ok, reached = outputs
        T = update_losses.shape[0]
        # The epoch's one read-back: update losses, figures and the two masks together.
        packed = torch.cat([update_losses.to(torch.float64), figures.to(torch.float64),
                            ok.to(torch.float64).unsqueeze(0), reached.to(torch.float64).unsqueeze(0)]).cpu()
        self.train_seconds += time.perf_counter() - start
        update_losses, ok, reached = packed[:T], packed[T + 4] > 0, packed[T + 5] > 0
        figures = packed[T:T + 4].clone()  # its own storage: a History row never holds the epoch's update losses
        self.epoch += 1
        h = self.history
        was_active = self._active_host
        diverged = was_active & ~ok
        reached = was_active & reached
        for i in diverged.nonzero().flatten().tolist():
            self._diverged(i, update_losses[:, i], (self.epoch - 1) * T)
        for i in reached.nonzero().flatten().tolist():
            self._reached(i, figures[0, i].item())
        self._active_host = was_active & ok & ~reached
        self._any_active = bool(self._active_host.any())
        if bool(diverged.any()):
            # A diverged member was put back to its last good state: its row repeats that state's figures.
            previous = torch.stack([h.train_loss[-1], h.train_accuracy[-1] if h.train_accuracy[-1] is not None
                                    else figures[1], h.test_loss[-1],
                                    h.test_accuracy[-1] if h.test_accuracy[-1] is not None else figures[3]])
            figures = torch.where(diverged, previous, figures)
        self._append_row(figures, updates=self.epoch * T)
        return 1

    def _reached(self, i: int, train_loss: float) -> None:
        h = self.history
        h.stop_reason[i] = "target_loss"
        h.epochs_to_target[i] = self.epoch
        h.last_epoch[i] = self.epoch
        h.message[i] = target_message(self.target_loss, self.epoch, train_loss)

    def _diverged(self, i: int, losses: Tensor, first_update: int) -> None:
        h = self.history
        h.diverged_update[i], where = first_bad_update(losses, first_update)
        h.stop_reason[i] = "diverged"
        h.last_epoch[i] = self.epoch - 1
        h.message[i] = diverged_message(self.epoch, h.lr[i], where)

    # ------------------------------------------------------------------ CUDA graphs
    def _graph_key(self, xs: Tensor, ys: Tensor) -> tuple:
        """What a captured graph is bound to: the address, shape, stride and dtype of every tensor it reads or writes
        (the state, the learning rates, the evaluation splits, and in batch mode the inputs themselves, which it reads
        in place), and the inputs' shapes and strides."""
        state = [*self.pop.weights, *self.pop.biases, *self.good_w, *self.good_b, self.active, self._fn.lr]
        state += [t for split in self._fn.evals.values() if split is not None for t in split if t is not None]
        if self.orders is None:
            state += [xs, ys]
        return (tuple((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype) for t in state), tuple(xs.shape),
                xs.stride(), tuple(ys.shape), ys.stride())

    def _replay(self, xs: Tensor, ys: Tensor):
        with torch.cuda.device(self.pop.device):  # capture and replay on the population's device, not the current one
            if self._graph is None or self._graph_bound_to != self._graph_key(xs, ys):
                self._graph = None  # the old graph (and its memory pool) goes before a new one is captured
                self._capture(xs, ys)
            if self.orders is not None:  # batch mode reads the training set itself, which never moves
                self._static_x.copy_(xs)
                self._static_y.copy_(ys)
            self._graph.replay()
            mark_written([*self.pop.weights, *self.pop.biases])  # a replay's in-place updates bump no version
        return self._static_out

    def _capture(self, xs: Tensor, ys: Tensor) -> None:
        """Capture one epoch as a CUDA graph on static buffers (the pattern of torch.cuda.graphs' documentation).

        Warm-up (two epochs) and capture run through fast.cuda_graph.capture_graph on this trainer's own side
        stream: a private capture stream keeps this graph's cuBLAS workspace apart from other graphs' (resetting one
        graph must not free memory another graph on the same stream replays with); the state the warm-up changes is
        put back. In batch mode the inputs are the training set itself (an expanded view, no copy per member).
        """
        if self.orders is None:
            self._static_x, self._static_y = xs, ys
        else:
            self._static_x, self._static_y = xs.clone(), ys.clone()
        state = [*self.pop.weights, *self.pop.biases, *self.good_w, *self.good_b, self.active]
        args = (self.pop.weights, self.pop.biases, self.good_w, self.good_b, self.active)
        stream = torch.cuda.Stream(device=self.pop.device)
        graph, self._static_out = capture_graph(lambda: self._fn(*args, self._static_x, self._static_y), state,
                                                device=self.pop.device, stream=stream, warmups=2)
        self._graph, self._graph_bound_to = graph, self._graph_key(xs, ys)

    # ------------------------------------------------------------------ misc
    def hparams(self) -> dict:
        pop = self.pop
        return {"mode": self.mode, "batch_size": self.batch_size, "sizes": str(pop.sizes),
                "activation": ",".join(f.spec() for f in pop.activation_functions[:-1]) or "none",
                "output_activation": pop.output_activation.spec(), "loss": self.loss_fn.name,
                "reduction": self.loss_fn.reduction, "replacement": self.replacement,
                "target_loss": self.target_loss if self.target_loss is not None else -1.0, "engine": self.engine}
