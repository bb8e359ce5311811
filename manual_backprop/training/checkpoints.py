"""The Trainer's checkpoints: its whole state as a dict, checked all or nothing before anything changes, written
and read through checkpoint.py (atomic, weights_only)."""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Union

import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, save_checkpoint
from .history import History

__all__ = ["TrainerCheckpoints"]


class TrainerCheckpoints:
    """state_dict / load_state_dict / save_checkpoint / resume for Trainer (which holds net, mode, lr, generator,
    history, optimizer and the last good state)."""

    def state_dict(self) -> dict:
        """Everything needed to continue this run to the same numbers: parameters, counters, sample-order RNG."""
        return {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "net_spec": self.net.spec(),
            "mode": self.mode, "lr": self.lr, "batch_size": self.batch_size, "replacement": self.replacement,
            "seed": self.seed, "epoch": self.epoch, "updates": self.updates, "train_seconds": self.train_seconds,
            "generator": self.generator.get_state(), "history": self.history.to_dict(),
            "good_state": [p.cpu() for p in self._good_state] if self._good_state is not None else None,
            "loss": self.loss_fn.spec(), "optimizer": self.optimizer.checkpoint_entry(),
            "data_digest": self._checkpoint_data_digest(),
        }

    def _checkpoint_data_digest(self) -> str:
        """sha256 of the training and test data (in float64 on the CPU, so a net moved between float32 and float64
        keeps it), computed once: a resume on other data (another dataset, an edited CSV) is refused by it."""
        digest = self.__dict__.get("_data_digest")
        if digest is None:
            h = hashlib.sha256()
            for name in ("x_train", "y_train", "labels_train", "x_test", "y_test", "labels_test"):
                t = getattr(self, name, None)
                if t is None:
                    h.update(name.encode() + b":none")
                    continue
                t = t.detach().to("cpu", torch.float64 if t.is_floating_point() else torch.int64).contiguous()
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.numpy().tobytes())
            digest = self.__dict__["_data_digest"] = h.hexdigest()
        return digest

    def load_state_dict(self, state: dict, *, source: str = "the checkpoint") -> None:
        """Continue from ``state_dict()``'s dict. Everything is checked before anything changes (all or nothing).

        ``source`` names the state in the one warning an older checkpoint gets, which lacks some of what a resume
        checks (the architecture, the data's digest, the loss): it is taken, and the warning says what is unchecked.
        A checkpoint of another dtype is refused: its numbers would not continue the same.

        A run that diverged continues from its last good state when this Trainer has another lr; with the same lr
        it would only diverge again, so it stays finished (``run`` returns at once, with the divergence message).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a Trainer.state_dict() dict, but got {type(state).__name__}")
        required = ("net", "mode", "lr", "batch_size", "replacement", "epoch", "updates", "train_seconds",
                    "generator", "history")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"state is not a Trainer checkpoint: it lacks {missing}")
        _check_fields(state)
        _check_parameters(state["net"])
        _check_same_run(state, self.net.spec(), self._checkpoint_data_digest())
        _check_undamaged(state)
        unchecked = [what for key, what in _CHECKED_BY if key not in state]
        for key in ("mode", "batch_size", "replacement"):
            if state[key] != getattr(self, key):
                raise ValueError(f"checkpoint was written with {key}={state[key]!r}, but this run has "
                                 f"{key}={getattr(self, key)!r}")
        if "loss" in state and state["loss"] != self.loss_fn.spec():
            raise ValueError(f"checkpoint was written with loss {state['loss']!r}, but this run has "
                             f"{self.loss_fn.spec()!r}")
        generator = state["generator"]
        if not isinstance(generator, Tensor) or generator.dtype != torch.uint8:
            raise ValueError("checkpoint's sample-order generator state must be a uint8 tensor")
        try:
            torch.Generator().set_state(generator)  # a scratch generator: its size and contents, nothing changed
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"checkpoint's sample-order generator state is damaged ({generator.numel()} bytes, "
                             f"expected {self.generator.get_state().numel()}): {str(err).splitlines()[0]}") from None
        if not isinstance(state["history"], dict):
            raise ValueError(f"checkpoint's history must be a dict, but got {type(state['history']).__name__}")
        try:
            history = History(**state["history"])
        except TypeError as err:
            raise ValueError(f"checkpoint's history does not fit History: {err}") from None
        good = state.get("good_state")
        if good is not None:
            own = self.net.parameters()
            if not isinstance(good, list) or len(good) != len(own) or not all(
                    isinstance(g, Tensor) and g.shape == p.shape for g, p in zip(good, own)):
                raise ValueError("checkpoint's good_state does not fit the network's parameters")
        self.optimizer.check_checkpoint_entry(state.get("optimizer"))
        if unchecked:
            keys = [k for k, _ in _CHECKED_BY if k not in state]
            warnings.warn(f"{source} was written by an older version of manual_backprop without {_listing(keys, 'or')}"
                          f": {_listing(unchecked, 'and')} cannot be checked against this run's; resuming it as it is "
                          "(start a new run if it may be another run's)", UserWarning)  # one place: shown once
        self.net.load_state_dict(state["net"])  # all or nothing itself: checks every key first
        self.epoch, self.updates, self.train_seconds = state["epoch"], state["updates"], state["train_seconds"]
        self.generator.set_state(generator)
        self.optimizer.load_checkpoint_entry(state.get("optimizer"))
        self.history = history
        if self.history.stop_reason == "max_epochs" and self.epoch < self.epochs:
            self.history.stop_reason, self.history.message = "", ""  # a longer run continues a finished one
        if self.history.stop_reason == "interrupted":
            self.history.stop_reason, self.history.message = "", ""
        if self.history.stop_reason == "diverged" and state["lr"] != self.lr:
            self.history.stop_reason, self.history.message = "", ""  # the last good state, with another lr
        if good is not None:
            self._good_state = [g.to(device=self.net.device, dtype=self.net.dtype) for g in good]

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        save_checkpoint(self.state_dict(), path)

    def resume(self, path: Union[str, Path]) -> "TrainerCheckpoints":
        self.load_state_dict(load_checkpoint(path), source=f"checkpoint {str(path)!r}")
        return self


_ARCHITECTURE = ("sizes", "activation", "output_activation", "bias")
# What a resume checks that older checkpoints did not hold: (key, what cannot be checked without it).
_CHECKED_BY = (("net_spec", "the activations"), ("data_digest", "the training and test data"),
               ("loss", "the loss"))


def _listing(items: list, word: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _saved_dtype(state: dict):
    """The dtype the checkpoint's run had: its net_spec's, else (older files) its parameters' own."""
    spec = state.get("net_spec")
    if isinstance(spec, dict) and isinstance(spec.get("dtype"), str):
        return spec["dtype"]
    net = state.get("net")
    for t in net.values() if isinstance(net, dict) else ():
        if isinstance(t, Tensor) and t.is_floating_point():
            return str(t.dtype).replace("torch.", "")
    return None


def _check_fields(state: dict) -> None:
    """The counters and the history as the Trainer writes them: ValueError naming the field otherwise."""
    for key in ("epoch", "updates"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 63:
            big = " (2**63 or more)" if isinstance(v, int) and v >= 2 ** 63 else ""
            raise ValueError(f"checkpoint's {key!r} must be a whole number >= 0, but got {repr(v)[:40]}{big}: the "
                             "file is damaged")
    for key in ("train_seconds", "lr"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"checkpoint's {key!r} must be a finite number >= 0, but got {v!r}: the file is damaged")
    history = state["history"]
    if not isinstance(history, dict):
        raise ValueError(f"checkpoint's history must be a dict, but got {type(history).__name__}")
    lengths = set()
    for key in ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy", "updates", "seconds"):
        v = history.get(key, [])
        if not isinstance(v, list) or not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                                              for x in v):
            raise ValueError(f"checkpoint's history[{key!r}] must be a list of numbers, but got "
                             f"{type(v).__name__} {str(v)[:60]}")
        if key in history:
            lengths.add(len(v))
    if len(lengths) > 1:
        raise ValueError(f"checkpoint's history lists have different lengths {sorted(lengths)}: the file is damaged")
    for key in ("mode", "stop_reason", "message"):
        if key in history and not isinstance(history[key], str):
            raise ValueError(f"checkpoint's history[{key!r}] must be a string, but got {history[key]!r}")


def _check_same_run(state: dict, spec: dict, data_digest: str) -> None:
    """The checkpoint's dtype, architecture and data are this run's (older checkpoints without a net_spec or a
    digest are checked by what they hold: the dtype of their parameters)."""
    dtype = _saved_dtype(state)
    if dtype is not None and dtype != spec["dtype"]:
        raise ValueError(f"checkpoint was written by a {dtype} run, but this run's network and data are "
                         f"{spec['dtype']}: its numbers would not continue the same; resume it with a {dtype} network "
                         "and data, or start a new run")
    saved = state.get("net_spec")
    if isinstance(saved, dict):
        for key in _ARCHITECTURE:
            if key in saved and saved[key] != spec[key]:
                raise ValueError(f"checkpoint was written for a network with {key}={saved[key]!r}, but this run's "
                                 f"network has {key}={spec[key]!r}")
    digest = state.get("data_digest")
    if digest is not None and digest != data_digest:
        raise ValueError("checkpoint was written for other data (its digest of the training and test samples "
                         "differs): another dataset, other loader settings or an edited file; resume on the data "
                         "it was trained on, or start a new run")


def _check_parameters(net) -> None:
    """Every saved parameter a dense floating-point tensor with values, all of one dtype (as the Trainer writes
    them): a meta, sparse, integer or mixed-dtype value is refused by name before anything is copied."""
    if not isinstance(net, dict):
        raise ValueError(f"checkpoint's net must be a dict of parameters, but got {type(net).__name__}")
    dtypes = {}
    for key, t in net.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"checkpoint's net[{key!r}] must be a tensor, but got {type(t).__name__}: the file is "
                             "damaged")
        if t.is_meta:
            raise ValueError(f"checkpoint's net[{key!r}] is a meta tensor (a shape without values): the file is "
                             "damaged")
        if t.layout != torch.strided:
            raise ValueError(f"checkpoint's net[{key!r}] is a sparse tensor ({t.layout}); a parameter is a dense "
                             "tensor: the file is damaged")
        if not t.is_floating_point():
            raise ValueError(f"checkpoint's net[{key!r}] is {t.dtype}, not a floating-point tensor: the file is "
                             "damaged")
        dtypes.setdefault(t.dtype, key)
    if len(dtypes) > 1:
        (first, _), (other, key) = list(dtypes.items())[:2]
        raise ValueError(f"checkpoint's net[{key!r}] is {str(other).replace('torch.', '')}, but its other "
                         f"parameters are {str(first).replace('torch.', '')}: the file is damaged")


def _nonfinite(t) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())


def _check_undamaged(state: dict) -> None:
    """No NaN or inf in the saved weights, last good state or optimizer state, and an optimizer state for every
    parameter or for none: a damaged file is refused by name (not trained on, nor taken for a divergence)."""
    net = state["net"]
    if isinstance(net, dict):
        for key, t in net.items():
            if _nonfinite(t):
                raise ValueError(f"checkpoint's net[{key!r}] holds NaN or inf: the file is damaged (a run that "
                                 "diverged keeps its last finite parameters)")
    for i, t in enumerate(state.get("good_state") or []):
        if _nonfinite(t):
            raise ValueError(f"checkpoint's good_state[{i}] holds NaN or inf: the file is damaged")
    entry = state.get("optimizer")
    inner = entry.get("state") if isinstance(entry, dict) else None
    per_param = inner.get("state") if isinstance(inner, dict) else None
    if not isinstance(per_param, dict) or not per_param:
        return
    n_params = len(net) if isinstance(net, dict) else None
    keys = {int(i): sorted(s) if isinstance(s, dict) else None for i, s in per_param.items()}
    full = max(keys.values(), key=lambda k: len(k or []))
    if n_params is not None and len(keys) != n_params:
        lost = sorted(set(range(n_params)) - set(keys))
        raise ValueError(f"checkpoint's optimizer state lacks parameter{'s' if len(lost) > 1 else ''} "
                         f"{', '.join(map(str, lost))} (of {n_params}): the file is damaged; its moments would "
                         "restart silently")
    for i, k in sorted(keys.items()):
        if k != full:
            raise ValueError(f"checkpoint's optimizer state of parameter {i} holds {k}, but the others hold {full}: "
                             "the file is damaged")
        for name, t in per_param[i if i in per_param else str(i)].items():
            if _nonfinite(t):
                raise ValueError(f"checkpoint's optimizer state {name!r} of parameter {i} holds NaN or inf: the "
                                 "file is damaged")
