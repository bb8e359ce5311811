"""One update's loss, gradients and deltas in one C call: ``MLP.loss_and_grads`` for small networks on the CPU.

A declared derivative of network.loss_and_gradients. For a small network the reference's two phases are about 25
eager torch calls of a few microseconds each, and the arithmetic is a fraction of one; here they are one call of
``mbp_loss_and_grads`` (_csrc/mlp_grads.c): the C loop's own forward phase, output delta and hidden deltas, and its
update's gradient sums without the step, so the parameters are read and never written. Its results are the C
loop's bit for bit, and E, every dE/dW, dE/db and every delta agree with the reference within ``ONE_UPDATE_ULPS``
(the C loop's C_ULPS) ulps of their scale: tests/proof/test_one_update.py proves both, for every activation x
output x loss, ordinary and saturated, float64 and float32.

network.py never imports this module: ``register()`` (called when manual_backprop is imported) puts
``loss_and_gradients`` below into network.ONE_UPDATE, which MLP.loss_and_grads asks first after its checks. It
applies where the C loop does (CPU, float32 or float64, activations and loss with C code, a plain MLP) and while one
update's forward phase costs at most C_WORK_LIMIT multiply-adds (where one C call beats torch's calls); elsewhere
it returns None and network.py's functions run. The C library is built at the first call that applies (then cached
on disk); without a working compiler the torch path runs. The pure path, network.py alone: MANUAL_BACKPROP_PURE=1,
or ``with network.ONE_UPDATE.off():``.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Optional

import torch
from torch import Tensor

from ..derived import ONE_UPDATE
from ..losses import Loss
from ..network import MLP, Gradients
from .c_loop import C_ULPS, _Plan, c_unsupported, load_kernel
from .common import C_WORK_LIMIT, FastPathUnavailable
from .csource import ACT_CODES, LOSS_CODES, REDUCTION_CODES

__all__ = ["ONE_UPDATE_ULPS", "OneUpdatePlan", "loss_and_gradients", "register", "unavailable"]

ONE_UPDATE_ULPS = C_ULPS  # the C loop's bound: the same functions compute every value

_plans: "weakref.WeakKeyDictionary[MLP, OneUpdatePlan]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
unavailable: Optional[str] = None  # why the C library could not be built here (None: not tried, or built)


class OneUpdatePlan:
    """What one network and loss need for the call, built once: the C plan (architecture, loss, parameter
    pointers), the parameters it points at (held, so none is freed and its memory reused while the plan lives), and
    templates for the outputs (``torch.empty_like`` of a template is the cheapest fresh tensor)."""

    def __init__(self, net: MLP, loss_fn: Loss, fn):
        L = net.num_layers
        self.loss_fn, self.fn, self.dtype = loss_fn, fn, net.dtype  # fn None: a refusal, kept as cheaply
        self.functions = list(net.activation_functions)
        self.params = [*net.weights, *net.biases]
        self.ptrs = [p.data_ptr() for p in self.params]
        if fn is None:
            return
        self.macs = sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))  # per sample, C_WORK_LIMIT's unit
        self.sizes = list(net.sizes)
        self._sizes = (ctypes.c_int64 * (L + 1))(*net.sizes)
        self._acts = (ctypes.c_int32 * L)(*[ACT_CODES[type(f)] for f in net.activation_functions])
        self._slopes = (ctypes.c_double * L)(*[getattr(f, "negative_slope", 0.0) for f in net.activation_functions])
        self._weights = (ctypes.c_void_p * L)(*[w.data_ptr() for w in net.weights])
        self._biases = (ctypes.c_void_p * L)(*[b.data_ptr() for b in net.biases]) if net.bias else None
        self.plan = _Plan(n_layers=L, sizes=ctypes.addressof(self._sizes), acts=ctypes.addressof(self._acts),
                          slopes=ctypes.addressof(self._slopes), loss_kind=LOSS_CODES[type(loss_fn)],
                          reduction=REDUCTION_CODES[loss_fn.reduction], factor=loss_fn.c_factor(),
                          weights=ctypes.addressof(self._weights),
                          biases=ctypes.addressof(self._biases) if self._biases is not None else None)
        self.plan_ref = ctypes.byref(self.plan)
        self.L, self.n_bias = L, len(net.biases)
        self.out_type = ctypes.c_void_p * (3 * L + 1)
        self.grad_templates = [torch.empty_like(p) for p in self.params]
        self.templates: dict = {}  # B -> [dE/dW[k] ..., dE/db[k] ..., deltas[k] (B, n_{k+1}) ..., E]
        self.small = sum(p.numel() for p in self.params) <= 4096

    def fits(self, net: MLP, loss_fn: Loss) -> bool:
        """Whether this plan still describes net and loss_fn: the same parameter tensors at the same addresses (a
        new tensor, ``net.to``, a ``set_`` or a load of other tensors all fail it), the same f's and the same loss."""
        params = self.params
        if len(net.weights) + len(net.biases) != len(params):
            return False
        for p, q, ptr in zip([*net.weights, *net.biases], params, self.ptrs):
            if p is not q or p.data_ptr() != ptr:
                return False
        if any(f is not g for f, g in zip(net.activation_functions, self.functions)) \
                or len(net.activation_functions) != len(self.functions):
            return False
        return loss_fn is self.loss_fn or loss_fn == self.loss_fn

    def run(self, x: Tensor, y: Tensor):
        """(E as a 0-dim tensor, Gradients with deltas) of x (B, n_0) and y (B, n_L), contiguous, of the dtype."""
        B = x.shape[0]
        templates = self.templates.get(B)
        if templates is None:
            templates = self.templates[B] = [*self.grad_templates, *[torch.empty(B, n, dtype=self.dtype)
                                                                     for n in self.sizes[1:]],
                                              torch.empty((), dtype=self.dtype)]
        # fresh tensors every call (the caller owns them); for a small network one _foreach_neg of the templates
        # makes them in one call (their values, overwritten below, are never read), a third cheaper than empty_like
        outs = list(torch._foreach_neg(templates)) if self.small else [torch.empty_like(t) for t in templates]
        ptrs = [t.data_ptr() for t in outs]
        L, nb = self.L, self.n_bias
        if not nb:
            ptrs[L:L] = [None] * L  # no biases: NULL for dE/db[k]
        status = self.fn(self.plan_ref, x.data_ptr(), y.data_ptr(), B, self.out_type(*ptrs))
        if status:
            raise MemoryError("the C loop could not allocate its workspace") if status == 1 else \
                RuntimeError(f"mbp_loss_and_grads returned status {status}")
        return outs[-1], Gradients(weights=outs[:L], biases=outs[L:L + nb], deltas=outs[L + nb:-1])


def _build(net: MLP, loss_fn: Loss) -> OneUpdatePlan:
    """A plan for net and loss_fn; a refusal (fn None) where the C call cannot run them: a population, another
    device or dtype, an f or loss without C code (c_unsupported's reasons), parameters not contiguous, no compiler."""
    global unavailable
    if type(net) is not MLP or any(w.dim() != 2 for w in net.weights) or c_unsupported(net, loss_fn) \
            or not all(p.is_contiguous() and p.dtype == net.dtype and p.device.type == "cpu"
                       for p in [*net.weights, *net.biases]) or unavailable is not None:
        return OneUpdatePlan(net, loss_fn, None)
    try:
        lib = load_kernel()
    except FastPathUnavailable as err:  # no compiler: the torch path, which is the reference, runs
        unavailable = str(err)
        return OneUpdatePlan(net, loss_fn, None)
    fn = lib.mbp_loss_and_grads_f64 if net.dtype == torch.float64 else lib.mbp_loss_and_grads_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    return OneUpdatePlan(net, loss_fn, fn)


def loss_and_gradients(net: MLP, x: Tensor, y: Tensor, loss_fn: Loss):
    """network.loss_and_gradients(net, x, y, loss_fn) through one C call: (E, Gradients), or None where the call
    does not apply (network.py's functions then run). x, y: checked by MLP.loss_and_grads, (B, n_0) and (B, n_L)."""
    plan = _plans.get(net)
    if plan is None or not plan.fits(net, loss_fn):
        with _lock:
            plan = _plans[net] = _build(net, loss_fn)
    if plan.fn is None or x.shape[0] * plan.macs > C_WORK_LIMIT:
        return None
    if not x.is_contiguous():
        x = x.contiguous()
    if not y.is_contiguous():
        y = y.contiguous()
    return plan.run(x, y)


def register() -> None:
    """Put ``loss_and_gradients`` into network.ONE_UPDATE, the path MLP.loss_and_grads asks first."""
    ONE_UPDATE.register(loss_and_gradients)
