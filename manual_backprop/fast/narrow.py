"""The narrow kernel: network.py's ``loss_and_gradients`` over a whole batch, for networks a few dozen units wide.

A declared derivative of network.py's functions (forward_phase, output_delta, hidden_delta, weight_gradient,
bias_gradient), otherwise identical to them: ``_csrc/narrow.c`` keeps features as rows and samples as SIMD lanes,
runs tiles of 64 samples through the forward phase, the output delta and the backward phase while they sit in L1,
and sums each weight's gradient lane by lane (in the dtype within a block of 1024 samples, in double across
blocks). The per-element formulas are the classes' own C code (kernels.h, as in the C loop); only the summation
order differs from torch's products, so E and every gradient agree with the reference within ``NARROW_ULPS`` ulps of
their scale (reference/update_proof.py's measure), proven in tests/proof/test_narrow_kernel.py. The update is
network.update itself, on those gradients.

In batch mode the evaluation of the training split at the end of an epoch is exactly the forward phase of the next
epoch's update, so ``NarrowBatch`` runs one pass an epoch: it gives E at the new parameters (the evaluation) and
keeps the gradients there for the next update. What it keeps is tied to the parameter and data tensors by identity
and version counter, so it is recomputed whenever anything changes them outside this path (``net.to``, a user's
edit, a divergence rewind, a resume). Without labels the Trainer runs several such epochs in one C call
(fast/narrow_epochs.py), bit-equal to this one epoch at a time.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Optional

import torch
from torch import Tensor

from ..activations import Softmax
from ..losses import Loss, SquaredError
from ..network import MLP, Gradients, update
from . import c_loop
from .common import FastPathUnavailable, layout_of
from .csource import ACT_CODES, LOSS_CODES, REDUCTION_CODES, kernels_h

__all__ = ["NarrowKernel", "NarrowBatch", "narrow_unsupported", "load_narrow_kernel", "NARROW_ULPS",
           "NARROW_MAX_WIDTH"]

# The per-update bound against network.py, in units in the last place of each tensor's scale.
NARROW_ULPS = 4
# The widest layer the kernel takes: a tile of 64 samples of every layer stays in L1, and torch's products win above.
NARROW_MAX_WIDTH = 64
_ABI_VERSION = 4

_lock = threading.Lock()
_libs: dict = {}


def load_narrow_kernel() -> ctypes.CDLL:
    """Compile ``_csrc/narrow.c`` with kernels.h (once per source, compiler and CPU; cached on disk) and load it,
    through the C loop's own build (c_loop.py: the same compiler, flags and private-folder checks)."""
    with _lock:
        cc = c_loop._compiler()
        if cc in _libs:
            return _libs[cc]
        lib, target = c_loop.build_library("narrow.c", ["narrow*.c", "*.h"], kernels_h(), "narrow kernel")
        if lib.narrow_abi_version() != _ABI_VERSION:
            raise FastPathUnavailable(f"the narrow kernel at {target} reports ABI {lib.narrow_abi_version()}, "
                                      f"expected {_ABI_VERSION}")
        p = ctypes.c_void_p
        for suffix in ("f64", "f32"):
            fn = getattr(lib, f"narrow_pass_{suffix}")
            fn.restype, fn.argtypes = ctypes.c_int, [p, p, p, p, p]
            fn = getattr(lib, f"narrow_train_epochs_{suffix}")  # fast/narrow_epochs.py
            fn.restype, fn.argtypes = ctypes.c_int, [p, p, p]
            fn = getattr(lib, f"narrow_wide_{suffix}")  # whether a layer's gradient is summed transposed
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int64, ctypes.c_int64]
            for name in ("narrow_vtanh", "narrow_vecmath_tanh"):
                fn = getattr(lib, f"{name}_{suffix}")
                fn.restype, fn.argtypes = None, [p, p, ctypes.c_int64]
        lib.narrow_same_values.restype = ctypes.c_int
        lib.narrow_same_values.argtypes = [p] + [ctypes.c_int64] * 2 + [p] + [ctypes.c_int64] * 5
        lib.narrow_check_tanh_f32.restype = ctypes.c_int64
        lib.narrow_check_tanh_f32.argtypes = [ctypes.c_uint64, ctypes.c_uint64, p, p]
        _libs[cc] = lib
        return lib


def _same_values(lib: ctypes.CDLL, a: Tensor, b: Tensor) -> bool:
    """Whether a and b are CPU matrices of one shape and dtype holding the same bits (narrow.c's
    narrow_same_values, through their strides); False, without reading them, where shape, dtype or device differ."""
    if a.dim() != 2 or a.shape != b.shape or a.dtype != b.dtype or a.device.type != "cpu" \
            or b.device.type != "cpu":
        return False
    return bool(lib.narrow_same_values(a.data_ptr(), *a.stride(), b.data_ptr(), *b.stride(), *a.shape,
                                       a.element_size()))


def narrow_unsupported(net: MLP, loss_fn: Loss) -> Optional[str]:
    """Why the narrow kernel cannot run this network and loss, or None when it can."""
    reason = c_loop.c_unsupported(net, loss_fn)
    if reason:
        return reason.replace("the C loop", "the narrow kernel")
    widest = max(net.sizes)
    if widest > NARROW_MAX_WIDTH:
        return f"the narrow kernel takes layers of at most {NARROW_MAX_WIDTH} units, but the widest has {widest}"
    return None


class _NarrowPlan(ctypes.Structure):
    """narrow_plan of _csrc/narrow.c."""

    _fields_ = [("n_layers", ctypes.c_int64), ("sizes", ctypes.c_void_p), ("acts", ctypes.c_void_p),
                ("slopes", ctypes.c_void_p), ("loss_kind", ctypes.c_int32), ("reduction", ctypes.c_int32),
                ("lanewise_loss", ctypes.c_int32), ("pad_", ctypes.c_int32), ("factor", ctypes.c_double),
                ("weights", ctypes.c_void_p), ("biases", ctypes.c_void_p), ("x_t", ctypes.c_void_p),
                ("y_t", ctypes.c_void_p), ("y", ctypes.c_void_p), ("n_samples", ctypes.c_int64)]


def _ptr_array(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * max(1, len(tensors)))(*[t.data_ptr() for t in tensors])


def _state(tensors) -> tuple:
    """What identifies the contents of tensors: the tensors themselves (held, so no other can take their memory),
    their version counters (bumped by every in-place change) and their memory, layout and dtype (which ``t.data =
    ...`` changes without a bump)."""
    return tuple((t, t._version, t.data_ptr(), t.shape, t.stride(), t.dtype) for t in tensors)


def _same_state(a: Optional[tuple], b: tuple) -> bool:
    return a is not None and len(a) == len(b) and all(s[0] is t[0] and s[1:] == t[1:] for s, t in zip(a, b))


class NarrowKernel:
    """The narrow pass bound to one network and loss (CPU, float32 or float64).

    ``loss_and_gradients(x, y)`` is network.loss_and_gradients(net, x, y, loss_fn) on all rows of x (B, n_0) and
    y (B, n_L) (targets as the Trainer keeps them: one-hot rows for cross-entropy): (E, Gradients without deltas).
    The parameters are read, never written.
    """

    def __init__(self, net: MLP, loss_fn: Loss):
        reason = narrow_unsupported(net, loss_fn)
        if reason:
            raise FastPathUnavailable(reason)
        self._lib = lib = load_narrow_kernel()
        self.net, self.loss_fn, self.dtype = net, loss_fn, net.dtype
        self._fn = lib.narrow_pass_f64 if net.dtype == torch.float64 else lib.narrow_pass_f32
        L = net.num_layers
        fs = net.activation_functions
        self._sizes = (ctypes.c_int64 * (L + 1))(*net.sizes)
        self._acts = (ctypes.c_int32 * L)(*[ACT_CODES[type(f)] for f in fs])
        self._slopes = (ctypes.c_double * L)(*[getattr(f, "negative_slope", 0.0) for f in fs])
        lanewise = isinstance(loss_fn, SquaredError) and not isinstance(fs[-1], Softmax)
        self._plan = _NarrowPlan(n_layers=L, sizes=ctypes.addressof(self._sizes), acts=ctypes.addressof(self._acts),
                                 slopes=ctypes.addressof(self._slopes), loss_kind=LOSS_CODES[type(loss_fn)],
                                 reduction=REDUCTION_CODES[loss_fn.reduction], lanewise_loss=int(lanewise),
                                 factor=loss_fn.c_factor())
        self._data = None  # (state of x and y, x^T, y^T, y): the data as the kernel reads it
        self._params = None  # the parameter tensors the plan points at
        self._layout = None  # their addresses, shapes and strides then
        self._keep = ()
        self._grad_ptrs = []  # [(gradient tensors, their pointer arrays)], the last two used

    def _bind(self, x: Tensor, y: Tensor) -> None:
        net = self.net
        data = self._data[0] if self._data else None  # the data's state when the plan last read it
        if data is None or not _same_state(data, _state([x, y])):
            for name, t, width in (("x", x, net.sizes[0]), ("y", y, net.sizes[-1])):
                if t.dtype != net.dtype or t.device.type != "cpu" or t.dim() != 2 or t.shape[1] != width \
                        or t.shape[0] != x.shape[0] or t.shape[0] == 0:
                    raise ValueError(f"{name} must be a CPU {net.dtype} tensor of shape (B, {width}) with B >= 1 "
                                     f"rows as in x, but got {t.dtype} on {t.device}, shape {tuple(t.shape)}")
            with torch.no_grad():  # (n_0, B), (n_L, B), (B, n_L)
                x_t, y_t, y_rows = x.t().contiguous(), y.t().contiguous(), y.contiguous()
            self._data = (_state([x, y]), x_t, y_t, y_rows)
            self._plan.x_t, self._plan.y_t, self._plan.y = x_t.data_ptr(), y_t.data_ptr(), y_rows.data_ptr()
            self._plan.n_samples = x.shape[0]
        params = net.weights + net.biases
        kept = self._params
        layout = [*map(layout_of, params)]
        if kept is None or len(params) != len(kept) or not all(a is b for a, b in zip(params, kept)) \
                or layout != self._layout:
            shapes = [(n_out, n_in) for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:])]
            shapes += [(n_out,) for n_out in net.sizes[1:]] if net.bias else []
            if not all(p.is_contiguous() and not p.is_neg() and p.device.type == "cpu" and p.dtype == net.dtype
                       and tuple(p.shape) == s for p, s in zip(params, shapes)):
                raise ValueError("the network's parameters must be contiguous CPU tensors of its dtype, shaped as "
                                 f"its sizes {net.sizes} say (an in-place t_(), a resize_ or a .data = changes "
                                 "that), but got " + ", ".join(
                                     f"{p.dtype} {tuple(p.shape)} contiguous={p.is_contiguous()} neg={p.is_neg()}"
                                     for p in params))
            weights, biases = _ptr_array(net.weights), _ptr_array(net.biases) if net.bias else None
            self._plan.weights = ctypes.addressof(weights)
            self._plan.biases = ctypes.addressof(biases) if biases is not None else None
            self._keep = (weights, biases)  # the plan points into these: keep them alive
            self._params, self._layout = params, layout

    def data_changed(self, x: Tensor, y: Tensor) -> bool:
        """Whether the copy of the data the plan reads no longer holds x's and y's values (a write through
        ``x.data`` or a numpy view bumps no version); the copy is then dropped and made again at the next pass."""
        if self._data is None:
            return False
        _, x_t, y_t, y_rows = self._data  # (y_rows may be y itself; the transposed copies are copies)
        same = (_same_values(self._lib, x_t.t(), x) and _same_values(self._lib, y_t.t(), y)
                and (y_rows is y or _same_values(self._lib, y_rows, y)))  # each checks shapes, dtypes, device
        if not same:
            self._data = None
        return not same

    def new_gradients(self) -> Gradients:
        """Buffers for ``loss_and_gradients(..., grads=)``: dE/dW and dE/db shaped like the parameters."""
        return Gradients(weights=[torch.empty_like(w) for w in self.net.weights],
                         biases=[torch.empty_like(b) for b in self.net.biases])

    def _grad_pointers(self, grads: Gradients) -> tuple:
        """The C arrays of pointers to grads' tensors, kept for the last two buffers (NarrowBatch's ping-pong)."""
        tensors = grads.weights + grads.biases
        for kept, gw, gb in self._grad_ptrs:
            if len(kept) == len(tensors) and all(a is b for a, b in zip(kept, tensors)):
                return gw, gb
        gw, gb = _ptr_array(grads.weights), _ptr_array(grads.biases) if self.net.bias else None
        self._grad_ptrs = [(tensors, gw, gb), *self._grad_ptrs[:1]]  # holds the tensors: their memory stays theirs
        return gw, gb

    # No torch.no_grad() here: nothing below records autograd (a C call writes into fresh tensors; _bind copies the
    # data under no_grad), and the decorator costs microseconds a call, several calls an epoch.
    def loss_and_gradients(self, x: Tensor, y: Tensor, *, grads: Optional[Gradients] = None,
                           output: Optional[Tensor] = None):
        """(E as a 0-dim tensor, Gradients) at the current parameters; ``output`` (n_L, B), if given, receives the
        network's output x^L transposed (for the accuracy)."""
        self._bind(x, y)
        grads = grads if grads is not None else self.new_gradients()
        loss = torch.empty((), dtype=self.net.dtype)
        gw, gb = self._grad_pointers(grads)
        status = self._fn(ctypes.byref(self._plan), loss.data_ptr(), gw, gb,
                          output.data_ptr() if output is not None else None)
        if status:
            raise MemoryError("the narrow kernel could not allocate its workspace") if status == 1 else \
                RuntimeError(f"the narrow kernel returned status {status}")
        return loss, grads

    def loss(self, x: Tensor, y: Tensor, *, output: Optional[Tensor] = None) -> Tensor:
        """E at the current parameters, the forward phase alone (an evaluation); ``output`` as above."""
        self._bind(x, y)
        loss = torch.empty((), dtype=self.net.dtype)
        status = self._fn(ctypes.byref(self._plan), loss.data_ptr(), None, None,
                          output.data_ptr() if output is not None else None)
        if status:
            raise MemoryError("the narrow kernel could not allocate its workspace") if status == 1 else \
                RuntimeError(f"the narrow kernel returned status {status}")
        return loss


class NarrowBatch:
    """Batch mode through the narrow kernel, one pass an epoch: the update at the start of an epoch uses the
    gradients kept by the last pass, and the pass at the new parameters is the epoch's evaluation of the training
    split (E, and the output for the accuracy) as well as the next update's forward and backward phase.

    ``update(x, y, lr)`` makes one batch-mode update and returns its loss E (before the step);
    ``evaluate(x, y, with_output)`` gives (E, output (B, n_L) or None) at the current parameters. Either runs the
    pass only when nothing valid is kept for the current parameters and data.

    The pass is training work even when an evaluation made it: ``shared_seconds`` is the time of the kept pass the
    last update used (0 where the update made its own, inside its caller's clock), for the Trainer's train_seconds.
    """

    def __init__(self, net: MLP, loss_fn: Loss):
        self.kernel = NarrowKernel(net, loss_fn)
        self._held_out = NarrowKernel(net, loss_fn)  # the test split's forward passes, with its own data bound
        self.net = net
        self._grads = [self.kernel.new_gradients(), self.kernel.new_gradients()]  # ping-pong: one is last_grads
        self._which = 0
        self._output = None
        self._kept = None  # (state of parameters and data, E, Gradients, output or None)
        self.kept_seconds = 0.0  # the seconds the kept pass took
        self.shared_seconds = 0.0  # the seconds of the kept pass the last update used (see above)
        self.grads = None  # the gradients of the last update (Trainer.last_grads)
        self.passes = 0  # kernel passes made (the tests count them)
        self._sealed = None  # the parameters' values as the last run left them (end_run)

    def end_run(self) -> None:
        """At the end of a Trainer.run: note the parameters' values, for check_values to compare."""
        params = self.net.weights + self.net.biases
        self._sealed = [p.clone() for p in params] if self._kept is not None else None

    def check_values(self, train: tuple, test: tuple, *, begin_run: bool) -> None:
        """Between runs (at the start of a Trainer.run, or before an evaluation outside one): forget the kept pass
        unless the parameters and the training data hold the values the last run (or evaluation) left, and the data
        copies whose values changed. Between runs a user may write through ``p.data``, ``x_train.data`` or a numpy
        view, which bumps no version counter: the kept pass and the copies are keyed on versions, so only the values
        tell. At a run's start the note is used up (an interrupted run leaves none for the next)."""
        sealed = self._sealed
        if begin_run:
            self._sealed = None
        params = self.net.weights + self.net.biases
        data_changed = self.kernel.data_changed(*train)
        self._held_out.data_changed(*test)
        if self._kept is not None and (data_changed or sealed is None or len(sealed) != len(params) or not all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(sealed, params))):
            self._kept, self._sealed = None, None

    def is_bound_to(self, net: MLP) -> bool:
        """Whether this is still the right engine for net (its dtype and device unchanged; new parameter tensors
        are rebound at the next pass)."""
        return net is self.net and net.dtype == self.kernel.dtype and net.device.type == "cpu"

    def _key(self, x: Tensor, y: Tensor) -> tuple:
        return _state([*self.net.weights, *self.net.biases, x, y])

    def _pass(self, x: Tensor, y: Tensor, with_output: bool) -> tuple:
        kept, key = self._kept, self._key(x, y)
        if kept is not None and _same_state(kept[0], key) and (kept[3] is not None or not with_output):
            return kept
        self._which ^= 1
        grads = self._grads[self._which]
        output = None
        if with_output:
            if self._output is None or self._output.shape != (self.net.sizes[-1], x.shape[0]):
                self._output = torch.empty(self.net.sizes[-1], x.shape[0], dtype=self.net.dtype)
            output = self._output
        began = time.perf_counter()
        loss, _ = self.kernel.loss_and_gradients(x, y, grads=grads, output=output)
        self.kept_seconds = time.perf_counter() - began
        self.passes += 1
        self._kept = (key, loss, grads, output)
        return self._kept

    def evaluate(self, x: Tensor, y: Tensor, with_output: bool = False) -> tuple:
        """(E, the output (B, n_L) or None) at the current parameters: the training split's evaluation."""
        _, loss, _, output = self._pass(x, y, with_output)
        return loss, (output.t() if output is not None else None)

    def evaluate_held_out(self, x: Tensor, y: Tensor, with_output: bool = False) -> tuple:
        """(E, the output (B, n_L) or None) on another split (the test split): the forward phase alone."""
        output = torch.empty(self.net.sizes[-1], x.shape[0], dtype=self.net.dtype) if with_output else None
        loss = self._held_out.loss(x, y, output=output)
        return loss, (output.t() if output is not None else None)

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        """One batch-mode update (network.update on the kept or fresh gradients); returns E before the step."""
        kept = self._kept
        _, loss, grads, _ = self._pass(x, y, False)
        self.shared_seconds = self.kept_seconds if self._kept is kept else 0.0  # kept: made outside the update
        update(self.net.weights, self.net.biases, grads, lr)
        self.grads = grads
        self._kept = None  # the parameters changed: the next evaluation passes again
        return loss
