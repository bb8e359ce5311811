"""The benchmark (python -m benchmarks.bench) compares like with like and reports what it claims to report.

It never asserts a time: the timings of a smoke run are checked for form (finite, positive, ratios taken pair by
pair from the recorded times), and the implementations it times are checked to compute the same update."""

import json
import os
import statistics
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks import bench, case_p, flops
from benchmarks import epochs as bench_epochs
from benchmarks import peers as bench_peers
from benchmarks import report as bench_report
from benchmarks import timing as bench_timing
from benchmarks.cases import Impl
from manual_backprop import MLP
from manual_backprop.losses import get_loss
from manual_backprop.network import loss_and_gradients, update
from reference.compare import norm_relative_error
from reference.torch_mlp import TorchMLP

F64 = torch.float64


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    pytest.importorskip("sklearn")  # the small cases run on the digits
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    report = bench.run(bench.parse_args(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet",
                                         "--no-population", "--cases", *bench.CASES, "O"]))
    # --threads 1 held the process to one CPU while it ran, and gave the others back
    assert cpus is None or os.sched_getaffinity(0) == cpus
    return report, json.loads(out.read_text())


def test_quick_run_writes_json_with_the_machine_and_every_case(quick_report):
    report, written = quick_report
    machine = written["machine"]
    assert machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert machine["dtype"] == "float32" and machine["cpu_count"] >= 1
    assert [r["case"] for r in written["results"]] == list(bench.CASES)
    xla = written["machine"]["xla_flags"]  # --threads 1: XLA's CPU backend on one thread too (unless set by hand)
    assert xla is None or "intra_op_parallelism_threads=1" in xla
    assert machine["cpu_affinity"] == ("one CPU (--threads 1)" if hasattr(os, "sched_setaffinity") else
                                       "all the process may use")
    for r in written["results"]:
        assert r["device"] == "cpu" and r["dtype"] == "float32"
        impls = r["implementations"]
        for name in ("manual", "manual-plain", "autograd+SGD", "numpy", "matmul-floor"):
            assert name in impls, f"{r['case']}: {name} missing (skipped: {r['skipped']})"
        assert "jax" in impls or "jax" in r["skipped"]
        for name, row in impls.items():
            assert len(row["times_us"]) == r["repeats"] == 3, f"{r['case']}/{name}: one time per repeat"
            assert all(t > 0 for t in row["times_us"]), f"{r['case']}/{name}"
            assert row["median_us"] == pytest.approx(statistics.median(row["times_us"]))
            assert row["finite"], f"{r['case']}/{name} ended on a non-finite loss"


def test_ratios_are_medians_of_pairwise_ratios(quick_report):
    _, written = quick_report
    for r in written["results"]:
        ref = r["implementations"]["manual"]["times_us"]
        assert r["implementations"]["manual"]["ratio_to_manual"] == pytest.approx(1.0)
        for name, row in r["implementations"].items():
            pairwise = statistics.median(t / m for t, m in zip(row["times_us"], ref))
            assert row["ratio_to_manual"] == pytest.approx(pairwise), f"{r['case']}/{name}"


def test_table_and_targets_cover_every_case(quick_report):
    report, written = quick_report
    for r in written["results"] + written["trainer_results"]:
        assert r["case"] in report["table"]
    names = [t["target"] for t in written["targets"]]
    assert any("autograd" in n for n in names) and any("numpy" in n for n in names)
    assert any("floor" in n for n in names) and any("5 us" in n for n in names)
    for case in ("S:", "O:", "D:"):
        assert any(n.startswith(case) for n in names), f"no target of case {case}"
    assert all(t["status"] in ("met", "not met", "n/a") for t in written["targets"])
    assert "| no |" not in report["table"] and "| yes |" not in report["table"]


def test_quick_mode_says_na_for_targets_it_did_not_measure(quick_report):
    _, written = quick_report
    by = {t["target"]: t for t in written["targets"]}
    # --quick shrinks the large case, so its floor target is not measured; S and D were not run at all
    assert by["large case: manual within 1.15x of its matrix-product floor"]["detail"].startswith("not measured")
    assert by["CUDA-graph online XOR update at 3 us or less"]["detail"] == "not measured"  # no CUDA rows here
    assert all(t["detail"] == "not measured" for k, t in by.items() if k.startswith(("S:", "D:")))
    # what it timed, it shows but does not judge: a few short repeats are a smoke test
    for name, t in by.items():
        if name.startswith("bytes kept"):
            assert t["status"] == "met"  # counted, not timed
        else:
            assert t["status"] == "n/a" and t["met"] is None, name
    assert all(t["detail"].startswith("not judged (--quick)") for k, t in by.items() if k.startswith("O:"))


def test_the_kernel_bound_counts_the_products_and_tanh_the_narrow_kernel_makes():
    """S's computed bound: the update's products and the test split's forward phase (the training split's is the
    next update's, so it is not counted again, unlike the FLOP floor), plus one tanh per hidden unit and sample
    of both passes, at the rate given."""
    from benchmarks.flops import floor_us, kernel_bound, tanh_rate

    sizes, n_train, n_test = [4, 32, 16, 4], 1000, 300
    row = kernel_bound(sizes, n_train, n_test, gflops=100.0, tanh_ns=0.5)
    layers = 4 * 32 + 32 * 16 + 16 * 4
    assert row["macs"] == n_train * (layers + (32 * 16 + 16 * 4) + layers) + n_test * layers
    assert row["tanh_evaluations"] == (n_train + n_test) * (32 + 16)
    assert row["us"] == pytest.approx(floor_us(row["macs"], 100.0) + row["tanh_evaluations"] * 0.5e-3)
    rate = tanh_rate(torch.float32, n=1 << 12, repeats=2)
    assert rate is None or rate["ns_per_element"] > 0  # None only where the C kernels cannot be built


def test_trainer_level_case_times_every_row_over_whole_epochs(quick_report):
    _, written = quick_report
    (r,) = written["trainer_results"]
    assert r["case"] == "O" and r["updates_per_epoch"] == 4 and r["device"] == "cpu"
    rows = r["implementations"]
    for name in ("trainer-default", "trainer-default (1 epoch/call)", "trainer fast=False", "trainer fast=True",
                 "autograd+SGD", "numpy", "torch products", "FLOP floor"):
        assert name in rows, f"{name} missing (skipped: {r['skipped']})"
    assert rows["FLOP floor"]["computed"] and rows["FLOP floor"]["macs"] == 4 * (3 * 6 - 4) + 4 * 6, \
        "XOR's 4 online updates and one evaluation of its 4 samples (the test split is the training split)"
    assert ("jax" in rows and "jax (E epochs/call)" in rows) or "jax" in r["skipped"]
    assert "fast=False" in rows["trainer fast=False"]["note"] and "plain" in rows["trainer fast=False"]["note"]
    ref = rows["trainer-default"]["times_us"]
    for name, row in rows.items():
        assert row["granularity"], f"{name} states no call granularity"
        if row.get("computed"):
            continue
        assert row["cpu_us"] > 0, f"{name}: process CPU time beside wall time"
        assert len(row["times_us"]) == 3 and all(t > 0 for t in row["times_us"]), name
        assert row["per_update_us"] == pytest.approx(row["median_us"] / 4)
        assert row["ratio_to_default"] == pytest.approx(statistics.median(t / m for t, m in zip(row["times_us"], ref)))
        assert row["finite"], name


def test_manual_keeps_no_more_bytes_for_backward_than_autograd(quick_report):
    _, written = quick_report
    for r in written["results"]:
        impls = r["implementations"]
        assert impls["manual"]["kept_bytes"] <= impls["autograd+SGD"]["kept_bytes"], r["case"]
        assert impls["manual-plain"]["kept_bytes"] <= impls["autograd+SGD"]["kept_bytes"], r["case"]


def test_autograd_counter_counts_what_autograd_saves():
    # 2-2-1 sigmoid, squared error, one sample in float64: autograd packs x^0 (2 values, for dE/dW[0]), x^1
    # (2 values, saved by sigmoid and by the second Linear: one storage), x^2 (1 value, by sigmoid and mse_loss)
    # and the target y (1 value); the weights it also packs are parameters and not counted.
    twin = TorchMLP([2, 2, 1], dtype=F64)
    kept = bench_peers.autograd_kept_bytes(twin, get_loss("squared_error"), torch.rand(1, 2, dtype=F64),
                                           torch.rand(1, 1, dtype=F64))
    assert kept == (2 + 2 + 1 + 1) * 8


@pytest.mark.parametrize("name", list(bench.CASES))
def test_numpy_peer_makes_the_same_updates_as_the_manual_path(name):
    case = bench.CASES[name]
    sizes = bench.QUICK_SIZES.get(name, (case.sizes, case.batch))[0]
    net = MLP(sizes, activation=case.activation, output_activation=case.output_activation, dtype=F64, seed=0,
              bias_init="normal", init_scale=0.1)
    loss_fn = get_loss(case.loss)
    peer = bench_peers.NumpyMLP(net, loss_fn, case.lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(4, sizes[0], generator=g, dtype=F64)
        y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (4,), generator=g), sizes[-1]).to(F64)
        expected = net.loss(x, y, loss_fn)
        got = peer.step(x.numpy(), y.numpy())
        with torch.no_grad():
            _, grads = loss_and_gradients(net, x, y, loss_fn)
            update(net.weights, net.biases, grads, case.lr)
        assert abs(got - float(expected)) <= 1e-12 * max(1.0, abs(float(expected))), f"{name}: loss"
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        assert norm_relative_error(torch.from_numpy(peer.W[k]), w) <= 1e-12, f"{name}: W[{k}]"
        assert norm_relative_error(torch.from_numpy(peer.b[k]), b) <= 1e-12, f"{name}: b[{k}]"


def test_cuda_device_is_refused_cleanly_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert bench.main(["--quick", "--device", "cuda", "--out", str(tmp_path / "b.json"), "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("args, says", [
    (["--threads", "0"], "--threads must be >= 1, but got 0"),
    (["--threads", "-1"], "--threads must be >= 1, but got -1"),
    (["--seed", "-5"], "--seed must be an int in [0, 2**63 - 1], but got -5"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N (one or more), but got ['tpu']"),
    (["--out", "/"], "--out must name a file to write, not a folder, but got '/'"),
])
def test_bad_flags_get_one_line_naming_the_flag(args, says, capsys):
    assert bench.main(["--quick", "--cases", "online_tiny", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bench: error: {says}"]


def test_an_out_path_that_cannot_be_written_fails_before_anything_is_timed(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(bench, "run_case", lambda *a, **k: pytest.fail("a case ran before --out was checked"))
    out = str(blocker / "sub" / "b.json")
    assert bench.main(["--quick", "--cases", "online_tiny", "--out", out]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bench: error: --out must be a file in a folder this user can write, but got {out!r}")
    assert blocker.read_text() == "not a folder"


def test_the_benchmark_carries_the_population_case(tmp_path):
    """Issue 6's case inside the benchmark's report: K networks in lockstep vs the same runs one at a time."""
    report = bench.run(bench.parse_args(["--quick", "--device", "cpu", "--threads", "1", "--cases", "online_tiny",
                                         "--dtype", "float64", "--out", str(tmp_path / "b.json"), "--quiet"]))
    cpu = report["population"]["by_device"]["cpu"]
    assert cpu["cases"] and all(c["ns_per_member_update"] > 0 for c in cpu["cases"])
    # the timed single runs are checked against their population members (float64)
    assert cpu["check"]["members_checked"] > 0 and cpu["check"]["max_norm_relative_error"] < 1e-12
    assert "population eager" in report["population"]["table"]


# ---------------------------------------------------------------------------------------------------- Trainer-level
def test_simplechains_target_is_the_matrix_exponential_in_julias_order():
    """SimpleChains' README: A = reshape(x, 2, 2) (column-major), y = vec(exp(A)) (column by column)."""
    data = bench_epochs.simplechains_data(0, n=3, dtype=F64)
    assert data.x_train.shape == (3, 4) and data.y_train.shape == (3, 4) and data.x_test.shape == (3, 4)
    x = data.x_train[0]
    a = torch.tensor([[x[0], x[2]], [x[1], x[3]]], dtype=F64)  # columns (x0, x1) and (x2, x3)
    e = torch.linalg.matrix_exp(a)
    assert torch.allclose(data.y_train[0], torch.stack([e[0, 0], e[1, 0], e[0, 1], e[1, 1]]), rtol=1e-12)
    again = bench_epochs.simplechains_data(0, n=3, dtype=F64)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)  # seeded


def _batch_peers(peer_names):
    """S in float64 on 64 samples: batch mode makes the same updates in every implementation (no sample order)."""
    case = bench_epochs.EPOCH_CASES["S"]
    data = bench_epochs.simplechains_data(3, n=64, dtype=F64)
    net = MLP(case.sizes, activation=case.activation, output_activation=case.output_activation, dtype=F64, seed=0)
    loss_fn = get_loss(case.loss)
    split = bench_epochs.encoded_split(net, loss_fn, data)
    trainer = bench_epochs.TrainerRun(net.copy(), data, case, 0, fast=False)
    peers = {}
    for name in peer_names:
        if name == "numpy":
            peers[name] = bench_epochs.NumpyEpochs(net.copy(), loss_fn, split, "batch", case.lr, 0)
        elif name == "autograd":
            peers[name] = bench_epochs.AutogradEpochs(net.copy(), loss_fn, split, "batch", case.lr, 0)
        else:
            from benchmarks.jax_peer import JaxEpochs

            peers[name] = JaxEpochs(net.copy(), loss_fn, split, "batch", case.lr, 0, scan_epochs=name == "jax-scan")
    trainer.run(0, 3)
    for peer in peers.values():
        peer.run(0, 3)
    return trainer, peers


def test_epoch_peers_make_the_trainers_updates_and_report_its_losses():
    trainer, peers = _batch_peers(["numpy", "autograd"])
    h = trainer.trainer.history
    w = trainer.trainer.net.weights
    assert peers["numpy"].last[0] == pytest.approx(h.train_loss[-1], rel=1e-12)
    assert peers["numpy"].last[1] == pytest.approx(h.test_loss[-1], rel=1e-12)
    assert peers["autograd"].last[-2:] == pytest.approx([h.train_loss[-1], h.test_loss[-1]], rel=1e-12)
    for k in range(len(w)):
        assert norm_relative_error(torch.from_numpy(peers["numpy"].mlp.W[k]), w[k]) <= 1e-12, f"numpy W[{k}]"
        assert norm_relative_error(peers["autograd"].twin.linears[k].weight.detach(), w[k]) <= 1e-12, f"W[{k}]"


def test_jax_epoch_peer_makes_the_trainers_updates():
    pytest.importorskip("jax")
    trainer, peers = _batch_peers(["jax", "jax-scan"])
    h = trainer.trainer.history
    for name, peer in peers.items():
        for k, (wj, _) in enumerate(peer.params):
            assert norm_relative_error(torch.from_numpy(np.array(wj)), trainer.trainer.net.weights[k]) <= 1e-10, \
                f"{name}: W[{k}]"
        assert peer.final_loss() == pytest.approx(h.train_loss[-1], rel=1e-10), name


def test_epoch_targets_are_met_not_met_or_na():
    def rows(**medians):
        out = {}
        for name, us in medians.items():
            out[name.replace("_", " ").replace("fast ", "fast=")] = {"median_us": us, "per_update_us": us / 4,
                                                                     "ratio_to_default": us / medians["default"]}
        out["trainer-default"] = out.pop("default")
        return out

    s = {"case": "S", "implementations": rows(default=100.0, jax=210.0, **{"FLOP floor": 80.0})}
    s["implementations"]["FLOP floor"]["note"] = "80 multiply-adds at 1 GFLOP/s"
    o = {"case": "O", "implementations": rows(default=6.0, numpy=90.0)}
    o["implementations"]["trainer-default"]["cpu_us"] = 5.0
    d = {"case": "D", "implementations": rows(default=10.0, numpy=250.0, jax=9.0)}
    status = {t["target"]: t["status"] for t in bench_report.epoch_targets([s, o, d])}
    assert status["S: default Trainer at most 0.5x JAX's jitted epoch, same work"] == "met"  # 100 / 210
    assert status["S: default Trainer within 1.5x the FLOP floor"] == "met"  # 1.25x
    s["implementations"]["FMA floor"] = {"median_us": 40.0, "note": "40 multiply-adds at 2 GFLOP/s"}
    (line,) = [t for t in bench_report.epoch_targets([s]) if t["target"].endswith("1.5x the FLOP floor")]
    assert line["status"] == "met" and "FMA floor" in line["detail"] and "2.50x it (not within 1.5x)" in line["detail"]
    assert status["O: default Trainer at most 1 us per update, evaluation included"] == "not met"  # 1.5 us
    assert status["D: default Trainer at least 25x numpy"] == "met"  # 25x
    assert status["D: default Trainer no slower than JAX"] == "not met"  # 0.9x
    s["implementations"].pop("jax")
    s["skipped"] = {"jax": "not installed (optional peer)"}
    status = {t["target"]: t["status"] for t in bench_report.epoch_targets([s])}
    assert status["S: default Trainer at most 0.5x JAX's jitted epoch, same work"] == "n/a"  # JAX not installed
    assert status["O: default Trainer at most 1 us per update, evaluation included"] == "n/a"  # not run


# ---------------------------------------------------------------------------------------------------- timing rules
class _Jit(Impl):
    """Compiles once per length, like jax.jit over a chunk; records whether a timed run had to compile."""

    compiles_per_size = True

    def __init__(self):
        self.seen, self.compiled_while_timed = set(), []

    def run(self, u0, n):
        if n not in self.seen:
            self.seen.add(n)
            self.compiled_while_timed.append(bench_timing._TIMING)


def test_no_compilation_falls_inside_a_timed_run(monkeypatch):
    timing = bench_timing._timed

    def timed(impl, device, u0, n, cpu=None):
        monkeypatch.setattr(bench_timing, "_TIMING", True)
        try:
            return timing(impl, device, u0, n, cpu)
        finally:
            monkeypatch.setattr(bench_timing, "_TIMING", False)

    monkeypatch.setattr(bench_timing, "_TIMING", False, raising=False)
    monkeypatch.setattr(bench_timing, "_timed", timed)
    impl = _Jit()
    chunk = bench_timing.calibrate(impl, torch.device("cpu"), 1e-3, 10_000)
    bench_timing.measure({"jit": impl}, 3, {"jit": chunk}, torch.device("cpu"), 10_000)
    assert chunk in impl.seen and len(impl.compiled_while_timed) >= 2
    assert not any(impl.compiled_while_timed), "a timed run compiled"


class _Graph(Impl):
    granule = 64

    def __init__(self):
        self.lengths = []

    def run(self, u0, n):
        self.lengths.append(n)


def test_graph_rows_are_timed_on_whole_graphs_or_reported_na():
    impl = _Graph()
    chunk = bench_timing.calibrate(impl, torch.device("cpu"), 1e-4, 1000)
    assert chunk % 64 == 0 and chunk >= 64
    assert all(n % 64 == 0 for n in impl.lengths), impl.lengths
    with pytest.raises(ValueError, match="^n/a"):
        bench_timing.calibrate(_Graph(), torch.device("cpu"), 1e-4, 4)  # 4 updates: less than one graph


def test_the_benchmark_runs_without_jax_and_says_na_for_the_jax_target(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError, as where it is not installed
    report = bench.run(bench.parse_args(["--quick", "--device", "cpu", "--threads", "1", "--cases", "S",
                                         "--no-population", "--out", str(tmp_path / "b.json"), "--quiet"]))
    (r,) = report["trainer_results"]
    assert "jax" in r["skipped"] and not any(name.startswith("jax") for name in r["implementations"])
    assert report["machine"]["jax"] is None
    (jax_target,) = [t for t in report["targets"] if "JAX" in t["target"] and t["target"].startswith("S:")]
    assert jax_target["status"] == "n/a" and "JAX not installed" in jax_target["detail"]
    floor = [t for t in report["targets"] if t["target"].startswith("S:") and "floor" in t["target"]][0]
    assert floor["detail"].startswith("not judged (--quick)")  # measured without JAX (but not judged: --quick)


def test_calibration_ends_when_the_budget_is_not_a_multiple_of_the_graph():
    impl = _Graph()
    assert bench_timing.calibrate(impl, torch.device("cpu"), 10.0, 130) == 128  # never asks for more than 130
    assert max(impl.lengths) == 128


# ---------------------------------------------------------------------------------------------------- issue 19
def test_measure_gives_process_cpu_time_beside_wall_time():
    class Spin(Impl):
        def run(self, u0, n):
            end = time.process_time() + 0.002 * n
            while time.process_time() < end:
                pass

    class Sleep(Impl):
        def run(self, u0, n):
            time.sleep(0.002 * n)

    cpu = {}
    wall = bench_timing.measure({"spin": Spin(), "sleep": Sleep()}, 2, {"spin": 2, "sleep": 2},
                                torch.device("cpu"), 100, cpu)
    assert min(cpu["spin"]) >= 0.0019 and max(cpu["sleep"]) < 0.001, "sleeping is wall time, not CPU time"
    assert min(wall["sleep"]) >= 0.0019


def test_the_flop_floor_counts_the_updates_and_the_evaluation():
    # 4-32-16-4: 4*32 + 32*16 + 16*4 = 704 multiply-adds a sample through the layers
    assert flops.layer_macs([4, 32, 16, 4]) == 704
    assert flops.update_macs([4, 32, 16, 4], 10) == 10 * (3 * 704 - 4 * 32)  # no delta for the input layer
    macs = flops.epoch_macs([4, 32, 16, 4], 1, 10_000, 20_000)
    assert macs["training"] == 10_000 * (3 * 704 - 128) and macs["evaluation"] == 20_000 * 704
    assert flops.floor_us(1_000_000, 2.0) == pytest.approx(1000.0)  # 2 MFLOP at 2 GFLOP/s
    peak = flops.peak_gemm_flops(repeats=2, size=64)
    assert peak["gflops"] > 0 and peak["threads"] == torch.get_num_threads()
    assert peak["gflops"] == max(peak["torch_gflops"], peak["numpy_gflops"]), "the faster BLAS of the two"
    assert peak["library"] == ("torch" if peak["torch_gflops"] >= peak["numpy_gflops"] else "numpy")


def test_the_fma_probe_makes_the_multiply_adds_it_counts():
    """fma_peak's C loop: 12 chains of x <- 0.999 x + 0.001 on every lane, n rounds (its sum says it ran them all:
    each chain from q converges to 1 as 1 - (1 - q) 0.999^n), and its rate counts 2 FLOPs per lane per round."""
    import ctypes

    from manual_backprop.fast.common import FastPathUnavailable
    from manual_backprop.fast.narrow import load_narrow_kernel

    try:
        lib = load_narrow_kernel()
    except FastPathUnavailable as err:
        pytest.skip(f"the C kernels cannot be built here: {err}")
    fn = lib.narrow_fma_rounds_f64
    fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_void_p], None
    out = torch.empty((), dtype=torch.float64)
    for n in (0, 1, 1000):
        fn(n, out.data_ptr())
        expected = 8 * sum(1 - (1 - q) * 0.999**n for q in range(12))  # 8 lanes of double in a 64-byte vector
        assert out.item() == pytest.approx(expected, rel=1e-12), n
    rate = flops.fma_peak(torch.float32, rounds=1000, repeats=2)
    assert rate["lanes"] == 16 and rate["gflops"] == pytest.approx(2 * 12 * 16 * 1000 / rate["best_seconds"] / 1e9)


def test_the_fma_floor_sits_beside_the_flop_floor():
    macs = {"total": 1_000_000, "training": 600_000}
    rows = bench_epochs.floor_rows(macs, {"gflops": 2.0, "library": "numpy"}, 500.0, 1, training_row=True,
                                   fma={"gflops": 4.0})
    assert rows["FLOP floor"]["median_us"] == pytest.approx(1000.0) and "numpy's" in rows["FLOP floor"]["note"]
    assert rows["FMA floor"]["median_us"] == pytest.approx(500.0) and rows["FMA floor"]["ratio_to_default"] == 1.0
    assert rows["FMA floor (training only)"]["median_us"] == pytest.approx(300.0)
    assert set(bench_epochs.floor_rows(macs, {"gflops": 2.0}, None, 1, training_row=False)) == {"FLOP floor"}


def test_xor_peers_evaluate_once_as_the_trainer_does(monkeypatch):
    case = bench_epochs.EPOCH_CASES["O"]
    data = bench_epochs.epoch_data(case, torch.float64, 0)
    net = MLP(case.sizes, activation=case.activation, output_activation=case.output_activation,
              dtype=torch.float64, seed=0)
    split = bench_epochs.encoded_split(net, get_loss(case.loss), data)
    assert split["test_is_train"] and bench_epochs.evaluated_splits(split) == ("train",)
    peer = bench_epochs.NumpyEpochs(net, get_loss(case.loss), split, case.mode, case.lr, 0)
    calls = []
    real = peer.mlp.evaluate
    monkeypatch.setattr(peer.mlp, "evaluate", lambda *a: calls.append(1) or real(*a))
    peer.run(0, 3)
    assert len(calls) == 3, "one evaluation an epoch"
    assert len(bench_epochs.FloorEpochs(net, split, case.mode).evals) == 1


def test_s_has_training_only_rows_beside_the_rows_with_evaluation():
    added, skipped = [], {}
    bench_epochs.build_rows(bench_epochs.EPOCH_CASES["S"], torch.float32, 0, lambda name, make: added.append(name),
                            skipped, with_jax=False)
    for name in ("numpy", "autograd+SGD", "torch products"):
        assert name in added and f"{name} (training only)" in added


def test_case_p_times_whole_default_population_runs_and_judges_25_ns():
    result = case_p.run_case_p(2, epochs=3, k=8)
    (row,) = result["implementations"].values()
    assert row["member_updates"] == 8 * 3 * 4 and row["ns_per_member_update"] > 0 and row["cpu_ns_per_member_update"] > 0
    assert row["engine"] is not None and "construction included" in row["granularity"]
    assert result["target"]["status"] in ("met", "not met") and "25 ns" in result["target"]["target"]
