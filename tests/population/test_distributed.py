"""Data-parallel batch and minibatch learning over 2 and 3 gloo processes ends where one process ends (float64).

The claims, each proved by real torch.distributed processes on 127.0.0.1 (file-based rendezvous in tmp_path):
- every rank ends with bitwise the same parameters and the same History, even when rank r > 0 starts from other
  weights (the broadcast from rank 0 overwrites them);
- those parameters and that History equal the single-process run's to float64 summation-order rounding
  (assert_close with rtol 1e-12, atol 1e-14), for batch and minibatch mode, mean, element-wise mean (with the 1/2)
  and sum losses, with unequal shards and with ranks that get no sample of a batch at all;
- NaN on one rank stops every rank at the same update with the same message;
- a rank that hangs makes the others fail with a timeout error within a bounded time; a rank that crashes too;
- only rank 0 writes (TensorBoard events, checkpoints, JSON) and prints the table;
- the README's torchrun command runs, and its results equal the single-process experiment's.

One job of 3 processes proves all but the last claim (the 2-rank runs use its subgroup [0, 1]); the torchrun
command, 2 processes of its own, proves the last. Both start together when the first test needs them, so the
suite pays torch's start-up a few times, not once per claim; each test waits for the ranks it needs. This file is
the processes' own code is distributed_job.py. The refusals and device choices that need no process group are
test_distributed_setup.py's.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch

from distributed_job import (CASES, EXPERIMENT_ARGS, F64, FAIL_TIMEOUT_S, HAS_GLOO, JOB_LIMIT_S, _Job, _Torchrun,
                             single_process)


@pytest.fixture(scope="module")
def processes(request, tmp_path_factory):
    """Start the job and the torchrun command side by side if a selected test needs them; kill leftovers."""
    wanted = {f for item in request.session.items if getattr(item, "module", None) is request.module
              for f in getattr(item, "fixturenames", ())}
    started = {}
    if HAS_GLOO and "job" in wanted:
        started["job"] = _Job(tmp_path_factory.mktemp("job"))
    if HAS_GLOO and "torchrun_job" in wanted:
        started["torchrun"] = _Torchrun(tmp_path_factory.mktemp("torchrun"))
    yield started
    for running in started.values():
        running.kill()


@pytest.fixture(scope="module")
def job(processes):
    return processes["job"]


@pytest.fixture(scope="module")
def torchrun_job(processes):
    return processes["torchrun"]


needs_gloo = pytest.mark.skipif(not HAS_GLOO, reason="torch.distributed with gloo is not available")


# ---------------------------------------------------------------------------------------------- equivalence
def assert_same_as_single_process(name: str, got: dict, want_params, want_history: dict):
    for k, (p, q) in enumerate(zip(got["params"], want_params)):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14,
                                   msg=lambda m: f"{name}: parameter {k} (state-dict order): {m}")
    h, w = got["history"], want_history
    for key in ("epoch", "updates", "stop_reason", "message"):
        assert h[key] == w[key], f"{name}: history {key} {h[key]!r} != single process {w[key]!r}"
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        if w[key][0] is None:
            assert h[key] == w[key], f"{name}: {key}"
        else:
            torch.testing.assert_close(torch.tensor(h[key], dtype=F64), torch.tensor(w[key], dtype=F64),
                                       rtol=1e-12, atol=1e-14, msg=lambda m: f"{name}: history {key}: {m}")


def assert_ranks_identical(name: str, results: list):
    first = results[0][name]
    for r, result in enumerate(results[1:], start=1):
        got = result[name]
        for k, (p, q) in enumerate(zip(got["params"], first["params"])):
            assert torch.equal(p, q), f"{name}: rank {r}'s parameter {k} differs from rank 0's by " \
                                      f"{(p - q).abs().max().item():.3e}"
        strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # wall time is each rank's own
        assert strip(got["history"]) == strip(first["history"]), f"{name}: rank {r}'s history differs from rank 0's"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("world", ["two", "three"])
@pytest.mark.distributed
@needs_gloo
def test_data_parallel_run_equals_single_process_run(case, world, job):
    results = job.results()[:{"two": 2, "three": 3}[world]]
    runs = [r[world] for r in results]
    assert_ranks_identical(case, runs)
    want_params, want_history = single_process(CASES[case])
    assert_same_as_single_process(f"{case} over {world} ranks", runs[0][case], want_params, want_history)


@pytest.mark.distributed
@needs_gloo
def test_nan_on_one_rank_stops_every_rank_with_the_same_message(job):
    results = job.results()
    assert_ranks_identical("diverged", results)
    got = results[0]["diverged"]
    assert got["history"]["stop_reason"] == "diverged"
    assert "diverged in epoch 3 at update 3" in got["history"]["message"]
    # Every rank went back to the end of epoch 2, the last good state: the single-process run of 2 epochs.
    want_params, want_history = single_process(CASES["batch_cross_entropy"], epochs=2)
    want_history = dict(want_history, stop_reason="diverged", message=got["history"]["message"])
    assert_same_as_single_process("diverged", got, want_params, want_history)


# ---------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("failure", ["crash", "hang"])
@pytest.mark.distributed
@needs_gloo
def test_a_failed_rank_makes_the_others_fail_within_the_timeout(failure, job):
    assert job.wait(0) == 0, job.output()
    record = torch.load(job.folder / "failures.pt", weights_only=False)[failure]
    failed_rank = {"crash": 1, "hang": 2}[failure]
    assert record["error"] is not None, f"rank 0 finished although rank {failed_rank} {failure}ed"
    # From entering the update whose all_reduce cannot complete to the error: at most the timeout plus slack.
    assert record["waited"] <= FAIL_TIMEOUT_S + 20, f"rank 0 waited {record['waited']:.1f} s: {record['error']}"
    if failure == "crash":
        assert job.wait(1) != 0, "the crashed rank should exit with an error"
        assert "simulated crash of rank 1" in job.output(1)
    else:
        assert record["waited"] >= 0.8 * FAIL_TIMEOUT_S, f"rank 0 failed before the timeout: {record['error']}"
        assert "timed out" in record["error"].lower() or "timeout" in record["error"].lower(), record["error"]
        assert job.procs[2].poll() is None, "rank 2 should still hang; torchrun (here: the test) ends it"


# ---------------------------------------------------------------------------------------------- the experiment
def _single_process_experiment(tmp_path) -> dict:
    from experiments import learning_modes

    assert learning_modes.main(EXPERIMENT_ARGS + ["--logdir", str(tmp_path / "single"), "--quiet"]) == 0
    return json.loads((tmp_path / "single" / "learning_modes" / "moons-seed0" / "results.json").read_text())


def assert_results_equal(got: dict, want: dict):
    assert list(got) == list(want)
    for mode in want:
        for key in ("epoch", "updates", "stop_reason"):
            assert got[mode][key] == want[mode][key], f"{mode}: {key}"
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            torch.testing.assert_close(torch.tensor(got[mode][key], dtype=F64),
                                       torch.tensor(want[mode][key], dtype=F64),
                                       rtol=1e-12, atol=1e-14, msg=lambda m: f"{mode} {key}: {m}")


@pytest.mark.distributed
@needs_gloo
def test_only_rank_0_writes_logs_checkpoints_and_results(job, tmp_path):
    results = job.results()
    assert [r["experiment_exit"] for r in results] == [0, 0, 0]
    for r in (1, 2):
        assert results[r]["written"] == [], f"rank {r} wrote {results[r]['written']}"
    assert results[0]["written"], "rank 0 wrote nothing"
    run_dir = job.folder / "logs" / "learning_modes" / "moons-seed0"
    for mode in ("batch", "minibatch"):
        events = sorted((run_dir / mode).glob("events.out.tfevents.*"))
        assert len(events) == 1, f"{mode}: expected one event file (rank 0's), got {[e.name for e in events]}"
        assert events[0].name.split(".")[-2] == str(results[0]["pid"]), "the event file is not rank 0's"
        assert json.loads((run_dir / mode / "config.json").read_text())["world_size"] == 3
        assert (run_dir / mode / "checkpoint.pt").is_file()
    table_head = "mode           lr batch"
    assert job.output(0).count(table_head) == 1
    assert table_head not in job.output(1) and table_head not in job.output(2)
    assert_results_equal(json.loads((run_dir / "results.json").read_text()), _single_process_experiment(tmp_path))


@pytest.mark.distributed
@needs_gloo
def test_the_readme_torchrun_command_runs_and_matches_one_process(torchrun_job, tmp_path):
    try:
        torchrun_job.proc.wait(timeout=max(JOB_LIMIT_S - (time.monotonic() - torchrun_job.started), 0.1))
    except subprocess.TimeoutExpired:
        torchrun_job.kill()
        pytest.fail(f"torchrun still ran after {JOB_LIMIT_S} s\n{torchrun_job.log.read_text()}")
    output = torchrun_job.log.read_text()
    assert torchrun_job.proc.returncode == 0, output
    assert output.count("mode           lr batch") == 1, output  # rank 0 prints the table, rank 1 stays quiet
    results = json.loads((torchrun_job.folder / "learning_modes" / "moons-seed0" / "results.json").read_text())
    assert_results_equal(results, _single_process_experiment(tmp_path))
