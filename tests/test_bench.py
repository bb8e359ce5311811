"""The benchmark (python -m experiments.bench) compares like with like and reports what it claims to report.

It never asserts a time: the timings of a smoke run are checked for form (finite, positive, ratios taken pair by
pair from the recorded times), and the implementations it times are checked to compute the same update."""

import json
import statistics

import pytest
import torch

from experiments import bench, bench_peers
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
    report = bench.run(bench.parse_args(["--quick", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]))
    return report, json.loads(out.read_text())


def test_quick_run_writes_json_with_the_machine_and_every_case(quick_report):
    report, written = quick_report
    machine = written["machine"]
    assert machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert machine["dtype"] == "float32" and machine["cpu_count"] >= 1
    assert [r["case"] for r in written["results"]] == list(bench.CASES)
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
    for r in written["results"]:
        assert r["case"] in report["table"]
    names = [t["target"] for t in written["targets"]]
    assert len(names) == 6 and any("autograd" in n for n in names) and any("numpy" in n for n in names)
    assert any("floor" in n for n in names) and any("5 us" in n for n in names)


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


def test_the_benchmark_carries_the_population_case(tmp_path):
    """Issue 6's case inside the benchmark's report: K networks in lockstep vs the same runs one at a time."""
    report = bench.run(bench.parse_args(["--quick", "--device", "cpu", "--threads", "1", "--cases", "online_tiny",
                                         "--dtype", "float64", "--out", str(tmp_path / "b.json"), "--quiet"]))
    cpu = report["population"]["by_device"]["cpu"]
    assert cpu["cases"] and all(c["ns_per_member_update"] > 0 for c in cpu["cases"])
    # the timed single runs are checked against their population members (float64)
    assert cpu["check"]["members_checked"] > 0 and cpu["check"]["max_norm_relative_error"] < 1e-12
    assert "population eager" in report["population"]["table"]
