"""The peers the hand-written update is timed against: autograd with torch.optim.SGD, the same update in plain
numpy, and the bare matrix products (torch and numpy). The JAX peer is in jax_peer.py."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from benchmarks.cases import Impl
from manual_backprop.losses import BinaryCrossEntropy, CrossEntropy, SquaredError
from manual_backprop.network import MLP
from reference.torch_mlp import TorchMLP, torch_loss


class Autograd(Impl):
    """The autograd twin and torch.optim.SGD: zero_grad, forward, loss, backward, step."""

    name = "autograd+SGD"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.twin = TorchMLP.from_manual(net)
        self.opt = torch.optim.SGD(self.twin.parameters(), lr=lr)
        self.loss_fn, self.x, self.y, self.b = loss_fn, x, y, batch
        self.order = order.to(x.device)
        self.last = None

    def run(self, u0, n):
        b = self.b
        with torch.enable_grad():
            for u in range(u0, u0 + n):
                idx = self.order[u * b:(u + 1) * b]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
                self.opt.zero_grad(set_to_none=True)
                out, zs = self.twin.forward_with_logits(xb)
                loss = torch_loss(self.loss_fn, zs[-1], out, yb)
                loss.backward()
                self.opt.step()
        self.last = loss.detach()

    def kept_bytes(self):
        idx = self.order[:self.b]
        return autograd_kept_bytes(self.twin, self.loss_fn, self.x.index_select(0, idx), self.y.index_select(0, idx))

    def final_loss(self):
        return float(self.last) if self.last is not None else None


def autograd_kept_bytes(twin: TorchMLP, loss_fn, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes autograd keeps for backward in one forward + loss: every packed tensor, once per storage, parameters
    excluded (they exist anyway)."""
    params = {p.untyped_storage().data_ptr() for p in twin.parameters()}
    kept = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params:
            kept[key] = max(kept.get(key, 0), t.numel() * t.element_size())
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, zs = twin.forward_with_logits(x)
        torch_loss(loss_fn, zs[-1], out, y)
    return sum(kept.values())


# numpy: the same update written plainly, as one would without torch
def _np_act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "identity":
        return z
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"the numpy update has no activation {name!r}")


def _np_act_backward(name: str, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return g * (x * (1.0 - x))
    if name == "tanh":
        return g * (1.0 - x * x)
    if name == "relu":
        return np.where(x > 0, g, 0).astype(g.dtype, copy=False)
    if name == "identity":
        return g
    if name == "softmax":
        return x * (g - (g * x).sum(axis=1, keepdims=True))
    raise ValueError(f"the numpy update has no activation {name!r}")


class NumpyMLP:
    """The hand-written update on numpy arrays: forward, loss, output delta, backward, step."""

    def __init__(self, net: MLP, loss_fn, lr: float):
        self.W = [w.detach().cpu().numpy().copy() for w in net.weights]
        self.b = [b.detach().cpu().numpy().copy() for b in net.biases]
        self.acts = [f.spec() for f in net.activation_functions]
        self.loss_fn, self.lr = loss_fn, lr

    def forward(self, x: np.ndarray) -> tuple:
        """(z^L, x^L): the output layer's logits and activity."""
        h = z = x
        for k in range(len(self.W)):
            z = h @ self.W[k].T
            if self.b:
                z = z + self.b[k]
            h = _np_act(self.acts[k], z)
        return z, h

    def evaluate(self, x: np.ndarray, y: np.ndarray, labels: Optional[np.ndarray]) -> list:
        """[loss] or [loss, accuracy] of the current network on (x, y), as the Trainer's evaluation reports them."""
        z, out = self.forward(x)
        c = self.loss_fn.scale(*out.shape)
        if isinstance(self.loss_fn, SquaredError):
            loss = ((out - y) ** 2).sum() * c
        elif isinstance(self.loss_fn, CrossEntropy):
            m = z.max(axis=1, keepdims=True)
            loss = -(y * (z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True)))).sum() * c
        else:
            loss = (np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))).sum() * c
        if labels is None:
            return [float(loss)]
        predicted = (out[:, 0] >= 0.5) if out.shape[1] == 1 else out.argmax(axis=1)
        return [float(loss), float((predicted == labels).mean())]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        L, lr, loss_fn = len(self.W), self.lr, self.loss_fn
        acts = [x]
        for k in range(L):
            z = acts[-1] @ self.W[k].T
            if self.b:
                z = z + self.b[k]
            acts.append(_np_act(self.acts[k], z))
        out = acts[-1]
        c = loss_fn.scale(*out.shape)
        if isinstance(loss_fn, SquaredError):
            e = out - y
            loss = (e * e).sum() * c
            d = _np_act_backward(self.acts[-1], out, e * (2.0 * c))
        elif isinstance(loss_fn, CrossEntropy):
            m = z.max(axis=1, keepdims=True)
            lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
            loss = -(y * (z - lse)).sum() * c
            d = (out - y) * c
        elif isinstance(loss_fn, BinaryCrossEntropy):
            loss = (np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))).sum() * c
            d = (out - y) * c
        else:
            raise TypeError(f"the numpy update has no loss {loss_fn!r}")
        for k in range(L - 1, -1, -1):
            back = d @ self.W[k] if k > 0 else None  # through the weights before their step
            self.W[k] -= lr * (d.T @ acts[k])
            if self.b:
                self.b[k] -= lr * d.sum(axis=0)
            if k > 0:
                d = _np_act_backward(self.acts[k - 1], acts[k], back)
        return float(loss)


class Numpy(Impl):
    name = "numpy"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.mlp = NumpyMLP(net, loss_fn, lr)
        self.x, self.y = x.cpu().numpy(), y.cpu().numpy()
        self.idx = order.numpy().reshape(-1, batch)
        self.batch = batch
        self.last = None

    def run(self, u0, n):
        for u in range(u0, u0 + n):
            idx = self.idx[u]
            self.last = self.mlp.step(self.x[idx], self.y[idx])

    def kept_bytes(self):
        sizes = [self.mlp.W[0].shape[1]] + [w.shape[0] for w in self.mlp.W]
        return self.batch * (sum(sizes) + sizes[-1]) * self.x.itemsize  # x^0..x^L and the logits z^L

    def final_loss(self):
        return self.last


class MatmulFloor(Impl):
    """The update's matrix products alone: L forward, L - 1 back through the weights, L weight gradients."""

    name = "matmul-floor"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        dt, dev, s, B = net.dtype, net.device, net.sizes, batch
        self.W = [w.clone() for w in net.weights]
        self.acts = [torch.rand(B, n, dtype=dt, device=dev) for n in s]
        self.deltas = [torch.rand(B, n, dtype=dt, device=dev) for n in s[1:]]
        self.backs = [torch.empty(B, n, dtype=dt, device=dev) for n in s[1:-1]]
        self.grads = [torch.empty_like(w) for w in self.W]
        self.Wt = [w.t() for w in self.W]
        self.dt = [d.t() for d in self.deltas]

    def forward_only(self) -> None:
        """The L products of one forward phase (an evaluation)."""
        for k in range(len(self.W)):
            torch.mm(self.acts[k], self.Wt[k], out=self.acts[k + 1])

    def run(self, u0, n):
        L = len(self.W)
        for _ in range(n):
            for k in range(L):
                torch.mm(self.acts[k], self.Wt[k], out=self.acts[k + 1])
            for k in range(L - 1, -1, -1):
                if k > 0:
                    torch.mm(self.deltas[k], self.W[k], out=self.backs[k - 1])
                torch.mm(self.dt[k], self.acts[k], out=self.grads[k])


class NumpyMatmulFloor(Impl):
    """numpy's matrix products alone, the same 3L - 1 of them: shows how fast numpy's own BLAS is here."""

    name = "numpy-matmul-floor"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        s, B = net.sizes, batch
        dt = np.float64 if net.dtype == torch.float64 else np.float32
        rng = np.random.default_rng(0)
        self.W = [w.detach().cpu().numpy().copy() for w in net.weights]
        self.acts = [rng.random((B, n)).astype(dt) for n in s]
        self.deltas = [rng.random((B, n)).astype(dt) for n in s[1:]]
        self.backs = [np.empty((B, n), dt) for n in s[1:-1]]
        self.grads = [np.empty_like(w) for w in self.W]

    def run(self, u0, n):
        L = len(self.W)
        for _ in range(n):
            for k in range(L):
                np.matmul(self.acts[k], self.W[k].T, out=self.acts[k + 1])
            for k in range(L - 1, -1, -1):
                if k > 0:
                    np.matmul(self.deltas[k], self.W[k], out=self.backs[k - 1])
                np.matmul(self.deltas[k].T, self.acts[k], out=self.grads[k])
