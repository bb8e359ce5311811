"""A multilayer perceptron whose forward phase, backward phase and update are written by hand.

The lecture's layer x^{k+1} = f(W^{k->k+1} x^k + b) is, with samples as rows (B of them),

    x^{k+1} = f(x^k @ W[k].T + b[k])        x^k: (B, n_k),  W[k]: (n_{k+1}, n_k),  b[k]: (n_{k+1},)

Forward phase: the weights are fixed and the input x^0 is propagated to the output x^L, keeping every activity x^k
(f' is read off x^{k+1}, see activations.py) and the output layer's weighted input (for a stable loss).

Backward phase: an error term is computed at the output and propagated back, one layer at a time:

    deltas[L-1] = dE/dnet^L                              output layer, from the loss (losses.py)
    deltas[k-1] = f'(net^k) * (deltas[k] @ W[k])         earlier layer: f'(net_j) * sum_c delta_c w_cj
    dE/dW[k]    = deltas[k].T @ x^k                      delta_j times the input activity x_k of that weight
    dE/db[k]    = sum over samples of deltas[k]

Sign convention, said once: ``deltas[k]`` is dE/dnet, the gradient, which is what torch.autograd puts in
``z.grad``. The lecture's delta is its negative (delta = -d(e^2)/dnet), so the lecture's update
Delta w = +eta * delta * x is the same step as the code's ``W <- W - lr * dE/dW`` (``MLP.step``).

Autograd is off: parameters never require grad, and forward, backward and step run under ``torch.no_grad()``.
Backward is pure: it returns gradients and deltas; only ``step`` changes the parameters.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .checks import (check_finite, check_input, check_positive_number, check_sizes, check_tensor_like, resolve_device,
                     resolve_dtype)
from .activations import Activation, resolve_activations
from .init import initial_parameters, resolve_init
from .losses import Loss, default_loss_for, get_loss

__all__ = ["MLP", "ForwardCache", "Gradients"]

ActivationSpec = Union[str, Activation]


@dataclass
class ForwardCache:
    """What the forward phase keeps for the backward phase, and nothing more.

    activations: x^0 ... x^L, ``activations[k]`` of shape (B, sizes[k]).
    logits: the output layer's weighted input net^L, shape (B, sizes[-1]), kept so the loss can be computed stably
        (log-softmax, softplus) without taking the log of an output that underflowed.
    """

    activations: list
    logits: Tensor

    @property
    def output(self) -> Tensor:
        return self.activations[-1]


@dataclass
class Gradients:
    """dE/dW[k], dE/db[k] and the deltas dE/dnet of every layer, the structure both implementations return.

    weights[k]: (sizes[k+1], sizes[k]); biases[k]: (sizes[k+1],), empty list without biases;
    deltas[k]: (B, sizes[k+1]), the error term of layer k+1.
    """

    weights: list
    biases: list = field(default_factory=list)
    deltas: list = field(default_factory=list)


class MLP:
    """A multilayer perceptron trained by hand-written backprop.

    Args:
        sizes: layer widths [n_0, ..., n_L]; n_0 inputs, n_L outputs, L layers of weights.
        activation: f of the hidden layers, one name or Activation for all, or a list with one per hidden layer.
            Names: sigmoid, tanh, relu, leaky_relu (or "leaky_relu:SLOPE"), identity.
        output_activation: f of the output layer; also softmax.
        bias: whether each layer has a bias b[k].
        init: weight scheme, see init.py (normal, uniform, xavier_uniform, xavier_normal, he_uniform, he_normal,
            torch_default).
        init_scale: std (normal) or half-width (uniform) for init and bias_init "normal"/"uniform".
        bias_init: zeros, normal, uniform, or torch_default.
        dtype, device: where the parameters live; data must match them.
        seed: seeds the CPU generator that draws the weights; None draws a seed from torch's global generator.

    Shape:
        input (B, sizes[0]) or (sizes[0],); output (B, sizes[-1]).

    Example:
        >>> net = MLP([2, 2, 1], activation="sigmoid", seed=0)
        >>> loss, grads = net.loss_and_grads(x, y, "squared_error")
        >>> net.step(grads, lr=0.5)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: Union[ActivationSpec, Sequence[ActivationSpec]] = "sigmoid",
        output_activation: ActivationSpec = "sigmoid",
        bias: bool = True,
        init: str = "xavier_uniform",
        init_scale: float = 0.5,
        bias_init: str = "zeros",
        dtype: Optional[torch.dtype] = None,
        device: Union[str, torch.device, None] = "cpu",
        seed: Optional[int] = None,
    ):
        self.sizes = check_sizes(sizes)
        self.activation_functions = resolve_activations(self.sizes, activation, output_activation)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, but got {bias!r}")
        self.bias = bias
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.init, self.bias_init = resolve_init(init, bias_init)
        self.init_scale = check_positive_number("init_scale", init_scale)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int or None, but got {seed!r}")
        self.seed = seed
        weights, biases = initial_parameters(
            self.sizes, init=self.init, bias_init=self.bias_init, scale=self.init_scale, seed=seed, bias=bias
        )
        self.weights = [w.to(dtype=self.dtype).to(self.device) for w in weights]
        self.biases = [b.to(dtype=self.dtype).to(self.device) for b in biases]

    # ------------------------------------------------------------------ construction from given tensors
    @classmethod
    def from_tensors(
        cls,
        weights: Sequence[Tensor],
        biases: Optional[Sequence[Tensor]] = None,
        activation: Union[ActivationSpec, Sequence[ActivationSpec]] = "sigmoid",
        output_activation: ActivationSpec = "sigmoid",
    ) -> "MLP":
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

    # ------------------------------------------------------------------ structure
    @property
    def num_layers(self) -> int:
        """L, the number of weight layers (len(sizes) - 1)."""
        return len(self.sizes) - 1

    @property
    def output_activation(self) -> Activation:
        return self.activation_functions[-1]

    def parameters(self) -> list:
        """[W[0], b[0], W[1], b[1], ...] in state-dict order."""
        params = []
        for k in range(self.num_layers):
            params.append(self.weights[k])
            if self.bias:
                params.append(self.biases[k])
        return params

    def spec(self) -> dict:
        """Everything needed to build the same architecture again (JSON-friendly)."""
        return {
            "sizes": list(self.sizes),
            "activation": [f.spec() for f in self.activation_functions[:-1]],
            "output_activation": self.output_activation.spec(),
            "bias": self.bias,
            "dtype": str(self.dtype).replace("torch.", ""),
            "init": self.init,
            "bias_init": self.bias_init,
            "init_scale": self.init_scale,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        acts = [f.spec() for f in self.activation_functions]
        return (f"MLP(sizes={self.sizes}, activations={acts}, bias={self.bias}, "
                f"dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------ forward phase
    @torch.no_grad()
    def forward_cache(self, x: Tensor) -> ForwardCache:
        """Forward phase: x^{k+1} = f(x^k W[k]^T + b[k]) for every layer, keeping what backward needs."""
        x = self._check_x(x)
        return self._forward_cache(x)

    def _forward_cache(self, x: Tensor) -> ForwardCache:
        activations = [x]  # x^0: (B, n_0)
        z = x
        for k, f in enumerate(self.activation_functions):
            z = self._net_input(k, x)  # net^{k+1}: (B, n_{k+1})
            x = f.forward(z)  # x^{k+1}: (B, n_{k+1})
            activations.append(x)
        return ForwardCache(activations=activations, logits=z)

    def _net_input(self, k: int, x: Tensor) -> Tensor:
        """net = W x + b for layer k, with rows as samples: x @ W[k].T + b[k], shape (B, n_{k+1})."""
        if self.bias:
            return torch.addmm(self.biases[k], x, self.weights[k].t())
        return x @ self.weights[k].t()

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """The network's output g(w, x) = x^L, shape (B, sizes[-1]); a 1-D x is one sample and gives (1, n_L)."""
        x = self._check_x(x)
        for k, f in enumerate(self.activation_functions):
            x = f.forward(self._net_input(k, x))
        return x

    __call__ = forward

    # ------------------------------------------------------------------ backward phase
    @torch.no_grad()
    def backward(self, cache: ForwardCache, y: Tensor, loss_fn: Union[str, Loss, None] = None) -> Gradients:
        """Backward phase: deltas from the output layer back to the first, and dE/dW, dE/db from them. Pure."""
        loss_fn = self._check_loss(loss_fn)
        y = self._check_y(y, cache.output.shape, loss_fn)
        return self._backward(cache, y, loss_fn)

    def _backward(self, cache: ForwardCache, y: Tensor, loss_fn: Loss) -> Gradients:
        L = self.num_layers
        x = cache.activations
        deltas = [None] * L
        grad_w = [None] * L
        grad_b = [None] * L if self.bias else []
        deltas[L - 1] = loss_fn.output_delta(cache.logits, x[L], y, self.output_activation)  # (B, n_L)
        for k in range(L - 1, -1, -1):
            grad_w[k] = deltas[k].t() @ x[k]  # (n_{k+1}, n_k): delta_j times input activity x_k
            if self.bias:
                grad_b[k] = deltas[k].sum(dim=0)  # (n_{k+1},)
            if k > 0:
                back = deltas[k] @ self.weights[k]  # sum_c delta_c w_cj: (B, n_k)
                deltas[k - 1] = self.activation_functions[k - 1].backward(x[k], back)  # times f'(net_j): (B, n_k)
        return Gradients(weights=grad_w, biases=grad_b, deltas=deltas)

    @torch.no_grad()
    def loss(self, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None) -> Tensor:
        """The cost E on (x, y) as a 0-dim tensor, without gradients."""
        loss_fn = self._check_loss(loss_fn)
        cache = self.forward_cache(x)
        y = self._check_y(y, cache.output.shape, loss_fn)
        return loss_fn.value(cache.logits, cache.output, y)

    @torch.no_grad()
    def loss_and_grads(self, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None):
        """Forward and backward phase on (x, y): returns (E as a 0-dim tensor, Gradients). Changes nothing.

        ``loss_fn`` is a Loss or a name; None picks cross-entropy for a softmax output and squared error otherwise.
        """
        loss_fn = self._check_loss(loss_fn)
        cache = self.forward_cache(x)
        y = self._check_y(y, cache.output.shape, loss_fn)
        return loss_fn.value(cache.logits, cache.output, y), self._backward(cache, y, loss_fn)

    def _loss_and_grads(self, x: Tensor, y: Tensor, loss_fn: Loss):
        """loss_and_grads without argument checks, for trainers that checked their data once. Call under no_grad."""
        cache = self._forward_cache(x)
        return loss_fn.value(cache.logits, cache.output, y), self._backward(cache, y, loss_fn)

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def step(self, grads: Gradients, lr: float) -> None:
        """Gradient descent in place: W <- W - lr * dE/dW, b <- b - lr * dE/db (the lecture's Delta w = eta delta x)."""
        lr = check_positive_number("lr", lr, allow_zero=True)
        if len(grads.weights) != self.num_layers or len(grads.biases) != len(self.biases):
            raise ValueError(
                f"grads must hold {self.num_layers} weight and {len(self.biases)} bias gradients, "
                f"but got {len(grads.weights)} and {len(grads.biases)}"
            )
        for k, (w, g) in enumerate(zip(self.weights, grads.weights)):
            if g.shape != w.shape:
                raise ValueError(f"grads.weights[{k}] must have shape {tuple(w.shape)}, but got {tuple(g.shape)}")
        self._step(grads, lr)

    def _step(self, grads: Gradients, lr: float) -> None:
        for w, g in zip(self.weights, grads.weights):
            w.add_(g, alpha=-lr)
        for b, g in zip(self.biases, grads.biases):
            b.add_(g, alpha=-lr)

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
        expected = list(self.state_dict().keys())
        got = list(state_dict.keys())
        if sorted(expected) != sorted(got):
            missing = [k for k in expected if k not in state_dict]
            unexpected = [k for k in got if k not in expected]
            raise ValueError(
                f"state_dict keys do not match sizes {self.sizes} (bias={self.bias}): "
                f"missing {missing}, unexpected {unexpected}"
            )
        for key, own in self.state_dict().items():
            value = state_dict[key]
            if not isinstance(value, Tensor):
                raise TypeError(f"state_dict[{key!r}] must be a torch.Tensor, but got {type(value).__name__}")
            if value.shape != own.shape:
                raise ValueError(f"state_dict[{key!r}] must have shape {tuple(own.shape)}, but got {tuple(value.shape)}")
            own.copy_(value.detach())

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "MLP":
        """Move (and/or cast) the parameters in place, like torch.nn.Module.to; returns self."""
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        device = self.device if device is None else resolve_device(device)
        dtype = self.dtype if dtype is None else resolve_dtype(dtype)
        self.weights = [w.to(device=device, dtype=dtype) for w in self.weights]
        self.biases = [b.to(device=device, dtype=dtype) for b in self.biases]
        self.device, self.dtype = device, dtype
        return self

    def copy(self) -> "MLP":
        """An independent copy with equal parameters (the same initial network for several runs)."""
        new = copy.copy(self)
        new.weights = [w.clone() for w in self.weights]
        new.biases = [b.clone() for b in self.biases]
        return new

    # ------------------------------------------------------------------ checks at the public edge
    def _check_x(self, x) -> Tensor:
        return check_input("x", x, n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes)

    def _check_loss(self, loss_fn) -> Loss:
        loss_fn = default_loss_for(self.output_activation) if loss_fn is None else get_loss(loss_fn)
        loss_fn.check_output_activation(self.output_activation)
        return loss_fn

    def _check_y(self, y, out_shape, loss_fn: Loss) -> Tensor:
        check_tensor_like("y", y, dtype=self.dtype, device=self.device)
        if out_shape[0] == 1 and y.is_floating_point() and y.shape == (out_shape[1],):
            y = y.unsqueeze(0)  # the target of one sample given as a 1-D tensor
        elif out_shape[0] == 1 and y.dim() == 0:
            y = y.reshape(1)  # one class index
        y = loss_fn.prepare_target(y, tuple(out_shape), self.dtype)
        check_finite("y", y)
        return y


