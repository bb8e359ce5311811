"""The GPU check (python -m benchmarks.gpu_check): one command for everything this project claims on CUDA.

Without CUDA it refuses in one line; its --cpu-dry-run runs the same steps shrunk to seconds, which is what these
tests run. The commands it would run on a GPU are checked for what the issue asks of them."""

import json
import sys

import pytest
import torch

from benchmarks import gpu_check


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert gpu_check.main(["--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err and "--cpu-dry-run" in err
    assert not (tmp_path / "g.json").exists()


def test_on_cuda_it_runs_the_cuda_tests_both_checks_and_the_gpu_benchmarks(tmp_path):
    cmds = gpu_check.step_commands(gpu_check.parse_args([]), tmp_path)
    assert cmds["tests"][1:5] == ["-m", "pytest", "-m", "cuda"] and cmds["tests"][-1] == "tests"
    for step, dtype in (("check64", "float64"), ("check32", "float32")):
        assert cmds[step][1:4] == ["-m", "commands.cli", "check"]
        assert cmds[step][cmds[step].index("--device") + 1] == "cuda"
        assert cmds[step][cmds[step].index("--dtype") + 1] == dtype
    assert cmds["bench"][cmds["bench"].index("--device") + 1] == "cuda" and "online_tiny" in cmds["bench"]
    assert cmds["population"][cmds["population"].index("--device") + 1] == "cuda"
    assert "--quick" not in cmds["bench"] and "--K" not in cmds["population"]  # full size on the GPU
    assert gpu_check.BUDGET < 8 * 60, "the steps' timeouts share a budget under 8 minutes"


def test_step_timeouts_share_the_budget_and_keep_a_reserve_for_later_steps():
    steps = list(gpu_check.STEPS)
    assert gpu_check.step_timeout("tests", steps[1:], 0.0) == gpu_check.CAPS["tests"]
    # every step ran to its timeout: the check still ends within the budget
    elapsed = 0.0
    for i, name in enumerate(steps):
        elapsed += gpu_check.step_timeout(name, steps[i + 1:], elapsed)
    assert elapsed <= gpu_check.BUDGET
    # tests that ended early leave their time to the checks (a compile on CUDA may need it)
    assert gpu_check.step_timeout("check64", steps[2:], 20.0) == gpu_check.CAPS["check64"]


def test_cpu_dry_run_writes_the_summary_with_steps_and_targets(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--cpu-dry-run", "--steps", "check32", "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["machine"]["torch"] == torch.__version__
    (step,) = report["steps"]
    assert step["step"] == "check32" and step["status"] == "passed" and step["rc"] == 0
    assert "--device cpu" in step["command"] and "--dtype float32" in step["command"]
    assert {t["status"] for t in report["targets"]} == {"n/a"}  # nothing measured on a GPU
    assert "GPU target" in gpu_check.summary_table(report)


def test_a_step_that_hangs_times_out_alone():
    step = gpu_check.run_step("sleep", [sys.executable, "-c", "import time; print('started', flush=True); "
                                                             "time.sleep(30)"], 1.0, quiet=True)
    assert step["status"] == "timed out" and step["rc"] is None and step["seconds"] < 20


def test_a_failing_step_is_reported_and_fails_the_check():
    step = gpu_check.run_step("boom", [sys.executable, "-c", "import sys; print('bad'); sys.exit(1)"], 30, True)
    assert step["status"] == "failed" and step["rc"] == 1 and "bad" in step["tail"]


def test_pytest_summary_is_read():
    tail = "....s\n=== 12 passed, 3 skipped, 679 deselected, 1 error in 4.2s ==="
    assert gpu_check.pytest_counts(tail) == {"passed": 12, "skipped": 3, "deselected": 679, "errors": 1}


def test_gpu_targets_are_judged_on_the_steps_figures(tmp_path):
    cfg = gpu_check.parse_args(["--out", str(tmp_path / "g.json")])
    bench = {"results": [{"case": "online_tiny", "device": "cuda", "manual_path": "cuda_graph", "skipped": {},
                          "implementations": {"manual": {"median_us": 2.5}, "manual-fused": {"median_us": 40.0}}}]}
    pop = {"device": "cuda", "check": {}, "sequential_by_dtype": {},
           "cases": [{"engine": "eager", "dtype": "float32", "K": 1024, "ns_per_member_update": 300.0,
                      "speedup_vs_sequential_trainer": 500.0},
                     {"engine": "cuda_graph", "dtype": "float32", "K": 1024, "ns_per_member_update": 20.0,
                      "speedup_vs_sequential_trainer": 7500.0}]}
    (tmp_path / "gpu_bench.json").write_text(json.dumps(bench))
    (tmp_path / "gpu_population.json").write_text(json.dumps(pop))
    figs, targets = gpu_check.figures(cfg, tmp_path, {"bench": {}, "population": {}})
    status = {t["target"].split()[0]: (t["status"], t["detail"]) for t in targets}
    assert status["CUDA-graph"][0] == "met" and "2.50 us" in status["CUDA-graph"][1]
    assert status["population"][0] == "met" and "cuda_graph" in status["population"][1]
    assert figs["bench/online_tiny"]["rows"]["manual-fused"]["median_us"] == 40.0
