"""Speed and memory of the hand-written backprop, side by side with autograd, numpy and the bare matrix products.

    python -m experiments.bench                          # every case on the CPU (and on CUDA when present)
    python -m experiments.bench --quick                  # a smoke run: few repeats, the large case shrunk
    python -m experiments.bench --cases online_tiny online_small --device cpu --out bench/cpu.json

Every case is one gradient-descent update (forward phase, loss, backward phase, step) of one network, timed for
each implementation of the same update:

    manual          the fast path the Trainer's fast=True picks (manual_backprop.fast: "c" for small networks on
                    the CPU, "fused" for large ones, "cuda_graph" on CUDA); ratios are taken against it
    manual-plain    the plain path, exactly the Trainer's per-update loop (net._loss_and_grads, net._step)
    manual-c, manual-fused, manual-cuda_graph   each fast path on its own, where it applies
    autograd+SGD    the autograd twin (reference.torch_mlp.TorchMLP) with torch.optim.SGD
    numpy           the same hand-written update in plain numpy, as a student would write it
    matmul-floor    the update's matrix products alone (3L - 1 of them, preallocated outputs): a lower bound
    numpy-matmul-floor   the same products through numpy's BLAS: where it is below matmul-floor, numpy's BLAS is
                    faster than torch's on this machine, and no torch implementation can beat numpy there
    trainer-fast, trainer-plain   the whole Trainer epoch by epoch (the updates plus its per-epoch evaluation
                    and bookkeeping), fast=True and fast=False, for the small cases
    jax             a jitted JAX update scanned over the chunk, only where JAX happens to be installed

Timing is interleaved: each repeat measures every implementation once, in a rotating order, in one process, so
a noisy (shared) machine slows them alike. Each measurement makes a chunk of updates (the C loop and JAX make
the chunk in one call, the Python loops one update at a time); the figure is the median over repeats of the
time per update, and each ratio is the median over repeats of the pair's ratio within the repeat. On CUDA the
device is synchronised only at the end of each measurement, never inside a chunk.

Memory: the bytes kept for the backward phase per update, manual (the ForwardCache's activations and logits, or
a fast path's buffers for them) against autograd (every tensor autograd packs while building the graph, counted
once per storage with torch.autograd.graph.saved_tensors_hooks, parameters excluded); on CUDA also the peak device
memory above the resident set during one update.

The JSON records the machine, the threads, the torch (and numpy, jax) versions, the dtype and the device.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from manual_backprop import fast
from manual_backprop.losses import BinaryCrossEntropy, CrossEntropy, SquaredError, get_loss
from manual_backprop.network import MLP
from manual_backprop.training import Trainer
from reference.torch_mlp import TorchMLP, torch_loss

EXPERIMENT = "bench"


# ---------------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    sizes: list  # layer widths
    activation: str  # hidden f
    output_activation: str
    loss: str
    batch: int  # samples per update (1: online)
    data: str  # "xor", "digits" or "synthetic"
    lr: float
    repeats: int  # interleaved repeats (measurements per implementation)
    c_chunk: int = 0  # updates per call of the C loop (0: one epoch of the data, as the Trainer calls it)
    note: str = ""


CASES = {
    "online_tiny": Case("online_tiny", [2, 2, 1], "sigmoid", "sigmoid", "squared_error", 1, "xor", 0.5, 41,
                        note="the lecture's XOR net, one sample per update"),
    "online_small": Case("online_small", [64, 30, 10], "tanh", "softmax", "cross_entropy", 1, "digits", 0.02, 31,
                         note="8x8 digits, one sample per update"),
    "minibatch_small": Case("minibatch_small", [64, 30, 10], "sigmoid", "sigmoid", "squared_error", 10, "digits",
                            3.0, 31, note="Nielsen's setting (sigmoid, quadratic cost, b = 10, eta = 3) on the digits"),
    "medium": Case("medium", [784, 256, 256, 10], "relu", "softmax", "cross_entropy", 128, "synthetic", 0.01, 21,
                   note="MNIST-shaped random data"),
    "large": Case("large", [1024, 2048, 2048, 1024], "tanh", "identity", "squared_error", 512, "synthetic", 1e-4, 15,
                  note="random regression data"),
}
# Cases that also time the whole Trainer per epoch (its per-epoch work matters where epochs are short).
TRAINER_CASES = ("online_tiny", "online_small", "minibatch_small")
# --quick: the same code paths in seconds (the large and medium nets shrunk, few repeats).
QUICK_SIZES = {"medium": ([196, 64, 64, 10], 32), "large": ([128, 256, 256, 128], 64)}


@dataclass
class Config:
    cases: list = field(default_factory=lambda: list(CASES))  # names from CASES
    devices: list = field(default_factory=lambda: ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    dtype: str = "float32"
    quick: bool = False  # smoke run: 3 repeats, tiny chunks, the medium and large nets shrunk
    repeats: Optional[int] = None  # override every case's repeats
    measure_seconds: float = 0.05  # target length of one measurement (chunk length is calibrated to it)
    threads: Optional[int] = None  # torch.set_num_threads; None keeps torch's default
    seed: int = 0
    out: str = "bench_results/bench.json"
    quiet: bool = False
    population: bool = True  # also the population case: K = 1024 XOR nets online, vs the same runs one at a time


# ---------------------------------------------------------------------------------------------------- data
def case_data(case: Case, dtype: torch.dtype, device: torch.device, seed: int, n_synthetic: int):
    """(x, y, note): x (N, n_0), y (N, n_L) in the form the Trainer keeps (one-hot rows for cross-entropy)."""
    n_in, n_out = case.sizes[0], case.sizes[-1]
    note = ""
    x = y = None
    if case.data in ("xor", "digits"):
        try:
            from manual_backprop.datasets import load_dataset

            ds = load_dataset(case.data, seed=seed, dtype=torch.float64)
            x, labels = ds.x_train, ds.y_train
            if x.shape[1] != n_in:
                raise ValueError(f"{case.data} has {x.shape[1]} features, the case wants {n_in}")
            y = labels.double().unsqueeze(1) if n_out == 1 else torch.nn.functional.one_hot(labels, n_out).double()
        except (ImportError, ModuleNotFoundError) as err:
            note = f"{case.data} unavailable ({err}); random data of the same shape instead"
            x = None
    if x is None:
        g = torch.Generator().manual_seed(seed)
        n = 4 if case.data == "xor" else n_synthetic
        x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
        if isinstance(get_loss(case.loss), SquaredError) and case.output_activation == "identity":
            y = torch.randn(n, n_out, generator=g, dtype=torch.float64)
        else:
            y = torch.nn.functional.one_hot(torch.randint(0, n_out, (n,), generator=g), n_out).double()
    return x.to(device=device, dtype=dtype).contiguous(), y.to(device=device, dtype=dtype).contiguous(), note


def sample_order(n: int, batch: int, count: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` updates of ``batch`` samples: shuffled epochs back to back, each batch sorted."""
    g = torch.Generator().manual_seed(seed + 1)
    per_epoch = n // batch
    epochs = -(-count // per_epoch)
    perms = torch.rand(epochs, n, generator=g).argsort(dim=1)[:, :per_epoch * batch]
    return perms.reshape(epochs, per_epoch, batch).sort(dim=2).values.reshape(-1)[:count * batch].contiguous()


# ---------------------------------------------------------------------------------------------------- implementations
class Impl:
    """One implementation of the case's update. ``run(u0, n)`` makes updates u0 .. u0 + n - 1 of the order."""

    name = ""
    chunk_note = ""

    def run(self, u0: int, n: int) -> None:
        raise NotImplementedError

    def kept_bytes(self) -> Optional[int]:
        return None

    def final_loss(self) -> Optional[float]:
        return None


class ManualPlain(Impl):
    """The Trainer's plain per-update loop: index_select, net._loss_and_grads, net._step."""

    name = "manual-plain"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.net, self.loss_fn, self.x, self.y, self.lr, self.b = net, loss_fn, x, y, lr, batch
        self.order = order.to(x.device)
        self.last = None

    def run(self, u0, n):
        b = self.b
        with torch.no_grad():
            for u in range(u0, u0 + n):
                idx = self.order[u * b:(u + 1) * b]
                loss, grads = self.net._loss_and_grads(self.x.index_select(0, idx), self.y.index_select(0, idx),
                                                       self.loss_fn)
                self.net._step(grads, self.lr)
        self.last = loss

    def kept_bytes(self):
        with torch.no_grad():
            return fast.kept_bytes(self.net._forward_cache(self.x.index_select(0, self.order[:self.b])))

    def final_loss(self):
        return float(self.last) if self.last is not None else None


class ManualFused(Impl):
    name = "manual-fused"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.step = fast.FusedStep(net, loss_fn, batch)
        self.x, self.y, self.lr, self.batch = x, y, lr, batch
        self.order = order.to(x.device)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype, device=x.device)

    def run(self, u0, n):
        b = self.batch
        with torch.no_grad():
            for u in range(u0, u0 + n):
                self.step.update(self.x, self.y, self.order[u * b:(u + 1) * b], self.lr, self.losses[u])

    def kept_bytes(self):
        return self.step.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])


class ManualC(Impl):
    name = "manual-c"

    def __init__(self, net, loss_fn, x, y, order, batch, lr, chunk):
        self.kernel = fast.CKernel(net, loss_fn)
        self.x, self.y, self.lr, self.batch, self.chunk = x, y, lr, batch, max(1, chunk)
        self.order = order.contiguous()
        self.offsets = torch.arange(0, order.numel() + 1, batch)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype)
        self.chunk_note = f"{self.chunk} updates per call"

    def run(self, u0, n):
        # one call per chunk, as the Trainer makes one call per epoch; slices by address, not by tensor views
        b, kernel, item = self.batch, self.kernel, self.order.element_size()
        kernel.bind(self.x, self.y)
        order, offsets, losses = self.order.data_ptr(), self.offsets.data_ptr(), self.losses.data_ptr()
        u = u0
        while u < u0 + n:
            m = min(self.chunk, u0 + n - u)
            kernel.call(order + u * b * item, offsets, m, self.lr, losses + u * self.losses.element_size())
            u += m

    def kept_bytes(self):
        return self.kernel.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])


class ManualCudaGraph(Impl):
    name = "manual-cuda_graph"

    def __init__(self, net, loss_fn, x, y, order, batch, lr, chunk=64):
        self.runner = fast.CudaGraphRunner(net, loss_fn, batch, chunk=chunk)
        self.x, self.y, self.lr, self.batch = x, y, lr, batch
        self.order = order.to(x.device)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype, device=x.device)
        self.chunk_note = f"graphs of {chunk} updates"

    def run(self, u0, n):
        b = self.batch
        offsets = list(range(0, n * b + 1, b))
        with torch.no_grad():
            self.runner.run(self.x, self.y, self.order[u0 * b:(u0 + n) * b], offsets, self.lr,
                            self.losses[u0:u0 + n])

    def kept_bytes(self):
        return self.runner.step.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])


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


class TrainerEpochs(Impl):
    """The whole Trainer, epoch by epoch (Trainer._run_epoch): the updates plus what the Trainer does once an epoch
    (drawing the order, evaluating the cost on the training and test splits, reading the losses back, keeping the
    last good parameters). The updates alone are what the other rows time."""

    def __init__(self, net, loss_fn, x, y, order, batch, lr, fast_switch):
        from manual_backprop.datasets import Dataset

        n = x.shape[0]
        data = Dataset(name="bench", x_train=x, y_train=y, x_test=x[:max(4, n // 3)], y_test=y[:max(4, n // 3)],
                       num_classes=None)
        mode = "online" if batch == 1 else "minibatch"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fast.FastPathWarning)
            self.trainer = Trainer(net, data, mode=mode, lr=lr, epochs=10**9, batch_size=batch, loss_fn=loss_fn,
                                   fast=fast_switch)
        self.trainer.run = None  # only whole epochs are run, one by one
        self.updates_per_epoch = math.ceil(n / batch)
        self.chunk_note = f"whole epochs of {self.updates_per_epoch} updates"

    def run(self, u0, n):
        epochs = max(1, round(n / self.updates_per_epoch))
        for _ in range(epochs):
            self.trainer._run_epoch()
        return epochs * self.updates_per_epoch

    def final_loss(self):
        return self.trainer.history.train_loss[-1] if self.trainer.history.train_loss else None


class Jax(Impl):
    """A jitted JAX update, scanned over the chunk (lax.scan); only where JAX is installed."""

    name = "jax"
    compiles_per_size = True  # jit compiles once per chunk length: warm it at the measured length

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        import jax
        import jax.numpy as jnp

        if net.dtype == torch.float64:
            jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp = jax, jnp
        acts = [f.spec() for f in net.activation_functions]
        params = [(jnp.asarray(w.cpu().numpy()), jnp.asarray(b.cpu().numpy()) if net.bias else None)
                  for w, b in zip(net.weights, net.biases or [None] * len(net.weights))]
        loss_name = type(loss_fn).__name__

        def f(name, z):
            return {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda t: t,
                    "softmax": lambda t: jax.nn.softmax(t, axis=-1)}[name](z)

        def loss_of(ps, xb, yb):
            h = xb
            for (w, b), name in zip(ps, acts):
                z = h @ w.T + (b if b is not None else 0)
                h = f(name, z)
            c = loss_fn.scale(*h.shape)
            if loss_name == "SquaredError":
                return ((h - yb) ** 2).sum() * c
            if loss_name == "CrossEntropy":
                return -(yb * jax.nn.log_softmax(z, axis=-1)).sum() * c
            return (jnp.maximum(z, 0) - yb * z + jnp.log1p(jnp.exp(-jnp.abs(z)))).sum() * c

        grad = jax.value_and_grad(loss_of)
        X, Y = jnp.asarray(x.cpu().numpy()), jnp.asarray(y.cpu().numpy())

        def body(ps, idx):
            value, g = grad(ps, X[idx], Y[idx])
            ps = jax.tree_util.tree_map(lambda p, gp: p - lr * gp, ps, g)
            return ps, value

        self._scan = jax.jit(lambda ps, idx: jax.lax.scan(body, ps, idx))
        self.params = params
        self.idx = jnp.asarray(order.numpy().reshape(-1, batch))
        self.last = None
        self.chunk_note = "lax.scan over the chunk"

    def run(self, u0, n):
        self.params, values = self._scan(self.params, self.idx[u0:u0 + n])
        values.block_until_ready()
        self.last = values

    def final_loss(self):
        return float(self.last[-1]) if self.last is not None else None


# ---------------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(impls: dict, repeats: int, chunk: dict, device: torch.device, budget: int) -> dict:
    """Interleaved timing: ``repeats`` rounds, each measuring every implementation once (rotating order).

    Returns {name: [seconds per update, one per repeat]}. Each implementation walks its own way through the
    sample order, ``chunk[name]`` updates per measurement, wrapping around after ``budget`` updates.
    """
    names = list(impls)
    times = {name: [] for name in names}
    cursor = {name: 0 for name in names}
    for r in range(repeats):
        rotated = names[r % len(names):] + names[:r % len(names)]
        for name in rotated:
            n = chunk[name]
            u0 = cursor[name] if cursor[name] + n <= budget else 0
            _sync(device)
            start = time.perf_counter()
            made = impls[name].run(u0, n) or n
            _sync(device)
            times[name].append((time.perf_counter() - start) / made)
            cursor[name] = u0 + n
    return times


def calibrate(impl: Impl, device: torch.device, seconds: float, max_updates: int) -> int:
    """How many updates make a measurement of about ``seconds`` (after a warm-up)."""
    impl.run(0, 1)  # warm-up: first-call allocations, compilation, cuBLAS handles
    n = 1
    while True:
        _sync(device)
        start = time.perf_counter()
        made = impl.run(0, n) or n
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4 or n >= max_updates:
            break
        n = min(max_updates, n * 4)
    return max(1, min(max_updates, int(made * seconds / max(elapsed, 1e-9))))


def peak_cuda_bytes(impl: Impl, device: torch.device) -> Optional[int]:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    impl.run(0, 1)
    _sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def run_case(case: Case, device: torch.device, dtype: torch.dtype, cfg: Config) -> dict:
    sizes, batch = list(case.sizes), case.batch
    if cfg.quick and case.name in QUICK_SIZES:
        sizes, batch = QUICK_SIZES[case.name]
        case = Case(**{**asdict(case), "sizes": sizes, "batch": batch})
    repeats = cfg.repeats or (3 if cfg.quick else case.repeats)
    seconds = cfg.measure_seconds / (10 if cfg.quick else 1)
    torch.manual_seed(cfg.seed)
    x, y, data_note = case_data(case, dtype, device, cfg.seed, n_synthetic=max(4 * batch, 512))
    n = x.shape[0]
    loss_fn = get_loss(case.loss)
    base = MLP(sizes, activation=case.activation, output_activation=case.output_activation, dtype=dtype,
               device=device, seed=cfg.seed, bias_init="normal", init_scale=0.1)
    updates_per_epoch = n // batch
    # enough sample order for every measurement; the large nets are timed on few updates
    work = fast.work_per_update(base, batch)
    budget = max(updates_per_epoch, min(20_000 if cfg.quick else 200_000, int(4e9 / max(work, 1))))
    order = sample_order(n, batch, budget, cfg.seed)
    args = (loss_fn, x, y, order, batch, case.lr)
    auto = fast.resolve_fast("auto", base, loss_fn, batch, warn=False)

    impls, skipped = {}, {}

    def add(name: str, make: Callable[[], Impl]):
        try:
            impls[name] = make()
        except Exception as err:  # a peer or path that cannot run here is reported, not fatal
            skipped[name] = f"{type(err).__name__}: {err}"

    c_chunk = case.c_chunk or updates_per_epoch
    makers = {
        "c": lambda: ManualC(base.copy(), *args, chunk=c_chunk),
        "fused": lambda: ManualFused(base.copy(), *args),
        "cuda_graph": lambda: ManualCudaGraph(base.copy(), *args),
    }
    add("manual", makers[auto])
    add("manual-plain", lambda: ManualPlain(base.copy(), *args))
    for path in fast.FAST_PATHS:
        if path == auto:
            continue
        if path == "cuda_graph" and device.type != "cuda":
            continue
        if path == "c" and (device.type != "cpu" or work > 64 * fast.C_WORK_LIMIT):
            skipped["manual-c"] = (f"not run: {work:,} multiply-adds per forward phase is far beyond the C loop's "
                                   f"range" if device.type == "cpu" else "CPU only")
            continue
        add(f"manual-{path}", makers[path])
    if case.name == "online_tiny" and "manual" in impls and auto == "c":
        # the manual path calls the C loop once per epoch (4 updates), as the Trainer does; this is the loop
        # alone, with the call's fixed cost spread over 1024 updates
        add("manual-c(1024/call)", lambda: ManualC(base.copy(), *args, chunk=1024))
    if case.name in TRAINER_CASES:
        add("trainer-fast", lambda: TrainerEpochs(base.copy(), *args, fast_switch=True))
        add("trainer-plain", lambda: TrainerEpochs(base.copy(), *args, fast_switch=False))
    add("autograd+SGD", lambda: Autograd(base.copy(), *args))
    add("numpy", lambda: Numpy(base.copy(), *args))
    add("matmul-floor", lambda: MatmulFloor(base.copy(), *args))
    if device.type == "cpu":
        add("numpy-matmul-floor", lambda: NumpyMatmulFloor(base.copy(), *args))
    try:
        import jax  # noqa: F401

        add("jax", lambda: Jax(base.copy(), *args))
    except ImportError:
        skipped["jax"] = "not installed (optional peer)"
    if "manual" in impls and auto == "c":
        impls["manual"].chunk_note = f"{c_chunk} updates per call (one epoch)"
    chunk = {}
    for name, impl in list(impls.items()):
        try:
            chunk[name] = calibrate(impl, device, seconds, budget)
            if getattr(impl, "compiles_per_size", False):
                impl.run(0, chunk[name])
        except Exception as err:
            skipped[name] = f"{type(err).__name__}: {err}"
            del impls[name]
    times = measure(impls, repeats, chunk, device, budget)
    ref = times.get("manual")
    rows = {}
    for name, impl in impls.items():
        ts = times[name]
        row = {"median_us": statistics.median(ts) * 1e6, "min_us": min(ts) * 1e6,
               "times_us": [t * 1e6 for t in ts], "updates_per_measurement": chunk[name],
               "note": getattr(impl, "chunk_note", "")}
        if ref is not None:
            row["ratio_to_manual"] = statistics.median(t / m for t, m in zip(ts, ref))  # pair by pair
        row["kept_bytes"] = impl.kept_bytes()
        row["peak_cuda_bytes"] = peak_cuda_bytes(impl, device)
        loss = impl.final_loss()
        row["last_loss"] = loss
        row["finite"] = loss is None or math.isfinite(loss)
        rows[name] = row
    return {"case": case.name, "sizes": sizes, "activation": case.activation,
            "output_activation": case.output_activation, "loss": case.loss, "batch": batch, "lr": case.lr,
            "data": case.data, "n_samples": n, "note": case.note, "data_note": data_note, "device": str(device),
            "dtype": str(dtype).replace("torch.", ""), "manual_path": auto, "repeats": repeats,
            "work_per_update": work, "implementations": rows, "skipped": skipped}


# ---------------------------------------------------------------------------------------------------- targets
def targets(results: list) -> list:
    """The issue's targets, each judged on this run's figures: (target, met, detail)."""
    out = []

    def ratio(r, name):
        return r["implementations"].get(name, {}).get("ratio_to_manual")

    def add(target, checks):
        checks = [c for c in checks if c[1] is not None]
        met = bool(checks) and all(ok for _, _, ok in checks)
        detail = "; ".join(f"{label} {value}" for label, value, _ in checks) or "no data"
        out.append({"target": target, "met": met, "detail": detail})

    add("manual is never slower than autograd", [
        (f"{r['case']}/{r['device']}: autograd/manual", _fmt(ratio(r, "autograd+SGD")),
         (ratio(r, "autograd+SGD") or 0) >= 1.0) for r in results if ratio(r, "autograd+SGD") is not None])
    small = [r for r in results if r["case"] in ("online_tiny", "online_small", "minibatch_small")]
    add("manual is at least 3x faster than autograd on the tiny and small cases", [
        (f"{r['case']}/{r['device']}", _fmt(ratio(r, "autograd+SGD")), (ratio(r, "autograd+SGD") or 0) >= 3.0)
        for r in small if ratio(r, "autograd+SGD") is not None])
    add("large case: manual within 1.15x of its matrix-product floor", [
        (f"{r['case']}/{r['device']}: manual/floor", _fmt(1 / ratio(r, "matmul-floor")),
         1 / ratio(r, "matmul-floor") <= 1.15)
        for r in results if r["case"] == "large" and ratio(r, "matmul-floor")])
    add("manual beats numpy in every case", [
        (f"{r['case']}/{r['device']}: numpy/manual", _fmt(ratio(r, "numpy")), (ratio(r, "numpy") or 0) > 1.0)
        for r in results if ratio(r, "numpy") is not None])
    add("online XOR update under 5 us on the CPU", [
        (f"{name}", f"{r['implementations'][name]['median_us']:.2f} us",
         r["implementations"][name]["median_us"] < 5.0)
        for r in results if r["case"] == "online_tiny" and r["device"] == "cpu"
        for name in ("manual", "manual-c(1024/call)") if name in r["implementations"]])
    add("bytes kept for backward: manual <= autograd in every case", [
        (f"{r['case']}/{r['device']}", f"{r['implementations']['manual']['kept_bytes']} <= "
                                       f"{r['implementations']['autograd+SGD']['kept_bytes']}",
         r["implementations"]["manual"]["kept_bytes"] <= r["implementations"]["autograd+SGD"]["kept_bytes"])
        for r in results if "manual" in r["implementations"] and "autograd+SGD" in r["implementations"]])
    return out


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


# ---------------------------------------------------------------------------------------------------- report
def machine_info(cfg: Config) -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "dtype": cfg.dtype, "cuda": None, "jax": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["cuda"] = {"device": torch.cuda.get_device_name(0), "version": torch.version.cuda,
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    with contextlib.suppress(ImportError):
        import jax

        info["jax"] = jax.__version__
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        info["thread_pools"] = [{"api": p.get("internal_api"), "threads": p.get("num_threads")}
                                for p in threadpool_info()]
    return info


def _human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(report: dict) -> str:
    """The results as a markdown table: per case and device, time per update and ratios pair by pair."""
    lines = ["| case | device | implementation | us / update (median) | x manual (pairwise) | kept for backward |",
             "|---|---|---|---:|---:|---:|"]
    for r in report["results"]:
        label = f"{r['case']} {'-'.join(map(str, r['sizes']))} b={r['batch']}"
        for name, row in sorted(r["implementations"].items(), key=lambda kv: kv[1]["median_us"]):
            shown = f"manual ({r['manual_path']})" if name == "manual" else name
            ratio = row.get("ratio_to_manual")
            lines.append(f"| {label} | {r['device']} | {shown} | {row['median_us']:.2f} | "
                         f"{'-' if ratio is None else f'{ratio:.2f}'} | {_human_bytes(row['kept_bytes'])} |")
            label = ""
    lines.append("")
    lines.append("| target | met | figures |")
    lines.append("|---|---|---|")
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {'yes' if t['met'] else 'no'} | {t['detail']} |")
    return "\n".join(lines)


def parse_args(argv=None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=d.cases, choices=list(CASES))
    p.add_argument("--device", dest="devices", nargs="+", default=d.devices,
                   help="cpu and/or cuda (default: cpu, and cuda when present)")
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 repeats, medium and large nets shrunk")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats for every case")
    p.add_argument("--measure-seconds", type=float, default=d.measure_seconds,
                   help="target length of one measurement (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out, help="JSON file to write (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    p.add_argument("--no-population", dest="population", action="store_false",
                   help="skip the population case (experiments.bench_population)")
    return Config(**vars(p.parse_args(argv)))


def main(argv=None) -> dict:
    cfg = parse_args(argv) if not isinstance(argv, Config) else argv
    if cfg.repeats is not None and cfg.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, but got {cfg.repeats}")
    for dev in cfg.devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--device {dev}: CUDA is not available on this machine")
    limiter = contextlib.nullcontext()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        with contextlib.suppress(ImportError):  # numpy's BLAS has its own thread pool
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(cfg.threads)
    dtype = getattr(torch, cfg.dtype)
    # Timings compare implementations in true float32: TF32 would make the matrix products a different operation.
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    try:
        with limiter:
            machine = machine_info(cfg)  # inside the limits, so the thread pools show what the timings ran with
            for dev in cfg.devices:
                for name in cfg.cases:
                    if not cfg.quiet:
                        print(f"[bench] {name} on {dev} ...", file=sys.stderr, flush=True)
                    results.append(run_case(CASES[name], torch.device(dev), dtype, cfg))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32
    report = {"experiment": EXPERIMENT, "command": "python -m experiments.bench " + " ".join(sys.argv[1:])
              if argv is None else f"main({argv!r})", "config": asdict(cfg), "machine": machine,
              "quick": cfg.quick, "results": results}
    report["targets"] = targets(results)
    if cfg.population:
        report["population"] = population_case(cfg)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    report["table"] = table(report)
    if not cfg.quiet:
        m = report["machine"]
        print(f"\n{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
              f"{cfg.dtype}{', quick' if cfg.quick else ''}\n")
        print(report["table"])
        if cfg.population:
            print(f"\nPopulation case (experiments.bench_population):\n{report['population']['table']}")
        print(f"\nwritten: {out}")
    return report


def population_case(cfg: Config) -> dict:
    """K = 1024 XOR networks trained online in lockstep (manual_backprop.population) against the same runs one at a
    time, per device; the figures and table of experiments.bench_population, in this report."""
    from experiments import bench_population

    rows = {}
    for dev in cfg.devices:
        pop_cfg = bench_population.Config(device=dev, dtypes=[cfg.dtype], quick=cfg.quick, threads=cfg.threads or 0,
                                          out=str(Path(cfg.out).with_name(f"bench_population_{dev}.json")))
        if cfg.quick:
            pop_cfg.K, pop_cfg.epochs, pop_cfg.warmup_epochs, pop_cfg.sequential_runs = 64, 10, 1, 2
            pop_cfg.engines = ["eager"]
        with contextlib.redirect_stdout(io.StringIO()):
            result = bench_population.run(pop_cfg)
        result["table"] = bench_population.table(result, pop_cfg)
        rows[dev] = result
    return {"by_device": rows, "table": "\n\n".join(r["table"] for r in rows.values())}


if __name__ == "__main__":
    main()
