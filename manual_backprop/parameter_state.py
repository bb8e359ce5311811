"""The parameters of a network as a state: functions over its lists of weights W[k] and biases b[k].

The order [W[0], b[0], W[1], b[1], ...] and the keys '0.weight', '0.bias', '2.weight', ... are those of
torch.nn.Sequential(Linear, f, Linear, f, ...), so a state dict loads into the autograd twin and back. The MLP's
``parameters``, ``state_dict``, ``load_state_dict`` and ``from_tensors`` are these functions on its own lists;
nothing here computes (network.py holds the lecture's equations).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import Tensor

from .checks import check_sizes

__all__ = ["in_layer_order", "state_dict_of", "load_state_dict_into", "layers_of"]


def in_layer_order(weights: Sequence[Tensor], biases: Sequence[Tensor]) -> list:
    """[W[0], b[0], W[1], b[1], ...]: the parameters (or their gradients) in state-dict order; [W[0], W[1], ...]
    when ``biases`` is empty (a network without biases)."""
    return [t for k, w in enumerate(weights) for t in ((w, biases[k]) if biases else (w,))]


def state_dict_of(weights: Sequence[Tensor], biases: Sequence[Tensor]) -> "OrderedDict[str, Tensor]":
    """The parameters under torch.nn.Sequential's keys ('0.weight', '0.bias', '2.weight', ...): the tensors
    themselves, not copies, like torch.nn.Module.state_dict."""
    kinds = ("weight", "bias") if biases else ("weight",)
    keys = [f"{2 * k}.{kind}" for k in range(len(weights)) for kind in kinds]
    return OrderedDict(zip(keys, in_layer_order(weights, biases)))


@torch.no_grad()
def load_state_dict_into(weights: list, biases: list, state_dict, *, sizes: list) -> None:
    """Copy a state dict with the keys of ``state_dict_of(weights, biases)`` into the tensors, cast to their dtype
    and device. All or nothing: every key and value (a dense tensor with values, of real numbers and the
    parameter's shape) is checked before the first copy, so a bad value leaves every parameter as it was."""
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict must be a mapping of parameter names to tensors, but got "
                        f"{type(state_dict).__name__}")
    own = state_dict_of(weights, biases)
    if sorted(own) != sorted(state_dict.keys()):
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        raise ValueError(f"state_dict keys do not match sizes {sizes} (bias={bool(biases)}): missing {missing}, "
                         f"unexpected {unexpected}")
    for key, mine in own.items():
        _check_value(f"state_dict[{key!r}]", state_dict[key], mine)
    for key, mine in own.items():
        mine.copy_(state_dict[key].detach())


def _check_value(name: str, value, mine: Tensor) -> None:
    """value can be copied into the parameter ``mine``: raise one line naming it otherwise."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, but got {type(value).__name__}")
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, but got layout {value.layout}; convert it with "
                        f".to_dense()")
    if value.is_meta:
        raise ValueError(f"{name} is a meta tensor, which holds no values; give one with values of shape "
                         f"{tuple(mine.shape)}")
    if value.is_complex() or value.is_quantized:
        raise TypeError(f"{name} must hold real numbers, but got dtype {value.dtype}")
    if value.shape != mine.shape:
        raise ValueError(f"{name} must have shape {tuple(mine.shape)}, but got {tuple(value.shape)}")


def layers_of(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]]) -> tuple:
    """(sizes, dtype, device) read off given weights W[k] of shape (n_{k+1}, n_k), the layout of
    torch.nn.Linear.weight (and biases, one per layer, or None)."""
    if isinstance(weights, Tensor) or not weights:
        raise ValueError("weights must be a non-empty list of 2-D tensors W[k] of shape (n_{k+1}, n_k)")
    w0 = weights[0]
    if not isinstance(w0, Tensor) or not w0.is_floating_point():
        raise TypeError(f"weights[0] must be a floating-point torch.Tensor, but got {w0!r}")
    if w0.dim() != 2:
        raise ValueError(f"weights[0] must be 2-D (n_1, n_0), but got shape {tuple(w0.shape)}")
    if biases is not None and len(biases) != len(weights):
        raise ValueError(f"biases must have one tensor per layer ({len(weights)}), but got {len(biases)}")
    return check_sizes([w0.shape[1]] + [w.shape[0] for w in weights]), w0.dtype, w0.device
