"""A multilayer perceptron whose forward phase, backward phase and update are written by hand.

The lecture's layer x^{k+1} = f(W^{k->k+1} x^k + b) is, with samples as rows (B of them),

    x^{k+1} = f(x^k @ W[k].T + b[k])        x^k: (B, n_k),  W[k]: (n_{k+1}, n_k),  b[k]: (n_{k+1},)

Forward phase: the weights are fixed and the input x^0 is propagated to the output x^L, keeping every activity x^k
(f' is read off x^{k+1}, see activations.py) and the output layer's weighted input (for a stable loss).

Backward phase: an error term is computed at the output and propagated back, one layer at a time. Each line of
the slide is one function here, and ``backward_phase`` is their loop:

    output_delta     deltas[L-1] = dE/dnet^L                        output layer, from the loss (losses.py)
    hidden_delta     deltas[k-1] = f'(net^k) * (deltas[k] @ W[k])   earlier layer: f'(net_j) * sum_c delta_c w_cj
    weight_gradient  dE/dW[k]    = deltas[k]^T @ x^k                delta_j times the input activity x_k
    bias_gradient    dE/db[k]    = sum over samples of deltas[k]
    update           W <- W - lr * dE/dW,  b <- b - lr * dE/db      the lecture's Delta w = eta delta x

Every function works over any leading batch axes: a stack of K networks, weights (K, n_{k+1}, n_k) and activities
(K, B, n_k), runs through the same functions (the population does exactly that). ``MLP`` is a thin holder of the
parameters that checks its inputs and calls them. The fast paths (manual_backprop.fast) are derivatives of these
functions, proven update by update against them (tests/proof/test_update_proof.py).

Sign convention, said once: ``deltas[k]`` is dE/dnet, the gradient, which is what torch.autograd puts in
``z.grad``. The lecture's delta is its negative (delta = -d(e^2)/dnet), so the lecture's update
Delta w = +eta * delta * x is the same step as the code's ``W <- W - lr * dE/dW`` (``MLP.step``).

Autograd is off: parameters never require grad, and forward, backward and step run under ``torch.no_grad()``.
Backward is pure: it returns gradients and deltas; only ``step`` changes the parameters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .activations import Activation, resolve_activations
from .architecture import resolve_architecture
from .checks import check_finite, check_fits_dtype, check_input, check_positive_number, check_seed, \
    check_tensor_like, resolve_device, resolve_dtype
from .derived import ONE_STEP, ONE_UPDATE, grad_off
from .init import initial_parameters
from .losses import Loss, default_loss_for, get_loss
from .parameter_state import in_layer_order, layers_of, load_state_dict_into, state_dict_of

__all__ = ["MLP", "ForwardCache", "Gradients", "net_input", "forward_phase", "output_delta", "hidden_delta",
           "weight_gradient", "bias_gradient", "backward_phase", "update", "loss_and_gradients", "ONE_UPDATE"]

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



_ROWS_AS_GIVEN = Loss.prepare_target  # as imported: floating target rows of the output's shape, returned as they are


# ---------------------------------------------------------------------------------------------------- the slide
def net_input(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """net = W x + b with samples as rows: x @ W^T + b, (..., B, n_in) -> (..., B, n_out)."""
    if x.dim() == 2:
        return torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
    if x.dim() == 3 and bias is not None:
        return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-2, -1))
    z = x @ weight.transpose(-2, -1)
    return z if bias is None else z + bias.unsqueeze(-2)


def forward_phase(weights: Sequence[Tensor], biases: Sequence[Tensor], functions: Sequence[Activation],
                  x: Tensor) -> ForwardCache:
    """Forward phase: the weights fixed, x^{k+1} = f(W x^k + b) from the input layer to the output layer.

    x: x^0, (..., B, n_0); biases: one per layer, or empty for a network without biases.
    """
    activations = [x]  # x^0: (..., B, n_0)
    z = x
    for k, f in enumerate(functions):
        z = net_input(x, weights[k], biases[k] if biases else None)  # net^{k+1}: (..., B, n_{k+1})
        x = f.forward(z)  # x^{k+1}: (..., B, n_{k+1})
        activations.append(x)
    return ForwardCache(activations=activations, logits=z)


def output_delta(loss_fn: Loss, cache: ForwardCache, y: Tensor, f: Activation) -> Tensor:
    """The output layer's error term dE/dnet^L, (..., B, n_L): the slide's delta_j = 2 (y_j - x_j) f'(net_j) for
    e^2, in the code's sign and with the loss's reduction factor (losses.py: Loss.output_delta)."""
    return loss_fn.output_delta(cache.logits, cache.output, y, f)


def hidden_delta(f: Activation, x: Tensor, delta: Tensor, weight: Tensor) -> Tensor:
    """An earlier layer's error term: delta_j = f'(net_j) * sum_c delta_c w_cj.

    f, x: the layer's activation and activity x^k (..., B, n_k); delta: the layer above's (..., B, n_{k+1});
    weight: W[k] (..., n_{k+1}, n_k), the connections from this layer to the one above. Returns (..., B, n_k).
    """
    back = delta @ weight  # sum_c delta_c w_cj: (..., B, n_k)
    return f.backward(x, back)  # times f'(net_j), read off x = f(net)


def weight_gradient(delta: Tensor, x: Tensor) -> Tensor:
    """dE/dW = delta_j x_k summed over samples: delta^T @ x, (..., n_out, n_in); Delta w_jk = -lr times this."""
    return delta.transpose(-2, -1) @ x


def bias_gradient(delta: Tensor) -> Tensor:
    """dE/db = delta_j summed over samples, (..., n_out): a bias is a weight whose input activity is 1."""
    return delta.sum(dim=-2)


def backward_phase(weights: Sequence[Tensor], functions: Sequence[Activation], cache: ForwardCache, y: Tensor,
                   loss_fn: Loss, *, bias: bool = True) -> Gradients:
    """Backward phase: the output delta, then each earlier delta from the one above, and dE/dW, dE/db from them.

    Pure: returns Gradients (weights[k], biases[k] and deltas[k] with the leading axes of the inputs).
    """
    L = len(weights)
    x = cache.activations
    deltas = [None] * L
    grad_w = [None] * L
    grad_b = [None] * L if bias else []
    deltas[L - 1] = output_delta(loss_fn, cache, y, functions[L - 1])  # (..., B, n_L)
    for k in range(L - 1, -1, -1):
        grad_w[k] = weight_gradient(deltas[k], x[k])  # (..., n_{k+1}, n_k)
        if bias:
            grad_b[k] = bias_gradient(deltas[k])  # (..., n_{k+1})
        if k > 0:
            deltas[k - 1] = hidden_delta(functions[k - 1], x[k], deltas[k], weights[k])  # (..., B, n_k)
    return Gradients(weights=grad_w, biases=grad_b, deltas=deltas)


def update(weights: Sequence[Tensor], biases: Sequence[Tensor], grads: Gradients, lr: Union[float, Tensor]) -> None:
    """Gradient descent in place: W <- W - lr * dE/dW, b <- b - lr * dE/db (the lecture's Delta w = eta delta x).

    lr: one number, or a (K,) tensor with one rate per network of a stack (0 leaves that network as it is).
    """
    params, given = [*weights, *biases], [*grads.weights, *grads.biases]
    if isinstance(lr, Tensor):
        for p, g in zip(params, given):
            p.addcmul_(g, -lr.view(-1, *([1] * (g.dim() - 1))))
    elif params and params[0].is_cpu:  # one call: on the CPU, _foreach_add_ is each pair's own add_ (no fused kernel)
        torch._foreach_add_(params, given, alpha=-lr)
    else:
        for p, g in zip(params, given):
            p.add_(g, alpha=-lr)


def loss_and_gradients(net: "MLP", x: Tensor, y: Tensor, loss_fn: Loss):
    """Both phases on checked data: (E, Gradients). ``MLP.loss_and_grads`` checks its arguments, then calls this;
    trainers that checked their data once where it entered call it directly. Call under torch.no_grad()."""
    cache = forward_phase(net.weights, net.biases, net.activation_functions, x)
    loss = loss_fn.value(cache.logits, cache.output, y)
    return loss, backward_phase(net.weights, net.activation_functions, cache, y, loss_fn, bias=net.bias)


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
        vars(self).update(resolve_architecture(sizes, activation, output_activation, bias, init, init_scale,
                                               bias_init, dtype, device))
        seed = check_seed("seed", seed, allow_none=True)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.seed = seed
        weights, biases = initial_parameters(
            self.sizes, init=self.init, bias_init=self.bias_init, scale=self.init_scale, seed=seed, bias=bias
        )
        self.weights = [w.to(dtype=self.dtype).to(self.device) for w in weights]
        self.biases = [b.to(dtype=self.dtype).to(self.device) for b in biases]

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
        return in_layer_order(self.weights, self.biases)

    # ------------------------------------------------------------------ the parameters as a state (parameter_state.py)
    @classmethod
    def from_tensors(cls, weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]] = None,
                     activation: Union[ActivationSpec, Sequence[ActivationSpec]] = "sigmoid",
                     output_activation: ActivationSpec = "sigmoid") -> "MLP":
        """A network with copies of the given weights W[k] (n_{k+1}, n_k), the layout of torch.nn.Linear.weight,
        and biases (None: no biases); sizes, dtype and device are read off them."""
        net = cls.__new__(cls)
        net.sizes, net.dtype, net.device = layers_of(weights, biases)
        net.activation_functions = resolve_activations(net.sizes, activation, output_activation)
        net.bias, net.init, net.bias_init, net.init_scale, net.seed = biases is not None, "given", "given", None, None
        net.weights = [torch.empty(n_out, n_in, dtype=net.dtype, device=net.device)
                       for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:])]
        net.biases = [torch.empty(n, dtype=net.dtype, device=net.device) for n in net.sizes[1:]] if net.bias else []
        net.load_state_dict(state_dict_of(weights, biases or []))
        return net

    def state_dict(self) -> dict:
        """The parameters (not copies) under torch.nn.Sequential(Linear, f, Linear, ...)'s keys: '0.weight', ..."""
        return state_dict_of(self.weights, self.biases)

    def load_state_dict(self, state_dict) -> None:
        """Copy parameters in from a state dict with the keys of ``state_dict()`` (the twin's, or an equivalent
        torch.nn.Sequential's), cast to this network's dtype and device; all checked before anything changes."""
        load_state_dict_into(self.weights, self.biases, state_dict, sizes=self.sizes)

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "MLP":
        """Move (and/or cast) the parameters in place, like torch.nn.Module.to; returns self."""
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        self.device = self.device if device is None else resolve_device(device)
        self.dtype = self.dtype if dtype is None else resolve_dtype(dtype)
        self.weights = [w.to(device=self.device, dtype=self.dtype) for w in self.weights]
        self.biases = [b.to(device=self.device, dtype=self.dtype) for b in self.biases]
        return self

    def copy(self) -> "MLP":
        """An independent copy with equal parameters (the same initial network for several runs)."""
        new = copy.copy(self)
        new.weights, new.biases = [w.clone() for w in self.weights], [b.clone() for b in self.biases]
        return new

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

    # ------------------------------------------------------------------ the two phases and the update, checked
    @torch.no_grad()
    def forward_cache(self, x: Tensor) -> ForwardCache:
        """Forward phase (``forward_phase``) on checked x, keeping what the backward phase needs."""
        return forward_phase(self.weights, self.biases, self.activation_functions, self.check_x(x))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """The network's output g(w, x) = x^L, shape (B, sizes[-1]); a 1-D x is one sample and gives (1, n_L)."""
        return self.forward_cache(x).output

    __call__ = forward

    @torch.no_grad()
    def backward(self, cache: ForwardCache, y: Tensor, loss_fn: Union[str, Loss, None] = None) -> Gradients:
        """Backward phase (``backward_phase``): deltas from the output layer back to the first, dE/dW, dE/db. Pure."""
        loss_fn = self.check_loss(loss_fn)
        y = self.check_y(y, cache.output.shape, loss_fn)
        return backward_phase(self.weights, self.activation_functions, cache, y, loss_fn, bias=self.bias)

    @torch.no_grad()
    def loss(self, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None) -> Tensor:
        """The cost E on (x, y) as a 0-dim tensor, without gradients."""
        loss_fn = self.check_loss(loss_fn)
        cache = self.forward_cache(x)
        y = self.check_y(y, cache.output.shape, loss_fn)
        return loss_fn.value(cache.logits, cache.output, y)

    @grad_off
    def loss_and_grads(self, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None):
        """Forward and backward phase on (x, y): returns (E as a 0-dim tensor, Gradients). Changes nothing.

        ``loss_fn`` is a Loss or a name; None picks cross-entropy for a softmax output and squared error otherwise.
        A registered derivative (``ONE_UPDATE``: one C call for small CPU networks) runs where it applies.
        """
        loss_fn = self.check_loss(loss_fn)
        if not (type(self) is MLP and self._takes_as_given(x, y, loss_fn)):  # the common case: one test, no calls
            x = self.check_x(x)
            y = self.check_y(y, (*x.shape[:-1], self.sizes[-1]), loss_fn)
        got = ONE_UPDATE.path(self, x, y, loss_fn) if ONE_UPDATE.enabled and ONE_UPDATE.path else None
        return got if got is not None else loss_and_gradients(self, x, y, loss_fn)

    @grad_off
    def step(self, grads: Gradients, lr: float) -> None:
        """Gradient descent in place (``update``): W <- W - lr * dE/dW, b <- b - lr * dE/db. A registered
        derivative (``ONE_STEP``: one C call for the Gradients of loss_and_grads' own C call) runs where it applies."""
        if type(lr) is not float or not 0.0 <= lr < float("inf"):  # the common case passes without the call
            lr = check_positive_number("lr", lr, allow_zero=True)
        check_fits_dtype("lr", lr, self.dtype)  # add_(alpha=-lr) would overflow in the parameters' dtype
        if ONE_STEP.enabled and ONE_STEP.path and ONE_STEP.path(self, grads, lr):
            return  # the C call for the Gradients that loss_and_grads' own C call returned, the parameters unchanged
        if len(grads.weights) != self.num_layers or len(grads.biases) != len(self.biases):
            raise ValueError(
                f"grads must hold {self.num_layers} weight and {len(self.biases)} bias gradients, "
                f"but got {len(grads.weights)} and {len(grads.biases)}"
            )
        given = [*grads.weights, *grads.biases]
        if not all(isinstance(g, Tensor) for g in given) or [g.shape for g in given] != [
                p.shape for p in (*self.weights, *self.biases)]:  # one cheap test; the loop names the culprit
            for name, params, given in (("weights", self.weights, grads.weights), ("biases", self.biases,
                                                                                   grads.biases)):
                for k, (p, g) in enumerate(zip(params, given)):
                    if not isinstance(g, Tensor) or g.shape != p.shape:
                        got = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
                        raise ValueError(f"grads.{name}[{k}] must have shape {tuple(p.shape)}, but got {got}")
        update(self.weights, self.biases, grads, lr)

    # ------------------------------------------------------------------ checks at the public edge
    # The one-update API checks what costs no pass over the data and no device synchronisation: types, dtypes,
    # devices, shapes. NaN and inf are refused where data enters (Trainer, the loaders: ``finite=True``); in a
    # user's own loop a non-finite input shows as a non-finite loss.
    def check_x(self, x, *, finite: bool = False) -> Tensor:
        """x as the network takes it: (B, n_0), or (n_0,) for one sample, of its dtype and on its device."""
        return check_input("x", x, n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes,
                           finite=finite)

    def _takes_as_given(self, x, y, loss_fn: Loss) -> bool:
        """Whether check_x and check_y would return x and y as they are: plain tensors (B, n_0) and (B, n_L), B >= 1,
        of the network's dtype and on its device, for a loss that takes floating target rows as they come (Loss's
        own prepare_target, neither overridden nor replaced on the instance or the class), with this class's own
        checks (none set on the instance). Anything else goes through the checks, and gets their messages. (A
        subclass with checks of its own, Population, always goes through them.)"""
        if type(x) is not Tensor or type(y) is not Tensor or x.dtype is not self.dtype or y.dtype is not self.dtype:
            return False
        shape, own, sizes = x.shape, self.__dict__, self.sizes
        return (len(shape) == 2 and shape[1] == sizes[0] and shape[0] > 0 and y.shape == (shape[0], sizes[-1])
                and type(loss_fn).prepare_target is _ROWS_AS_GIVEN and "prepare_target" not in loss_fn.__dict__
                and "check_x" not in own and "check_y" not in own and x.device == self.device
                and y.device == self.device)

    def check_loss(self, loss_fn) -> Loss:
        """A Loss from a Loss or a name (None: the default for the output activation), refused where it makes no
        sense on the output activation."""
        loss_fn = default_loss_for(self.output_activation) if loss_fn is None else get_loss(loss_fn)
        loss_fn.check_output_activation(self.output_activation)
        return loss_fn

    def check_y(self, y, out_shape, loss_fn: Loss, *, finite: bool = False) -> Tensor:
        """Targets prepared by the loss as (B, n_L) rows of the output's dtype (class indices become one-hot)."""
        check_tensor_like("y", y, dtype=self.dtype, device=self.device)
        if out_shape[0] == 1 and y.is_floating_point() and y.shape == (out_shape[1],):
            y = y.unsqueeze(0)  # the target of one sample given as a 1-D tensor
        elif out_shape[0] == 1 and y.dim() == 0:
            y = y.reshape(1)  # one class index
        y = loss_fn.prepare_target(y, tuple(out_shape), self.dtype)
        if finite:
            check_finite("y", y)
        return y
