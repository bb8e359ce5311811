"""What the mathematics says about single layers: Novikoff's perceptron mistake bound, and a linear MLP collapsed
into the one layer it is.

Lecture, "Who needs multi-layer networks?": "if the network contains only linear neurons, it practically reduces
to a single layer" (``collapse_linear_mlp``); the perceptron rule converges on linearly separable data, after at
most ``perceptron_mistake_bound`` corrections.
"""

from __future__ import annotations

import torch

from ..checks import check_positive_number
from ..network import MLP
from .units import LinearUnit


def perceptron_mistake_bound(radius: float, margin: float, *, initial_norm: float = 0.0, lr: float = 1.0) -> float:
    """Novikoff's bound on the number of online perceptron corrections on linearly separable data.

    If some unit vector u (over the augmented weights [w, b]) has s_i u . x~_i >= margin > 0 for every sample
    (x~ = [x, 1], s = +1 for class 1 and -1 for class 0) and |x~_i| <= radius, then from initial weights of norm
    ``initial_norm`` the rule makes at most (radius / margin)^2 + 2 initial_norm / (lr margin) corrections:
    each correction raises u . w by at least lr * margin and |w|^2 by at most (lr * radius)^2.

    In batch mode each epoch that is not the last corrects at least one of N samples with weight 1/N, so the
    number of batch epochs before convergence is at most N times this bound.
    """
    radius = check_positive_number("radius", radius)
    margin = check_positive_number("margin", margin)
    initial_norm = check_positive_number("initial_norm", initial_norm, allow_zero=True)
    lr = check_positive_number("lr", lr)
    return (radius / margin) ** 2 + 2.0 * initial_norm / (lr * margin)


def collapse_linear_mlp(net: MLP) -> LinearUnit:
    """The single layer a linear MLP is: W = W_L ... W_2 W_1 and b = the biases composed through the later layers.

    "If the network contains only linear neurons, it practically reduces to a single layer": with identity
    activations x^L = W_L(... (W_1 x + b_1) ...) + b_L = W x + b. Returns a LinearUnit with that W (n_L, n_0) and
    b (n_L,), in the network's dtype and on its device.

    Raises:
        ValueError: when any activation of ``net`` is not the identity (the collapse would not be exact).
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a manual_backprop.MLP, but got {type(net).__name__}")
    names = [f.spec() for f in net.activation_functions]
    if any(name != "identity" for name in names):
        raise ValueError(f"net must have identity activations in every layer to collapse into one matrix, but "
                         f"got {names}")
    weight = torch.eye(net.sizes[0], dtype=net.dtype, device=net.device)  # (n_0, n_0)
    bias = torch.zeros(net.sizes[0], dtype=net.dtype, device=net.device)  # (n_0,)
    for k in range(net.num_layers):
        weight = net.weights[k] @ weight  # (n_{k+1}, n_0)
        bias = net.weights[k] @ bias + (net.biases[k] if net.bias else 0.0)  # (n_{k+1},)
    return LinearUnit.from_tensors(weight, bias)
