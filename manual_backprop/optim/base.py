"""The Optimizer base: settings (one number or one per population member), state, state dicts in torch.optim's
layout, and the small numeric helpers the algorithms share."""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ..checks import check_bool, check_fits_dtype
from ..network import Gradients
from ..parameter_state import in_layer_order

__all__ = ["Optimizer"]

Number = Union[float, Tensor]
# torch.optim's group keys that these optimizers do not implement, with the only value they accept.
_TORCH_ONLY = {"maximize": False, "foreach": None, "differentiable": False, "fused": None, "capturable": False}


class Optimizer:
    """Settings, per-member numbers, state and its dict; subclasses define ``_update(i, p, g, state)``.

    Numeric settings are held as Python floats, or as (K,) float64 tensors on the net's device for a population
    with one number per member. ``_value`` turns one into what an operation on a parameter takes: the float itself,
    or the K numbers in the parameter's dtype viewed as (K, 1, ...).
    """

    name = ""
    _numeric: tuple = ()  # the settings that may be per member
    _flags: tuple = ()  # boolean settings

    def __init__(self, net, settings: dict):
        if not hasattr(net, "parameters") or not hasattr(net, "weights"):
            raise TypeError(f"{type(self).__name__} needs an MLP or a Population, but got {type(net).__name__}")
        self.net = net
        lead = net.weights[0].dim() - 2
        self.members = net.weights[0].shape[0] if lead == 1 else None  # K for a population
        self.state: dict = {}
        self._zero: dict = {}  # which numeric settings are 0 for every member, known on the host
        for key, value in settings.items():
            setattr(self, key, value)

    # ------------------------------------------------------------------ settings
    def __setattr__(self, key, value):
        if key in type(self)._numeric:
            value = self._check_number(key, value)
            self._zero[key] = not any(_plain(value)) if isinstance(value, Tensor) else value == 0
        elif key in type(self)._flags:
            check_bool(key, value)
        object.__setattr__(self, key, value)

    def _check_number(self, key: str, value) -> Number:
        """A setting as a float, or as a (K,) float64 tensor on the net's device (one number per member)."""
        if isinstance(value, Tensor) and (value.dim() == 0 or (value.shape == (1,) and self.members is None)):
            value = value.item()
        if isinstance(value, (list, tuple, Tensor)):
            values = value.detach().to("cpu", torch.float64).reshape(-1).tolist() if isinstance(value, Tensor) \
                else list(value)
            shape = tuple(value.shape) if isinstance(value, Tensor) else (len(values),)
            if self.members is None or shape != (self.members,):
                want = f"one number or {self.members} (one per member)" if self.members else "one number"
                raise ValueError(f"{key} must be {want}, but got shape {shape}")
            for i, v in enumerate(values):
                self._check_scalar(f"{key}[{i}]", key, v)
            return torch.tensor(values, dtype=torch.float64, device=self.net.weights[0].device)
        return self._check_scalar(key, key, value)

    def _check_scalar(self, label: str, key: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, but got {value!r}")
        high = 1.0 if key.startswith("beta") else math.inf  # every setting is >= 0; betas are < 1
        if not 0.0 <= value < high:
            where = "in [0, 1)" if high == 1.0 else ">= 0"
            raise ValueError(f"{label} must be {where} (as torch.optim requires), but got {value!r}")
        check_fits_dtype(label, value, self.net.weights[0].dtype)
        return float(value)

    def _value(self, x: Number, p: Tensor) -> Number:
        """x as an operand on p: a float, or the K per-member numbers cast to p's dtype and viewed (K, 1, ...)."""
        if not isinstance(x, Tensor):
            return x
        return x.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))

    def _is_zero(self, key: str) -> bool:
        """Whether setting ``key`` is 0 for every member (decided on the host: no device synchronisation)."""
        return self._zero[key]

    def settings(self) -> dict:
        """The settings as plain numbers and lists (for hparams, config files and the resume check)."""
        return {"name": self.name, **{k: _plain(getattr(self, k)) for k in (*self._numeric, *self._flags)}}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "name")
        return f"{type(self).__name__}({shown})"

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, grads, *, members: "Tensor | None" = None) -> None:
        """Update the parameters in place from dE/dW, dE/db (a Gradients, or a list in net.parameters() order).

        members: for a population, a (K,) bool tensor; members where it is False keep their parameters (their
        optimizer state still advances: meant for members frozen for good, as PopulationTrainer freezes them).
        """
        params = self.net.parameters()
        given = _in_parameter_order(grads, self.net.bias)
        if len(given) != len(params):
            raise ValueError(f"grads must hold {len(params)} tensors (net.parameters()), but got {len(given)}")
        for i, (p, g) in enumerate(zip(params, given)):  # all checked before any parameter moves
            if not isinstance(g, Tensor) or g.shape != p.shape:
                got = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
                raise ValueError(f"gradient {i} (net.parameters()[{i}]) must have shape {tuple(p.shape)}, "
                                 f"but got {got}")
        if members is not None and (self.members is None or members.shape != (self.members,)):
            raise ValueError(f"members must be a ({self.members},) bool tensor for a population of {self.members}, "
                             f"but got shape {tuple(members.shape)}" if self.members else
                             "members applies to a population, not to one network")
        for i, (p, g) in enumerate(zip(params, given)):
            before = None if members is None else p.clone()
            state = self.state.setdefault(i, {})
            for key, t in state.items():  # the network moved (net.to): its state follows, once
                if key != "step" and (t.device != p.device or t.dtype != p.dtype):
                    state[key] = t.to(device=p.device, dtype=p.dtype)
            self._update(i, p, g, state)
            if before is not None:
                p.copy_(torch.where(members.view(-1, *([1] * (p.dim() - 1))), p, before))

    def _update(self, i: int, p: Tensor, g: Tensor, state: dict) -> None:
        raise NotImplementedError

    def update(self, weights, biases, grads, lr, members: "Tensor | None" = None) -> None:
        """A training loop's one update, as it calls PlainGradientDescent's: ``step`` (the weights, biases and lr
        are this optimizer's network's and its own; the loop's are there for the plain update)."""
        self.step(grads) if members is None else self.step(grads, members=members)

    # ------------------------------------------------------------------ state
    def _group(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"state": {i: {name: tensor copy}}, "param_groups": [settings and "params": [0, ..., P-1]]}, the layout
        of torch.optim (per-member numbers as CPU tensors)."""
        def copy(v):
            return v.detach().clone().cpu() if isinstance(v, Tensor) else v
        group = {k: (tuple(copy(b) for b in v) if isinstance(v, tuple) else copy(v)) for k, v in self._group().items()}
        group.update(_TORCH_ONLY)
        group["params"] = list(range(len(self.net.parameters())))
        state = {i: {k: v.detach().clone() for k, v in s.items()} for i, s in self.state.items() if s}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict, *, check_only: bool = False) -> None:
        """Put back settings and state from ``state_dict()`` (or from the torch.optim optimizer of the twin).

        All or nothing: everything is checked before anything changes; ``check_only=True`` only checks."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("an optimizer state must be a dict with keys 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        params = self.net.parameters()
        if len(groups) != 1 or list(groups[0].get("params", [])) != list(range(len(params))):
            raise ValueError(f"an optimizer state must hold one parameter group over the {len(params)} parameters "
                             f"of this network")
        group = dict(groups[0])
        for key, only in _TORCH_ONLY.items():
            if group.pop(key, only) != only:
                raise ValueError(f"{type(self).__name__} does not implement {key}={group.get(key)!r}")
        group.pop("params")
        decoupled = group.pop("decoupled_weight_decay", getattr(self, "decoupled", False))
        if decoupled != getattr(self, "decoupled", False):
            raise ValueError(f"the optimizer state is {'AdamW' if decoupled else 'Adam'}'s, not {type(self).__name__}'s")
        if set(group) != set(self._group()):
            raise ValueError(f"the optimizer state has settings {sorted(group)}, but {type(self).__name__} has "
                             f"{sorted(self._group())}")
        new_state = {}
        for i, s in state_dict["state"].items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"the optimizer state names parameter {i}, but the network has {len(params)}")
            new_state[i] = {}
            for key, t in s.items():
                if t is None:  # an empty momentum buffer of an older torch.optim
                    continue
                if key == "step":  # a CPU float tensor in torch.optim's scalar dtype
                    new_state[i][key] = torch.as_tensor(t, dtype=_step_dtype()).detach().clone().cpu()
                    continue
                if not isinstance(t, Tensor) or t.shape != params[i].shape:
                    shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(f"optimizer state {key!r} of parameter {i} has shape {shape}, but the "
                                     f"parameter has {tuple(params[i].shape)}")
                new_state[i][key] = t.detach().to(dtype=params[i].dtype, device=params[i].device).clone()
        before = {k: getattr(self, k) for k in (*self._numeric, *self._flags)}
        try:
            self._set_group(group)  # checks every setting
        except (TypeError, ValueError):
            self._put_back(before)
            raise
        if check_only:
            self._put_back(before)
            return
        self.state = new_state

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_entry(self) -> dict:
        """What a checkpoint holds of the optimizer: its settings and its state dict."""
        return {"settings": self.settings(), "state": self.state_dict()}

    def check_checkpoint_entry(self, saved) -> None:
        """Raise ValueError unless a checkpoint's optimizer entry fits this run: the same optimizer with the same
        settings, the learning rate aside (a resume may change lr, as a plain Trainer's may), and a state that fits
        the network. Changes nothing."""
        if saved is None:
            raise ValueError(f"the checkpoint was written with no optimizer (plain SGD), but this run has {self!r}")
        theirs = _saved_settings(saved)
        if {**saved["settings"], "lr": None} != {**self.settings(), "lr": None}:
            raise ValueError(f"the checkpoint was written with optimizer {theirs}, but this run has {self!r}")
        self.load_state_dict(saved["state"], check_only=True)

    def load_checkpoint_entry(self, saved) -> None:
        """Resume from a checkpoint entry that ``check_checkpoint_entry`` accepts (it is called first); this run's
        learning rate stays."""
        self.check_checkpoint_entry(saved)
        lr = self.lr
        self.load_state_dict(saved["state"])
        self.lr = lr

    def _put_back(self, settings: dict) -> None:
        for k, v in settings.items():
            object.__setattr__(self, k, v)
            if k in self._numeric:
                self._zero[k] = not any(_plain(v)) if isinstance(v, Tensor) else v == 0

    def _set_group(self, group: dict) -> None:
        for key, value in group.items():
            setattr(self, key, value)


def _saved_settings(saved) -> str:
    """A checkpoint's optimizer entry's settings in words ("name='adam', lr=0.001, ..."), or ValueError if the entry
    is damaged."""
    if not isinstance(saved, dict) or set(saved) != {"settings", "state"} or not isinstance(saved["settings"], dict):
        raise ValueError("the checkpoint's optimizer entry is damaged: it must hold 'settings' and 'state'")
    return ", ".join(f"{k}={v!r}" for k, v in saved["settings"].items())


def _in_parameter_order(grads, bias: bool) -> list:
    if isinstance(grads, Gradients):
        return in_layer_order(grads.weights, grads.biases if bias else [])
    if isinstance(grads, (list, tuple)):
        return list(grads)
    raise TypeError(f"grads must be a Gradients or a list of tensors, but got {type(grads).__name__}")


# ---------------------------------------------------------------------------------------------------- helpers
def _axpy(y: Tensor, a: Number, x: Tensor) -> Tensor:
    """y + a x, new tensor: torch's y.add(x, alpha=a) for a number, y + x * a for per-member numbers."""
    return y.addcmul(x, a) if isinstance(a, Tensor) else y.add(x, alpha=a)


def _axpy_(y: Tensor, a: Number, x: Tensor) -> Tensor:
    """y += a x in place, as ``_axpy``."""
    return y.addcmul_(x, a) if isinstance(a, Tensor) else y.add_(x, alpha=a)


def _same_numbers(given, mine: Number, members) -> bool:
    """Whether a trainer's lr (a number, or K numbers in the network's dtype) is the optimizer's."""
    values = _plain(given) if isinstance(given, Tensor) else given
    values = values if isinstance(values, list) else [values] * (members or 1)
    ours = _plain(mine) if isinstance(mine, list) or isinstance(mine, Tensor) else [mine] * (members or 1)
    if isinstance(given, Tensor):  # compare in the dtype the trainer keeps them in
        ours = torch.tensor(ours, dtype=torch.float64).to(given.dtype).tolist()
    return list(values) == list(ours)


def _all_positive(x: Number) -> bool:
    return all(v > 0 for v in x.tolist()) if isinstance(x, Tensor) else x > 0


def _step_dtype() -> torch.dtype:
    """torch.optim's dtype of the step count: float64 under a float64 default dtype, float32 otherwise."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _plain(x: Number):
    return x.tolist() if isinstance(x, Tensor) else x
