"""The proof of the narrow kernel (fast/narrow.py, _csrc/narrow.c): one update through it is the reference's.

One batch-mode update through the kernel's pass and network.update, against network.py's loss_and_gradients +
update, from the same parameters on the same samples: every hidden activation x output activation x loss the kernel
accepts, ordinary and saturated networks, float64 and float32, at B = 10,000 (157 tiles, a partial last one), at a
partial tile (B = 1,037) and below one tile (B = 37, 1). Within NARROW_ULPS of the absolute-value network's scale
(reference/update_proof.py). What the kernel refuses falls back with a reason, and the value it keeps across calls
in batch mode (the evaluation's pass, reused as the next update's) is recomputed whenever the parameters change
outside it: net.to, a user's edit between runs, an update through a C kernel (the C step, the C loop), a divergence
rewind, a resume.
"""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import Dataset
from manual_backprop.fast import FastPathUnavailable
from manual_backprop.fast import narrow_epochs
from manual_backprop.fast.narrow import NARROW_ULPS, NarrowBatch, NarrowKernel, load_narrow_kernel, narrow_unsupported
from manual_backprop.losses import SquaredError, get_loss
from manual_backprop.training import Trainer
from reference.update_proof import path_update, reference_update, update_misses

from helpers import draw_targets, target_kind

try:
    NarrowKernel(MLP([2, 2, 1], seed=0), SquaredError())
    NO_KERNEL = None
except FastPathUnavailable as err:
    NO_KERNEL = str(err)
pytestmark = pytest.mark.skipif(NO_KERNEL is not None, reason=f"the narrow kernel does not build: {NO_KERNEL}")

SIZES = [4, 19, 7, 3]  # widths that fill no vector exactly
LR = 0.3
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu:0.1", "identity"]
OUTPUTS = [("sigmoid", SquaredError()), ("tanh", SquaredError(reduction="sum")),
           ("identity", SquaredError(reduction="elementwise_mean")), ("relu", SquaredError(half=True)),
           ("leaky_relu", SquaredError()), ("softmax", SquaredError()), ("softmax", get_loss("cross_entropy")),
           ("sigmoid", get_loss("binary_cross_entropy")), ("softmax", get_loss("cross_entropy", reduction="sum"))]
CASES = [(h, o, lf) for h in HIDDEN for o, lf in OUTPUTS]
IDS = [f"{h}-{o}-{lf.name}-{lf.reduction}{'-half' if getattr(lf, 'half', False) else ''}" for h, o, lf in CASES]
REGIMES = {"ordinary": 1.0, "saturated": 8.0}


def _problem(hidden, output, loss_fn, regime, B, dtype, seed=0, sizes=SIZES):
    net = MLP(sizes, activation=hidden, output_activation=output, bias_init="uniform", dtype=torch.float64,
              seed=seed)
    for w in net.weights:
        w.mul_(REGIMES[regime])
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(B, sizes[0], generator=gen, dtype=torch.float64) * 2.0
    y = draw_targets(target_kind(loss_fn, classes="onehot", other="unit"), (B,), sizes[-1], gen)
    return net.to(dtype=dtype), x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("B", [10_000, 1_037, 37, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", CASES, ids=IDS)
def test_one_narrow_update_is_the_reference_update(hidden, output, loss_fn, regime, dtype, B):
    net, x, y = _problem(hidden, output, loss_fn, regime, B, dtype)
    ref, scales = reference_update(net, x, y, loss_fn, LR)
    got, bound = path_update("narrow", net, x, y, loss_fn, LR)
    assert bound == NARROW_ULPS
    assert set(got) == set(ref), f"the narrow update gave {sorted(got)}, the reference {sorted(ref)}"
    for name, miss, ok in update_misses(got, ref, scales, bound):
        assert ok, f"narrow {hidden}/{output}/{loss_fn!r} {regime} {dtype} B={B}: {name} misses by {miss:.2f} ulps"


# Layers whose weight gradient the kernel sums from the tile's delta transposed (narrow_wide.c, with AVX-512): S's
# widths, whose middle layer fills one float vector exactly, and an 18-wide output of 20 inputs (a partial vector).
WIDE = [[4, 32, 16, 4], [3, 20, 18, 2]]
WIDE_CASES = [("tanh", "identity", SquaredError()), ("sigmoid", "softmax", get_loss("cross_entropy")),
              ("relu", "sigmoid", get_loss("binary_cross_entropy"))]


@pytest.mark.parametrize("B", [10_000, 1_037, 37])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", WIDE_CASES, ids=[f"{h}-{o}-{lf.name}" for h, o, lf in WIDE_CASES])
@pytest.mark.parametrize("sizes", WIDE, ids=["-".join(map(str, s)) for s in WIDE])
def test_one_update_with_a_wide_layer_is_the_reference_update(sizes, hidden, output, loss_fn, regime, dtype, B):
    net, x, y = _problem(hidden, output, loss_fn, regime, B, dtype, sizes=sizes)
    ref, scales = reference_update(net, x, y, loss_fn, LR)
    got, bound = path_update("narrow", net, x, y, loss_fn, LR)
    for name, miss, ok in update_misses(got, ref, scales, bound):
        assert ok, f"narrow {sizes} {hidden}/{output} {regime} {dtype} B={B}: {name} misses by {miss:.2f} ulps"


@pytest.mark.parametrize("dtype", ["f64", "f32"])
def test_the_wide_layers_take_the_transposed_sums_where_the_cpu_has_avx512(dtype):
    lib = load_narrow_kernel()
    wide = getattr(lib, f"narrow_wide_{dtype}")
    if not lib.narrow_tanh_f32_arrays() & 1:  # the same compile-time test: __AVX512F__
        assert not any(wide(n_in, n_out) for n_in, n_out in [(32, 16), (20, 18), (64, 64)])
        return
    vl = 16 if dtype == "f32" else 8
    for sizes in WIDE:
        layers = list(zip(sizes[:-1], sizes[1:]))
        assert [bool(wide(*io)) for io in layers] == [n_in >= 16 and n_out >= vl for n_in, n_out in layers]
        assert any(wide(*io) for io in layers), f"{sizes}: no layer of the proof above takes the transposed sums"
    assert not any(wide(n_in, n_out) for n_in, n_out in zip(SIZES[:-1], SIZES[1:]))  # the main proof's: lane-wise


def test_narrow_output_is_the_reference_forward():
    net, x, y = _problem("tanh", "softmax", get_loss("cross_entropy"), "saturated", 1_037, torch.float64)
    out = torch.empty(SIZES[-1], x.shape[0], dtype=torch.float64)
    NarrowKernel(net, get_loss("cross_entropy")).loss_and_gradients(x, y, output=out)
    F = x.abs()  # the absolute-value network's logits bound how far two summation orders of them can differ
    for w, b in zip(net.weights, net.biases):
        F = F @ w.abs().t() + b.abs()
    atol = 2 * NARROW_ULPS * torch.finfo(torch.float64).eps * F.max().item()  # softmax moves at most 2x its logits
    torch.testing.assert_close(out.t(), net.forward(x), rtol=0, atol=atol)


def test_what_the_kernel_refuses_it_says_and_the_trainer_falls_back():
    wide = MLP([3, 65, 2], activation="tanh", output_activation="identity", seed=0)
    assert "at most 64 units" in narrow_unsupported(wide, SquaredError())
    with pytest.raises(FastPathUnavailable, match="at most 64 units"):
        NarrowKernel(wide, SquaredError())
    data = _data(600, 3, 2)
    assert Trainer(wide, data, mode="batch", lr=0.1, epochs=1)._fast_runner.path != "narrow"
    small = MLP([3, 8, 2], activation="tanh", output_activation="identity", seed=0)
    assert Trainer(small, data, mode="batch", lr=0.1, epochs=1)._fast_runner.path == "narrow"
    # below the crossover of runner.py's cost model the C loop's several epochs a call are faster: XOR's 4 samples
    assert Trainer(small, _data(4, 3, 2), mode="batch", lr=0.1, epochs=1)._fast_runner.path == "c"
    for mode in ("online", "minibatch"):  # batch mode only: other modes keep their paths
        t = Trainer(small, data, mode=mode, lr=0.1, epochs=1, batch_size=10 if mode == "minibatch" else None)
        assert t._fast_runner.path != "narrow"
    assert Trainer(small, data, mode="batch", lr=0.1, epochs=1, fast="fused")._fast_runner.path == "fused"


# ---------------------------------------------------------------------------------------------------- the kept pass
def _data(n, n_in, n_out, seed=0, classes=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=gen, dtype=torch.float64)
    y = torch.randint(0, n_out, (n,), generator=gen) if classes else torch.randn(n, n_out, generator=gen,
                                                                                  dtype=torch.float64)
    return Dataset("narrow-test", x, y, x[: n // 3], y[: n // 3], n_out if classes else None)


def _pair(epochs=3, lr=0.05, classes=False, path="auto", **kw):
    """A narrow (or ``path``) trainer and a plain one on the same network and data (float64)."""
    data = _data(400, 3, 4, classes=classes)  # enough samples for the narrow kernel (runner.py's cost model)
    out = "softmax" if classes else "identity"
    trainers = [Trainer(MLP([3, 9, 5, 4], activation="tanh", output_activation=out, seed=1,
                                dtype=torch.float64), data, mode="batch",
                        lr=lr, epochs=epochs, fast=fast, **kw) for fast in (path, False)]
    assert trainers[0]._fast_runner.path == ("narrow" if path == "auto" else path)
    return trainers


def _assert_same_runs(narrow, plain, tol=1e-12):
    hn, hp = narrow.history, plain.history
    assert hn.epoch == hp.epoch and hn.updates == hp.updates
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        a, b = getattr(hn, name), getattr(hp, name)
        assert (a[0] is None) == (b[0] is None)
        if a[0] is not None:
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=tol, atol=0, msg=name)
    for p, q in zip(narrow.net.parameters(), plain.net.parameters()):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


@pytest.mark.parametrize("classes", [False, True], ids=["regression", "classes"])
def test_one_pass_an_epoch_and_the_history_of_the_plain_loop(classes, monkeypatch):
    monkeypatch.setattr(narrow_epochs, "CHUNKS", False)  # epoch by epoch (test_narrow_epochs.py: several a call)
    narrow, plain = _pair(epochs=6, classes=classes)
    narrow.run(), plain.run()
    assert narrow._fast_runner._engine.passes == 7  # epoch 0's evaluation, then one pass per epoch
    _assert_same_runs(narrow, plain)


def _edit_between_runs(edit, path="auto"):
    narrow, plain = _pair(epochs=3, path=path)
    narrow.run(), plain.run()
    for t in (narrow, plain):
        edit(t.net)
        t.epochs = 6
    engine = narrow._fast_runner._engine
    passes = getattr(engine, "passes", 0)
    narrow.run(), plain.run()
    if path == "auto":
        assert engine.passes == passes + 4 or narrow._fast_runner._engine is not engine  # recomputed after the edit
    _assert_same_runs(narrow, plain)


PATHS = ["auto", "fused"]  # the narrow kernel's kept pass, the fused step's kept forward phase


@pytest.mark.parametrize("path", PATHS)
def test_a_users_edit_between_runs_is_seen(path):
    _edit_between_runs(lambda net: net.weights[1].mul_(1.5), path)


@pytest.mark.parametrize("path", PATHS)
def test_net_to_between_runs_is_seen(path):
    _edit_between_runs(lambda net: net.to(dtype=torch.float32).to(dtype=torch.float64), path)  # new, rounded


def test_replaced_parameter_tensors_are_seen():
    def replace(net):
        net.biases[0] = net.biases[0] + 0.25
    _edit_between_runs(replace)


def _c_step(net):
    """One update through MLP.loss_and_grads and MLP.step: their C calls where they apply (fast/one_update.py)."""
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 3, generator=gen, dtype=net.dtype), torch.randn(4, 4, generator=gen, dtype=net.dtype)
    _, grads = net.loss_and_grads(x, y, "squared_error")
    net.step(grads, 0.1)


def _c_loop_epoch(net):
    """An online epoch of another Trainer on the same network, through the C loop."""
    Trainer(net, _data(40, 3, 4), mode="online", lr=0.01, epochs=1, fast="c", seed=2).run()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("edit", [_c_step, _c_loop_epoch], ids=["c-step", "c-loop"])
def test_a_c_kernels_update_between_runs_is_seen(edit, path):
    """A C kernel writes the parameters through their addresses; it bumps their version counters
    (fast.common.mark_written), so the pass (or forward phase) kept for the old parameters is not used for the new
    ones."""
    _edit_between_runs(edit, path)


def test_the_evaluation_after_an_edit_is_the_edited_networks():
    narrow, _ = _pair(epochs=2)
    narrow.run()
    narrow.net.weights[0].add_(0.5)
    loss, _ = narrow.evaluate("train")
    torch.testing.assert_close(loss, narrow.net.loss(narrow.x_train, narrow.y_train, narrow.loss_fn), rtol=1e-13,
                               atol=0)


@pytest.mark.parametrize("path", PATHS)
def test_a_divergence_rewind_is_seen(path):
    narrow, plain = _pair(epochs=5, lr=1e154, path=path)
    narrow.run(), plain.run()
    assert narrow.history.stop_reason == plain.history.stop_reason == "diverged"
    _assert_same_runs(narrow, plain)
    loss, _ = narrow.evaluate("train")  # the rewound parameters' loss, not the diverged pass's
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, narrow.net.loss(narrow.x_train, narrow.y_train, narrow.loss_fn), rtol=1e-13,
                               atol=0)


@pytest.mark.parametrize("fast", PATHS)
def test_a_resume_into_the_same_trainer_is_seen_and_exact(tmp_path, fast):
    path = tmp_path / "ckpt.pt"
    narrow, _ = _pair(epochs=2, path=fast)
    narrow.run()
    narrow.save_checkpoint(path)
    narrow.epochs = 5
    narrow.run()
    first = list(narrow.history.train_loss)
    final = [p.clone() for p in narrow.net.parameters()]
    narrow.resume(path)  # back to epoch 2, parameters copied in place
    narrow.epochs = 5
    narrow.run()
    assert narrow.history.train_loss == first  # bit for bit: the same passes from the same parameters
    assert all(torch.equal(p, q) for p, q in zip(narrow.net.parameters(), final))


def test_narrow_batch_reuses_its_pass_only_for_the_same_parameters_and_data():
    net = MLP([3, 6, 2], activation="tanh", output_activation="identity", seed=0, dtype=torch.float64)
    x, y = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 2, dtype=torch.float64)
    nb = NarrowBatch(net, SquaredError())
    nb.evaluate(x, y)
    nb.update(x, y, 0.1)
    assert nb.passes == 1  # the update used the evaluation's pass
    nb.evaluate(x, y)
    x.add_(1.0)  # the data changed in place
    nb.evaluate(x, y)
    assert nb.passes == 3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_the_kernels_tanh_is_vecmaths_bit_for_bit_and_within_one_ulp_of_torch(dtype):
    from manual_backprop.fast.narrow import load_narrow_kernel

    lib, suffix = load_narrow_kernel(), "f64" if dtype == torch.float64 else "f32"
    gen = torch.Generator().manual_seed(5)
    x = torch.cat([torch.linspace(-25, 25, 200_001, dtype=torch.float64), torch.randn(100_000, generator=gen,
                   dtype=torch.float64) * 0.7, torch.tensor([0.625, -0.625, 0.0, -0.0, 1e-30, float("inf"),
                                                             -float("inf"), float("nan")], dtype=torch.float64)])
    x = x.to(dtype)
    mine, vecmath = torch.empty_like(x), torch.empty_like(x)
    getattr(lib, f"narrow_vtanh_{suffix}")(x.data_ptr(), mine.data_ptr(), x.numel())
    getattr(lib, f"narrow_vecmath_tanh_{suffix}")(x.data_ptr(), vecmath.data_ptr(), x.numel())
    assert torch.equal(mine.view(torch.int64 if dtype == torch.float64 else torch.int32),
                       vecmath.view(torch.int64 if dtype == torch.float64 else torch.int32))
    ref = torch.tanh(x)
    finite = torch.isfinite(ref)
    ulp = torch.finfo(dtype).eps * ref[finite].abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((mine[finite] - ref[finite]).abs() <= ulp).all()
    assert torch.isnan(mine[~finite]).all() and torch.isnan(ref[~finite]).all()


@pytest.mark.parametrize("classes", [False, True], ids=["regression", "classes"])
def test_the_fused_step_reuses_the_evaluations_forward_phase_in_batch_mode(classes, monkeypatch):
    from manual_backprop.fast import FusedStep

    calls = {"n": 0}
    original = FusedStep._forward_and_delta

    def counted(self, *args):
        calls["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(FusedStep, "_forward_and_delta", counted)
    fused, plain = _pair(epochs=6, classes=classes, path="fused")
    fused.run(), plain.run()
    assert calls["n"] == 7  # epoch 0's evaluation, then one forward phase per epoch, not two
    _assert_same_runs(fused, plain)
