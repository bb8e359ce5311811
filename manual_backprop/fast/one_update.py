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
import operator
import threading
import weakref
from typing import Optional

import torch
from torch import Tensor

from ..derived import ONE_STEP, ONE_UPDATE
from ..losses import Loss
from ..network import MLP, Gradients, update
from .c_loop import C_ULPS, _Plan, c_unsupported, load_kernel
from .common import C_WORK_LIMIT, FastPathUnavailable
from .csource import ACT_CODES, LOSS_CODES, REDUCTION_CODES

__all__ = ["ONE_UPDATE_ULPS", "OneUpdatePlan", "loss_and_gradients", "plan_of", "register", "unavailable"]

ONE_UPDATE_ULPS = C_ULPS  # the C loop's bound: the same functions compute every value

_plans: dict = {}  # id(net) -> (weakref to net, its plan); the entry leaves with the net (_forget)
_lock = threading.Lock()
_data_ptr = Tensor.data_ptr
_shape = operator.attrgetter("shape")
_fma_rounding: dict = {}  # dtype -> whether torch's add_(alpha) rounds as the C step's fma on this machine
unavailable: Optional[str] = None  # why the C library could not be built here (None: not tried, or built)


class OneUpdatePlan:
    """What one network and loss need for the call, built once: the C plan (architecture, loss, parameter
    pointers), the parameters it points at (held, so none is freed and its memory reused while the plan lives), and
    templates for the outputs (``torch.empty_like`` of a template is the cheapest fresh tensor)."""

    def __init__(self, net: MLP, loss_fn: Loss, fn, step_fn=None):
        L = net.num_layers
        self.loss_fn, self.fn, self.dtype = loss_fn, fn, net.dtype  # fn None: a refusal, kept as cheaply
        self.functions = list(net.activation_functions)
        self.params = [*net.weights, *net.biases]
        self.ptrs = list(map(_data_ptr, self.params))
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
        self.step_fn = step_fn  # mbp_step, or None where torch's add_ does not round as its fma does
        self.last = None  # (Gradients, its tensors, their addresses and shapes, the out array) of the last call
        self.param_shapes = [p.shape for p in self.params]

    def fits(self, net: MLP, loss_fn: Loss) -> bool:
        """Whether this plan still describes net and loss_fn: the same parameter tensors at the same addresses (a
        new tensor, ``net.to``, a ``set_`` or a load of other tensors all fail it), the same f's and the same loss."""
        functions = net.activation_functions
        return (self.holds(net) and len(functions) == len(self.functions)
                and all(map(operator.is_, functions, self.functions))
                and (loss_fn is self.loss_fn or loss_fn == self.loss_fn))

    def holds(self, net: MLP) -> bool:
        """Whether net's parameters are still the plan's: the same tensors at the same addresses."""
        params = [*net.weights, *net.biases]
        return (len(params) == len(self.params) and all(map(operator.is_, params, self.params))
                and list(map(_data_ptr, params)) == self.ptrs)

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
        ptrs = list(map(_data_ptr, outs))
        L, nb = self.L, self.n_bias
        if not nb:
            ptrs[L:L] = [None] * L  # no biases: NULL for dE/db[k]
        out = self.out_type(*ptrs)
        status = self.fn(self.plan_ref, _data_ptr(x), _data_ptr(y), B, out)
        if status:
            raise MemoryError("the C loop could not allocate its workspace") if status == 1 else \
                RuntimeError(f"mbp_loss_and_grads returned status {status}")
        grads = Gradients(weights=outs[:L], biases=outs[L:L + nb], deltas=outs[L + nb:-1])
        if self.step_fn is not None:
            given = outs[:L + nb]
            self.last = (grads, given, ptrs[:L + nb], out)
        return outs[-1], grads

    def step(self, net: MLP, grads: Gradients, lr: float) -> bool:
        """network.update(net, grads, lr) in one C call, where grads is what this plan's last call returned, its
        lists holding the same tensors at the same addresses and shapes, and net's parameters are still the plan's.
        Returns whether it stepped."""
        last = self.last
        if last is None or grads is not last[0]:
            return False
        given = [*grads.weights, *grads.biases]
        if not (len(given) == len(last[1]) and all(map(operator.is_, given, last[1]))
                and list(map(_data_ptr, given)) == last[2] and list(map(_shape, given)) == self.param_shapes
                and self.holds(net)):
            return False
        if self.step_fn(self.plan_ref, last[3], -lr):
            raise RuntimeError("mbp_step refused its plan")
        return True


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
    return OneUpdatePlan(net, loss_fn, fn, _step_fn(lib, net.dtype))


def loss_and_gradients(net: MLP, x: Tensor, y: Tensor, loss_fn: Loss):
    """network.loss_and_gradients(net, x, y, loss_fn) through one C call: (E, Gradients), or None where the call
    does not apply (network.py's functions then run). x, y: checked by MLP.loss_and_grads, (B, n_0) and (B, n_L)."""
    got = _plans.get(id(net))
    if got is None or got[0]() is not net or not got[1].fits(net, loss_fn):
        with _lock:
            plan = _build(net, loss_fn)
            _plans[id(net)] = (weakref.ref(net, _forget(id(net))), plan)
    else:
        plan = got[1]
    if plan.fn is None or x.shape[0] * plan.macs > C_WORK_LIMIT:
        return None
    if not x.is_contiguous():
        x = x.contiguous()
    if not y.is_contiguous():
        y = y.contiguous()
    return plan.run(x, y)


def _step_fn(lib, dtype: torch.dtype):
    """mbp_step for dtype, or None where torch's add_(g, alpha) does not give the fma's results here (a build of
    torch without fused multiply-adds): checked once per dtype on values where one rounding and two differ."""
    fn = lib.mbp_step_f64 if dtype == torch.float64 else lib.mbp_step_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_double if dtype == torch.float64 else ctypes.c_float]
    if dtype not in _fma_rounding:
        _fma_rounding[dtype] = _step_matches_add(fn, dtype)
    return fn if _fma_rounding[dtype] else None


def _step_matches_add(fn, dtype: torch.dtype) -> bool:
    """One step of a 1x1000 layer through fn and through network.update, bit for bit; the probe's values make
    a two-rounding multiply-add differ from the fused one in about one element in ten."""
    gen = torch.Generator().manual_seed(0)
    w, g = torch.randn(1, 1000, generator=gen, dtype=dtype), torch.randn(1, 1000, generator=gen, dtype=dtype)
    ref = w.clone()
    update([ref], [], Gradients(weights=[g]), 0.1)
    sizes, acts, slopes = (ctypes.c_int64 * 2)(1000, 1), (ctypes.c_int32 * 1)(0), (ctypes.c_double * 1)(0.0)
    weights, grads = (ctypes.c_void_p * 1)(w.data_ptr()), (ctypes.c_void_p * 2)(g.data_ptr(), None)
    plan = _Plan(n_layers=1, sizes=ctypes.addressof(sizes), acts=ctypes.addressof(acts),
                 slopes=ctypes.addressof(slopes), weights=ctypes.addressof(weights), biases=None)
    return fn(ctypes.byref(plan), grads, -0.1) == 0 and torch.equal(w, ref)


def step(net: MLP, grads: Gradients, lr: float) -> bool:
    """MLP.step's derivative (network.ONE_STEP): network.update through one C call where grads is what net's
    last ``loss_and_grads`` C call returned (OneUpdatePlan.step says exactly when); False elsewhere."""
    got = _plans.get(id(net))
    return got is not None and got[0]() is net and got[1].fn is not None and got[1].step(net, grads, lr)


def _forget(key: int):
    """The callback that drops net's plan when net is collected (unless a new net took its id and its entry)."""
    def drop(ref):  # no lock: a collection may run while _lock is held; each dict step is atomic
        if _plans.get(key, (None,))[0] is ref:
            _plans.pop(key, None)
    return drop


def plan_of(net: MLP) -> Optional[OneUpdatePlan]:
    """net's current plan, or None before its first call (tests and the benchmark look at it)."""
    got = _plans.get(id(net))
    return got[1] if got is not None and got[0]() is net else None


def register() -> None:
    """Put ``loss_and_gradients`` into network.ONE_UPDATE and ``step`` into network.ONE_STEP, the paths
    MLP.loss_and_grads and MLP.step ask first."""
    ONE_UPDATE.register(loss_and_gradients)
    ONE_STEP.register(step)
