"""SGD, Adam and AdamW, each torch.optim's single-tensor algorithm line by line (see the package docstring)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import Number, Optimizer, _all_positive, _axpy, _axpy_, _plain, _step_dtype

__all__ = ["SGD", "Adam", "AdamW", "get_optimizer", "OPTIMIZERS"]


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
