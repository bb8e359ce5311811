"""The benchmark's Trainer-level cases (issue 11): whole epochs as users run them, evaluation included.

    S   SimpleChains.jl's case: 4-32-16-4 tanh, identity output, squared error, batch mode (one update an epoch on
        10,000 samples). The data is SimpleChains' README example: x ~ N(0, 1)^4 read as a 2x2 matrix A (column
        by column, as Julia's reshape), y = vec(exp(A)), the matrix exponential; 10,000 training and 10,000 test
        samples, drawn from a seeded generator.
    O   online XOR: the lecture's 2-2-1 sigmoid net, squared error, one sample per update (4 updates an epoch).
    D   online digits: 64-32-10 tanh/softmax, cross-entropy, the 8x8 digits' training split (1,348 updates an
        epoch) and its test split.

An epoch is what one epoch of ``Trainer.run`` does: the epoch's updates in a fresh random order, then the loss
(and, for classes, the accuracy) on the training and the test split, read back to the host. Every row does that
same work:

    trainer-default   Trainer(...) exactly as the experiments call it, without a fast argument (its default path)
    trainer fast=False, trainer fast=True   the same, with the switch set explicitly
    autograd+SGD      the autograd twin (reference.torch_mlp) with torch.optim.SGD, then the evaluation in no_grad
    numpy             the hand-written update in plain numpy (bench_peers.NumpyMLP), then the evaluation
    jax, jax (E epochs/call)   bench_jax.JaxEpochs: jit of the whole epoch, one call an epoch; or lax.scan over E
                      epochs in one call (where JAX is installed)
    torch products    the epoch's matrix products alone through torch.mm: 3L - 1 per update at its batch size, and
                      the L of each evaluation's forward phase, on preallocated outputs
    FLOP floor        computed, not run: the epoch's multiply-adds (benchmarks/flops.py) at the peak SGEMM rate
                      measured in the same run on the same threads (the faster of torch's BLAS and numpy's): issue
                      19's yardstick
    FMA floor         computed, not run: the same multiply-adds at the CPU's own multiply-add rate (flops.fma_peak):
                      the yardstick no implementation beats, where a BLAS untuned for the CPU can be beaten
    ... (training only)   for S, whose peer SimpleChains times training alone: the same rows without evaluation
                      (the Trainer always evaluates, so it has no such row)
    kernel bound (products at the FMA rate + its tanh)   for S, computed: the products the narrow kernel makes at
                      the FMA rate plus its tanh at its rate measured in the run (flops.kernel_bound)

Where the test split is the training split (XOR), every row evaluates it once, as the Trainer does. Each row says
its call granularity: how many updates (or epochs) one call into its kernel or loop makes.

Times are per epoch (and per update: the epoch divided by its updates); ratios are taken pair by pair against
trainer-default within each repeat. Timing is bench.py's, interleaved in one process.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from benchmarks.cases import Impl
from benchmarks.flops import epoch_macs, floor_us
from benchmarks.peers import MatmulFloor, NumpyMLP
from manual_backprop import fast
from manual_backprop.datasets import Dataset
from manual_backprop.losses import get_loss
from manual_backprop.network import MLP
from manual_backprop.training import Trainer, accuracy, encode_for
from reference.torch_mlp import TorchMLP, torch_loss


@dataclass
class EpochCase:
    name: str
    sizes: list
    activation: str
    output_activation: str
    loss: str
    mode: str  # "batch" or "online"
    data: str  # "simplechains", "xor" or "digits"
    lr: float
    repeats: int
    note: str


EPOCH_CASES = {
    "S": EpochCase("S", [4, 32, 16, 4], "tanh", "identity", "squared_error", "batch", "simplechains", 0.01, 21,
                   "SimpleChains.jl's case, batch mode, 10,000 samples"),
    "O": EpochCase("O", [2, 2, 1], "sigmoid", "sigmoid", "squared_error", "online", "xor", 0.5, 31,
                   "online XOR, 4 updates an epoch"),
    "D": EpochCase("D", [64, 32, 10], "tanh", "softmax", "cross_entropy", "online", "digits", 0.02, 11,
                   "online digits, one update per training sample"),
}
SIMPLECHAINS_SAMPLES = 10_000


def simplechains_data(seed: int, n: int = SIMPLECHAINS_SAMPLES, dtype=torch.float32) -> Dataset:
    """SimpleChains.jl's README data: y = vec(exp(A)) for A = reshape(x, 2, 2), n training and n test samples."""
    g = torch.Generator().manual_seed(seed)

    def draw():
        x = torch.randn(n, 4, generator=g, dtype=torch.float64)  # (n, 4)
        a = x.view(n, 2, 2).transpose(1, 2)  # Julia's column-major reshape: A[i, j] = x[2j + i]
        y = torch.linalg.matrix_exp(a).transpose(1, 2).reshape(n, 4)  # vec(exp(A)), column by column
        return x.to(dtype), y.to(dtype)

    x, y = draw()
    x_test, y_test = draw()
    return Dataset(name="simplechains", x_train=x, y_train=y, x_test=x_test, y_test=y_test, num_classes=None)


def epoch_data(case: EpochCase, dtype: torch.dtype, seed: int) -> Dataset:
    if case.data == "simplechains":
        return simplechains_data(seed, dtype=dtype)
    from manual_backprop.datasets import load_dataset

    return load_dataset(case.data, seed=seed, dtype=dtype)


def encoded_split(net: MLP, loss_fn, data: Dataset) -> dict:
    """The dataset as every peer uses it: float inputs, targets as rows (one-hot for classes), labels or None."""
    out = {}
    for split in ("train", "test"):
        x = getattr(data, f"x_{split}").to(net.dtype)
        y = getattr(data, f"y_{split}")
        labels = None if y.is_floating_point() else y
        rows = encode_for(get_loss("squared_error"), y, data.num_classes, net.sizes[-1], net.dtype)
        out.update({f"x_{split}": x.contiguous(), f"y_{split}": rows.contiguous(), f"labels_{split}": labels})
    # the logic gates: the test split is the training split, evaluated once (as the Trainer does)
    out["test_is_train"] = (out["x_train"].shape == out["x_test"].shape and torch.equal(out["x_train"], out["x_test"])
                            and torch.equal(out["y_train"], out["y_test"]))
    return out


def evaluated_splits(split: dict) -> tuple:
    return ("train",) if split["test_is_train"] else ("train", "test")


# ---------------------------------------------------------------------------------------------------- the rows
class TrainerRun(Impl):
    """``Trainer.run`` for n more epochs (the public API: a finished run continues when ``epochs`` grows)."""

    def __init__(self, net, data, case: EpochCase, seed: int, per_call=None, **fast_kw):
        self.per_call = per_call  # None: every epoch of a measurement in one Trainer.run; 1: one call an epoch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fast.FastPathWarning)
            self.trainer = Trainer(net, data, mode=case.mode, lr=case.lr, epochs=1, loss_fn=case.loss, seed=seed,
                                   **fast_kw)
        runner = getattr(self.trainer, "_fast_runner", None)
        path = getattr(runner, "path", None) if runner is not None else None
        self.chunk_note = f"fast={self.trainer.fast!r}: " + (f"the {path!r} path" if path else "the plain path")
        self.granularity = ("E epochs per Trainer.run call (E = the measurement's)" if per_call is None
                            else "1 epoch per Trainer.run call (as the JAX row's one jit call an epoch)")

    def run(self, u0, n):
        t = self.trainer
        for _ in range(1 if self.per_call is None else n):  # all n epochs in one call, or one call an epoch
            t.epochs = t.epoch + (n if self.per_call is None else 1)
            t.history.stop_reason = ""  # as load_state_dict does for a longer run: continue a finished one
            t.run()
        return n

    def final_loss(self):
        h = self.trainer.history
        return math.nan if h.stop_reason == "diverged" else (h.train_loss[-1] if h.train_loss else None)


class AutogradEpochs(Impl):
    """The autograd twin and torch.optim.SGD over the epoch's updates, then the evaluation under no_grad."""

    granularity = "1 update per call (a Python loop over torch ops)"

    def __init__(self, net, loss_fn, split: dict, mode: str, lr: float, seed: int, train_only: bool = False):
        self.train_only = train_only
        self.twin = TorchMLP.from_manual(net)
        self.opt = torch.optim.SGD(self.twin.parameters(), lr=lr)
        self.loss_fn, self.s, self.mode = loss_fn, split, mode
        self.g = torch.Generator().manual_seed(seed)
        self.last = None

    def _figures(self, split):
        x, y, labels = self.s[f"x_{split}"], self.s[f"y_{split}"], self.s[f"labels_{split}"]
        out, zs = self.twin.forward_with_logits(x)
        loss = torch_loss(self.loss_fn, zs[-1], out, y)
        return [loss] if labels is None else [loss, accuracy(out, labels)]

    def run(self, u0, n):
        x, y = self.s["x_train"], self.s["y_train"]
        for _ in range(n):
            batches = [None] if self.mode == "batch" else torch.randperm(x.shape[0], generator=self.g).split(1)
            losses = []
            with torch.enable_grad():
                for idx in batches:
                    xb, yb = (x, y) if idx is None else (x.index_select(0, idx), y.index_select(0, idx))
                    self.opt.zero_grad(set_to_none=True)
                    out, zs = self.twin.forward_with_logits(xb)
                    loss = torch_loss(self.loss_fn, zs[-1], out, yb)
                    loss.backward()
                    self.opt.step()
                    losses.append(loss.detach())
            if self.train_only:
                self.last = torch.stack(losses).tolist()
                continue
            with torch.no_grad():
                figures = [f for split in evaluated_splits(self.s) for f in self._figures(split)]
                self.last = torch.cat([torch.stack(losses), torch.stack(figures)]).tolist()  # one read-back
        return n

    def final_loss(self):
        if self.last is None or self.train_only:
            return None
        return self.last[-2 if self.s["labels_test"] is not None else -1]


class NumpyEpochs(Impl):
    """The hand-written update in numpy over the epoch's updates (a fresh permutation each epoch), then the
    evaluation on both splits."""

    granularity = "1 update per call (a Python loop over numpy ops)"

    def __init__(self, net, loss_fn, split: dict, mode: str, lr: float, seed: int, train_only: bool = False):
        self.train_only, self.same = train_only, split["test_is_train"]
        self.mlp = NumpyMLP(net, loss_fn, lr)
        self.s = {k: v if v is None or isinstance(v, bool) else v.cpu().numpy() for k, v in split.items()}
        self.mode, self.rng = mode, np.random.default_rng(seed)
        self.last = None

    def run(self, u0, n):
        s, mlp = self.s, self.mlp
        x, y = s["x_train"], s["y_train"]
        for _ in range(n):
            if self.mode == "batch":
                mlp.step(x, y)
            else:
                for i in self.rng.permutation(x.shape[0]):
                    mlp.step(x[i:i + 1], y[i:i + 1])
            if self.train_only:
                continue
            self.last = mlp.evaluate(x, y, s["labels_train"])
            if not self.same:
                self.last = self.last + mlp.evaluate(s["x_test"], s["y_test"], s["labels_test"])
        return n

    def final_loss(self):
        return None if self.last is None else self.last[0]


class FloorEpochs(Impl):
    """The epoch's matrix products alone: each update's 3L - 1 at its batch size, then the forward phase's L on
    the training split and on the test split (torch.mm into preallocated outputs)."""

    granularity = "1 torch.mm per product"

    def __init__(self, net, split: dict, mode: str, train_only: bool = False):
        n, n_test = split["x_train"].shape[0], split["x_test"].shape[0]
        self.updates = 1 if mode == "batch" else n
        batch = n if mode == "batch" else 1
        self.update_floor = MatmulFloor(net, None, None, None, None, batch, None)
        sizes = [] if train_only else [n] if split["test_is_train"] else [n, n_test]
        self.evals = [MatmulFloor(net, None, None, None, None, m, None) for m in sizes]

    def run(self, u0, n):
        for _ in range(n):
            self.update_floor.run(0, self.updates)
            for ev in self.evals:
                ev.forward_only()
        return n


# ---------------------------------------------------------------------------------------------------- the case
def build_rows(case: EpochCase, dtype: torch.dtype, seed: int, add, skipped: dict, with_jax: bool = True) -> int:
    """Add every row of ``case`` through ``add(name, make)``; returns the updates an epoch."""
    data = epoch_data(case, dtype, seed)
    loss_fn = get_loss(case.loss)

    def net():
        return MLP(case.sizes, activation=case.activation, output_activation=case.output_activation, dtype=dtype,
                   seed=seed)

    split = encoded_split(net(), loss_fn, data)
    add("trainer-default", lambda: TrainerRun(net(), data, case, seed))
    add("trainer-default (1 epoch/call)", lambda: TrainerRun(net(), data, case, seed, per_call=1))
    add("trainer fast=False", lambda: TrainerRun(net(), data, case, seed, fast=False))
    add("trainer fast=True", lambda: TrainerRun(net(), data, case, seed, fast=True))
    add("autograd+SGD", lambda: AutogradEpochs(net(), loss_fn, split, case.mode, case.lr, seed))
    add("numpy", lambda: NumpyEpochs(net(), loss_fn, split, case.mode, case.lr, seed))
    if case.name == "S":  # SimpleChains times training alone: the peers' rows without the evaluation beside
        add("autograd+SGD (training only)", lambda: AutogradEpochs(net(), loss_fn, split, case.mode, case.lr, seed,
                                                                   train_only=True))
        add("numpy (training only)", lambda: NumpyEpochs(net(), loss_fn, split, case.mode, case.lr, seed,
                                                         train_only=True))
        add("torch products (training only)", lambda: FloorEpochs(net(), split, case.mode, train_only=True))
    try:
        if not with_jax:
            raise ImportError("--no-jax")
        import jax  # noqa: F401

        from benchmarks.jax_peer import JaxEpochs

        add("jax", lambda: JaxEpochs(net(), loss_fn, split, case.mode, case.lr, seed, scan_epochs=False))
        add("jax (E epochs/call)", lambda: JaxEpochs(net(), loss_fn, split, case.mode, case.lr, seed,
                                                     scan_epochs=True))
    except ImportError as err:
        skipped["jax"] = ("not run (--no-jax)" if str(err) == "--no-jax"
                          else "not installed (optional peer: pip install 'manual-backprop[jax]')")
    add("torch products", lambda: FloorEpochs(net(), split, case.mode))
    return 1 if case.mode == "batch" else split["x_train"].shape[0]


def case_macs(case: EpochCase, dtype: torch.dtype, seed: int) -> dict:
    """The epoch's multiply-adds (flops.epoch_macs): its updates, then each evaluated split's forward phase."""
    split = encoded_split(MLP(case.sizes, dtype=dtype, seed=seed), get_loss(case.loss), epoch_data(case, dtype, seed))
    n = split["x_train"].shape[0]
    evaluated = n if split["test_is_train"] else n + split["x_test"].shape[0]
    updates, batch = (1, n) if case.mode == "batch" else (n, 1)
    return epoch_macs(case.sizes, updates, batch, evaluated)


def computed_row(us: float, note: str, default_us: Optional[float], updates_per_epoch: int, **figures) -> dict:
    """A row computed, not run (the FLOP floor, S's kernel bound), in the timed rows' format."""
    return {"median_us": us, "min_us": us, "cpu_us": us, "per_update_us": us / updates_per_epoch, "computed": True,
            "granularity": "computed, not run", "note": note,
            "ratio_to_default": None if not default_us else us / default_us, "finite": True, "last_loss": None,
            **figures}


def floor_rows(macs: dict, peak: dict, default_us: Optional[float], updates_per_epoch: int, training_row: bool,
               fma: Optional[dict] = None) -> dict:
    """The computed floor rows: the epoch's multiply-adds at the peak SGEMM rate (``peak``, flops.peak_gemm_flops:
    the FLOP floor) and, where ``fma`` (flops.fma_peak) is given, at the CPU's own multiply-add rate (the FMA floor)."""
    yardsticks = [("FLOP floor", peak["gflops"], f"the peak SGEMM rate of this run, {peak.get('library', 'torch')}'s")]
    if fma:
        yardsticks.append(("FMA floor", fma["gflops"], "the CPU's multiply-add rate, measured in this run"))
    rows = {}
    for label, gflops, what in yardsticks:
        for name, key in ((label, "total"),) + (((f"{label} (training only)", "training"),) if training_row else ()):
            rows[name] = computed_row(floor_us(macs[key], gflops), f"{macs[key]:,} multiply-adds at {gflops:.1f} "
                                      f"GFLOP/s ({what})", default_us, updates_per_epoch, macs=macs[key])
    return rows


def rows_of(impls: dict, times: dict, chunk: dict, updates_per_epoch: int, reference: str,
            cpu_times: Optional[dict] = None) -> dict:
    """The rows of a Trainer-level case: microseconds per epoch and per update (wall, and process CPU), ratios
    pair by pair, and each row's call granularity."""
    ref = times.get(reference)
    rows = {}
    for name, impl in impls.items():
        ts = times[name]
        cpu = (cpu_times or {}).get(name)
        row = {"median_us": statistics.median(ts) * 1e6, "min_us": min(ts) * 1e6,
               "cpu_us": statistics.median(cpu) * 1e6 if cpu else None,
               "per_update_us": statistics.median(ts) * 1e6 / updates_per_epoch,
               "times_us": [t * 1e6 for t in ts], "epochs_per_measurement": chunk[name],
               "measurement_seconds": statistics.median(ts) * chunk[name],
               "granularity": getattr(impl, "granularity", ""), "note": getattr(impl, "chunk_note", "")}
        if ref is not None:
            row["ratio_to_default"] = statistics.median(t / m for t, m in zip(ts, ref))
        loss = impl.final_loss()
        row["last_loss"] = None if loss is None else float(loss)
        row["finite"] = loss is None or math.isfinite(loss)
        rows[name] = row
    return rows
