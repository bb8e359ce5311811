"""Central finite differences in float64: a third oracle that shares no derivative code with either implementation.

dE/dp ~ (E(p + eps) - E(p - eps)) / (2 eps) for each parameter entry p, and likewise for each weighted input z of
each layer (the deltas), by running the forward pass on from the perturbed z. Only loss values are used, computed
with the twin's torch.nn modules and torch.nn.functional. The truncation error is O(eps^2) and the rounding error
O(machine eps / eps); eps = 1e-6 balances them near 1e-10 relative to the loss.

For large networks, ``max_per_tensor`` checks a seeded sample of entries of each tensor; the masks say which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from manual_backprop.losses import Loss, default_loss_for, get_loss
from manual_backprop.network import MLP

from .torch_mlp import TorchMLP, torch_loss

__all__ = ["FiniteDifferences", "finite_differences"]


@dataclass
class FiniteDifferences:
    """Estimated dE/dW[k], dE/db[k], deltas[k] (float64); entries not evaluated are NaN and False in the masks."""

    weights: list
    biases: list
    deltas: list
    masks: dict = field(default_factory=dict)  # "weights"/"biases"/"deltas" -> list of bool tensors
    loss: float = float("nan")


def _indices(numel: int, max_per_tensor: Optional[int], g: torch.Generator) -> Tensor:
    if max_per_tensor is None or numel <= max_per_tensor:
        return torch.arange(numel)
    return torch.randperm(numel, generator=g)[:max_per_tensor].sort().values


def finite_difference_work(sizes, batch: int, *, bias: bool = True, max_per_tensor: Optional[int] = None,
                           deltas: bool = True) -> tuple:
    """(forward passes, multiply-adds) that ``finite_differences`` makes: two passes per entry it perturbs (at most
    ``max_per_tensor`` of each weight, bias and delta tensor), each of batch * sum n_k n_(k+1) multiply-adds."""
    def entries(n):
        return n if max_per_tensor is None else min(n, max_per_tensor)

    pairs = list(zip(sizes[:-1], sizes[1:]))
    passes = 1 + 2 * sum(entries(a * b) + (entries(b) if bias else 0) + (entries(batch * b) if deltas else 0)
                         for a, b in pairs)
    return passes, passes * batch * sum(a * b for a, b in pairs)


def finite_differences(net: Union[MLP, TorchMLP], x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None, *,
                       eps: float = 1e-6, max_per_tensor: Optional[int] = None, seed: int = 0,
                       deltas: bool = True) -> FiniteDifferences:
    """Central differences of the loss for every parameter (or a seeded sample) and every delta, in float64 on CPU."""
    manual = net if isinstance(net, MLP) else net.to_manual()
    twin = TorchMLP.from_manual(manual).to(device="cpu", dtype=torch.float64)
    act_out = twin.activation_functions[-1]
    loss_fn = default_loss_for(act_out) if loss_fn is None else get_loss(loss_fn)
    x = x.detach().to(device="cpu", dtype=torch.float64)
    x = x.unsqueeze(0) if x.dim() == 1 else x
    y = y.detach().to("cpu")
    y = y.to(torch.float64) if y.is_floating_point() else y
    g = torch.Generator().manual_seed(seed)
    modules = list(twin)

    def loss_from(start: int, h: Tensor) -> float:
        """E when the forward pass resumes at module ``start`` with input h."""
        z = h if start % 2 == 1 else None
        for i in range(start, len(modules)):
            if i % 2 == 0:
                h = modules[i](h)
                z = h
            else:
                h = modules[i](h)
        return float(torch_loss(loss_fn, z, h, y))

    def central(tensor: Tensor, evaluate, max_n) -> tuple:
        est = torch.full(tensor.shape, float("nan"), dtype=torch.float64)
        mask = torch.zeros(tensor.shape, dtype=torch.bool)
        flat, est_flat, mask_flat = tensor.view(-1), est.view(-1), mask.view(-1)
        for i in _indices(flat.numel(), max_n, g).tolist():
            orig = flat[i].item()
            flat[i] = orig + eps
            plus = evaluate()
            flat[i] = orig - eps
            minus = evaluate()
            flat[i] = orig
            est_flat[i] = (plus - minus) / (2 * eps)
            mask_flat[i] = True
        return est, mask

    with torch.no_grad():
        base = loss_from(0, x)
        result = FiniteDifferences(weights=[], biases=[], deltas=[], masks={"weights": [], "biases": [], "deltas": []},
                                   loss=base)
        for lin in twin.linears:
            est, mask = central(lin.weight, lambda: loss_from(0, x), max_per_tensor)
            result.weights.append(est)
            result.masks["weights"].append(mask)
            if lin.bias is not None:
                est, mask = central(lin.bias, lambda: loss_from(0, x), max_per_tensor)
                result.biases.append(est)
                result.masks["biases"].append(mask)
        if deltas:
            h = x
            for k in range(len(twin.linears)):
                z = modules[2 * k](h).clone()  # net of layer k+1: (B, n_{k+1})
                est, mask = central(z, lambda z=z, k=k: loss_from(2 * k + 1, z), max_per_tensor)
                result.deltas.append(est)
                result.masks["deltas"].append(mask)
                h = modules[2 * k + 1](z)
    return result
