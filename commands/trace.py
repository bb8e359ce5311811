"""One update of backprop on one sample, number by number, in the lecture's notation, with autograd beside it.

``trace_update`` runs the very functions that train (network.py's ``forward_phase``, ``net_input``,
``output_delta``, ``hidden_delta``, ``weight_gradient``, ``bias_gradient`` and ``update``) on one sample and keeps
every intermediate number: the activities x^k and weighted inputs net^k, the output delta's factors 2c(y - x) and
f'(net), each hidden delta's sum over the layer above and its f'(net), the gradients and the new weights. Beside
each it puts autograd's number, from the torch.nn twin (torch_mlp.py) and one ``torch.optim.SGD`` step, which share
no derivative code with the manual side. trace_format.py writes the result as text, Markdown or LaTeX.

``mazur_example`` is Matt Mazur's worked example ("A Step by Step Backpropagation Example", 2015), whose printed
numbers the default trace reproduces. Mazur's error is E = 1/2 sum (target - out)^2, the code's
SquaredError(reduction="sum", half=True); the lecture's e^2 has no 1/2, so its deltas are twice his.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from manual_backprop.activations import Identity, Softmax
from manual_backprop.checks import resolve_device
from manual_backprop.losses import Loss, SquaredError
from manual_backprop.network import (MLP, Gradients, bias_gradient, forward_phase, hidden_delta, net_input,
                                     output_delta, update, weight_gradient)

from reference.compare import norm_relative_error, tolerance_for
from reference.torch_mlp import TorchMLP, torch_loss

__all__ = ["Example", "LayerTrace", "Trace", "mazur_example", "trace_update", "MAZUR_PRINTED"]

MAZUR_SOURCE = 'Matt Mazur, "A Step by Step Backpropagation Example" (2015), mattmazur.com'

# Numbers Mazur prints, by his names; the trace's default output reproduces each to the digits printed.
MAZUR_PRINTED = {
    "net_h1": "0.3775", "out_h1": "0.593269992", "out_h2": "0.596884378", "net_o1": "1.105905967",
    "out_o1": "0.75136507", "out_o2": "0.772928465", "E_total": "0.298371109",
    "dE/dout_o1": "0.74136507", "dout_o1/dnet_o1": "0.186815602", "delta_o1": "0.138498562",
    "dE/dw5": "0.082167041", "dE/dout_h1": "0.036350306", "dout_h1/dnet_h1": "0.241300709", "dE/dw1": "0.000438568",
    "w5": "0.35891648", "w6": "0.408666186", "w7": "0.511301270", "w8": "0.561370121",
    "w1": "0.149780716", "w2": "0.19956143", "w3": "0.24975114", "w4": "0.29950229",
}


@dataclass
class Example:
    """A published network with its sample, loss and learning rate."""

    net: MLP
    x: Tensor  # (1, n_0)
    y: Tensor  # (1, n_L)
    loss_fn: Loss
    lr: float
    title: str
    notes: list = field(default_factory=list)  # prose lines (Markdown with $TeX$) shown under the title
    weight_names: dict = field(default_factory=dict)  # (k, j, i) 1-based -> the source's name ("w_5")


def mazur_example(dtype: torch.dtype = torch.float64, device="cpu") -> Example:
    """Mazur's 2-2-2 sigmoid network: w1..w8, biases 0.35 and 0.60, input (0.05, 0.10), target (0.01, 0.99), eta 0.5."""
    device = resolve_device(device)
    f64 = torch.float64  # written in float64, then cast: a float32 trace rounds Mazur's decimals once, not twice
    w = [torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=f64), torch.tensor([[0.40, 0.45], [0.50, 0.55]], dtype=f64)]
    b = [torch.tensor([0.35, 0.35], dtype=f64), torch.tensor([0.60, 0.60], dtype=f64)]
    net = MLP.from_tensors([t.to(dtype=dtype, device=device) for t in w],
                           [t.to(dtype=dtype, device=device) for t in b], activation="sigmoid",
                           output_activation="sigmoid")
    x = torch.tensor([[0.05, 0.10]], dtype=f64).to(dtype=dtype, device=device)
    y = torch.tensor([[0.01, 0.99]], dtype=f64).to(dtype=dtype, device=device)
    names = {(1, 1, 1): "w_1", (1, 1, 2): "w_2", (1, 2, 1): "w_3", (1, 2, 2): "w_4",
             (2, 1, 1): "w_5", (2, 1, 2): "w_6", (2, 2, 1): "w_7", (2, 2, 2): "w_8"}
    notes = [
        f"Source: {MAZUR_SOURCE}. His $h_1, h_2$ are $x^{{1}}_{{1}}, x^{{1}}_{{2}}$ here, his $o_1, o_2$ are "
        "$x^{2}_{1}, x^{2}_{2}$, and his weight names stand beside ours.",
        "Mazur's error $E_{total} = \\sum_j \\tfrac{1}{2}(target_j - out_j)^2$ is that loss, and `--example mazur` "
        "picks it for him.",
        "Mazur's $\\delta_{o1} = \\partial E/\\partial \\mathrm{net}_{o1}$ is the code's sign: his 0.138498562 "
        "is $-\\delta^{2}_{1}$ below. He keeps one bias per layer (0.35, 0.60) and does not update it; the code "
        "gives each neuron its own bias and updates it.",
    ]
    return Example(net=net, x=x, y=y, loss_fn=SquaredError(reduction="sum", half=True), lr=0.5,
                   title="Mazur's worked example: a 2-2-2 sigmoid network", notes=notes, weight_names=names)


@dataclass
class LayerTrace:
    """The numbers of layer k (1..L), whose weights are W^{k-1->k} (the code's ``weights[k-1]``), for one sample.

    Manual values, and autograd's in ``autograd`` under the same names. Signs are the code's (dE/dnet, dE/dx);
    the formatter negates them where it writes the lecture's delta.
    """

    k: int
    f: object  # the layer's Activation
    weight: Tensor  # (n_k, n_{k-1}) before the update
    bias: Optional[Tensor]  # (n_k,) or None
    net: Tensor  # (n_k,)
    x: Tensor  # (n_k,) = f(net)
    fprime: Optional[Tensor]  # (n_k,) f'(net) read off x; None for softmax (a Jacobian)
    grad_x: Optional[Tensor]  # (n_k,) dE/dx^k: the output's loss derivative, or sum_c deltas[k]_c w_cj
    delta: Tensor  # (n_k,) dE/dnet^k, the code's deltas[k-1]
    grad_w: Tensor  # (n_k, n_{k-1})
    grad_b: Optional[Tensor]
    new_weight: Tensor
    new_bias: Optional[Tensor]
    autograd: dict = field(default_factory=dict)

    @property
    def quantities(self) -> list:
        return ["net", "x", "fprime", "grad_x", "delta", "grad_w", "grad_b", "new_weight", "new_bias"]


@dataclass
class Trace:
    """Every number of one update on one sample; ``max_error`` is the largest manual-vs-autograd disagreement."""

    net: MLP
    loss_fn: Loss
    lr: float
    x0: Tensor  # (n_0,)
    y: Tensor  # (n_L,) the target row (one-hot for class targets)
    loss: float
    loss_autograd: float
    layers: list  # LayerTrace for k = 1..L
    title: str = "One update of backprop"
    notes: list = field(default_factory=list)
    weight_names: dict = field(default_factory=dict)

    @property
    def tolerance(self) -> float:
        return tolerance_for(self.net.dtype)

    def errors(self) -> dict:
        """Norm-relative error manual vs autograd of every quantity, keyed 'layer k <quantity>'."""
        errs = {"E": abs(self.loss - self.loss_autograd) / max(abs(self.loss_autograd), 1e-300)}
        for layer in self.layers:
            for name in layer.quantities:
                mine, theirs = getattr(layer, name), layer.autograd.get(name)
                if mine is not None and theirs is not None:
                    errs[f"layer {layer.k} {name}"] = norm_relative_error(mine, theirs)
        return errs

    def max_error(self) -> float:
        return max(self.errors().values())

    @property
    def agrees(self) -> bool:
        return self.max_error() <= self.tolerance


def trace_update(net: MLP, x: Tensor, y: Tensor, loss_fn: Loss, lr: float, *, title: Optional[str] = None,
                 notes=(), weight_names: Optional[dict] = None) -> Trace:
    """One update of ``net`` (left unchanged) on one sample: x (n_0,) or (1, n_0); y (n_L,), (1, n_L) or a class."""
    x = net.check_x(x, finite=True)
    if x.shape[0] != 1:
        raise ValueError(f"trace follows one sample: x must have shape (1, {net.sizes[0]}), but got {tuple(x.shape)}")
    loss_fn = net.check_loss(loss_fn)
    y = net.check_y(y, (1, net.sizes[-1]), loss_fn, finite=True)
    W, b, fs, L = net.weights, net.biases, net.activation_functions, net.num_layers
    with torch.no_grad():
        cache = forward_phase(W, b, fs, x)  # x^0 ... x^L, each (1, n_k)
        xs = cache.activations
        nets = [net_input(xs[k], W[k], b[k] if b else None) for k in range(L - 1)] + [cache.logits]
        loss = loss_fn.value(cache.logits, cache.output, y)
        deltas, grad_x = [None] * L, [None] * L
        grad_w, grad_b = [None] * L, [None] * L if b else []
        if isinstance(loss_fn, SquaredError):
            grad_x[L - 1] = loss_fn.output_delta(cache.logits, cache.output, y, Identity())  # dE/dx^L: no f'
        deltas[L - 1] = output_delta(loss_fn, cache, y, fs[L - 1])  # (1, n_L)
        for k in range(L - 1, -1, -1):
            grad_w[k] = weight_gradient(deltas[k], xs[k])  # (n_{k+1}, n_k)
            if b:
                grad_b[k] = bias_gradient(deltas[k])  # (n_{k+1},)
            if k > 0:
                grad_x[k - 1] = deltas[k] @ W[k]  # sum_c delta_c w_cj, shown as the hidden delta's second factor
                deltas[k - 1] = hidden_delta(fs[k - 1], xs[k], deltas[k], W[k])  # (1, n_k)
        new = net.copy()
        update(new.weights, new.biases, Gradients(weights=grad_w, biases=grad_b, deltas=deltas), lr)
    layers = []
    for k in range(L):
        f = fs[k]
        layers.append(LayerTrace(
            k=k + 1, f=f, weight=W[k], bias=b[k] if b else None, net=nets[k][0], x=xs[k + 1][0],
            fprime=None if isinstance(f, Softmax) else f.derivative(xs[k + 1])[0],
            grad_x=None if grad_x[k] is None else grad_x[k][0], delta=deltas[k][0], grad_w=grad_w[k],
            grad_b=grad_b[k] if b else None, new_weight=new.weights[k], new_bias=new.biases[k] if b else None))
    loss_autograd = _autograd_numbers(net, x, y, loss_fn, lr, layers)
    return Trace(net=net, loss_fn=loss_fn, lr=float(lr), x0=x[0], y=y[0], loss=float(loss),
                 loss_autograd=loss_autograd, layers=layers, title=title or "One update of backprop",
                 notes=list(notes), weight_names=dict(weight_names or {}))


def _autograd_numbers(net: MLP, x: Tensor, y: Tensor, loss_fn: Loss, lr: float, layers: list) -> float:
    """Fill each layer's ``autograd`` dict from the torch.nn twin; returns autograd's E."""
    twin = TorchMLP.from_manual(net)
    linears, acts = twin.linears, [m for m in twin if not isinstance(m, torch.nn.Linear)]
    with torch.enable_grad():
        h, zs, hs = x.detach(), [], []
        for lin, act in zip(linears, acts):
            z = lin(h)
            h = act(z)
            zs.append(z)
            hs.append(h)
        loss = torch_loss(loss_fn, zs[-1], hs[-1], y)
        params = [lin.weight for lin in linears] + [lin.bias for lin in linears if lin.bias is not None]
        grads = torch.autograd.grad(loss, params + zs + hs, allow_unused=True)  # x^L is unused by fused losses
        fprimes = []
        for z, act in zip(zs, acts):
            if isinstance(act, torch.nn.Softmax):
                fprimes.append(None)
                continue
            leaf = z.detach().requires_grad_(True)
            fprimes.append(torch.autograd.grad(act(leaf).sum(), leaf)[0][0])  # f'(net) by autograd
    L = len(linears)
    g_w, g_b = grads[:L], grads[L:len(params)]
    g_z, g_h = grads[len(params):len(params) + L], grads[len(params) + L:]
    for p, g in zip(params, grads[:len(params)]):
        p.grad = g.detach().clone()
    torch.optim.SGD(params, lr=lr).step()
    for k, layer in enumerate(layers):
        layer.autograd = {
            "net": zs[k].detach()[0], "x": hs[k].detach()[0], "fprime": fprimes[k],
            "grad_x": g_h[k][0] if layer.grad_x is not None else None, "delta": g_z[k][0], "grad_w": g_w[k],
            "grad_b": g_b[k] if g_b else None, "new_weight": linears[k].weight.detach(),
            "new_bias": linears[k].bias.detach() if linears[k].bias is not None else None,
        }
    return float(loss.detach())
