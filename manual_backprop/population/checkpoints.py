"""PopulationTrainer's checkpoints: every member's state as one dict, checked all or nothing, written atomically.

A population's run continues from its checkpoint to the numbers an unbroken run gives, bit for bit: each member's
parameters (its last good copy is the same tensor at an epoch's end), the optimizer's state, the freeze mask and
every stop, the whole PopulationHistory, and the sample orders: each member's generator state, the draws the
trainer took from it in bulk and has not used yet, and the epochs of the block it gathered and has not trained yet
(drawn again from the generators' states before that block, so the file holds indices, never gathered data).

The rules are the Trainer's (training/checkpoints.py): the network's spec and a digest of the data must be this
run's, a file holding NaN or inf (weights, optimizer state) is refused as damaged by the name of what is damaged,
and nothing changes until everything is checked. Files go through checkpoint.py (atomic write, weights-only load).

Ctrl-C while a checkpointing trainer runs (``checkpoint_path`` given) puts everything back to the end of the last
finished epoch (or C-engine chunk of epochs), saves that, and lets the KeyboardInterrupt go on: the interrupted
epoch is trained again on resume, from the same state, so the resumed run ends where an unbroken one would.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from ..checkpoint import PathLike, load_checkpoint, save_checkpoint
from ..checks import check_int
from ..training.checkpoints import TrainerCheckpoints
from .history import PopulationHistory

__all__ = ["PopulationCheckpoints", "KIND", "shard_checkpoint_path"]

KIND = "population"
_TABLES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
_PER_MEMBER = ("last_epoch", "stop_reason", "epochs_to_target", "diverged_update", "message")
_REQUIRED = ("kind", "spec", "settings", "epoch", "train_seconds", "weights", "biases", "active", "history",
             "orders", "optimizer", "data_digest")


class PopulationCheckpoints:
    """state_dict / load_state_dict / save_checkpoint / resume, and the run loop's checkpoint hooks, for
    PopulationTrainer (which holds pop, mode, lr, orders, history, the freeze mask and the optimizer)."""

    # the Trainer's own sha256 of the training and test data (the same attribute names, the same bytes)
    _checkpoint_data_digest = TrainerCheckpoints._checkpoint_data_digest

    def _init_checkpoints(self, path: Optional[PathLike], every: int) -> None:
        if path is not None and not isinstance(path, (str, Path)) and not hasattr(path, "__fspath__"):
            raise TypeError(f"checkpoint_path must be a file path (str or os.PathLike) or None, but got "
                            f"{type(path).__name__}")
        if path is not None and Path(path).is_dir():
            raise ValueError(f"checkpoint_path {str(path)!r} is a folder; give a file path such as "
                             f"{str(Path(path) / 'population.pt')!r}")
        self.checkpoint_path = None if path is None else Path(path)
        self.checkpoint_every = check_int("checkpoint_every", every, minimum=1)
        self._saved_at = -1  # the epoch of the last checkpoint written
        self._block_base = None  # the orders' state before the gathered block was drawn, and the block's size
        self._boundary = None  # the whole state at the end of the last finished epoch (for Ctrl-C)

    # ------------------------------------------------------------------ what a checkpoint holds
    def _settings(self) -> dict:
        return {"mode": self.mode, "batch_size": self.batch_size, "replacement": self.replacement,
                "loss": self.loss_fn.spec(), "target_loss": self.target_loss, "engine": self.engine,
                "lr": self.lr.to("cpu", torch.float64).tolist(), "order_seeds": list(self.order_seeds)}

    def _spec(self) -> dict:
        pop = self.pop
        return {"sizes": list(pop.sizes), "activation": [f.spec() for f in pop.activation_functions[:-1]],
                "output_activation": pop.output_activation.spec(), "bias": pop.bias, "seeds": list(pop.seeds),
                "dtype": str(pop.dtype).replace("torch.", "")}

    def _generator_states(self) -> Optional[Tensor]:
        """(K, bytes) uint8: each member's sample-order generator now (the C kernel holds them while it runs)."""
        if self.orders is None:
            return None
        kernel = self._c_kernel
        if kernel is not None and kernel.rng is not None:
            return kernel.rng.clone()
        return torch.stack([g.get_state() for g in self.orders.generators])

    def _orders_state(self) -> Optional[dict]:
        """The sample orders as they stand at an epoch's end: generator states and unused bulk draws before the
        gathered block, the block's size and how many of its epochs are still to train."""
        if self.orders is None:
            return None
        pending = len(self._pending)
        if pending and self._block_base is not None:
            states, draws, cursor, block = self._block_base
        else:
            states, draws, cursor, block = self._generator_states(), self.orders._draws, self.orders._cursor, 0
            pending = 0
        return {"generators": states.clone(), "draws": draws[:, cursor:].clone(), "block": block, "pending": pending}

    def state_dict(self) -> dict:
        """Everything needed to continue this run to the same numbers (see the module docstring)."""
        h = self.history
        scalars = {k: v for k, v in h.__dict__.items() if k not in _TABLES}
        tables = {name: h.table(name) for name in _TABLES}
        return {
            "kind": KIND, "spec": self._spec(), "settings": self._settings(), "epoch": self.epoch,
            "train_seconds": self.train_seconds,
            "weights": [w.detach().cpu().clone() for w in self.pop.weights],
            "biases": [b.detach().cpu().clone() for b in self.pop.biases],
            "active": self.active.detach().cpu().clone(),
            "history": {"scalars": scalars, "tables": tables},
            "orders": self._orders_state(), "optimizer": self.optimizer.checkpoint_entry(),
            "data_digest": self._checkpoint_data_digest(),
        }

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        save_checkpoint(self.state_dict(), path)

    def resume(self, path: Union[str, Path]) -> "PopulationCheckpoints":
        self.load_state_dict(load_checkpoint(path))
        return self

    # ------------------------------------------------------------------ reading one back
    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``'s dict; everything is checked before anything changes (all or nothing)."""
        history, orders = self._checked(state)
        pop, K = self.pop, self.pop.size
        with torch.no_grad():
            for p, good, saved in zip(pop.weights + pop.biases, self.good_w + self.good_b,
                                      state["weights"] + state["biases"]):
                p.copy_(saved)
                good.copy_(saved)
        self.optimizer.load_checkpoint_entry(state["optimizer"])
        self.active.copy_(state["active"])
        self._active_host = state["active"].clone()
        self._any_active = bool(self._active_host.any())
        self.epoch, self.train_seconds = state["epoch"], float(state["train_seconds"])
        self.history = history
        self._pending, self._block_base = [], None
        if orders is not None:
            self._load_orders(orders)
        self._saved_at = self.epoch
        assert len(history.lr) == K

    def _load_orders(self, saved: dict) -> None:
        orders = self.orders
        for g, row in zip(orders.generators, saved["generators"]):
            g.set_state(row.clone())
        orders._draws, orders._cursor = saved["draws"].clone(), 0
        if self._c_kernel is not None:
            self._c_kernel.rng = None  # it reads the generators again at its next call
            self._c_kernel._fresh_seeds = None
        block, pending = saved["block"], saved["pending"]
        if pending:  # the gathered block again, from the states before it, exactly as _next_epoch_data gathers it
            base = (saved["generators"].clone(), orders._draws, 0, block)
            order = orders.epochs(block).to(self.pop.device)  # (block, K, S)
            xs, ys = self.x_train[order].contiguous(), self.y_train[order].contiguous()
            self._pending = [(xs[e], ys[e]) for e in range(block - pending, block)]
            self._block_base = base

    def _checked(self, state) -> tuple:
        """(PopulationHistory, orders entry) of a checkpoint that fits this trainer; ValueError naming what does not."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a PopulationTrainer.state_dict() dict, but got {type(state).__name__}")
        if state.get("kind") != KIND:
            raise ValueError("state is not a PopulationTrainer checkpoint (a Trainer's checkpoint holds one network; "
                             "resume it with Trainer.resume)")
        missing = [k for k in _REQUIRED if k not in state]
        if missing:
            raise ValueError(f"state is not a whole PopulationTrainer checkpoint: it lacks {missing}")
        for key, ours in (("spec", self._spec()), ("settings", self._settings())):
            theirs = state[key]
            if not isinstance(theirs, dict):
                raise ValueError(f"checkpoint's {key!r} must be a dict, but got {type(theirs).__name__}")
            for name, value in ours.items():
                if theirs.get(name) != value:
                    raise ValueError(f"checkpoint was written for a population with {name} {_short(theirs.get(name))}, "
                                     f"but this run has {name} {_short(value)}")
        if state["data_digest"] != self._checkpoint_data_digest():
            raise ValueError("checkpoint was written for other data (its digest of the training and test samples "
                             "differs): another dataset, other loader settings or an edited file; resume on the "
                             "data it was trained on, or start a new run")
        for key in ("epoch",):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"checkpoint's {key!r} must be a whole number >= 0, but got {v!r}: the file is "
                                 "damaged")
        v = state["train_seconds"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"checkpoint's 'train_seconds' must be a finite number >= 0, but got {v!r}: the file "
                             "is damaged")
        self._check_parameters(state)
        active = state["active"]
        if not isinstance(active, Tensor) or active.dtype != torch.bool or tuple(active.shape) != (self.pop.size,):
            raise ValueError(f"checkpoint's 'active' must be a ({self.pop.size},) bool tensor: the file is damaged")
        self.optimizer.check_checkpoint_entry(state["optimizer"])
        _check_finite_optimizer(state["optimizer"])
        history = self._checked_history(state["history"], state["epoch"])
        for i, (reason, running) in enumerate(zip(history.stop_reason, active.tolist())):
            # a member trains on exactly while it has no stop; one at the epoch limit may be continued either way
            if reason != "max_epochs" and running != (reason == ""):
                said = f"stopped ({reason})" if reason else "not stopped"
                raise ValueError(f"checkpoint's member {i} is {said} in its history but "
                                 f"{'active' if running else 'frozen'} in 'active': the file is damaged")
        return history, self._checked_orders(state["orders"])

    def _check_parameters(self, state: dict) -> None:
        pop = self.pop
        for name, ours in (("weights", pop.weights), ("biases", pop.biases)):
            saved = state[name]
            if not isinstance(saved, list) or len(saved) != len(ours):
                raise ValueError(f"checkpoint's {name!r} must be a list of {len(ours)} tensors: the file is damaged")
            for k, (t, p) in enumerate(zip(saved, ours)):
                if not isinstance(t, Tensor) or tuple(t.shape) != tuple(p.shape) or t.dtype != p.dtype:
                    got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(f"checkpoint's {name}[{k}] must be a {tuple(p.shape)} {p.dtype} tensor, but is "
                                     f"{got}: the file is damaged")
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"checkpoint's {name}[{k}] holds NaN or inf: the file is damaged (a member that "
                                     "diverged keeps its last finite parameters)")

    def _checked_history(self, saved, epoch: int) -> PopulationHistory:
        K = self.pop.size
        if not isinstance(saved, dict) or not isinstance(saved.get("scalars"), dict) or \
                not isinstance(saved.get("tables"), dict):
            raise ValueError("checkpoint's history must be a dict of 'scalars' and 'tables': the file is damaged")
        rows = epoch + 1
        tables = {}
        for name in _TABLES:
            t = saved["tables"].get(name)
            if t is None and name in ("train_accuracy", "test_accuracy"):
                tables[name] = [None] * rows
                continue
            if not isinstance(t, Tensor) or t.dtype != torch.float64 or tuple(t.shape) != (rows, K):
                got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"checkpoint's history table {name!r} must be ({rows}, {K}) float64 (one row per "
                                 f"epoch 0..{epoch}), but is {got}: the file is damaged")
            tables[name] = [row.clone() for row in t.unbind(0)]  # each row its own storage, not a view of all
            # of them (a gathered history pickles a view's whole storage: rows x the table, gigabytes)
        scalars = dict(saved["scalars"])
        for name in _PER_MEMBER:
            if not isinstance(scalars.get(name), list) or len(scalars[name]) != K:
                raise ValueError(f"checkpoint's history {name!r} must list one value per member ({K}): the file is "
                                 "damaged")
        for name in ("epoch", "updates", "seconds"):
            if not isinstance(scalars.get(name), list) or len(scalars[name]) != rows:
                raise ValueError(f"checkpoint's history {name!r} must hold {rows} values (epochs 0..{epoch}): the "
                                 "file is damaged")
        try:
            return PopulationHistory(**scalars, **tables)
        except TypeError as err:
            raise ValueError(f"checkpoint's history does not fit PopulationHistory: {err}") from None

    def _checked_orders(self, saved) -> Optional[dict]:
        if self.orders is None:
            if saved is not None:
                raise ValueError("checkpoint holds sample orders, but batch mode draws none: the file is damaged")
            return None
        K = self.pop.size
        if not isinstance(saved, dict) or not {"generators", "draws", "block", "pending"} <= set(saved):
            raise ValueError("checkpoint's sample orders must hold generators, draws, block and pending: the file "
                             "is damaged")
        states, draws = saved["generators"], saved["draws"]
        if not isinstance(states, Tensor) or states.dtype != torch.uint8 or states.dim() != 2 or len(states) != K:
            raise ValueError(f"checkpoint's sample-order generator states must be a (K={K}, bytes) uint8 tensor: the "
                             "file is damaged")
        for i, row in enumerate(states):
            try:
                torch.Generator().set_state(row.clone())  # a scratch generator: nothing of this run changes
            except (RuntimeError, ValueError, TypeError) as err:
                raise ValueError(f"checkpoint's sample-order generator state of member {i} is damaged "
                                 f"({row.numel()} bytes): {str(err).splitlines()[0]}") from None
        if not isinstance(draws, Tensor) or draws.dtype != torch.int64 or draws.dim() != 2 or len(draws) != K:
            raise ValueError(f"checkpoint's unused sample-order draws must be a (K={K}, n) int64 tensor: the file is "
                             "damaged")
        block, pending = saved["block"], saved["pending"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (block, pending)) or \
                not 0 <= pending <= block:
            raise ValueError(f"checkpoint's gathered block ({block!r} epochs, {pending!r} still to train) is not "
                             "0 <= pending <= block: the file is damaged")
        return saved

    # ------------------------------------------------------------------ the run loop's hooks
    def _epoch_boundary(self) -> None:
        """At the end of a finished epoch (and before the first): a checkpoint when one is due, and what Ctrl-C
        goes back to. The orders' state before a block is kept whenever a block is about to be drawn."""
        if self.orders is not None and self._c_kernel is None and not self._pending:
            self._block_base = (self._generator_states(), self.orders._draws, self.orders._cursor,
                                min(self.epochs_per_draw, self.epochs - self.epoch))
        if self.checkpoint_path is None:
            return
        if self._saved_at < 0 or self.epoch // self.checkpoint_every > self._saved_at // self.checkpoint_every:
            self.save_checkpoint(self.checkpoint_path)
            self._saved_at = self.epoch
        h = self.history
        kernel = self._c_kernel
        self._boundary = {
            "epoch": self.epoch, "seconds": self.train_seconds, "rows": len(h.epoch),
            "members": {name: list(getattr(h, name)) for name in _PER_MEMBER},
            "params": [p.clone() for p in self.pop.weights + self.pop.biases],
            "active": self.active.clone(), "optimizer": self.optimizer.state_dict(),
            "pending": list(self._pending), "block_base": self._block_base,
            "draws": None if self.orders is None else (self.orders._draws, self.orders._cursor),
            "rng": kernel.rng.clone() if kernel is not None and kernel.rng is not None else None,
        }

    def _rewind(self) -> None:
        """Everything back to the last epoch boundary (``_epoch_boundary``)."""
        b = self._boundary
        if b is None:
            return
        h = self.history
        self.epoch, self.train_seconds = b["epoch"], b["seconds"]
        for name in ("epoch", *_TABLES, "updates", "seconds"):
            del getattr(h, name)[b["rows"]:]
        for name, values in b["members"].items():
            setattr(h, name, list(values))
        with torch.no_grad():
            for p, good, saved in zip(self.pop.weights + self.pop.biases, self.good_w + self.good_b, b["params"]):
                p.copy_(saved)
                good.copy_(saved)
            self.active.copy_(b["active"])
        self._active_host = b["active"].cpu().clone()
        self._any_active = bool(self._active_host.any())
        self.optimizer.load_state_dict(b["optimizer"])
        self._pending, self._block_base = list(b["pending"]), b["block_base"]
        if self.orders is not None:
            self.orders._draws, self.orders._cursor = b["draws"]
            if not b["pending"] and self._c_kernel is None and b["block_base"] is not None:
                for g, row in zip(self.orders.generators, b["block_base"][0]):
                    g.set_state(row.clone())  # the block drawn in the cut epoch is drawn again
        kernel = self._c_kernel
        if kernel is not None:
            if b["rng"] is None:
                kernel.rng = None
            else:
                kernel.rng.copy_(b["rng"])

    @contextmanager
    def _checkpointing(self):
        """Around the epoch loop: Ctrl-C goes back to the last finished epoch, saves it, closes the logger, and the
        KeyboardInterrupt goes on."""
        try:
            yield
        except KeyboardInterrupt:
            if self.checkpoint_path is not None and self._boundary is not None:
                self._rewind()
                self.save_checkpoint(self.checkpoint_path)
                self._saved_at = self.epoch
            if self.logger is not None:
                self.logger.close()
            raise

    def _checkpoint_at_end(self) -> None:
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
            self._saved_at = self.epoch


def shard_checkpoint_path(path: PathLike, start: int, stop: int) -> Path:
    """Where the block of members [start, stop) of a population sharded over processes (sharding.py) checkpoints,
    beside ``path``, the whole population's: ``online.pt`` -> ``online.members0-3.pt`` for members 0 to 3. Each block
    is a population of its own (members never mix), so its file is a whole checkpoint of that block."""
    path = Path(path)
    return path.with_name(f"{path.stem}.members{start}-{stop - 1}{path.suffix}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_finite_optimizer(entry) -> None:
    """No NaN or inf in a saved optimizer state (its moments would poison every later update)."""
    inner = entry.get("state") if isinstance(entry, dict) else None
    per_param = inner.get("state") if isinstance(inner, dict) else None
    for i, s in (per_param or {}).items():
        for name, t in (s.items() if isinstance(s, dict) else ()):
            if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"checkpoint's optimizer state {name!r} of parameter {i} holds NaN or inf: the file "
                                 "is damaged")
