"""The GPU check (python -m benchmarks.gpu_check): one command that brings back everything it finds on a GPU.

Without CUDA it refuses in one line; its --cpu-dry-run runs the same steps, files and budget on the CPU, which is
what these tests run. Issue 22: full logs, a summary rewritten after every step, a step's whole process group
killed on its timeout, one shared budget well inside 8 minutes, a relative --out from anywhere, and every file
written through the project's one atomic writer."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, gpu_figures

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert gpu_check.main(["--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err and "--cpu-dry-run" in err
    assert not (tmp_path / "g").exists()


def test_on_cuda_it_runs_the_cuda_tests_both_checks_and_the_gpu_benchmarks_writing_only_into_out(tmp_path):
    cmds = gpu_check.step_commands(gpu_check.parse_args([]), tmp_path)
    assert list(cmds) == list(gpu_check.STEPS)
    assert cmds["tests"][1:5] == ["-m", "pytest", "-m", "cuda"] and cmds["tests"][-1] == "tests"
    assert f"--junitxml={tmp_path / 'cuda_tests.xml'}" in cmds["tests"]
    for step, dtype in (("check64", "float64"), ("check32", "float32")):
        assert cmds[step][1:4] == ["-m", "commands.cli", "check"]
        assert cmds[step][cmds[step].index("--device") + 1] == "cuda"
        assert cmds[step][cmds[step].index("--dtype") + 1] == dtype
        assert cmds[step][cmds[step].index("--paths") + 1] == "all"
    assert cmds["bench"][cmds["bench"].index("--device") + 1] == "cuda" and "online_tiny" in cmds["bench"]
    assert cmds["population"][cmds["population"].index("--device") + 1] == "cuda"
    assert "--quick" not in cmds["bench"] and "--K" not in cmds["population"]  # full size on the GPU
    for argv in cmds.values():  # every file a step writes is named absolutely, inside the folder
        for arg in argv:
            if arg.endswith((".json", ".xml")):
                assert Path(arg.split("=")[-1]).parent == tmp_path, arg


def test_step_timeouts_share_a_budget_well_inside_8_minutes_and_keep_a_reserve_for_later_steps():
    steps = list(gpu_check.STEPS)
    assert gpu_check.BUDGET <= 420, "the whole check ends well inside 8 minutes (480 s)"
    # every step ran to its timeout: the check still ends within the budget
    elapsed = 0.0
    for i, name in enumerate(steps):
        elapsed += gpu_check.step_timeout(name, steps[i + 1:], elapsed)
    assert elapsed <= gpu_check.BUDGET
    # the CUDA tests, expected at 90-150 s, get room beyond 150 s when the environment step was quick
    assert gpu_check.step_timeout("tests", steps[2:], 5.0) >= 1.3 * 150
    # tests that ended early leave their time to the checks (a compile on CUDA may need it)
    assert gpu_check.step_timeout("check64", steps[3:], 60.0) == gpu_check.CAPS["check64"]


def test_a_steps_whole_log_is_kept_stdout_and_stderr_never_cut(tmp_path):
    code = "import sys; print('x' * 100000); print('TRACEBACK-LINE', file=sys.stderr); sys.exit(3)"
    step = gpu_check.run_step("boom", [sys.executable, "-c", code], 30, tmp_path / "logs" / "boom.log")
    assert step["status"] == "failed" and step["rc"] == 3
    text = (tmp_path / "logs" / "boom.log").read_text()
    assert "x" * 100000 in text and "TRACEBACK-LINE" in text
    assert "TRACEBACK-LINE" in step["tail"]


def test_a_timed_out_step_loses_its_whole_process_group_and_keeps_its_output(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); "
            "print('started', flush=True); print('on stderr', file=sys.stderr, flush=True); time.sleep(60)")
    start = time.perf_counter()
    step = gpu_check.run_step("hang", [sys.executable, "-c", code], 3.0, tmp_path / "hang.log")
    assert step["status"] == "timed out" and step["rc"] is None
    assert time.perf_counter() - start < 3.0 + gpu_check.KILL_GRACE + 5
    text = (tmp_path / "hang.log").read_text()
    assert "started" in text and "on stderr" in text, "a timed-out step's output comes back"
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # reaped by init shortly after the kill
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{grandchild}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the step's grandchild outlived the step's timeout")


def test_a_step_that_cannot_start_is_an_error_row(tmp_path):
    step = gpu_check.run_step("missing", [str(tmp_path / "no-such-program")], 5, tmp_path / "m.log")
    assert step["status"] == "error" and "could not start" in step["error"]


def test_the_summary_is_written_before_and_after_every_step_so_a_cut_run_says_what_it_found(tmp_path, monkeypatch):
    out = tmp_path / "g"
    summary = out / gpu_check.SUMMARY
    show = f"print(open({str(summary)!r}).read())"

    def fake(cfg, folder):  # step 2 prints the summary as it stands while step 2 runs
        return {"environment": [sys.executable, "-c", "print('env ok')"], "tests": [sys.executable, "-c", show]}

    monkeypatch.setattr(gpu_check, "step_commands", fake)
    assert gpu_check.main(["--cpu-dry-run", "--steps", "environment", "tests", "--out", str(out), "--quiet"]) == 0
    during = json.loads((out / "logs" / "tests.log").read_text())
    assert during["finished"] is False and during["running"] == "tests"
    assert [s["step"] for s in during["steps"]] == ["environment"] and during["steps"][0]["status"] == "passed"
    after = json.loads(summary.read_text())
    assert after["finished"] is True and after["running"] is None and len(after["steps"]) == 2


def test_check_rows_and_pytest_counts_are_read_from_the_logs():
    log = ("PASS: every layer agrees\n\nOne update (lr 0.1) through each path of cuda against network.py's update:\n"
           "path                          bound   worst tensor       ulps  result\n"
           "fused-exact               bit-equal           loss       0.00  agrees\n"
           "cuda_graph                bit-equal         dW[0]       1.00  disagrees\n"
           "population-compiled                                             error: RuntimeError: no triton\n")
    assert gpu_check.path_rows(log) == {"fused-exact": "agrees", "cuda_graph": "disagrees",
                                        "population-compiled": "error: RuntimeError: no triton"}
    tail = "....s\n=== 12 passed, 3 skipped, 679 deselected, 1 error in 4.2s ==="
    assert gpu_check.pytest_counts(tail) == {"passed": 12, "skipped": 3, "deselected": 679, "errors": 1}
    step = {"step": "check64", "paths": gpu_check.path_rows(log)}
    assert gpu_figures.step_result(step).startswith("1/3 paths agree: cuda_graph disagrees; population-compiled")


def test_gpu_targets_are_judged_on_the_steps_figures(tmp_path):
    bench = {"results": [{"case": "online_tiny", "device": "cuda", "manual_path": "cuda_graph", "skipped": {},
                          "implementations": {"manual": {"median_us": 2.5}, "manual-fused": {"median_us": 40.0}}}]}
    pop = {"device": "cuda", "check": {}, "sequential_by_dtype": {},
           "cases": [{"engine": "eager", "dtype": "float32", "K": 1024, "ns_per_member_update": 300.0,
                      "speedup_vs_sequential_trainer": 500.0},
                     {"engine": "cuda_graph", "dtype": "float32", "K": 1024, "ns_per_member_update": 20.0,
                      "speedup_vs_sequential_trainer": 7500.0}]}
    (tmp_path / "gpu_bench.json").write_text(json.dumps(bench))
    (tmp_path / "gpu_population.json").write_text(json.dumps(pop))
    figs, targets = gpu_figures.figures(False, tmp_path, ["bench", "population"])
    status = {t["target"].split()[0]: (t["status"], t["detail"]) for t in targets}
    assert status["CUDA-graph"][0] == "met" and "2.50 us" in status["CUDA-graph"][1]
    assert status["population"][0] == "met" and "cuda_graph" in status["population"][1]
    assert figs["bench/online_tiny"]["rows"]["manual-fused"]["median_us"] == 40.0


def test_a_planted_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    """Issue 20 item 5: the summary went through a fixed `.NAME.tmp` with write_text, which follows a symlink."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "g"
    out.mkdir()
    (out / f".{gpu_check.SUMMARY}.tmp").symlink_to(victim)
    gpu_check.write_summary(out, {"steps": []})
    assert victim.read_text() == "keep me" and json.loads((out / gpu_check.SUMMARY).read_text()) == {"steps": []}


def test_benchmarks_write_files_only_through_the_atomic_writer():
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        assert ".write_text(" not in text and ".tmp\"" not in text and ".tmp')" not in text, path.name


def test_out_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert gpu_check.main(["--cpu-dry-run", "--steps", "environment", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "a file" in err


def test_cpu_dry_run_from_outside_the_checkout_with_a_relative_out_writes_every_file_there(tmp_path):
    """The dry run's steps (here the environment, the benchmark and the population: the test, check and full runs
    are the slow test below) write every file into the relative --out, resolved against the caller's folder."""
    before = sorted(p.name for p in ROOT.iterdir())
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu-dry-run", "--quiet", "--steps",
                          "environment", "bench", "population", "--out", "rel/out"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr + run.stdout
    out = tmp_path / "rel" / "out"
    for name in ("gpu_check.json", "environment.json", "gpu_bench.json", "gpu_population.json",
                 "logs/environment.log", "logs/bench.log", "logs/population.log"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in ROOT.iterdir()) == before, "nothing is written into the checkout"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["finished"] and {s["status"] for s in report["steps"]} == {"passed"}
    assert report["figures"].get("bench/online_tiny"), "the bench figures were read from the folder"
    env = json.loads((out / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and "compiler" in env and "nccl" in env["cuda"]


@pytest.mark.slow
def test_the_whole_cpu_dry_run_writes_every_file_within_the_budget(tmp_path):
    out = tmp_path / "dry"
    start = time.perf_counter()
    assert gpu_check.main(["--cpu-dry-run", "--quiet", "--out", str(out)]) == 0
    assert time.perf_counter() - start <= gpu_check.BUDGET
    for name in ("gpu_check.json", "environment.json", "cuda_tests.xml", "gpu_bench.json", "gpu_population.json"):
        assert (out / name).is_file(), name
    for step in gpu_check.STEPS:
        assert (out / "logs" / f"{step}.log").is_file(), step
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["step"] for s in report["steps"]] == list(gpu_check.STEPS)
    assert {s["status"] for s in report["steps"]} == {"passed"}
    for step in ("check64", "check32"):
        rows = next(s for s in report["steps"] if s["step"] == step)["paths"]
        assert rows and set(rows.values()) == {"agrees"}, rows
    assert "testcase" in (out / "cuda_tests.xml").read_text()


def test_the_environment_line_says_when_there_is_no_c_compiler(tmp_path):
    env = {"torch": "2.11.0+cu130", "cuda": {"torch_cuda": "13.0", "nccl": "2.27.3", "gpus": [{"name": "H200"}]},
           "packages": {"triton": {"installed": True, "version": "3.5.0"}},
           "compiler": {"path": None, "note": "no C compiler"}}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    line = gpu_check.environment_summary(tmp_path / "environment.json")
    assert line.startswith("H200; torch 2.11.0+cu130, CUDA 13.0, NCCL 2.27.3, triton 3.5.0")
    assert "NO C compiler: the C loop falls back to the fused path" in line
    assert gpu_figures.step_result({"step": "environment", "summary": line}) == line
