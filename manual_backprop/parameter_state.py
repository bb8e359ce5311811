"""The parameters of an MLP as a state: the state dict of torch.nn.Sequential, construction from given tensors,
moving between devices and copying. Nothing here computes; network.py holds the lecture's equations."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .activations import Activation, resolve_activations
from .checks import check_sizes, resolve_device, resolve_dtype

__all__ = ["ParameterState"]

ActivationSpec = Union[str, Activation]


class ParameterState:
    """State-dict I/O, ``from_tensors``, ``to`` and ``copy`` for a network holding ``weights``, ``biases``,
    ``sizes``, ``bias``, ``dtype`` and ``device`` (the MLP). Keys follow torch.nn.Sequential(Linear, f, Linear, ...).
    """

    # ------------------------------------------------------------------ construction from given tensors
    @classmethod
    def from_tensors(
        cls,
        weights: Sequence[Tensor],
        biases: Optional[Sequence[Tensor]] = None,
        activation: Union[ActivationSpec, Sequence[ActivationSpec]] = "sigmoid",
        output_activation: ActivationSpec = "sigmoid",
    ) -> "ParameterState":
        """A network with the weights (and biases) the user gives; sizes, dtype and device are read off them.

        ``weights[k]`` must be (n_{k+1}, n_k), the layout of torch.nn.Linear.weight. The tensors are copied.
        """
        if isinstance(weights, Tensor) or not weights:
            raise ValueError("weights must be a non-empty list of 2-D tensors W[k] of shape (n_{k+1}, n_k)")
        w0 = weights[0]
        if not isinstance(w0, Tensor) or not w0.is_floating_point():
            raise TypeError(f"weights[0] must be a floating-point torch.Tensor, but got {w0!r}")
        sizes = [w0.shape[1]] + [w.shape[0] for w in weights] if w0.dim() == 2 else None
        if sizes is None:
            raise ValueError(f"weights[0] must be 2-D (n_1, n_0), but got shape {tuple(w0.shape)}")
        net = cls.__new__(cls)
        net.sizes = check_sizes(sizes)
        net.activation_functions = resolve_activations(net.sizes, activation, output_activation)
        net.bias = biases is not None
        net.dtype, net.device = w0.dtype, w0.device
        net.init, net.bias_init, net.init_scale, net.seed = "given", "given", None, None
        net.weights = [torch.empty(n_out, n_in, dtype=net.dtype, device=net.device)
                       for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:])]
        net.biases = [torch.empty(n, dtype=net.dtype, device=net.device) for n in net.sizes[1:]] if net.bias else []
        state = OrderedDict()
        for k, w in enumerate(weights):
            state[f"{2 * k}.weight"] = w
            if net.bias:
                if len(biases) != len(weights):
                    raise ValueError(f"biases must have one tensor per layer ({len(weights)}), but got {len(biases)}")
                state[f"{2 * k}.bias"] = biases[k]
        net.load_state_dict(state)
        return net

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, Tensor]":
        """Parameters under the keys of torch.nn.Sequential(Linear, f, Linear, f, ...): '0.weight', '0.bias', '2.weight', ...

        The tensors are the network's own (not copies), like torch.nn.Module.state_dict.
        """
        state = OrderedDict()
        for k in range(self.num_layers):
            state[f"{2 * k}.weight"] = self.weights[k]
            if self.bias:
                state[f"{2 * k}.bias"] = self.biases[k]
        return state

    @torch.no_grad()
    def load_state_dict(self, state_dict) -> None:
        """Copy parameters in from a state dict with the keys of ``state_dict()`` (also one of the twin or of an
        equivalent torch.nn.Sequential). Values are cast to this network's dtype and device."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of parameter names to tensors, but got "
                            f"{type(state_dict).__name__}")
        expected = list(self.state_dict().keys())
        got = list(state_dict.keys())
        if sorted(expected) != sorted(got):
            missing = [k for k in expected if k not in state_dict]
            unexpected = [k for k in got if k not in expected]
            raise ValueError(
                f"state_dict keys do not match sizes {self.sizes} (bias={self.bias}): "
                f"missing {missing}, unexpected {unexpected}"
            )
        own = self.state_dict()
        for key, mine in own.items():  # every key is checked before any parameter changes: all or nothing
            value = state_dict[key]
            if not isinstance(value, Tensor):
                raise TypeError(f"state_dict[{key!r}] must be a torch.Tensor, but got {type(value).__name__}")
            if value.shape != mine.shape:
                raise ValueError(f"state_dict[{key!r}] must have shape {tuple(mine.shape)}, but got {tuple(value.shape)}")
            if value.is_complex():
                raise TypeError(f"state_dict[{key!r}] must hold real numbers, but got dtype {value.dtype}")
        for key, mine in own.items():
            mine.copy_(state_dict[key].detach())

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "ParameterState":
        """Move (and/or cast) the parameters in place, like torch.nn.Module.to; returns self."""
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        device = self.device if device is None else resolve_device(device)
        dtype = self.dtype if dtype is None else resolve_dtype(dtype)
        self.weights = [w.to(device=device, dtype=dtype) for w in self.weights]
        self.biases = [b.to(device=device, dtype=dtype) for b in self.biases]
        self.device, self.dtype = device, dtype
        return self

    def copy(self) -> "ParameterState":
        """An independent copy with equal parameters (the same initial network for several runs)."""
        new = copy.copy(self)
        new.weights = [w.clone() for w in self.weights]
        new.biases = [b.clone() for b in self.biases]
        return new

