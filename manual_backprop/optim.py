"""Optimizers written by hand on the Gradients structure: SGD (momentum, Nesterov, L2), Adam (L2, AMSGrad) and AdamW.

Each follows torch.optim's single-tensor algorithm line by line (torch/optim/sgd.py ``_single_tensor_sgd``,
torch/optim/adam.py ``_single_tensor_adam``), with the same operations in the same order, so 100 steps of a manual
network and of its autograd twin under torch.optim end on the same numbers (tests/test_optim.py):

    SGD     g <- g + wd p;  buf <- g (first step), else buf <- momentum buf + (1 - dampening) g
            g <- g + momentum buf (nesterov) or g <- buf;  p <- p - lr g
    Adam    t <- t + 1;  g <- g + wd p (Adam) or p <- p (1 - lr wd) (AdamW, decoupled)
            m <- m + (1 - beta1)(g - m);  v <- beta2 v + (1 - beta2) g^2;  v_max <- max(v_max, v) (amsgrad)
            p <- p - lr / (1 - beta1^t) * m / (sqrt(v or v_max) / sqrt(1 - beta2^t) + eps)

``step(grads)`` takes the Gradients that ``loss_and_grads`` returns (or a list in ``net.parameters()`` order) and
updates the parameters in place; the gradients are the code's dE/dW, autograd's sign (network.py), so plain SGD with
lr is exactly ``MLP.step(grads, lr)``, the lecture's Delta w = eta delta x. State is kept per parameter, keyed by its
index in ``net.parameters()``; ``state_dict()`` holds copies in torch.optim's layout (it loads into the
torch.optim optimizer of the twin, and theirs into these), ``load_state_dict()`` puts state and settings back.

Populations: the parameters of a ``Population`` have a leading member axis K, and every rule above is element-wise,
so one optimizer steps all members. Any numeric setting may then be K numbers (a (K,) tensor or a sequence), one
per member, e.g. ``SGD(pop, lr=torch.tensor([0.1, 0.5, 1.0]), momentum=[0.0, 0.9, 0.9])``; member i then follows
the run of that member alone with its own numbers (to rounding: a per-member number is applied as a tensor product
where a single run's is a scalar argument). This is what torch.func's model ensembling cannot express.

Left out: maximize, foreach/fused kernels, parameter groups, closures and learning-rate schedulers (change
``opt.lr`` between steps).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from .network import Gradients, update

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer", "OPTIMIZERS", "apply_step", "attach_optimizer",
           "optimizer_snapshot", "restore_optimizer", "optimizer_checkpoint", "check_optimizer_checkpoint",
           "load_optimizer_checkpoint"]

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
        elif key in type(self)._flags and not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False, but got {value!r}")
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

    def _put_back(self, settings: dict) -> None:
        for k, v in settings.items():
            object.__setattr__(self, k, v)
            if k in self._numeric:
                self._zero[k] = not any(_plain(v)) if isinstance(v, Tensor) else v == 0

    def _set_group(self, group: dict) -> None:
        for key, value in group.items():
            setattr(self, key, value)


def _in_parameter_order(grads, bias: bool) -> list:
    if isinstance(grads, Gradients):
        out = []
        for k, w in enumerate(grads.weights):
            out.append(w)
            if bias and k < len(grads.biases):
                out.append(grads.biases[k])
        return out
    if isinstance(grads, (list, tuple)):
        return list(grads)
    raise TypeError(f"grads must be a Gradients or a list of tensors, but got {type(grads).__name__}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (heavy ball or Nesterov) and L2 weight decay.

    Args:
        net: an MLP or a Population (settings may then be K numbers).
        lr: the learning rate eta; momentum: mu >= 0; dampening: of the gradient in the momentum buffer;
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0); weight_decay: L2 factor, added to g.
    """

    name = "sgd"
    _numeric = ("lr", "momentum", "dampening", "weight_decay")
    _flags = ("nesterov",)

    def __init__(self, net, lr: Number, momentum: Number = 0.0, dampening: Number = 0.0, nesterov: bool = False,
                 weight_decay: Number = 0.0):
        super().__init__(net, {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                               "nesterov": nesterov})
        self._check_nesterov()

    def _check_nesterov(self) -> None:
        if self.nesterov and (not _all_positive(self.momentum) or not self._is_zero("dampening")):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as torch.optim.SGD requires), "
                             f"but got momentum={_plain(self.momentum)} and dampening={_plain(self.dampening)}")

    def _group(self) -> dict:
        return {k: getattr(self, k) for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")}

    def _set_group(self, group: dict) -> None:
        super()._set_group(group)
        self._check_nesterov()

    def _update(self, i: int, p: Tensor, g: Tensor, state: dict) -> None:
        value = self._value
        if not self._is_zero("weight_decay"):
            g = _axpy(g, value(self.weight_decay, p), p)  # g + wd p
        if not self._is_zero("momentum"):
            mu = value(self.momentum, p)
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.detach().clone()
            else:
                _axpy_(buf.mul_(mu), value(1 - self.dampening, p), g)  # mu buf + (1 - dampening) g
            if self.nesterov:
                g = _axpy(g, mu, buf)  # g + mu buf
            elif isinstance(mu, Tensor):
                g = torch.where(mu == 0, g, buf)  # a member with momentum 0 follows torch's momentum=0: no buffer
            else:
                g = buf
        _axpy_(p, value(-self.lr, p), g)  # p - lr g


class Adam(Optimizer):
    """Adam (Kingma and Ba) with L2 weight decay added to the gradient, and optional AMSGrad.

    Args:
        net: an MLP or a Population (settings may then be K numbers; betas is a pair, each one or K numbers).
        lr: step size; betas: (beta1, beta2), the decay of the first and second moment averages; eps: added to the
        denominator; weight_decay: L2 factor; amsgrad: divide by the running maximum of the second moment.
    """

    name = "adam"
    _numeric = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _flags = ("amsgrad",)
    decoupled = False

    def __init__(self, net, lr: Number = 1e-3, betas: Sequence[Number] = (0.9, 0.999), eps: Number = 1e-8,
                 weight_decay: Number = 0.0, amsgrad: bool = False):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), but got {betas!r}")
        super().__init__(net, {"lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps,
                               "weight_decay": weight_decay, "amsgrad": amsgrad})

    @property
    def betas(self) -> tuple:
        return (self.beta1, self.beta2)

    def settings(self) -> dict:
        s = super().settings()
        betas = [s.pop("beta1"), s.pop("beta2")]
        return {"name": s.pop("name"), "lr": s.pop("lr"), "betas": betas, **s}  # torch.optim's order

    def _group(self) -> dict:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad}

    def _set_group(self, group: dict) -> None:
        group = dict(group)
        betas = group.pop("betas")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), but got {betas!r}")
        super()._set_group({**group, "beta1": betas[0], "beta2": betas[1]})

    def state_dict(self) -> dict:
        out = super().state_dict()
        out["param_groups"][0]["decoupled_weight_decay"] = self.decoupled
        return out

    def _update(self, i: int, p: Tensor, g: Tensor, state: dict) -> None:
        value = self._value
        if not state:
            state["step"] = torch.tensor(0.0, dtype=_step_dtype())  # on the CPU, as torch.optim keeps it
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if self.amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        lr, beta1, beta2 = self.lr, self.beta1, self.beta2
        if not self._is_zero("weight_decay"):
            if self.decoupled:
                p.mul_(value(1 - lr * self.weight_decay, p))  # AdamW: decay the weights, not the gradient
            else:
                g = _axpy(g, value(self.weight_decay, p), p)  # g + wd p
        exp_avg.lerp_(g, value(1 - beta1, p))  # m + (1 - beta1)(g - m)
        one_minus_beta2 = value(1 - beta2, p)
        if isinstance(one_minus_beta2, Tensor):
            exp_avg_sq.mul_(value(beta2, p)).addcmul_(g, g * one_minus_beta2)
        else:
            exp_avg_sq.mul_(value(beta2, p)).addcmul_(g, g, value=one_minus_beta2)  # beta2 v + (1 - beta2) g^2
        step = state["step"].item()  # a CPU tensor: no device synchronisation
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if self.amsgrad:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second = state["max_exp_avg_sq"]
        else:
            second = exp_avg_sq
        denom = (second.sqrt() / value(bias_correction2_sqrt, p)).add_(value(self.eps, p))
        neg_step = value(-step_size, p)
        if isinstance(neg_step, Tensor):
            p.add_(exp_avg.mul(neg_step).div_(denom))  # the order of addcdiv's (value * m) / denom
        else:
            p.addcdiv_(exp_avg, denom, value=neg_step)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): p <- p (1 - lr wd) before the Adam step;
    torch.optim.AdamW's default weight_decay is 1e-2, and so is this one's."""

    name = "adamw"
    decoupled = True

    def __init__(self, net, lr: Number = 1e-3, betas: Sequence[Number] = (0.9, 0.999), eps: Number = 1e-8,
                 weight_decay: Number = 1e-2, amsgrad: bool = False):
        super().__init__(net, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW)}


def get_optimizer(name: str, net, **settings) -> Optimizer:
    """An optimizer by name ("sgd", "adam", "adamw") for ``net``, with its settings as keyword arguments."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, but got {name!r}")
    return OPTIMIZERS[key](net, **settings)


# ---------------------------------------------------------------------------------------------------- training loops
# What Trainer (and PopulationTrainer's eager engine) call, one line each, so that a training loop takes an optimizer
# and plain SGD stays its default with the same numbers.
def apply_step(optimizer: "Optimizer | None", weights, biases, grads: Gradients, lr, members=None) -> None:
    """One update: network.update (plain gradient descent, bit for bit as before) without an optimizer, else its
    step. ``weights`` and ``biases`` must be the optimizer's network's own tensors; ``members`` (populations): the
    (K,) bool mask of the members that move (the plain update gets that mask inside lr, as lr * active)."""
    if optimizer is None:
        update(weights, biases, grads, lr)
    elif members is None:
        optimizer.step(grads)
    else:
        optimizer.step(grads, members=members)


def attach_optimizer(optimizer: "Optimizer | None", net, lr, fast, *, switch: str = "fast") -> tuple:
    """(optimizer, lr, fast) for a trainer of ``net``: the optimizer checked; lr, when given, must be the
    optimizer's (None takes it); the fast paths run plain SGD, so "auto"/True turn off and a named one is refused.
    ``switch="engine"`` (PopulationTrainer): ``fast`` is the engine, and only "eager" runs an optimizer."""
    if optimizer is None:
        return None, lr, fast
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a manual_backprop.optim optimizer (SGD, Adam, AdamW) or None, but got "
                        f"{type(optimizer).__name__}")
    if optimizer.net is not net:
        raise ValueError("optimizer steps another network: build it on the network this trainer trains, "
                         "e.g. Adam(net, lr=1e-3)")
    if lr is not None and not _same_numbers(lr, optimizer.lr, optimizer.members):
        raise ValueError(f"lr={_plain(lr)} differs from the optimizer's lr={_plain(optimizer.lr)}; give the same "
                         f"number or leave lr out")
    if switch == "engine":
        if fast != "eager":
            raise ValueError(f"engine={fast!r} runs plain SGD; with an optimizer use engine='eager'")
        return optimizer, optimizer.lr, fast
    if fast not in (False, True, "auto"):
        raise ValueError(f"fast={fast!r} runs plain SGD; with an optimizer use fast=False")
    return optimizer, optimizer.lr, False


def optimizer_snapshot(optimizer: "Optimizer | None"):
    """A copy of the optimizer's state (None without one), for rewinding an unfinished epoch."""
    return None if optimizer is None else optimizer.state_dict()


def restore_optimizer(optimizer: "Optimizer | None", snapshot) -> None:
    """Put back a snapshot taken by ``optimizer_snapshot``."""
    if optimizer is not None and snapshot is not None:
        optimizer.load_state_dict(snapshot)


def optimizer_checkpoint(optimizer: "Optimizer | None"):
    """What a checkpoint holds of the optimizer: None for plain SGD, else its settings and its state dict."""
    return None if optimizer is None else {"settings": optimizer.settings(), "state": optimizer.state_dict()}


def check_optimizer_checkpoint(optimizer: "Optimizer | None", saved) -> None:
    """Raise ValueError unless a checkpoint's optimizer entry fits this run: the same optimizer (or none on both
    sides) with the same settings, the learning rate aside (a resume may change lr, as a plain Trainer's may),
    and a state that fits the network. Changes nothing."""
    mine = "no optimizer (plain SGD)" if optimizer is None else repr(optimizer)
    if saved is None:
        if optimizer is not None:
            raise ValueError(f"the checkpoint was written with no optimizer (plain SGD), but this run has {mine}")
        return
    if not isinstance(saved, dict) or set(saved) != {"settings", "state"} or not isinstance(saved["settings"], dict):
        raise ValueError("the checkpoint's optimizer entry is damaged: it must hold 'settings' and 'state'")
    if optimizer is None or {**saved["settings"], "lr": None} != {**optimizer.settings(), "lr": None}:
        theirs = ", ".join(f"{k}={v!r}" for k, v in saved["settings"].items())
        raise ValueError(f"the checkpoint was written with optimizer {theirs}, but this run has {mine}")
    optimizer.load_state_dict(saved["state"], check_only=True)


def load_optimizer_checkpoint(optimizer: "Optimizer | None", saved) -> None:
    """Resume the optimizer from a checkpoint entry that ``check_optimizer_checkpoint`` accepts (it is called
    first); the optimizer keeps this run's learning rate."""
    check_optimizer_checkpoint(optimizer, saved)
    if optimizer is not None:
        lr = optimizer.lr
        optimizer.load_state_dict(saved["state"])
        optimizer.lr = lr


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
