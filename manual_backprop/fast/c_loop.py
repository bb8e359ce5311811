"""The C loop: network.py's update, compiled with the system C compiler and run many updates per call.

``_csrc/mlp.c`` and ``_csrc/mlp_body.c`` hold the loop, with one C function per function of network.py
(net_input, hidden_delta, update); the activation and loss kernels come from the classes' own C code through
csource.py (kernels.h). The library is compiled once per source, compiler and CPU, cached on disk, and loaded with
ctypes. One call runs a whole epoch of updates (online or minibatch) on the CPU, float32 or float64, with no Python
between updates.

Proven update by update against network.py (tests/proof/test_update_proof.py): the C loop sums dot products in its own
order (each product added with one rounding, an explicit fma: _csrc/vecfma.h, the same bits with every build) and
rounds W + (-lr) g in two steps where torch's add fuses them, so one update's parameters agree with the
reference within ``C_ULPS`` units in the last place of each tensor's largest entry, and its loss and gradients
within ``C_ULPS`` ulps of their magnitude; on saturated units the same bound holds (f' is computed from the output
with the reference's own formula, e.g. tanh' = (1 - x)(1 + x)).

Security: the compiled library is code this process runs, so it is loaded only from a folder that the current user
owns and nobody else can write (every folder on the way checked, by path and again by handle), and only the very
file opened and checked is loaded (private_load.py); otherwise it is built in a fresh private temporary folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import operator
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..losses import Loss
from ..network import MLP, Gradients
from .common import FastPathUnavailable, layout_of, mark_written
from .csource import ACT_CODES, LOSS_CODES, REDUCTION_CODES, c_unsupported_activation, c_unsupported_loss, kernels_h
from .private_load import load_private_library, open_private_folder
from .private_load import private_folder as _private_folder

__all__ = ["CKernel", "EpochsCall", "load_kernel", "c_unsupported", "c_function", "C_ULPS"]

# The per-update bound of the C loop against network.py, in units in the last place (see the module docstring).
C_ULPS = 4
_ABI_VERSION = 5
_CSRC = Path(__file__).resolve().parent.parent / "_csrc"


_lib_lock = threading.Lock()
_lib_cache: dict = {}


def _cache_dir() -> Path:
    root = os.environ.get("MANUAL_BACKPROP_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "manual_backprop"


def _compiler(cxx: bool = False) -> Optional[str]:
    """The C compiler: $MANUAL_BACKPROP_CC, else $CC, else gcc, cc or clang on the PATH; with cxx, the C++ compiler:
    $MANUAL_BACKPROP_CXX, else $CXX, else g++, c++ or clang++."""
    names = ("MANUAL_BACKPROP_CXX", "CXX", "g++", "c++", "clang++") if cxx else \
        ("MANUAL_BACKPROP_CC", "CC", "gcc", "cc", "clang")
    for cand in (os.environ.get(names[0]), os.environ.get(names[1])):
        if cand:
            return shutil.which(cand) or cand
    for name in names[2:]:
        found = shutil.which(name)
        if found:
            return found
    return None


def _torch_cxx_flags() -> list:
    """What a C++ source that reads torch's own TensorImpl compiles with: the installed torch's headers, its ABI,
    and its libc10 (found at run time where torch keeps it)."""
    root = Path(torch.__file__).parent
    abi = int(torch.compiled_with_cxx11_abi())
    return ["-O2", "-std=c++17", "-w", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            "-I", str(root / "include"), "-L", str(root / "lib"), "-lc10", f"-Wl,-rpath,{root / 'lib'}"]


# The flags of every build, in the library's cache key. Whole-vector loops (the population kernel's lanes, the C
# loop's lane-wise sums) may use 512-bit registers where the CPU has them; a loop's width never changes its results
# (no reassociation: no -ffast-math; no contraction: a fused multiply-add is written as one, vecfma.h), so every
# attempt below computes the same bits. Tried in order: the first that compiles is built.
_FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC", "-fno-math-errno", "-ffp-contract=off")
_NATIVE_FLAGS = (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])


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


def build_library(main: str, patterns, header: str, what: str, cxx: bool = False) -> tuple:
    """Compile ``_csrc/<main>`` (with the sources matching ``patterns`` hashed into its name, and ``header`` as
    kernels.h) and load it: once per source, compiler and CPU, cached on disk; returns (library, its path). With
    cxx, ``main`` is C++ against the installed torch (_torch_cxx_flags; the torch in the cache key too).

    The one build every C kernel of the project goes through. The cache is ``$MANUAL_BACKPROP_CACHE``, else
    ``~/.cache/manual_backprop`` (``$XDG_CACHE_HOME`` honoured), used only while it is this user's private folder
    (every folder on the way checked); else, with a warning, a fresh private temporary folder. Raises
    FastPathUnavailable, saying why, when no compiler is found or compilation fails.
    """
    cc = _compiler(cxx)
    if cc is None:
        raise FastPathUnavailable("no C++ compiler found (looked for $MANUAL_BACKPROP_CXX, $CXX, g++, c++, clang++)"
                                  if cxx else "no C compiler found (looked for $MANUAL_BACKPROP_CC, $CC, gcc, cc, "
                                  "clang)")
    sources = sorted({src for pattern in patterns for src in _CSRC.glob(pattern)})
    if not (_CSRC / main).is_file():
        raise FastPathUnavailable(f"the C sources are missing from {_CSRC} (an install without package data)")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise FastPathUnavailable(f"the {'C++' if cxx else 'C'} compiler {cc!r} does not run: {err}") from None
    digest = hashlib.sha256(header.encode())
    for src in sources:
        digest.update(src.name.encode() + src.read_bytes())
    digest.update((cc + version + _cpu_fingerprint() + sys.platform + repr((_FLAGS, _NATIVE_FLAGS))).encode())
    if cxx:
        digest.update((torch.__version__ + repr(_torch_cxx_flags())).encode())
    name = f"{Path(main).stem}_{digest.hexdigest()[:20]}.so"
    errors = []
    for cache in (_cache_dir(), None):
        folder = cache
        try:  # checked by path, then opened again by handle and checked there (private_load.py)
            folder = _private_folder(cache)
            dir_fd = open_private_folder(folder)
        except (OSError, FastPathUnavailable) as err:
            errors.append(f"{folder}: {err}")
            if cache is not None:  # a cache others could write: say so, build in a private folder instead
                warnings.warn(f"{err}; building the {what} in a private temporary folder instead",
                              RuntimeWarning, stacklevel=3)
            continue
        target = folder / name
        try:
            try:
                return load_private_library(dir_fd, name, target), target
            except FileNotFoundError:
                _compile(cc, target, header, main=main, cxx=cxx)
                return load_private_library(dir_fd, name, target), target
        except (OSError, FastPathUnavailable) as err:
            errors.append(f"{folder}: {err}")
        finally:
            os.close(dir_fd)
    raise FastPathUnavailable(f"could not build the {what}: " + "; ".join(errors))


def load_kernel() -> ctypes.CDLL:
    """The C loop: ``_csrc/mlp.c`` with the activation and loss kernels of kernels.h, built by ``build_library``."""
    with _lib_lock:
        cc = _compiler()
        if cc in _lib_cache:
            return _lib_cache[cc]
        lib, target = build_library("mlp.c", ["*.c", "*.h"], kernels_h(), "C loop")
        if lib.mbp_abi_version() != _ABI_VERSION:
            raise FastPathUnavailable(f"the C loop at {target} reports ABI {lib.mbp_abi_version()}, "
                                      f"expected {_ABI_VERSION}")
        pointer, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
        signatures = {"train": (ctypes.c_int, [pointer, pointer, pointer, i64, f64, pointer, pointer, pointer]),
                      "activation_forward": (None, [i32, f64, pointer, i64]),
                      "activation_backward": (None, [i32, f64, pointer, pointer, i64]),
                      "output_delta": (f64, [i32, i32, f64, pointer, pointer, pointer, pointer, i64, f64]),
                      "hidden_delta": (None, [i32, f64, pointer, pointer, pointer, pointer, i64, i64])}
        for suffix in ("f64", "f32"):
            for name, (restype, argtypes) in signatures.items():
                fn = getattr(lib, f"mbp_{name}_{suffix}")
                fn.restype, fn.argtypes = restype, argtypes
        _lib_cache[cc] = lib
        return lib


def _compile(cc: str, target: Path, header: str, main: str = "mlp.c", cxx: bool = False) -> None:
    """cc -O3 -march=native -shared ``_csrc/<main>`` (mlp.c, or narrow.c for fast/narrow.py), 512-bit vectors
    preferred; without them, then without -march=native, if the compiler refuses. No -ffast-math and no
    floating-point contraction: the loop must round as the classes' formulas say. With cxx: c++ with
    _torch_cxx_flags (no arithmetic there). Writes to a temporary name and renames, so concurrent processes never
    see half a file."""
    build = Path(tempfile.mkdtemp(prefix="manual_backprop_build_"))
    try:
        for src in [*_CSRC.glob("*.c"), *_CSRC.glob("*.h"), *_CSRC.glob("*.cpp")]:  # and the shared headers
            shutil.copyfile(src, build / src.name)
        (build / "kernels.h").write_text(header)
        tmp = build / "out.so"
        base = [str(build / main), "-o", str(tmp), *_torch_cxx_flags()] if cxx else \
            [*_FLAGS, str(build / main), "-o", str(tmp), "-lm"]
        result = None
        for extra in ([],) if cxx else _NATIVE_FLAGS:
            try:
                result = subprocess.run([cc, *extra, *base], capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as err:
                raise FastPathUnavailable(f"the compiler {cc!r} failed to run: {err}") from None
            if result.returncode == 0:
                os.chmod(tmp, 0o700)
                os.replace(tmp, target)
                return
        raise FastPathUnavailable(f"{cc} failed to compile {main}: {result.stderr.strip()[-2000:]}")
    finally:
        shutil.rmtree(build, ignore_errors=True)


def c_unsupported(net: MLP, loss_fn: Loss) -> Optional[str]:
    """Why the C loop cannot run this network and loss, or None when it can."""
    if net.device.type != "cpu":
        return f"the C loop runs on the CPU, but the network is on {net.device}"
    if net.dtype not in (torch.float32, torch.float64):
        return f"the C loop supports float32 and float64, but the network is {net.dtype}"
    for k, f in enumerate(net.activation_functions):
        reason = c_unsupported_activation(f)
        if reason:
            return f"layer {k + 1}: {reason}"
    return c_unsupported_loss(loss_fn)


def c_function(name: str, dtype: torch.dtype):
    """One exported kernel of the C loop for ``dtype`` (mbp_activation_forward, mbp_activation_backward,
    mbp_output_delta, mbp_hidden_delta): the per-kernel proof calls them on the reference's own rows."""
    return getattr(load_kernel(), f"mbp_{name}_{'f64' if dtype == torch.float64 else 'f32'}")


def _ptr_array(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * max(1, len(tensors)))(*[t.data_ptr() for t in tensors])


class _Plan(ctypes.Structure):
    """mbp_plan of _csrc/mlp.c: what stays fixed between calls."""

    _fields_ = [("n_layers", ctypes.c_int64), ("sizes", ctypes.c_void_p), ("acts", ctypes.c_void_p),
                ("slopes", ctypes.c_void_p), ("loss_kind", ctypes.c_int32), ("reduction", ctypes.c_int32),
                ("factor", ctypes.c_double), ("weights", ctypes.c_void_p),
                ("biases", ctypes.c_void_p), ("x_data", ctypes.c_void_p), ("y_data", ctypes.c_void_p),
                ("n_samples", ctypes.c_int64)]


class EpochsCall(ctypes.Structure):
    """mbp_epochs of _csrc/mlp.c: one call of mbp_train_epochs (fast/epochs.py fills it)."""

    _fields_ = [("n_epochs", ctypes.c_int64), ("n_updates", ctypes.c_int64), ("offsets", ctypes.c_void_p),
                ("orders", ctypes.c_void_p), ("lr", ctypes.c_double), ("target_loss", ctypes.c_double),
                ("train_labels", ctypes.c_void_p), ("test_x", ctypes.c_void_p), ("test_y", ctypes.c_void_p),
                ("test_labels", ctypes.c_void_p), ("test_n", ctypes.c_int64), ("good_init", ctypes.c_void_p),
                ("good", ctypes.c_void_p), ("losses", ctypes.c_void_p), ("figures", ctypes.c_void_p),
                ("seconds", ctypes.c_void_p), ("grad_w", ctypes.c_void_p), ("grad_b", ctypes.c_void_p),
                ("epochs_run", ctypes.c_int64), ("stop", ctypes.c_int32)]


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
        self._epochs_fn = lib.mbp_train_epochs_f64 if net.dtype == torch.float64 else lib.mbp_train_epochs_f32
        self._epochs_fn.restype, self._epochs_fn.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]
        L = net.num_layers
        self._sizes = (ctypes.c_int64 * (L + 1))(*net.sizes)
        self._acts = (ctypes.c_int32 * L)(*[ACT_CODES[type(f)] for f in net.activation_functions])
        self._slopes = (ctypes.c_double * L)(*[getattr(f, "negative_slope", 0.0) for f in net.activation_functions])
        self._plan = _Plan(n_layers=L, sizes=ctypes.addressof(self._sizes), acts=ctypes.addressof(self._acts),
                           slopes=ctypes.addressof(self._slopes), loss_kind=LOSS_CODES[type(loss_fn)],
                           reduction=REDUCTION_CODES[loss_fn.reduction], factor=loss_fn.c_factor())
        self._plan_ref = ctypes.byref(self._plan)
        self._key = None
        self._keep = ()
        self._params = []

    def bind(self, x: Tensor, y: Tensor) -> None:
        """Check the data and the parameters and point the plan at them (only when they changed since last time)."""
        net = self.net
        params = net.weights + net.biases
        key = (x.data_ptr(), y.data_ptr(), tuple(x.shape), tuple(y.shape), x.is_neg(), y.is_neg(), x.dtype, y.dtype,
               *map(layout_of, params))
        # layouts and dtypes too (an in-place t_(), a ``p.data = p.view(torch.int64)``); the same tensors too: new
        # tensor objects at the same addresses have their own version counters, and the ones marked after each call
        # (self._params) must be the network's (held, so no id is reused meanwhile)
        if key == self._key and len(params) == len(self._params) and all(map(operator.is_, params, self._params)):
            return
        for name, t, width in (("x", x, net.sizes[0]), ("y", y, net.sizes[-1])):
            if t.dtype != net.dtype or t.device.type != "cpu" or not t.is_contiguous() or t.is_neg() or t.dim() != 2 \
                    or t.shape[1] != width or t.shape[0] != x.shape[0]:
                raise ValueError(f"{name} must be a contiguous CPU {net.dtype} tensor of shape ({x.shape[0]}, "
                                 f"{width}), but got {t.dtype} on {t.device}, shape {tuple(t.shape)}, "
                                 f"contiguous={t.is_contiguous()}")
        shapes = [(n_out, n_in) for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:])]
        shapes += [(n_out,) for n_out in net.sizes[1:]] if net.bias else []
        if not all(p.is_contiguous() and not p.is_neg() and p.device.type == "cpu" and p.dtype == net.dtype
                   and tuple(p.shape) == s for p, s in zip(params, shapes)):
            raise ValueError("the network's parameters must be contiguous CPU tensors of its dtype, shaped as its "
                             f"sizes {net.sizes} say (an in-place t_(), a resize_ or a .data = changes that), but got "
                             + ", ".join(f"{p.dtype} {tuple(p.shape)} contiguous={p.is_contiguous()} neg={p.is_neg()}"
                                         for p in params))
        weights, biases = _ptr_array(net.weights), _ptr_array(net.biases) if net.bias else None
        self._plan.weights = ctypes.addressof(weights)
        self._plan.biases = ctypes.addressof(biases) if biases is not None else None
        self._plan.x_data, self._plan.y_data, self._plan.n_samples = x.data_ptr(), y.data_ptr(), x.shape[0]
        self._keep = (weights, biases, x, y)  # the plan points into these: keep them alive
        self._params = params  # what every call writes (mark_written)
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

    def call_epochs(self, epochs: "EpochsCall") -> None:
        """mbp_train_epochs on a filled EpochsCall, after ``bind`` (fast/epochs.py checks what it passes)."""
        status = self._epochs_fn(self._plan_ref, ctypes.byref(epochs))
        if not status:  # the updates, and any divergence rewind, wrote them
            mark_written(self._params)
        self._raise(status)

    def _raise(self, status: int) -> None:
        if status:
            x_rows = self._plan.n_samples
            raise {1: MemoryError("the C loop could not allocate its workspace"),
                   2: ValueError("offsets must start at 0 and grow by at least 1 per update"),
                   3: ValueError(f"order must hold sample indices in [0, {x_rows - 1}]")}.get(
                status, RuntimeError(f"the C loop returned status {status}"))

    def call(self, order_ptr: int, offsets_ptr: int, n_updates: int, lr: float, losses_ptr: int,
             grad_w=None, grad_b=None) -> None:
        """The C call itself, on raw addresses, after ``bind``: no checks beyond the loop's own (for benchmarks)."""
        status = self._fn(self._plan_ref, order_ptr, offsets_ptr, n_updates, lr, losses_ptr, grad_w, grad_b)
        if not status:
            mark_written(self._params)
        self._raise(status)

    def kept_bytes(self, batch: int) -> int:
        """Bytes the loop keeps for its backward phase: x^1..x^L and the output logits for ``batch`` samples
        (x^0 is read from the data in place)."""
        return batch * (sum(self.net.sizes[1:]) + self.net.sizes[-1]) * self.net.weights[0].element_size()
