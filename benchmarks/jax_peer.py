"""The JAX peer (the optional extra: pip install 'manual-backprop[jax]'), measured at its best.

How it is measured, the way JAX's own users write it:

    compiled      jax.jit of a whole chunk, never of one update: lax.scan over the updates of a chunk (the
                  update-level rows), or the whole epoch (its sample order drawn with jax.random inside, lax.scan
                  over its updates, the end-of-epoch evaluation) in one call, or lax.scan over E such epochs;
    warmed        at exactly the shapes it is timed at: the benchmark runs ``run(0, n)`` once, untimed, before it
                  times n (``compiles_per_size``), so no compilation ever falls inside a timed region;
    synchronised  each call's results are read back to the host (jax.device_get), as the Trainer reads back an
                  epoch's losses: the time is the work, not its dispatch;
    threads       XLA's CPU thread pool follows the benchmark's --threads (``xla_flags``, set before JAX starts).

The update is the same as everywhere in the benchmark: plain SGD on the same loss, its gradient from jax.grad.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from benchmarks.cases import Impl


def xla_flags(threads: Optional[int]) -> Optional[str]:
    """Restrict XLA's CPU backend to one thread when the benchmark runs on one (torch and numpy then do too), and
    keep a JAX with CUDA from taking most of the GPU's memory at start (it would starve the torch rows).

    Takes effect only before JAX has started its backend; returns the XLA_FLAGS in force (None: JAX's default).
    A user's own XLA_FLAGS are kept.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if threads == 1 and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return os.environ.get("XLA_FLAGS")


def _jax_device(net):
    """JAX's device for the network's: its CPU for a CPU network (also where a JAX with CUDA is installed), its
    GPU for a CUDA network."""
    import jax

    kind = "gpu" if net.device.type == "cuda" else "cpu"
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        raise ValueError(f"this JAX has no {kind.upper()} backend (jax.devices: {jax.devices()})") from None


def _jax_net(net, loss_fn):
    """(jax, jnp, put, params, forward(params, x) -> (z, out), loss(z, out, y)) for a manual_backprop MLP and
    Loss; ``put`` places an array (numpy, or a torch tensor) on JAX's device for the network's."""
    import jax
    import jax.numpy as jnp

    if net.dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    # float32 products in full float32, as the torch rows (TF32 off): on a GPU JAX's default would use TF32
    jax.config.update("jax_default_matmul_precision", "highest")
    device = _jax_device(net)

    def put(a):
        return jax.device_put(a.cpu().numpy() if isinstance(a, torch.Tensor) else a, device)
    names = [f.spec() for f in net.activation_functions]
    funcs = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda t: t,
             "softmax": lambda t: jax.nn.softmax(t, axis=-1)}
    missing = [n for n in names if n not in funcs]
    if missing:
        raise ValueError(f"the JAX peer has no activation {missing[0]!r}")
    params = [(put(w), put(b) if net.bias else None)
              for w, b in zip(net.weights, net.biases or [None] * len(net.weights))]
    loss_name = type(loss_fn).__name__

    def forward(ps, x):
        h = z = x
        for (w, b), name in zip(ps, names):
            z = h @ w.T + (b if b is not None else 0)
            h = funcs[name](z)
        return z, h

    def loss(z, out, y):
        c = loss_fn.scale(*out.shape)
        if loss_name == "SquaredError":
            return ((out - y) ** 2).sum() * c
        if loss_name == "CrossEntropy":
            return -(y * jax.nn.log_softmax(z, axis=-1)).sum() * c
        return (jnp.maximum(z, 0) - y * z + jnp.log1p(jnp.exp(-jnp.abs(z)))).sum() * c

    return jax, jnp, put, params, forward, loss


def _sgd_step(jax, forward, loss, lr):
    def loss_of(ps, xb, yb):
        z, out = forward(ps, xb)
        return loss(z, out, yb)

    value_and_grad = jax.value_and_grad(loss_of)

    def step(ps, xb, yb):
        value, g = value_and_grad(ps, xb, yb)
        return jax.tree_util.tree_map(lambda p, gp: p - lr * gp, ps, g), value

    return step


class Jax(Impl):
    """A jitted JAX update scanned over the chunk (lax.scan): the update-level rows."""

    name = "jax"
    compiles_per_size = True  # jit compiles once per chunk length: warmed at the measured length

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        jax, jnp, put, params, forward, loss = _jax_net(net, loss_fn)
        step = _sgd_step(jax, forward, loss, lr)
        X, Y = put(x), put(y)

        def body(ps, idx):
            return step(ps, X[idx], Y[idx])

        def chunk(ps, order, u0, n):
            # the chunk's sample indices are cut inside the jitted function, at a traced start: slicing the device
            # array outside with Python ints would compile a new slice for every new start, inside the timing
            idx = jax.lax.dynamic_slice_in_dim(order, u0, n, axis=0)  # (n, b)
            return jax.lax.scan(body, ps, idx)

        self._scan = jax.jit(chunk, static_argnums=3)
        self.jax, self.params = jax, params
        self.idx = put(order.numpy().reshape(-1, batch))
        self.last = None
        self.chunk_note = "jit(lax.scan over the chunk), warmed at its length"

    def run(self, u0, n):
        self.params, values = self._scan(self.params, self.idx, u0, n)
        self.last = self.jax.device_get(values)

    def final_loss(self):
        return float(self.last[-1]) if self.last is not None else None


class JaxEpochs(Impl):
    """Whole epochs as one jitted function: the sample order (jax.random.permutation), lax.scan over the updates,
    and the end-of-epoch evaluation (loss, and accuracy for classes, on the training and test splits).

    scan_epochs False: one call per epoch, as a training loop that logs every epoch calls it; True: one call runs
    E epochs (lax.scan over epochs, E the measured chunk), the per-epoch figures read back once per call.
    """

    def __init__(self, net, loss_fn, split: dict, mode: str, lr: float, seed: int, *, scan_epochs: bool):
        if mode not in ("batch", "online"):
            raise ValueError(f"the JAX epoch peer runs batch and online modes, not {mode!r}")
        jax, jnp, put, params, forward, loss = _jax_net(net, loss_fn)
        step = _sgd_step(jax, forward, loss, lr)
        arrays = {k: None if v is None else put(v) for k, v in split.items() if not isinstance(v, bool)}
        X, Y, n = arrays["x_train"], arrays["y_train"], split["x_train"].shape[0]
        same = split.get("test_is_train", False)  # the logic gates: evaluated once, as the Trainer does

        def evaluate(ps, x, y, labels):
            z, out = forward(ps, x)
            figures = [loss(z, out, y)]
            if labels is not None:
                predicted = (out[:, 0] >= 0.5).astype(labels.dtype) if out.shape[1] == 1 else out.argmax(axis=1)
                figures.append((predicted == labels).astype(out.dtype).mean())
            return figures

        def epoch(ps, key):
            key, sub = jax.random.split(key)
            if mode == "batch":
                ps, value = step(ps, X, Y)
                losses = value[None]
            else:
                idx = jax.random.permutation(sub, n).reshape(n, 1)  # (U, 1): one sample per update
                ps, losses = jax.lax.scan(lambda p, i: step(p, X[i], Y[i]), ps, idx)
            figures = evaluate(ps, X, Y, arrays["labels_train"])
            if not same:
                figures = figures + evaluate(ps, arrays["x_test"], arrays["y_test"], arrays["labels_test"])
            return ps, key, losses, jnp.stack(figures)

        def epochs(ps, key, count):
            def body(carry, _):
                ps, key, losses, figures = epoch(*carry)
                return (ps, key), (losses, figures)

            (ps, key), (losses, figures) = jax.lax.scan(body, (ps, key), None, length=count)
            return ps, key, losses, figures

        self.jax, self.params, self.key = jax, params, put(jax.random.PRNGKey(seed))
        self.scan_epochs = scan_epochs
        self.compiles_per_size = scan_epochs  # one compilation per E: warmed at the measured E
        self._epoch = jax.jit(epoch)
        self._epochs = jax.jit(epochs, static_argnums=2)
        self.last = None
        self.chunk_note = ("jit(lax.scan over E epochs), warmed at E" if scan_epochs
                           else "jit of the epoch, one call an epoch")
        updates = 1 if mode == "batch" else n
        self.granularity = (f"E epochs ({updates} updates each) per call, E the measurement's epochs" if scan_epochs
                            else f"1 epoch ({updates} updates) per call")

    def run(self, u0, n):
        if self.scan_epochs:
            self.params, self.key, losses, figures = self._epochs(self.params, self.key, n)
            self.last = self.jax.device_get((losses, figures))
        else:
            for _ in range(n):
                self.params, self.key, losses, figures = self._epoch(self.params, self.key)
                self.last = self.jax.device_get((losses, figures))
        return n

    def final_loss(self):
        if self.last is None:
            return None
        figures = np.asarray(self.last[1])
        return float(figures.reshape(-1, figures.shape[-1])[-1, 0])
