"""Fast paths for the same network and trainer: the same hand-written backprop, with less overhead per update.

The plain path (network.py, training.py) reads like the lecture: every update builds a ForwardCache and a
Gradients of fresh tensors and then steps. That costs about 30 eager torch calls per update, a few microseconds
each, which dominates small networks, and temporary tensors in the element-wise work, which cost memory traffic
in large ones. The fast paths compute the same numbers with the same per-element arithmetic, and are switches on
the same MLP and Trainer (``Trainer(..., fast=...)``):

    "c"           ``_csrc/mlp.c``, compiled with the system C compiler at first use (cached by source hash) and
                  called through ctypes: one call runs a whole epoch of updates (online or minibatch) on the CPU,
                  float32 or float64, with no Python between updates. For small networks.
    "fused"       torch on any device, with buffers preallocated once and reused (``out=``), the element-wise
                  work done in place, and the step fused into the weight-gradient product
                  (W.addmm_(delta.T, x, alpha=-lr)). For large networks, where matrix products dominate.
    "cuda_graph"  the fused step captured as a CUDA graph of ``chunk`` updates and replayed (CUDA only).
    True/"auto"   "c" for small networks on the CPU when a compiler works, "cuda_graph" on CUDA, else "fused".

A fast path that cannot apply (no C compiler, no CUDA device, an unsupported dtype) falls back to the next one
with a ``FastPathWarning`` that says why; the plain path stays the reference. Equivalence with the plain path
(float64 to a norm-relative 1e-12 after whole runs, float32 with assert_close) is what tests/test_fast.py proves.
What differs is only the summation order inside dot products (the C loop sums in its own order, as every BLAS
does) and, for the fused step, where alpha = -lr is applied (inside the product instead of after it).

Per-update losses stay on the device and are read back by the Trainer once an epoch.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredError
from .network import MLP, Gradients

__all__ = ["FAST_PATHS", "FastPathWarning", "FastPathUnavailable", "CKernel", "FusedStep", "CudaGraphRunner",
           "EpochRunner", "epoch_order", "load_kernel", "resolve_fast", "kept_bytes", "C_WORK_LIMIT"]

FAST_PATHS = ("c", "fused", "cuda_graph")

# "auto" takes the C loop on the CPU while one update costs at most this many multiply-adds (batch size times the
# weight count). The loop is plain C, one core, vectorised by the compiler; above this, BLAS matrix products on all
# cores (the fused path) win. 64-30-10 at batch 10 is 22,000; 784-256-256-10 at batch 128 is 34 million.
C_WORK_LIMIT = 1 << 18

_ACT_CODES = {Identity: 0, Sigmoid: 1, Tanh: 2, ReLU: 3, LeakyReLU: 4, Softmax: 5}
_LOSS_CODES = {SquaredError: 0, CrossEntropy: 1, BinaryCrossEntropy: 2}
_REDUCTION_CODES = {"mean": 0, "sum": 1, "elementwise_mean": 2}
_ABI_VERSION = 3
_CSRC = Path(__file__).resolve().parent / "_csrc"


class FastPathWarning(UserWarning):
    """A fast path was asked for but cannot apply here; the message says why and what runs instead."""


class FastPathUnavailable(RuntimeError):
    """Raised by the constructors of the fast paths when they cannot apply (the reason is the message)."""


# ---------------------------------------------------------------------------------------------------- the C loop
_lib_lock = threading.Lock()
_lib_cache: dict = {}


def _cache_dir() -> Path:
    root = os.environ.get("MANUAL_BACKPROP_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "manual_backprop"


def _compiler() -> Optional[str]:
    """The C compiler: $MANUAL_BACKPROP_CC, else $CC, else gcc, cc or clang on the PATH."""
    for cand in (os.environ.get("MANUAL_BACKPROP_CC"), os.environ.get("CC")):
        if cand:
            return shutil.which(cand) or cand
    for name in ("gcc", "cc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_fingerprint() -> str:
    """What -march=native compiles for: a library built on one CPU is never loaded on another."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    text += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return text


def load_kernel() -> ctypes.CDLL:
    """Compile ``_csrc/mlp.c`` (once per source, compiler and CPU; cached on disk) and load it with ctypes.

    The cache is ``$MANUAL_BACKPROP_CACHE``, else ``~/.cache/manual_backprop`` (``$XDG_CACHE_HOME`` honoured), else a
    temporary folder. Raises FastPathUnavailable, saying why, when no compiler is found or compilation fails.
    """
    cc = _compiler()
    if cc is None:
        raise FastPathUnavailable("no C compiler found (looked for $MANUAL_BACKPROP_CC, $CC, gcc, cc, clang)")
    with _lib_lock:
        if cc in _lib_cache:
            return _lib_cache[cc]
        sources = sorted(_CSRC.glob("*.c"))
        if not (_CSRC / "mlp.c").is_file():
            raise FastPathUnavailable(f"the C sources are missing from {_CSRC} (an install without package data)")
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as err:
            raise FastPathUnavailable(f"the C compiler {cc!r} does not run: {err}") from None
        digest = hashlib.sha256()
        for src in sources:
            digest.update(src.name.encode() + src.read_bytes())
        digest.update((cc + version + _cpu_fingerprint() + sys.platform).encode())
        name = f"mlp_{digest.hexdigest()[:20]}.so"
        errors = []
        for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"manual_backprop_{os.getuid()}"):
            target = folder / name
            try:
                if not target.is_file():
                    folder.mkdir(parents=True, exist_ok=True)
                    _compile(cc, _CSRC / "mlp.c", target)
                lib = ctypes.CDLL(str(target))
                break
            except (OSError, FastPathUnavailable) as err:
                errors.append(f"{folder}: {err}")
        else:
            raise FastPathUnavailable("could not build the C loop: " + "; ".join(errors))
        if lib.mbp_abi_version() != _ABI_VERSION:
            raise FastPathUnavailable(f"the C loop at {target} reports ABI {lib.mbp_abi_version()}, "
                                      f"expected {_ABI_VERSION}")
        pointer = ctypes.c_void_p
        for suffix in ("f64", "f32"):
            fn = getattr(lib, f"mbp_train_{suffix}")
            fn.restype = ctypes.c_int
            fn.argtypes = [pointer, pointer, pointer, ctypes.c_int64, ctypes.c_double, pointer, pointer, pointer]
        _lib_cache[cc] = lib
        return lib


def _compile(cc: str, source: Path, target: Path) -> None:
    """cc -O3 -march=native -shared; without -march=native if the compiler refuses it. No -ffast-math: the loop
    must round as torch does. Writes to a temporary name and renames, so concurrent processes never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    base = ["-O3", "-std=c99", "-shared", "-fPIC", "-fno-math-errno", str(source), "-o", tmp, "-lm"]
    try:
        result = None
        for extra in (["-march=native"], []):
            try:
                result = subprocess.run([cc, *extra, *base], capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as err:
                raise FastPathUnavailable(f"the C compiler {cc!r} failed to run: {err}") from None
            if result.returncode == 0:
                os.replace(tmp, target)
                return
        raise FastPathUnavailable(f"{cc} failed to compile {source.name}: {result.stderr.strip()[-2000:]}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def c_unsupported(net: MLP, loss_fn: Loss) -> Optional[str]:
    """Why the C loop cannot run this network and loss, or None when it can."""
    if net.device.type != "cpu":
        return f"the C loop runs on the CPU, but the network is on {net.device}"
    if net.dtype not in (torch.float32, torch.float64):
        return f"the C loop supports float32 and float64, but the network is {net.dtype}"
    for k, f in enumerate(net.activation_functions):
        if type(f) not in _ACT_CODES:
            return f"the C loop has no code for activation {f!r} of layer {k + 1}"
    if type(loss_fn) not in _LOSS_CODES or loss_fn.reduction not in _REDUCTION_CODES:
        return f"the C loop has no code for loss {loss_fn!r}"
    return None


def _ptr_array(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * max(1, len(tensors)))(*[t.data_ptr() for t in tensors])


class _Plan(ctypes.Structure):
    """mbp_plan of _csrc/mlp.c: what stays fixed between calls."""

    _fields_ = [("n_layers", ctypes.c_int64), ("sizes", ctypes.c_void_p), ("acts", ctypes.c_void_p),
                ("slopes", ctypes.c_void_p), ("loss_kind", ctypes.c_int32), ("reduction", ctypes.c_int32),
                ("half", ctypes.c_int32), ("unused", ctypes.c_int32), ("weights", ctypes.c_void_p),
                ("biases", ctypes.c_void_p), ("x_data", ctypes.c_void_p), ("y_data", ctypes.c_void_p),
                ("n_samples", ctypes.c_int64)]


class CKernel:
    """The compiled training loop bound to one network and loss (CPU, float32 or float64).

    ``run(x, y, order, offsets, lr)`` makes ``len(offsets) - 1`` updates; update u uses the samples
    ``order[offsets[u]:offsets[u + 1]]`` of x (N, sizes[0]) and y (N, sizes[-1]) (targets as the Trainer keeps
    them: one-hot rows for cross-entropy). The network's parameters change in place; returns the per-update losses.
    """

    def __init__(self, net: MLP, loss_fn: Loss):
        reason = c_unsupported(net, loss_fn)
        if reason:
            raise FastPathUnavailable(reason)
        lib = load_kernel()
        self.net, self.loss_fn = net, loss_fn
        self._fn = lib.mbp_train_f64 if net.dtype == torch.float64 else lib.mbp_train_f32
        L = net.num_layers
        self._sizes = (ctypes.c_int64 * (L + 1))(*net.sizes)
        self._acts = (ctypes.c_int32 * L)(*[_ACT_CODES[type(f)] for f in net.activation_functions])
        self._slopes = (ctypes.c_double * L)(*[getattr(f, "negative_slope", 0.0) for f in net.activation_functions])
        self._plan = _Plan(n_layers=L, sizes=ctypes.addressof(self._sizes), acts=ctypes.addressof(self._acts),
                           slopes=ctypes.addressof(self._slopes), loss_kind=_LOSS_CODES[type(loss_fn)],
                           reduction=_REDUCTION_CODES[loss_fn.reduction], half=int(getattr(loss_fn, "half", False)))
        self._plan_ref = ctypes.byref(self._plan)
        self._key = None
        self._keep = ()

    def bind(self, x: Tensor, y: Tensor) -> None:
        """Check the data and the parameters and point the plan at them (only when they changed since last time)."""
        net = self.net
        key = (x.data_ptr(), y.data_ptr(), tuple(x.shape), tuple(y.shape),
               *(p.data_ptr() for p in net.weights), *(p.data_ptr() for p in net.biases))
        if key == self._key:
            return
        for name, t, width in (("x", x, net.sizes[0]), ("y", y, net.sizes[-1])):
            if t.dtype != net.dtype or t.device.type != "cpu" or not t.is_contiguous() or t.dim() != 2 \
                    or t.shape[1] != width or t.shape[0] != x.shape[0]:
                raise ValueError(f"{name} must be a contiguous CPU {net.dtype} tensor of shape ({x.shape[0]}, "
                                 f"{width}), but got {t.dtype} on {t.device}, shape {tuple(t.shape)}, "
                                 f"contiguous={t.is_contiguous()}")
        params = net.weights + net.biases
        if not all(p.is_contiguous() and p.device.type == "cpu" and p.dtype == net.dtype for p in params):
            raise ValueError("the network's parameters must be contiguous CPU tensors of its dtype")
        weights, biases = _ptr_array(net.weights), _ptr_array(net.biases) if net.bias else None
        self._plan.weights = ctypes.addressof(weights)
        self._plan.biases = ctypes.addressof(biases) if biases is not None else None
        self._plan.x_data, self._plan.y_data, self._plan.n_samples = x.data_ptr(), y.data_ptr(), x.shape[0]
        self._keep = (weights, biases, x, y)  # the plan points into these: keep them alive
        self._key = key

    def run(self, x: Tensor, y: Tensor, order: Tensor, offsets: Tensor, lr: float, *,
            losses: Optional[Tensor] = None, grads: Optional[Gradients] = None) -> Tensor:
        """Make the updates; ``grads``, if given, receives dE/dW and dE/db of the last update (preallocated).

        Checks stay cheap (no pass over the data): the C loop itself checks the offsets and the sample indices.
        """
        self.bind(x, y)
        n_updates = offsets.numel() - 1
        for name, t in (("order", order), ("offsets", offsets)):
            if t.dtype != torch.int64 or t.device.type != "cpu" or not t.is_contiguous() or t.dim() != 1:
                raise ValueError(f"{name} must be a contiguous 1-D int64 CPU tensor, but got {t.dtype}, "
                                 f"shape {tuple(t.shape)} on {t.device}")
        if n_updates < 0:
            raise ValueError("offsets must hold at least one value (0)")
        if losses is None:
            losses = torch.empty(n_updates, dtype=self.net.dtype)
        elif losses.dtype != self.net.dtype or not losses.is_contiguous() or losses.numel() < n_updates:
            raise ValueError(f"losses must be a contiguous {self.net.dtype} tensor of at least {n_updates} values")
        gw = _ptr_array(grads.weights) if grads is not None else None
        gb = _ptr_array(grads.biases) if grads is not None and grads.biases else None
        self.call(order.data_ptr(), offsets.data_ptr(), n_updates, lr, losses.data_ptr(), gw, gb)
        return losses

    def call(self, order_ptr: int, offsets_ptr: int, n_updates: int, lr: float, losses_ptr: int,
             grad_w=None, grad_b=None) -> None:
        """The C call itself, on raw addresses, after ``bind``: no checks beyond the loop's own (for benchmarks)."""
        status = self._fn(self._plan_ref, order_ptr, offsets_ptr, n_updates, lr, losses_ptr, grad_w, grad_b)
        if status:
            x_rows = self._plan.n_samples
            raise {1: MemoryError("the C loop could not allocate its workspace"),
                   2: ValueError("offsets must start at 0 and grow by at least 1 per update"),
                   3: ValueError(f"order must hold sample indices in [0, {x_rows - 1}]")}.get(
                status, RuntimeError(f"the C loop returned status {status}"))

    def kept_bytes(self, batch: int) -> int:
        """Bytes the loop keeps for its backward phase: x^1..x^L and the output logits for ``batch`` samples
        (x^0 is read from the data in place)."""
        return batch * (sum(self.net.sizes[1:]) + self.net.sizes[-1]) * self.net.weights[0].element_size()


# ---------------------------------------------------------------------------------------------------- fused torch
class FusedStep:
    """One update of the hand-written backprop on preallocated buffers, with no temporary tensors.

    The same arithmetic as the plain path, op for op (``1 - x`` is computed as ``(-x) + 1``, which rounds the
    same), except that with ``keep_grads=False`` the step is fused into the weight-gradient product:
    W.addmm_(delta.T, x, alpha=-lr) instead of g = delta.T @ x; W.add_(g, alpha=-lr).

    Args:
        net: the MLP (its parameter tensors are updated in place; rebuild the step if they are replaced).
        loss_fn: a Loss.
        max_batch: the largest batch the step will see (buffers are sized for it; smaller batches use views).
        keep_grads: keep dE/dW, dE/db of the last update in ``self.grads`` (for gradient histograms).
    """

    def __init__(self, net: MLP, loss_fn: Loss, max_batch: int, *, keep_grads: bool = False):
        self.net, self.loss_fn, self.max_batch, self.keep_grads = net, loss_fn, int(max_batch), keep_grads
        self.params = [*net.weights, *net.biases]
        dt, dev, sizes = net.dtype, net.device, net.sizes

        def buf(*shape):
            return torch.empty(*shape, dtype=dt, device=dev)

        B = self.max_batch
        out_f = net.output_activation
        # The output keeps its logits separately only where the loss or the activation needs them.
        self.separate_logits = isinstance(loss_fn, (CrossEntropy, BinaryCrossEntropy)) or isinstance(out_f, Softmax)
        self._x0 = buf(B, sizes[0])
        self._y = buf(B, sizes[-1])
        self._acts = [buf(B, n) for n in sizes[1:]]  # x^1..x^L
        self._logits = buf(B, sizes[-1]) if self.separate_logits else None
        self._deltas = [buf(B, n) for n in sizes[1:]]  # deltas[k]: (B, n_{k+1})
        self._tmp = [buf(B, n) for n in sizes]  # per width: f'(x) and loss terms
        self._tmp2 = buf(B, sizes[-1])
        self._tmp3 = buf(B, sizes[-1])
        self._row = buf(B, 1)
        self._grad_b = [buf(n) for n in sizes[1:]]
        self._weights_t = [w.t() for w in net.weights]
        self.grads = Gradients(weights=[torch.zeros_like(w) for w in net.weights],
                               biases=[torch.zeros_like(b) for b in net.biases]) if keep_grads else None
        self._views = {}

    def is_bound_to(self, net: MLP) -> bool:
        """Whether the step still works on the network's own parameter tensors (net.to() replaces them)."""
        return len(self.params) == len(net.weights) + len(net.biases) and all(
            a is b for a, b in zip(self.params, [*net.weights, *net.biases]))

    def kept_bytes(self, batch: int) -> int:
        """Bytes kept for the backward phase: x^0..x^L (and the logits where kept separately) for ``batch`` rows."""
        n = sum(self.net.sizes) + (self.net.sizes[-1] if self.separate_logits else 0)
        return batch * n * self.net.weights[0].element_size()

    def _batch_views(self, B: int):
        views = self._views.get(B)
        if views is None:
            narrow = (lambda t: t[:B])
            views = dict(x0=narrow(self._x0), y=narrow(self._y), acts=[narrow(t) for t in self._acts],
                         logits=narrow(self._logits) if self._logits is not None else None,
                         deltas=[narrow(t) for t in self._deltas], tmp=[narrow(t) for t in self._tmp],
                         tmp2=narrow(self._tmp2), tmp3=narrow(self._tmp3),
                         row=narrow(self._row), deltas_t=[narrow(t).t() for t in self._deltas])
            self._views[B] = views
        return views

    def update(self, x_all: Tensor, y_all: Tensor, idx: Optional[Tensor], lr: float, loss_out: Tensor) -> None:
        """Forward, backward and step on the samples ``idx`` of (x_all, y_all) (None: all of them, which must fit
        max_batch); the loss is written into the 0-dim tensor ``loss_out``. Call under torch.no_grad()."""
        net, loss_fn = self.net, self.loss_fn
        L = net.num_layers
        if idx is None:
            B = x_all.shape[0]
            v = self._batch_views(B)
            x, y = x_all, y_all
        else:
            B = idx.shape[0]
            v = self._batch_views(B)
            x = torch.index_select(x_all, 0, idx, out=v["x0"])  # x^0: (B, n_0)
            y = torch.index_select(y_all, 0, idx, out=v["y"])  # (B, n_L)
        acts = [x] + v["acts"]
        # ---- forward phase
        for k, f in enumerate(net.activation_functions):
            last = k == L - 1
            z = v["logits"] if last and self.separate_logits else acts[k + 1]
            if net.bias:
                torch.addmm(net.biases[k], acts[k], self._weights_t[k], out=z)  # net^{k+1}: (B, n_{k+1})
            else:
                torch.mm(acts[k], self._weights_t[k], out=z)
            _activate(f, z, acts[k + 1])  # x^{k+1}, in place unless the logits are kept
        # ---- loss and output delta
        out, d, tmp = acts[L], v["deltas"][L - 1], v["tmp"][L]
        c = loss_fn.scale(B, net.sizes[-1])
        if isinstance(loss_fn, SquaredError):
            torch.sub(out, y, out=d)  # e = x - y
            torch.mul(d, d, out=tmp)
            torch.sum(tmp, dim=(0, 1), out=loss_out)
            loss_out.mul_(c)  # (e * e).sum() * c
            d.mul_(2.0 * c)  # dE/dx
            _activation_backward(net.output_activation, out, d, tmp, v["row"])
        elif isinstance(loss_fn, CrossEntropy):
            z = v["logits"]
            torch.logsumexp(z, -1, keepdim=True, out=v["row"])
            torch.sub(z, v["row"], out=tmp).mul_(y)  # y * log softmax(z)
            torch.sum(tmp, dim=(0, 1), out=loss_out)
            loss_out.neg_().mul_(c)
            torch.sub(out, y, out=d).mul_(c)  # fused softmax + cross-entropy: c (p - y)
        elif isinstance(loss_fn, BinaryCrossEntropy):
            z, t2, t3 = v["logits"], v["tmp2"], v["tmp3"]
            torch.abs(z, out=tmp).neg_().exp_().log1p_()  # log(1 + exp(-|z|))
            torch.mul(y, z, out=t2)
            torch.clamp_min(z, 0, out=t3).sub_(t2).add_(tmp)
            torch.sum(t3, dim=(0, 1), out=loss_out)
            loss_out.mul_(c)
            torch.sub(out, y, out=d).mul_(c)
        else:
            raise TypeError(f"the fused step has no code for loss {loss_fn!r}")
        # ---- backward phase and step, output layer first
        deltas, deltas_t = v["deltas"], v["deltas_t"]
        for k in range(L - 1, -1, -1):
            if k > 0:
                torch.mm(deltas[k], net.weights[k], out=deltas[k - 1])  # sum_c delta_c w_cj, before W[k] steps
            if self.keep_grads:
                torch.mm(deltas_t[k], acts[k], out=self.grads.weights[k])
                net.weights[k].add_(self.grads.weights[k], alpha=-lr)
            else:
                net.weights[k].addmm_(deltas_t[k], acts[k], alpha=-lr)  # W <- W - lr delta^T x, one pass over W
            if net.bias:
                gb = self.grads.biases[k] if self.keep_grads else self._grad_b[k]
                torch.sum(deltas[k], 0, out=gb)
                net.biases[k].add_(gb, alpha=-lr)
            if k > 0:
                _activation_backward(net.activation_functions[k - 1], acts[k], deltas[k - 1], v["tmp"][k], v["row"])


def _activate(f, z: Tensor, x: Tensor) -> None:
    """x = f(z); z and x may be the same buffer (hidden layers) or not (the output's kept logits)."""
    if isinstance(f, Sigmoid):
        torch.sigmoid(z, out=x)
    elif isinstance(f, Tanh):
        torch.tanh(z, out=x)
    elif isinstance(f, ReLU):
        torch.relu(z, out=x) if x is not z else z.relu_()
    elif isinstance(f, LeakyReLU):
        if x is not z:
            x.copy_(z)
        torch.nn.functional.leaky_relu_(x, f.negative_slope)
    elif isinstance(f, Identity):
        if x is not z:
            x.copy_(z)
    elif isinstance(f, Softmax):
        torch.softmax(z, -1, out=x)
    else:
        raise TypeError(f"the fused step has no code for activation {f!r}")


def _activation_backward(f, x: Tensor, g: Tensor, tmp: Tensor, row: Tensor) -> None:
    """g <- f'(net) * g in place, f' read off x, with the plain path's arithmetic (activations.py)."""
    if isinstance(f, Sigmoid):
        torch.neg(x, out=tmp).add_(1.0).mul_(x)  # x (1 - x)
        g.mul_(tmp)
    elif isinstance(f, Tanh):
        torch.mul(x, x, out=tmp).neg_().add_(1.0)  # 1 - x^2
        g.mul_(tmp)
    elif isinstance(f, ReLU):
        # x <= 0 ? 0 : g, the plain masked_fill's values in one vectorised pass (masked_fill_ is not vectorised)
        torch.ops.aten.threshold_backward.grad_input(g, x, 0.0, grad_input=g)
    elif isinstance(f, LeakyReLU):
        # x > 0 ? g : g * slope, the plain g * where(x > 0, 1, slope) exactly
        torch.ops.aten.leaky_relu_backward.grad_input(g, x, f.negative_slope, True, grad_input=g)
    elif isinstance(f, Identity):
        pass
    elif isinstance(f, Softmax):
        torch.sum(torch.mul(g, x, out=tmp), -1, keepdim=True, out=row)
        g.sub_(row).mul_(x)  # x (g - sum(g x))
    else:
        raise TypeError(f"the fused step has no code for activation {f!r}")


# ---------------------------------------------------------------------------------------------------- CUDA graphs
class CudaGraphRunner:
    """The fused step captured as one CUDA graph of ``chunk`` updates of ``batch`` samples each, replayed.

    Sample indices go through a static device buffer that is refilled (device to device) before each replay, and
    the chunk's losses come out of a static buffer, so nothing waits for the GPU inside an epoch. Updates that do
    not fill a whole chunk (and a smaller last minibatch) run through the eager fused step.
    """

    def __init__(self, net: MLP, loss_fn: Loss, batch: int, *, chunk: int = 64):
        if net.device.type != "cuda" or not torch.cuda.is_available():
            raise FastPathUnavailable(f"CUDA graphs need a CUDA device, but the network is on {net.device}")
        self.net, self.loss_fn, self.batch, self.chunk = net, loss_fn, int(batch), int(chunk)
        self.step = FusedStep(net, loss_fn, self.batch)
        self._idx = torch.zeros(self.chunk * self.batch, dtype=torch.int64, device=net.device)
        self._losses = torch.zeros(self.chunk, dtype=net.dtype, device=net.device)
        self._graph, self._key = None, None

    def is_bound_to(self, net: MLP) -> bool:
        return self.step.is_bound_to(net)

    def _chunk_updates(self, x: Tensor, y: Tensor, lr: float) -> None:
        B = self.batch
        for j in range(self.chunk):
            self.step.update(x, y, self._idx[j * B:(j + 1) * B], lr, self._losses[j])

    def _capture(self, x: Tensor, y: Tensor, lr: float) -> None:
        saved = [p.clone() for p in self.step.params]
        stream = torch.cuda.Stream(device=self.net.device)
        stream.wait_stream(torch.cuda.current_stream(self.net.device))
        with torch.cuda.stream(stream):  # warm-up (cuBLAS handles, workspaces) outside the capture
            self._chunk_updates(x, y, lr)
        torch.cuda.current_stream(self.net.device).wait_stream(stream)
        for p, s in zip(self.step.params, saved):  # the warm-up's updates are undone
            p.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._chunk_updates(x, y, lr)
        self._graph, self._key = graph, (x.data_ptr(), y.data_ptr(), float(lr))

    def run(self, x: Tensor, y: Tensor, order: Tensor, offsets: list, lr: float, losses: Tensor) -> Tensor:
        """Make the updates order[offsets[u]:offsets[u+1]] (order on the device, offsets a Python list)."""
        n_updates = len(offsets) - 1
        B, K = self.batch, self.chunk
        full = 0
        while full < n_updates and offsets[full + 1] - offsets[full] == B:
            full += 1
        n_chunks = full // K
        if n_chunks and self._key != (x.data_ptr(), y.data_ptr(), float(lr)):
            self._capture(x, y, lr)
        for c in range(n_chunks):
            self._idx.copy_(order[c * K * B:(c + 1) * K * B])
            self._graph.replay()
            losses[c * K:(c + 1) * K].copy_(self._losses)
        for u in range(n_chunks * K, n_updates):
            self.step.update(x, y, order[offsets[u]:offsets[u + 1]], lr, losses[u])
        return losses


# ---------------------------------------------------------------------------------------------------- the trainer's switch
def epoch_order(mode: str, n: int, batch_size: int, replacement: bool, generator: torch.Generator):
    """(order, offsets) of one epoch, drawn exactly as ``Trainer.batches()`` draws them (same generator calls):
    update u uses the samples order[offsets[u]:offsets[u+1]]. Batch mode is one update on all samples in order."""
    b = batch_size
    if mode == "batch":
        return torch.arange(n), torch.tensor([0, n])
    if replacement:
        rows = math.ceil(n / b)
        order = torch.randint(0, n, (rows, b), generator=generator).sort(dim=1).values.view(-1)
        return order, torch.arange(0, rows * b + 1, b)
    order = torch.randperm(n, generator=generator)
    if b > 1:
        full = (n // b) * b
        head = order[:full].view(-1, b).sort(dim=1).values.view(-1)  # each batch is a set: sorted
        order = torch.cat([head, order[full:].sort().values])
    return order, torch.cat([torch.arange(0, n, b), torch.tensor([n])])


def work_per_update(net: MLP, batch: int) -> int:
    """Multiply-adds of one forward phase: batch times the number of weights."""
    return batch * sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))


def resolve_fast(fast: Union[bool, str], net: MLP, loss_fn: Loss, batch: int, *, warn: bool = True) -> str:
    """The fast path that will run: "c", "fused" or "cuda_graph" (or "" for the plain path, fast=False).

    True or "auto" picks the best that applies; an explicit choice that cannot apply falls back, with a
    FastPathWarning that says why.
    """
    if fast is False or fast is None or fast == "off":
        return ""
    if fast is True:
        fast = "auto"
    if fast not in ("auto", *FAST_PATHS):
        raise ValueError(f"fast must be False, True, 'auto' or one of {list(FAST_PATHS)}, but got {fast!r}")

    def fall_back(reason: str, to: str) -> str:
        if warn:
            warnings.warn(f"fast={fast!r} cannot run here: {reason}; using the {to!r} fast path instead",
                          FastPathWarning, stacklevel=3)
        return to

    on_cuda = net.device.type == "cuda"
    if fast == "fused":
        return "fused"
    if fast == "cuda_graph":
        if not on_cuda:
            return fall_back(f"CUDA graphs need a CUDA device, but the network is on {net.device}", "fused")
        return "cuda_graph"
    if fast == "auto" and on_cuda:
        return "cuda_graph"
    if fast == "auto" and work_per_update(net, batch) > C_WORK_LIMIT:
        return "fused"
    reason = c_unsupported(net, loss_fn)
    if reason is None:
        try:
            load_kernel()
            return "c"
        except FastPathUnavailable as err:
            reason = str(err)
    if fast == "c" and on_cuda:
        return fall_back(reason, "cuda_graph")
    return fall_back(reason, "fused")


class EpochRunner:
    """What ``Trainer(fast=...)`` runs instead of its per-update loop: one epoch of updates through a fast path.

    Draws the epoch's sample order from the trainer's generator exactly as ``Trainer.batches()`` does, so a fast
    run and a plain run make the same updates in the same order, and checkpoints resume either way.
    """

    def __init__(self, trainer, fast: Union[bool, str]):
        self.trainer = trainer
        net = trainer.net
        self.path = resolve_fast(fast, net, trainer.loss_fn, trainer.batch_size)
        self.keep_grads = trainer.logger is not None  # the gradient histograms want the last update's gradients
        self._engine = None

    def _build(self):
        t, net = self.trainer, self.trainer.net
        if self.path == "c":
            engine = CKernel(net, t.loss_fn)
            engine.grads = Gradients(weights=[torch.zeros_like(w) for w in net.weights],
                                     biases=[torch.zeros_like(b) for b in net.biases]) if self.keep_grads else None
        elif self.path == "cuda_graph":
            engine = CudaGraphRunner(net, t.loss_fn, t.batch_size)
        else:
            engine = FusedStep(net, t.loss_fn, t.batch_size, keep_grads=self.keep_grads)
        return engine

    def run_epoch(self) -> Tensor:
        """Make one epoch of updates; returns their losses (U,) on the network's device (not read back)."""
        t, net = self.trainer, self.trainer.net
        if self._engine is None or (self.path != "c" and not self._engine.is_bound_to(net)):
            self._engine = self._build()
        n = t.x_train.shape[0]
        order, offsets = epoch_order(t.mode, n, t.batch_size, t.replacement, t.generator)
        n_updates = offsets.numel() - 1
        if self.path == "c":
            engine = self._engine
            losses = engine.run(t.x_train.contiguous(), t.y_train.contiguous(), order, offsets, t.lr,
                                grads=engine.grads)
            t.last_grads = engine.grads
            return losses
        losses = torch.empty(n_updates, dtype=net.dtype, device=net.device)
        order = order.to(net.device)
        bounds = offsets.tolist()
        if self.path == "cuda_graph":
            self._engine.run(t.x_train, t.y_train, order, bounds, t.lr, losses)
            return losses
        step = self._engine
        for u in range(n_updates):
            idx = None if t.mode == "batch" else order[bounds[u]:bounds[u + 1]]
            step.update(t.x_train, t.y_train, idx, t.lr, losses[u])
        t.last_grads = step.grads
        return losses


def kept_bytes(cache) -> int:
    """Bytes a plain ForwardCache keeps for the backward phase: its activations and logits (distinct storages)."""
    seen, total = set(), 0
    for t in [*cache.activations, cache.logits]:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total
