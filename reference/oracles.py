"""Oracles for manual_backprop.quantities and manual_backprop.optim, built on torch.func and torch.autograd.

Each works on the autograd twin (TorchMLP) of one MLP, in its dtype and on its device, and shares no derivative code
with the manual network: the loss comes from torch.nn.functional (torch_loss), every derivative from autograd.

    per_sample_contributions    d E / d theta_i, where sample i runs through its own copy theta_i of the
                                parameters (torch.func.vmap over the copies): sample i's share of the batch
                                gradient, with no convention to convert
    per_sample_loss_gradients   torch.func.vmap(torch.func.grad(loss of one sample)): g_i, the gradient of sample
                                i's loss alone, as BackPACK and the torch.func tutorial compute per-sample gradients
    gradient_noise_func         the variance and B_simple from those g_i with torch.var
    hvp_double_backward         H v = d/dtheta (grad E . v), double backward through the twin
    hvp_finite_differences      (grad E(theta + eps v) - grad E(theta - eps v)) / (2 eps), central differences of
                                the twin's autograd gradients, in float64 on the CPU

Parameters and v are lists in ``net.parameters()`` order (W[0], b[0], W[1], ...); a Population is checked member by
member (``population.member(i)``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manual_backprop.losses import Loss, default_loss_for, get_loss
from manual_backprop.network import MLP
from manual_backprop.parameter_state import in_layer_order

from .torch_mlp import TorchMLP, torch_loss

__all__ = ["per_sample_contributions", "per_sample_loss_gradients", "gradient_noise_func", "hvp_double_backward",
           "hvp_finite_differences"]


def _setup(net: MLP, x: Tensor, y: Tensor, loss_fn):
    twin = TorchMLP.from_manual(net)
    loss_fn = default_loss_for(twin.activation_functions[-1]) if loss_fn is None else get_loss(loss_fn)
    names = [name for name, _ in twin.named_parameters()]  # '0.weight', '0.bias', '2.weight', ...: parameters()
    params = [p.detach() for p in twin.parameters()]
    return twin, loss_fn, names, params, x.detach(), y.detach()


def _functional_forward(twin: TorchMLP, params: dict, x: Tensor):
    """(output, logits) of the twin with the given parameters, torch.nn.functional for the Linear layers."""
    z = None
    for i, module in enumerate(twin):
        if isinstance(module, nn.Linear):
            x = z = F.linear(x, params[f"{i}.weight"], params.get(f"{i}.bias"))
        else:
            x = module(x)
    return x, z


def per_sample_contributions(net: MLP, x: Tensor, y: Tensor, loss_fn=None) -> list:
    """Sample i's share of the batch gradient, (B, *p.shape) per parameter: each sample gets its own copy of the
    parameters (vmap over the copies), and autograd differentiates the batch loss with respect to every copy."""
    twin, loss_fn, names, params, x, y = _setup(net, x, y, loss_fn)
    batch = x.shape[0]
    with torch.enable_grad():
        copies = [p.unsqueeze(0).repeat(batch, *([1] * p.dim())).requires_grad_() for p in params]

        def one(theta, xi):
            out, z = _functional_forward(twin, dict(zip(names, theta)), xi.unsqueeze(0))
            return out.squeeze(0), z.squeeze(0)

        out, z = torch.func.vmap(one)(copies, x)  # (B, n_L) each
        loss = torch_loss(loss_fn, z, out, y)
        return [g.detach() for g in torch.autograd.grad(loss, copies)]


def per_sample_loss_gradients(net: MLP, x: Tensor, y: Tensor, loss_fn=None) -> list:
    """g_i = grad of the loss of sample i alone (a batch of one, the same loss and reduction), (B, *p.shape) per
    parameter: torch.func.vmap(torch.func.grad(...)) over the samples."""
    twin, loss_fn, names, params, x, y = _setup(net, x, y, loss_fn)

    def loss_of_one(theta, xi, yi):
        out, z = _functional_forward(twin, dict(zip(names, theta)), xi.unsqueeze(0))
        return torch_loss(loss_fn, z, out, yi.unsqueeze(0))

    with torch.enable_grad():
        return list(torch.func.vmap(torch.func.grad(loss_of_one), in_dims=(None, 0, 0))(params, x, y))


def gradient_noise_func(net: MLP, x: Tensor, y: Tensor, loss_fn=None, *, correction: int = 1) -> dict:
    """mean, variance (torch.var over the samples), trace, grad_norm_sq and b_simple from the torch.func g_i."""
    per_sample = per_sample_loss_gradients(net, x, y, loss_fn)
    mean = [g.mean(dim=0) for g in per_sample]
    variance = [torch.var(g, dim=0, correction=correction) for g in per_sample]
    trace = sum(v.sum() for v in variance)
    grad_norm_sq = sum((m * m).sum() for m in mean)
    return {"mean": mean, "variance": variance, "trace": trace, "grad_norm_sq": grad_norm_sq,
            "b_simple": trace / grad_norm_sq}


def hvp_double_backward(net: MLP, x: Tensor, y: Tensor, loss_fn: Optional[Loss], v: Sequence[Tensor]) -> list:
    """H v by double backward through the autograd twin: grad of (grad E . v) with respect to the parameters."""
    twin, loss_fn, _, _, x, y = _setup(net, x, y, loss_fn)
    params = list(twin.parameters())
    with torch.enable_grad():
        out, zs = twin.forward_with_logits(x)
        loss = torch_loss(loss_fn, zs[-1], out, y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=[t.detach() for t in v], allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def hvp_finite_differences(net: MLP, x: Tensor, y: Tensor, loss_fn: Optional[Loss], v: Sequence[Tensor], *,
                           eps: float = 1e-5) -> list:
    """H v ~ (grad E(theta + eps v) - grad E(theta - eps v)) / (2 eps), float64 on the CPU, from the twin's
    autograd gradients. Truncation error O(eps^2), rounding O(machine eps / eps): about 1e-10 relative at 1e-5."""
    base = TorchMLP.from_manual(net).to(device="cpu", dtype=torch.float64)
    loss_fn = default_loss_for(base.activation_functions[-1]) if loss_fn is None else get_loss(loss_fn)
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu")
    y = y.to(torch.float64) if y.is_floating_point() else y
    v = [t.detach().to("cpu", torch.float64) for t in v]

    def gradient_at(sign: float) -> list:
        twin = TorchMLP.from_manual(base.to_manual())
        with torch.no_grad():
            for p, t in zip(twin.parameters(), v):
                p.add_(t, alpha=sign * eps)
        _, grads = twin.loss_and_grads(x, y, loss_fn)
        return in_layer_order(grads.weights, grads.biases)

    plus, minus = gradient_at(1.0), gradient_at(-1.0)
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
