"""The autograd twin: the same multilayer perceptron built from torch.nn modules and differentiated by autograd.

``TorchMLP`` is a ``torch.nn.Sequential`` of ``Linear`` and activation modules, so its state-dict keys ('0.weight',
'0.bias', '2.weight', ...) are the manual network's. Its loss is computed with torch.nn.functional (mse_loss,
cross_entropy, binary_cross_entropy_with_logits), not with the manual loss code, so the two share nothing but the
specification. Gradients and deltas come from torch.autograd.grad: deltas[k] is dE/dz of layer k+1, z's gradient.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manual_backprop.losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredError, default_loss_for, get_loss
from manual_backprop.network import MLP, Gradients

__all__ = ["TorchMLP", "torch_loss"]


class TorchMLP(nn.Sequential):
    """nn.Sequential(Linear, f, Linear, f, ..., Linear, f_out) with the manual MLP's architecture."""

    def __init__(self, sizes, activation="sigmoid", output_activation="sigmoid", bias=True,
                 dtype: Optional[torch.dtype] = None, device=None):
        from manual_backprop.activations import resolve_activations  # the same spec rules as the manual network

        functions = resolve_activations(list(sizes), activation, output_activation)
        modules = []
        for n_in, n_out, f in zip(sizes[:-1], sizes[1:], functions):
            modules.append(nn.Linear(n_in, n_out, bias=bias, dtype=dtype, device=device))
            modules.append(f.torch_module())
        super().__init__(*modules)
        self.sizes = list(sizes)
        self.activation_functions: list = functions

    @property
    def linears(self) -> list:
        return [m for m in self if isinstance(m, nn.Linear)]

    @classmethod
    def from_manual(cls, net: MLP) -> "TorchMLP":
        """A twin with the same architecture, dtype, device and exactly equal (copied) parameters."""
        twin = cls(net.sizes, net.activation_functions[:-1], net.output_activation, bias=net.bias,
                   dtype=net.dtype, device=net.device)
        twin.load_state_dict({k: v.detach().clone() for k, v in net.state_dict().items()})
        return twin

    def to_manual(self) -> MLP:
        """A manual MLP with exactly equal (copied) parameters."""
        weights = [m.weight.detach().clone() for m in self.linears]
        biases = [m.bias.detach().clone() for m in self.linears] if self.linears[0].bias is not None else None
        return MLP.from_tensors(weights, biases, activation=self.activation_functions[:-1],
                                output_activation=self.activation_functions[-1])

    def forward_with_logits(self, x: Tensor):
        """(output, [z of every layer]) where z^{k+1} = Linear_k(x^k) is the weighted input."""
        zs = []
        for module in self:
            x = module(x)
            if isinstance(module, nn.Linear):
                zs.append(x)
        return x, zs

    def loss_and_grads(self, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None):
        """(E, Gradients) through torch.autograd, in the manual network's structure.

        Works on detached copies of x and y under torch.enable_grad(), so it runs even where the caller turned
        grad mode off, and it leaves the parameters' .grad untouched.
        """
        loss_fn = default_loss_for(self.activation_functions[-1]) if loss_fn is None else get_loss(loss_fn)
        loss_fn.check_output_activation(self.activation_functions[-1])
        x = x.detach()
        if x.dim() == 1:
            x = x.unsqueeze(0)
        y = y.detach()
        with torch.enable_grad():
            out, zs = self.forward_with_logits(x)
            loss = torch_loss(loss_fn, zs[-1], out, y)
            weights = [m.weight for m in self.linears]
            biases = [m.bias for m in self.linears if m.bias is not None]
            grads = torch.autograd.grad(loss, weights + biases + zs)
        n_w, n_b = len(weights), len(biases)
        return loss.detach(), Gradients(weights=list(grads[:n_w]), biases=list(grads[n_w:n_w + n_b]),
                                        deltas=list(grads[n_w + n_b:]))


def torch_loss(loss_fn: Loss, z: Tensor, out: Tensor, y: Tensor) -> Tensor:
    """The cost E computed with torch.nn.functional, independently of manual_backprop.losses.

    z is the output layer's weighted input (logits), out = f(z); y as the manual loss accepts it.
    """
    batch, n_out = out.shape
    if y.dim() == 1 and y.is_floating_point() and batch == 1:
        y = y.unsqueeze(0)
    if isinstance(loss_fn, SquaredError):
        total = F.mse_loss(out, y, reduction="sum")
        divisor = {"mean": batch, "sum": 1, "elementwise_mean": batch * n_out}[loss_fn.reduction]
        value = total / divisor
        return value * 0.5 if loss_fn.half else value
    if isinstance(loss_fn, CrossEntropy):
        target = y.long() if not y.is_floating_point() else y  # indices, or one-hot / probability rows
        return F.cross_entropy(z, target, reduction=loss_fn.reduction)
    if isinstance(loss_fn, BinaryCrossEntropy):
        total = F.binary_cross_entropy_with_logits(z, y, reduction="sum")
        divisor = {"mean": batch, "sum": 1, "elementwise_mean": batch * n_out}[loss_fn.reduction]
        return total / divisor
    raise TypeError(f"no torch reference for loss {loss_fn!r}")

