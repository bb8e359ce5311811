"""One update's loss, gradients and deltas in one C call: ``MLP.loss_and_grads`` for small networks on the CPU.

A declared derivative of network.loss_and_gradients. For a small network the reference's two phases are about 25
eager torch calls of a few microseconds each, and the arithmetic is a fraction of one; here they are one call of
``mbp_loss_and_grads`` (_csrc/mlp_grads.c): the C loop's own forward phase, output delta and hidden deltas, and its
update's gradient sums without the step, so the parameters are read and never written. Its results are the C
loop's bit for bit, and E, every dE/dW, dE/db and every delta agree with the reference within ``ONE_UPDATE_ULPS``
(the C loop's C_ULPS) ulps of their scale: tests/proof/test_one_update.py proves both, for every activation x
output x loss, ordinary and saturated, float64 and float32. The results are written into one of two kept sets of
tensors per batch size, each tensor only where nothing but the set reaches it (_Outputs): what a caller keeps is
never overwritten, and a loop that rebinds its names each update makes no tensor (test_one_update_outputs.py).

network.py never imports this module: ``register()`` (called when manual_backprop is imported) puts
``loss_and_gradients`` below into network.ONE_UPDATE, which MLP.loss_and_grads asks first after its checks. It
applies where the C loop does (CPU, float32 or float64, activations and loss with C code, a plain MLP) and while one
update's forward phase costs at most C_WORK_LIMIT multiply-adds (where one C call beats torch's calls); elsewhere
it returns None and network.py's functions run. The C library is built at the first call that applies (then cached
on disk); without a working compiler the torch path runs. The pure path, network.py alone: MANUAL_BACKPROP_PURE=1,
or ``with network.ONE_UPDATE.off():``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import operator
import sys
import threading
import weakref
from typing import Optional

import torch
from torch import Tensor

from ..derived import ONE_STEP, ONE_UPDATE, changes_made
from ..losses import Loss
from ..network import MLP, Gradients, update
from .c_loop import C_ULPS, _Plan, c_unsupported, load_kernel
from . import tensor_state
from .common import C_WORK_LIMIT, FastPathUnavailable, mark_written
from .csource import ACT_CODES, LOSS_CODES, REDUCTION_CODES

__all__ = ["ONE_UPDATE_ULPS", "OneUpdatePlan", "add_is_fused", "loss_and_gradients", "plan_of", "register",
           "unavailable"]

ONE_UPDATE_ULPS = C_ULPS  # the C loop's bound: the same functions compute every value

_plans: dict = {}  # id(net) -> (weakref to net, its plan); the entry leaves with the net (_forget)
_lock = threading.Lock()
_data_ptr = Tensor.data_ptr
_shape = operator.attrgetter("shape")
_POOL = 2  # output sets kept per batch size: a loop that rebinds its names each update alternates between two
_BATCH_SIZES = 8  # batch sizes whose sets a plan keeps (a run has one or two: its batch and the last, partial one)
_use_count = Tensor._use_count  # references to the tensor's C++ object (a DLPack capsule, autograd, a C++ list)
_storage_use_count = torch._C._storage_Use_Count  # references to its memory (views, .numpy(), .detach())
_version = operator.attrgetter("_version")  # in-place changes, of values or of shape and strides
_requires_grad = operator.attrgetter("requires_grad")
_grad = operator.attrgetter("grad")  # a .grad set on a result (without the C++ checks; with them, its autograd metadata)
_dtype = operator.attrgetter("dtype")  # ``t.data = t.view(torch.int32)`` changes it, and nothing else of the above
_stride = Tensor.stride
_is_set_to = Tensor.is_set_to
_fma_rounding: dict = {}  # dtype -> whether torch's add_(alpha) rounds as the C step's fma on this machine
unavailable: Optional[str] = None  # why the C library could not be built here (None: not tried, or built)
CHECKS_IN_CPP = True  # the plans made from now on check in C++ where it builds (tensor_state.py); False: in Python


class OneUpdatePlan:
    """What one network and loss need for the call, built once: the C plan (architecture, loss, parameter
    pointers), the parameters it points at (held, so none is freed and its memory reused while the plan lives), and
    the sets of output tensors its calls returned (_Outputs), each tensor reused once no caller holds it."""

    def __init__(self, net: MLP, loss_fn: Loss, fn, step_fn=None):
        L = net.num_layers
        self.loss_fn, self.fn, self.dtype = loss_fn, fn, net.dtype  # fn None: a refusal, kept as cheaply
        self.lib = None  # the C++ checks (below), where the call runs and they build
        self.functions = list(net.activation_functions)
        self.changes = changes_made()  # the f's and the loss's attributes as the C plan copies them below
        self.params = [*net.weights, *net.biases]
        # views with each parameter's own storage, offset, shape and strides: is_set_to compares all four at once
        # (an in-place t_() or resize_, a set_, a ``.data =`` all fail it)
        self.views = [p.as_strided(p.shape, p.stride(), p.storage_offset()) for p in self.params]
        # and their addresses and dtypes, which it does not compare: ``p.untyped_storage().resize_()`` moves the
        # memory under the same storage, ``p.data = p.view(torch.int64)`` keeps all four
        self.addresses_dtypes = [*(p.data_ptr() for p in self.params), *(p.dtype for p in self.params)]
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
        self.pools: dict = {}  # B -> a deque of _Outputs, the most recent first
        self.step_fn = step_fn  # mbp_step, or None where torch's add_ does not round as its fma does
        self.last = None  # (Gradients, its tensors, what step() compares, the out array) of the last call
        self.param_shapes = [p.shape for p in self.params]
        self.param_strides = [torch.empty(p.shape).stride() for p in self.params]  # contiguous, as the C step reads
        # what step() finds of the gradients' layouts and dtypes (after the gradients' own addresses)
        self.step_tail = [*self.param_shapes, *self.param_strides, *(self.dtype for _ in self.params)]
        # The checks in C++, in the calls (tensor_state.py), where they can be built: the parameters' addresses,
        # layouts and dtypes as now, then each call's output set; else the same questions asked from Python.
        self.lib = tensor_state.checker() if CHECKS_IN_CPP else None
        if self.lib is not None:
            self._param_impls = tensor_state.impls(self.params)
            self._param_state = tensor_state.states(self.lib, self._param_impls, len(self.params))
            self.checked = tensor_state.Checked(
                plan=ctypes.addressof(self.plan), loss_and_grads=ctypes.cast(fn, ctypes.c_void_p).value,
                step=ctypes.cast(step_fn, ctypes.c_void_p).value if step_fn is not None else None,
                is_f32=int(self.dtype == torch.float32), params=ctypes.addressof(self._param_impls),
                n_params=len(self.params), params_state=ctypes.addressof(self._param_state))
            self.checked_ref = ctypes.byref(self.checked)

    def fits(self, net: MLP, loss_fn: Loss) -> bool:
        """Whether this plan still describes net and loss_fn: the same parameter tensors with the same memory and
        layout (a new tensor, ``net.to``, a ``set_``, an in-place ``t_()``, a load of other tensors all fail it), the
        same f's and the same loss, none of their attributes changed since (``f.negative_slope = ...``)."""
        functions = net.activation_functions
        return (self.holds(net) and changes_made() == self.changes and len(functions) == len(self.functions)
                and all(map(operator.is_, functions, self.functions))
                and (loss_fn is self.loss_fn or loss_fn == self.loss_fn))

    def holds(self, net: MLP) -> bool:
        """Whether net's parameters are still the plan's: the same tensors, with the same storage, layout, address
        (the plan's pointers) and dtype. (With the checks in C++, the calls check all but the first themselves.)"""
        params = [*net.weights, *net.biases]
        return (len(params) == len(self.params) and all(map(operator.is_, params, self.params))
                and (self.lib is not None or (all(map(_is_set_to, params, self.views))
                                              and [*map(_data_ptr, params), *map(_dtype, params)]
                                              == self.addresses_dtypes)))

    def run(self, x: Tensor, y: Tensor):
        """(E as a 0-dim tensor, Gradients with deltas) of x (B, n_0) and y (B, n_L), contiguous, of the dtype."""
        B = x.shape[0]
        pool = self.pools.get(B)
        if pool is None:
            if len(self.pools) >= _BATCH_SIZES:
                with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # another thread's
                    del self.pools[next(iter(self.pools))]  # the batch size seen first: its sets to their holders
            pool = self.pools[B] = collections.deque()
        try:  # (a try costs nothing where nothing is raised; a suppress() context costs a call)
            outputs = pool.pop() if len(pool) >= _POOL else None  # the oldest set, taken out (atomic: no other
        except IndexError:  # thread's call can take it too); another thread took the last one
            outputs = None
        if outputs is None:
            outputs = _Outputs(self, B)
        else:
            outputs.ready()
        if self.lib is None:
            status = self.fn(self.plan_ref, _data_ptr(x), _data_ptr(y), B, outputs.out)
        else:  # the set's tensors (after ready's Python counts) and the parameters checked in the call
            call, args = self.lib.mbp_checked_loss_and_grads, (self.checked_ref, outputs.ref, _data_ptr(x),
                                                               _data_ptr(y), B)
            status = call(*args)
            if status <= -2:  # a tensor of the set changed since it was made: a new one in its place, once
                outputs.renew_changed()
                status = call(*args)
            if status < 0:  # a parameter moved or changed its layout or dtype (or a set's tensor cannot be made
                pool.append(outputs)  # one of ours): the caller makes a new plan, or network.py runs
                return None
        if status:
            raise MemoryError("the C loop could not allocate its workspace") if status == 1 else \
                RuntimeError(f"mbp_loss_and_grads returned status {status}")
        outs = outputs.tensors
        L, nb = self.L, self.n_bias
        grads = Gradients(outs[:L], outs[L:L + nb], outs[L + nb:-1])  # weights, biases, deltas
        if self.step_fn is not None:
            self.last = (grads, outs[:L + nb], outputs.step_key, outputs.out, outputs)
        pool.appendleft(outputs)  # the most recent set: the caller holds it now
        if len(pool) > _POOL:
            pool.pop()  # where threads made sets at once, the oldest is left to its holders
        return outs[-1], grads

    def step(self, net: MLP, grads: Gradients, lr: float) -> bool:
        """network.update(net, grads, lr) in one C call, where grads is what this plan's last call returned, its
        lists holding the same tensors at the same addresses, shapes and strides, and net's parameters are still the
        plan's. Returns whether it stepped."""
        last = self.last
        if last is None or grads is not last[0]:
            return False
        given = [*grads.weights, *grads.biases]
        if self.lib is not None:  # the gradients' and the parameters' addresses, layouts, dtypes: in the call
            if not (len(given) == len(last[1]) and all(map(operator.is_, given, last[1]))
                    and self.holds(net) and self.lib.mbp_checked_step(self.checked_ref, last[4].ref, -lr) == 0):
                return False
            mark_written(self.params)
            return True
        if not (len(given) == len(last[1]) and all(map(operator.is_, given, last[1]))
                and [*map(_data_ptr, given), *map(_shape, given), *map(_stride, given), *map(_dtype, given)]
                == last[2] and self.holds(net)):  # the gradients' addresses, layouts, dtypes; the parameters (holds)
            return False
        if self.step_fn(self.plan_ref, last[3], -lr):
            raise RuntimeError("mbp_step refused its plan")
        mark_written(self.params)
        return True


class _Outputs:
    """One set of the call's output tensors for batch size B: [dE/dW[k] ..., dE/db[k] ..., deltas[k] (B, n_{k+1})
    ..., E], the C call's array of their addresses, and what ready() compares with.

    The results belong to the caller. A tensor of the set is written again by a later call only where nothing but
    the set can reach it or its memory: no Python reference (a name, a list, a Gradients), no view or array over the
    memory, no C++ reference, no weak reference, no change since it was made (of its values, shape, strides, memory,
    dtype or address), no requires_grad, no .grad, no attribute set on it; ready() puts a new tensor in the place of any other, which its holder keeps.
    So what a caller keeps is never overwritten (test_one_update_outputs.py), and a loop that rebinds its names each
    update makes no tensor at all (making seven cost about as much as the C call and its checks on a small network)."""

    def __init__(self, plan: OneUpdatePlan, B: int):
        self.dtype, L = plan.dtype, plan.L
        self.shapes = [*plan.param_shapes, *((B, n) for n in plan.sizes[1:]), ()]
        n = len(self.shapes)
        # tensor i's place in the C call's array: dE/dW, dE/db (NULL where the net has no biases), deltas, E
        self.place = list(range(n)) if plan.n_bias else [i if i < L else i + L for i in range(n)]
        self.tensors, self.storages, self.cdata, self.ptrs = [None] * n, [None] * n, [None] * n, [0] * n
        self.dicts = [None] * n  # each tensor's attribute dict, made empty: an attribute a caller sets lands there
        self.out = plan.out_type()  # zeros: NULL where no tensor is placed
        self.n_step, self.step_tail = L + plan.n_bias, plan.step_tail
        for i in range(n):
            self._renew(i)
        self.lib = plan.lib
        if self.lib is not None:  # the C++ checks: the tensors' TensorImpls (held, so that none is freed or swapped
            self.impls = tensor_state.impls(self.tensors)  # under the set) and their states, for the calls
            self.lib.mbp_tensor_hold(self.impls, n, 1)
            self.cstate = tensor_state.states(self.lib, self.impls, n)
            self.ref = ctypes.byref(tensor_state.OutputsRef(
                out=ctypes.addressof(self.out), impls=ctypes.addressof(self.impls), n=n,
                state=ctypes.addressof(self.cstate), n_step=self.n_step))
        self.state = self._state()  # as counted now, while only this set holds its tensors
        self.step_key = [*self.ptrs[:self.n_step], *self.step_tail]  # what step() compares (OneUpdatePlan.step)

    def _renew(self, i: int) -> None:
        if torch.is_inference_mode_enabled():  # a call inside inference_mode: a tensor with a version counter
            with torch.inference_mode(False), torch.no_grad():
                t = torch.empty(self.shapes[i], dtype=self.dtype)
        else:
            t = torch.empty(self.shapes[i], dtype=self.dtype)
        storage = self.storages[i] = t.untyped_storage()  # held: its use count includes this
        self.dicts[i] = t.__dict__
        self.cdata[i], self.ptrs[i] = storage._cdata, t.data_ptr()
        self.out[self.place[i]] = self.ptrs[i]
        self.tensors[i] = t

    def __del__(self):
        if getattr(self, "lib", None) is not None and not sys.is_finalizing():
            self.lib.mbp_tensor_hold(self.impls, len(self.tensors), -1)

    def _state(self) -> list:
        # one flat list, quantity by quantity (_QUANTITIES of them, n tensors each): one object made per call.
        # With the checks in C++, the Python objects' own counts alone; the call checks the rest (tensor_state.cpp).
        # A caller's untyped_storage() is the set's own storage object (its refcount); an in-place t_() or resize_
        # bumps the version, but ``t.data = t.view(...)`` changes neither a count nor the version, only the shape,
        # the strides or the dtype, and ``t.untyped_storage().resize_()`` only the address (the C call's pointer)
        tensors = self.tensors
        if self.lib is not None:
            return [*map(sys.getrefcount, tensors), *map(sys.getrefcount, self.storages)]
        return [*map(sys.getrefcount, tensors), *map(_use_count, tensors), *map(_storage_use_count, self.cdata),
                *map(sys.getrefcount, self.storages), *map(_version, tensors), *map(_shape, tensors),
                *map(_stride, tensors), *map(_dtype, tensors), *map(_data_ptr, tensors)]

    def ready(self) -> None:
        """Make every tensor of the set one that only the set reaches, unchanged since it was made: any other is
        left to whoever holds it, and a new tensor takes its place. (With the checks in C++, the Python objects'
        counts here, the rest in the call, which asks for renew_changed where they fail.)"""
        tensors = self.tensors
        if self._state() == self.state and not any(map(weakref.getweakrefcount, tensors)) and not any(self.dicts) \
                and (self.lib is not None or not any(map(_requires_grad, tensors))
                     and all(g is None for g in map(_grad, tensors))):
            return
        self.renew_changed()

    def renew_changed(self) -> None:
        """Put a new tensor in the place of every tensor of the set that something reached or changed since it was
        made, then count the set again."""
        tensors, n = self.tensors, len(self.tensors)
        state, then = self._state(), self.state
        quantities = len(state) // n
        now = tensor_state.states(self.lib, self.impls, n) if self.lib is not None else None
        words = tensor_state.STATE_WORDS
        for i, t in enumerate(tensors):
            if any(state[q * n + i] != then[q * n + i] for q in range(quantities)) or weakref.getweakrefcount(t) \
                    or t.requires_grad or t.grad is not None or self.dicts[i] or (now is not None and now[i * words:(i + 1) * words]
                                           != self.cstate[i * words:(i + 1) * words]):
                self._renew(i)
                if now is not None:  # the new TensorImpl held, the old one let go
                    old = (ctypes.c_void_p * 1)(self.impls[i])
                    self.impls[i] = self.tensors[i]._cdata
                    self.lib.mbp_tensor_hold(ctypes.byref(self.impls, i * ctypes.sizeof(ctypes.c_void_p)), 1, 1)
                    self.lib.mbp_tensor_hold(old, 1, -1)
        del t  # the loop's own reference, before the new baseline is counted
        if self.lib is not None:  # the unchanged ones' states are the ones recorded; the new ones', as made
            tensor_state.states(self.lib, self.impls, n, self.cstate)
        self.state = self._state()
        self.step_key = [*self.ptrs[:self.n_step], *self.step_tail]


def _build(net: MLP, loss_fn: Loss) -> OneUpdatePlan:
    """A plan for net and loss_fn; a refusal (fn None) where the C call cannot run them: a population, another
    device or dtype, an f or loss without C code (c_unsupported's reasons), parameters not contiguous, no compiler."""
    global unavailable
    if type(net) is not MLP or any(w.dim() != 2 for w in net.weights) or c_unsupported(net, loss_fn) \
            or not all(p.is_contiguous() and not p.is_neg() and p.dtype == net.dtype and p.device.type == "cpu"
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
    if plan.fn is None or x.shape[0] * plan.macs > C_WORK_LIMIT or x.dtype is not plan.dtype \
            or y.dtype is not plan.dtype or x.shape[1] != plan.sizes[0] or y.shape[1] != plan.sizes[-1]:
        return None  # (x and y as the plan reads them, whatever net.dtype or net.sizes were set to)
    if not x.is_contiguous() or x.is_neg():  # the C call reads memory: a neg bit (x = z.conj().imag) resolved
        x = x.contiguous().resolve_neg()
    if not y.is_contiguous() or y.is_neg():
        y = y.contiguous().resolve_neg()
    got = plan.run(x, y)
    if got is None:  # the C++ checks found a parameter changed under the plan: a plan for the network as it is
        with _lock:
            plan = _build(net, loss_fn)
            _plans[id(net)] = (weakref.ref(net, _forget(id(net))), plan)
        got = plan.run(x, y) if plan.fn is not None else None
    return got


def _step_fn(lib, dtype: torch.dtype):
    """mbp_step for dtype, or None where torch's add_(g, alpha) does not give the fma's results here (a build of
    torch without fused multiply-adds): checked once per dtype on values where one rounding and two differ."""
    fn = lib.mbp_step_f64 if dtype == torch.float64 else lib.mbp_step_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_double if dtype == torch.float64 else ctypes.c_float]
    if dtype not in _fma_rounding:
        _fma_rounding[dtype] = _step_matches_add(fn, dtype)
    return fn if _fma_rounding[dtype] else None


def add_is_fused(dtype: torch.dtype) -> bool:
    """Whether torch's add_(g, alpha) (network.update) rounds each element once here, as the C steps' fma does:
    checked once per dtype (with mbp_step; False where the C loop cannot be built). The C paths that step the
    parameters themselves (MLP.step's C call, the narrow kernel's epochs) run only where it does."""
    if dtype not in _fma_rounding:
        try:
            _step_fn(load_kernel(), dtype)
        except FastPathUnavailable:
            return False
    return _fma_rounding[dtype]


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
