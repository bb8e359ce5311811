"""The population's C engine: E epochs of online learning for every member in one call of _csrc/population.c.

A declared derivative of network.py's functions as the population applies them (forward_phase, backward_phase and
update on the stacked (K, ...) tensors, inside epoch.py's EpochFunction with its evaluation and freeze rules),
otherwise identical to them. The kernel holds the members innermost (a row of 32 members per quantity, four AVX-512
registers of 8), replays each member's ``torch.randperm`` from its own generator's mt19937 state (bit-identical
orders, and the generators left as torch would leave them: one randperm per epoch a member trains, as its own
Trainer draws), and applies the rules inside the call: a member with a non-finite update loss or figure goes back
to its parameters at the end of the previous epoch (diverged), one whose training loss is at most the target stops.

One update agrees with network.py through Population within ``POPULATION_C_ULPS`` units in the last place of each
tensor's largest entry (the dot products summed in index order; exp and tanh within one ulp of torch's: vecmath.h's,
and in double population.c's division-free exp, ``kernel_math``); E epochs in one call are bit-equal to the same
epochs one call each, and the lecture's 2-2-1 network's fused kernel (population_fused.c) is bit-equal to the general
one (tests/population/test_population_c_engine.py).

Applies to CPU float32/float64 populations in online mode without replacement and without an optimizer, element-wise
activations (sigmoid, tanh, relu, leaky_relu, identity), squared error or binary cross-entropy, small networks.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Optional

import torch
from torch import Tensor

from ..activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from ..derived import changes_made
from ..fast import c_loop
from ..fast.common import FastPathUnavailable, mark_written
from ..fast.csource import ACT_CODES
from ..losses import BinaryCrossEntropy, Loss, SquaredError
from ..modes import Generators

__all__ = ["PopulationCKernel", "population_c_unsupported", "load_population_kernel", "run_c_epochs", "kernel_math",
           "POPULATION_C_ULPS", "POP_LOSS_CODES"]

# One update's bound against network.py through Population, in ulps of each tensor's largest entry.
POPULATION_C_ULPS = 4
POP_LOSS_CODES = {SquaredError: 0, BinaryCrossEntropy: 1}
_KERNEL_ACTS = (Sigmoid, Tanh, ReLU, LeakyReLU, Identity)  # codes 0..4 of population.c, ACT_CODES' order
_MAX_PARAMETERS = 4096  # per member: a block's parameters and their good copies stay in L2; bmm wins above
_MAX_SAMPLES = 2 ** 20  # training samples (randperm's 32-bit Fisher-Yates holds far beyond)
_ABI_VERSION = 2
_WORK_PER_CALL = 2_000_000  # member-updates per call at most: about 50 ms, so that Ctrl-C stays prompt
REACHED, DIVERGED = 1, 2

_lock = threading.Lock()
_libs: dict = {}


def load_population_kernel() -> ctypes.CDLL:
    """Compile ``_csrc/population.c`` (once per source, compiler and CPU; cached on disk) and load it, through the
    C loop's own build (c_loop.py: the same compiler, flags and private-folder checks)."""
    with _lock:
        cc = c_loop._compiler()
        if cc in _libs:
            return _libs[cc]
        if not (c_loop._CSRC / "vecmath.h").is_file():
            raise FastPathUnavailable(f"the C sources are missing from {c_loop._CSRC} (an install without package data)")
        lib, target = c_loop.build_library("population.c", ["population*.c", "*.h"], "", "population kernel")
        if lib.mbp_pop_abi_version() != _ABI_VERSION:
            raise FastPathUnavailable(f"the population kernel at {target} reports ABI {lib.mbp_pop_abi_version()}, "
                                      f"expected {_ABI_VERSION}")
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        for suffix in ("f64", "f32"):
            fn = getattr(lib, f"mbp_pop_train_{suffix}")
            fn.restype, fn.argtypes = i64, [p, i64, p, p, p, p]
        lib.mbp_pop_randperm.restype, lib.mbp_pop_randperm.argtypes = None, [p, i64, i64, p]
        lib.mbp_pop_seed.restype, lib.mbp_pop_seed.argtypes = None, [p, i64, p, i64]
        lib.mbp_pop_uniform.restype, lib.mbp_pop_uniform.argtypes = None, [p, i64, i64, p]
        lib.mbp_pop_fused.restype, lib.mbp_pop_fused.argtypes = ctypes.c_int, [p]
        for name in ("mbp_pop_vexp_f64", "mbp_pop_vsigmoid_f64"):
            getattr(lib, name).restype, getattr(lib, name).argtypes = None, [p, p, i64]
        _libs[cc] = lib
        return lib


def seeded_states(seeds) -> Tensor:
    """(K, state bytes) uint8: ``torch.Generator().manual_seed(s).get_state()`` for each seed, written by the kernel
    (one get_state call, not K of them)."""
    template = torch.Generator().manual_seed(int(seeds[0])).get_state()
    rng = template.unsqueeze(0).repeat(len(seeds), 1)
    values = torch.tensor([int(s) for s in seeds], dtype=torch.int64)  # seeds < 2**63: the same bits as uint64
    load_population_kernel().mbp_pop_seed(rng.data_ptr(), rng.shape[1], values.data_ptr(), len(seeds))
    return rng


def kernel_math(name: str, x: Tensor) -> Tensor:
    """The double kernel's own ``exp`` or ``sigmoid`` (population.c's pop_exp_f64, pop_sigmoid_f64) of a float64
    tensor, element by element, for the proof of their bounds."""
    x = x.to(torch.float64).contiguous()
    y = torch.empty_like(x)
    getattr(load_population_kernel(), f"mbp_pop_v{name}_f64")(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def replay_randperm(state: Tensor, n: int, count: int) -> Tensor:
    """``count`` permutations of n from a generator state (a uint8 tensor from ``get_state()``, advanced in place),
    through the kernel's own replay: (count, n) int32."""
    out = torch.empty(count, n, dtype=torch.int32)
    load_population_kernel().mbp_pop_randperm(state.data_ptr(), n, count, out.data_ptr())
    return out


_LAYOUT_CHECKED: Optional[bool] = None


def _generator_layout_agrees() -> bool:
    """Whether this torch's CPU generator state and randperm are the ones the kernel replays (checked once)."""
    global _LAYOUT_CHECKED
    if _LAYOUT_CHECKED is None:
        ok = True
        for seed, n in ((0, 4), (7, 2), (12345, 31)):
            g = torch.Generator().manual_seed(seed)
            state = g.get_state().clone()
            expected = torch.stack([torch.randperm(n, generator=g) for _ in range(700 // n + 2)])
            got = replay_randperm(state, n, expected.shape[0])
            ok = ok and torch.equal(got.long(), expected) and torch.equal(state, g.get_state())
        _LAYOUT_CHECKED = ok
    return _LAYOUT_CHECKED


def population_c_unsupported(population, loss_fn: Loss, mode: str, replacement: bool, optimizer,
                             n_train: int) -> Optional[str]:
    """Why the C engine cannot train this population, or None when it can."""
    if population.device.type != "cpu":
        return f"the C engine runs on the CPU, but the population is on {population.device}"
    if population.dtype not in (torch.float32, torch.float64):
        return f"the C engine supports float32 and float64, but the population is {population.dtype}"
    if mode != "online" or replacement:
        return f"the C engine runs online learning without replacement, not mode {mode!r}" + (
            " with replacement" if replacement else "")
    if optimizer is not None:
        return "the C engine runs plain gradient descent, not an optimizer"
    if ACT_CODES.get(Sigmoid) != 0 or [ACT_CODES.get(c) for c in _KERNEL_ACTS] != list(range(len(_KERNEL_ACTS))):
        return "the activation codes of activations.ACTIVATIONS changed; the C engine's are 0..4"
    for k, f in enumerate(population.activation_functions):
        if type(f) not in _KERNEL_ACTS:
            return f"layer {k + 1}: the C engine takes element-wise activations, not {f.spec()!r}"
    if type(loss_fn) not in POP_LOSS_CODES:
        return f"the C engine takes squared_error and binary_cross_entropy, not {loss_fn.name!r}"
    sizes = population.sizes
    n_par = sum(sizes[k + 1] * (sizes[k] + (1 if population.bias else 0)) for k in range(len(sizes) - 1))
    if n_par > _MAX_PARAMETERS or len(sizes) > 65:
        return f"the C engine is for small networks (at most {_MAX_PARAMETERS} parameters), not {n_par}"
    if n_train > _MAX_SAMPLES:
        return f"the C engine takes at most {_MAX_SAMPLES} training samples, not {n_train}"
    try:
        load_population_kernel()
    except FastPathUnavailable as err:
        return str(err)
    if not _generator_layout_agrees():
        return "this torch's CPU generator state or randperm differs from the one the C engine replays"
    return None


class _PopPlan(ctypes.Structure):
    """pop_plan of _csrc/population.c."""

    p, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
    _fields_ = [("n_layers", i64), ("sizes", p), ("acts", p), ("slopes", p), ("loss_kind", i32), ("bias", i32),
                ("c_update", f64), ("c_eval", f64 * 2), ("K", i64), ("weights", p), ("biases", p), ("lr", p),
                ("active", p), ("rng", p), ("rng_stride", i64), ("x_train", p), ("y_train", p), ("n_train", i64),
                ("eval_x", p * 2), ("eval_y", p * 2), ("labels", p * 2), ("eval_n", i64 * 2), ("has_target", i32),
                ("target", f64), ("last", p), ("general", i32)]
    del p, i32, i64, f64


class PopulationCKernel:
    """The kernel bound to one population, loss, learning rates, data and the members' generators.

    ``run(epochs, active, last)`` trains up to ``epochs`` epochs (fewer once no member is active) and returns
    (epochs run, rows (E, 4, K) float64, stop_epoch (K,), stop_kind (K,), bad_losses (K, n)). The generators'
    states live in ``rng`` between calls: ``read_generators()`` takes them, ``write_generators()`` puts them back.
    ``general = True`` runs the general kernel even for the network population_fused.c is written for (the lecture's
    2-2-1 XOR network in float64), as the proof compares them.
    """

    def __init__(self, population, loss_fn: Loss, lr: Tensor, x_train: Tensor, y_train: Tensor, evals: dict,
                 target_loss: Optional[float], generators, fresh_seeds=None):
        lib = load_population_kernel()
        pop = population
        self.pop, self.generators, self.K, self._lib = pop, generators, pop.size, lib
        self._fn = lib.mbp_pop_train_f64 if pop.dtype == torch.float64 else lib.mbp_pop_train_f32
        L, sizes = pop.num_layers, pop.sizes
        self._sizes = (ctypes.c_int64 * (L + 1))(*sizes)
        self._acts, self._slopes = (ctypes.c_int32 * L)(), (ctypes.c_double * L)()
        self.loss_fn = loss_fn
        self.x_train, self.y_train = x_train.contiguous(), y_train.contiguous()
        self.n = self.x_train.shape[0]
        self.lr = lr.contiguous()
        plan = _PopPlan(n_layers=L, sizes=ctypes.addressof(self._sizes), acts=ctypes.addressof(self._acts),
                        slopes=ctypes.addressof(self._slopes), bias=int(pop.bias), K=self.K,
                        lr=self.lr.data_ptr(), x_train=self.x_train.data_ptr(), y_train=self.y_train.data_ptr(),
                        n_train=self.n, has_target=int(target_loss is not None),
                        target=float(target_loss) if target_loss is not None else 0.0)
        self._keep = [self.x_train, self.y_train, self.lr]
        # what the plan points into, with the shape and dtype each must keep, checked again at every run (a
        # ``.data =`` or ``set_`` between runs may have given one of them other memory or another shape)
        self._bound = [(self.x_train, "x_train", "x_train", (self.n, sizes[0]), pop.dtype),
                       (self.y_train, "y_train", "y_train", tuple(self.y_train.shape), self.y_train.dtype),
                       (self.lr, "lr", "lr", (self.K,), self.lr.dtype)]
        for s, split in enumerate(("train", "test")):
            if evals[split] is None:
                continue
            x, y, labels = evals[split]
            x, y = x.contiguous(), y.contiguous()
            labels = labels.to(torch.int64).contiguous() if labels is not None else None
            self._keep += [x, y, labels]
            plan.eval_x[s], plan.eval_y[s], plan.eval_n[s] = x.data_ptr(), y.data_ptr(), x.shape[0]
            plan.labels[s] = labels.data_ptr() if labels is not None else None
            self._bound += [(x, f"x_{split}", ("eval_x", s), tuple(x.shape), x.dtype),
                            (y, f"y_{split}", ("eval_y", s), tuple(y.shape), y.dtype)]
            if labels is not None:
                self._bound.append((labels, f"labels_{split}", ("labels", s), tuple(labels.shape), torch.int64))
        self._plan = plan
        self._read_functions()
        self.separate_test = evals["test"] is not None  # else the kernel may leave the test split's rows unwritten
        self.general = False
        self._plan_ref = ctypes.byref(plan)
        self.rng: Optional[Tensor] = None
        self._fresh_seeds = fresh_seeds

    def _read_functions(self) -> None:
        """Copy the f's and the loss into the plan (again where one was replaced or an attribute of one set since:
        ``f.negative_slope = ...``, ``loss_fn.reduction = ...``, counted by derived.changes_made)."""
        pop, loss_fn, plan = self.pop, self.loss_fn, self._plan
        reason = population_c_unsupported(pop, loss_fn, "online", False, None, self.n)
        if reason is not None:
            raise ValueError(f"the population's activations or loss changed between runs of the C engine: {reason}")
        for k, f in enumerate(pop.activation_functions):
            self._acts[k], self._slopes[k] = ACT_CODES[type(f)], getattr(f, "negative_slope", 0.0)
        plan.loss_kind, plan.c_update = POP_LOSS_CODES[type(loss_fn)], loss_fn.scale(1, pop.sizes[-1])
        for s in range(2):
            if plan.eval_n[s]:
                plan.c_eval[s] = loss_fn.scale(plan.eval_n[s], pop.sizes[-1])
        self._read = (changes_made(), list(pop.activation_functions))

    @property
    def fused(self) -> bool:
        """Whether a call runs population_fused.c's kernel (the 2-2-1 XOR network in float64, unless ``general``)."""
        self._plan.general = int(bool(self.general))
        return self.pop.dtype == torch.float64 and bool(self._lib.mbp_pop_fused(self._plan_ref))

    def read_generators(self, seeds=None) -> None:
        """The generators' states into ``rng`` (K, state bytes); ``seeds``: the generators are freshly seeded with
        them and nothing drew from them yet, so the kernel writes the states itself (K get_state calls cost more
        than a short run)."""
        if seeds is not None:
            self.rng = seeded_states(seeds)
        elif isinstance(self.generators, Generators):
            self.rng = self.generators.states()
        else:
            self.rng = torch.stack([g.get_state() for g in self.generators])
        self._plan.rng, self._plan.rng_stride = self.rng.data_ptr(), self.rng.shape[1]

    def write_generators(self) -> None:
        """The generators as torch would leave them. set_state misreads a row view with a storage offset, so each
        row goes as a tensor of its own: numpy's view of it (no copy), or a clone where numpy is missing."""
        if self.rng is None:
            return
        if isinstance(self.generators, Generators):  # each made from its state when first used
            self.generators.set_states(self.rng.clone())
            return
        try:
            rows = [torch.from_numpy(row) for row in self.rng.numpy()]
        except (RuntimeError, TypeError):  # "Numpy is not available"
            rows = [row.clone() for row in self.rng]
        for g, row in zip(self.generators, rows):
            g.set_state(row)

    def _rebind(self, active: Tensor) -> None:
        """Point the plan at the memory its tensors hold now, each checked for the shape and dtype the kernel reads:
        a refusal by name, before the call, where one changed (the kernel would read or write past it)."""
        plan = self._plan
        for t, name, field, shape, dtype in self._bound:
            if tuple(t.shape) != shape or t.dtype != dtype or not t.is_contiguous() or t.is_neg() \
                    or t.device.type != "cpu":
                raise ValueError(f"the trainer's {name} must stay a contiguous CPU {dtype} tensor of shape {shape} "
                                 f"between runs of the C engine, but got {t.dtype} on {t.device}, shape "
                                 f"{tuple(t.shape)}")
            if isinstance(field, tuple):
                getattr(plan, field[0])[field[1]] = t.data_ptr()
            else:
                setattr(plan, field, t.data_ptr())
        if active.dtype != torch.bool or tuple(active.shape) != (self.K,) or not active.is_contiguous() \
                or active.device.type != "cpu":
            raise ValueError(f"the trainer's active mask must be a contiguous CPU bool tensor of shape ({self.K},), "
                             f"but got {active.dtype} on {active.device}, shape {tuple(active.shape)}")
        pop = self.pop
        if bool(pop.bias) != bool(plan.bias) or list(pop.sizes) != list(self._sizes) \
                or len(pop.weights) != pop.num_layers or len(pop.biases) != (pop.num_layers if plan.bias else 0):
            raise ValueError(f"the population must keep the sizes {list(self._sizes)}, bias={bool(plan.bias)} and one "
                             f"weight{' and one bias' if plan.bias else ''} per layer between runs of the C engine, "
                             f"but has sizes {list(pop.sizes)}, bias={pop.bias}, {len(pop.weights)} weights and "
                             f"{len(pop.biases)} biases")

    def run(self, epochs: int, active: Tensor, last: Tensor):
        pop, plan = self.pop, self._plan
        self._rebind(active)
        if self._read[0] != changes_made() or len(self._read[1]) != len(pop.activation_functions) or any(
                a is not b for a, b in zip(self._read[1], pop.activation_functions)):
            self._read_functions()
        plan.general = int(bool(self.general))
        if self.rng is None:
            self.read_generators(self._fresh_seeds)
        params = pop.weights + pop.biases
        if not all(p.is_contiguous() and not p.is_neg() and p.device.type == "cpu" and p.dtype == pop.dtype
                   for p in params):
            raise ValueError("the population's parameters must be contiguous CPU tensors of its dtype "
                             "(no neg-bit view)")
        sizes, K = pop.sizes, self.K  # the kernel writes K members of these shapes through the addresses
        shapes = [(K, sizes[k + 1], sizes[k]) for k in range(pop.num_layers)]
        shapes += [(K, sizes[k + 1]) for k in range(pop.num_layers)] if pop.bias else []
        for k, (p, shape) in enumerate(zip(params, shapes)):  # (Population holds one bias per layer or none)
            if tuple(p.shape) != shape:
                name = f"weights[{k}]" if k < pop.num_layers else f"biases[{k - pop.num_layers}]"
                raise ValueError(f"population.{name} must have shape {shape} (K={K}, sizes {list(sizes)}), but got "
                                 f"{tuple(p.shape)}")
        weights = (ctypes.c_void_p * len(pop.weights))(*[w.data_ptr() for w in pop.weights])
        biases = (ctypes.c_void_p * max(1, len(pop.biases)))(*[b.data_ptr() for b in pop.biases])
        plan.weights, plan.biases = ctypes.addressof(weights), ctypes.addressof(biases) if pop.bias else None
        last = last.to(torch.float64).contiguous()
        plan.active, plan.last = active.data_ptr(), last.data_ptr()
        rows = torch.empty(epochs, 4, self.K, dtype=torch.float64)
        stop_epoch = torch.empty(self.K, dtype=torch.int32)
        stop_kind = torch.empty(self.K, dtype=torch.int8)
        bad_losses = torch.empty(self.K, self.n, dtype=torch.float64)
        ran = self._fn(self._plan_ref, epochs, rows.data_ptr(), stop_epoch.data_ptr(), stop_kind.data_ptr(),
                       bad_losses.data_ptr())
        mark_written(params)
        if ran < 0:
            raise MemoryError("the population kernel could not allocate its workspace")
        return ran, rows, stop_epoch, stop_kind, bad_losses


def run_c_epochs(trainer) -> int:
    """PopulationTrainer's chunk of epochs through the C engine: one kernel call, then each epoch's History row and
    the stops of its members, as ``_run_epoch`` records them (all rows at once, views of the call's figures, unless
    a logger takes them epoch by epoch). Returns the epochs run."""
    h, K = trainer.history, trainer.pop.size
    kernel = trainer._c_kernel
    count = max(1, min(trainer.epochs_per_draw, trainer.epochs - trainer.epoch,
                       _WORK_PER_CALL // max(1, K * kernel.n)))
    zeros = torch.zeros(K, dtype=torch.float64)
    last = torch.stack([h.train_loss[-1], h.train_accuracy[-1] if h.train_accuracy[-1] is not None else zeros,
                        h.test_loss[-1], h.test_accuracy[-1] if h.test_accuracy[-1] is not None else zeros])
    start = time.perf_counter()
    ran, rows, stop_epoch, stop_kind, bad_losses = kernel.run(count, trainer.active, last)
    seconds = time.perf_counter() - start
    # (E, K) each: train loss, train accuracy, test loss, test accuracy (the training split's rows where it is both)
    figures = [rows[:ran, f] for f in range(4 if kernel.separate_test else 2)]
    if not kernel.separate_test:
        figures += figures  # the same tensors: History keeps one view per row for both
    events: dict = {}
    for i in (stop_epoch >= 0).nonzero().flatten().tolist():
        events.setdefault(int(stop_epoch[i]), []).append(i)
    T, first = kernel.n, trainer.epoch
    logged = trainer.logger is not None  # a logger reads each row with the stops so far: epoch by epoch then
    for e in range(ran) if logged else sorted(events):
        trainer.epoch = first + e + 1
        if logged:
            trainer.train_seconds += seconds / ran
        for i in events.get(e, ()):
            if int(stop_kind[i]) == DIVERGED:
                trainer._diverged(i, bad_losses[i], (trainer.epoch - 1) * T)
            else:
                trainer._reached(i, float(figures[0][e, i]))
        if logged:
            trainer._append_row(torch.stack([f[e] for f in figures]), updates=trainer.epoch * T)
    if not logged:
        moments = []
        for _ in range(ran):
            trainer.train_seconds += seconds / ran
            moments.append(trainer.train_seconds)
        if trainer.labels_train is None:  # a regression: no accuracies
            figures[1] = figures[3] = None
        h.add_rows(range(first + 1, first + ran + 1), figures, [(first + e + 1) * T for e in range(ran)], moments)
        trainer.epoch = first + ran
    for good, p in zip(trainer.good_w + trainer.good_b, trainer.pop.weights + trainer.pop.biases):
        good.copy_(p)  # the last good state is the state at the end of the chunk
    trainer._active_host = trainer.active.clone()
    trainer._any_active = bool(trainer._active_host.any())
    return ran
