"""Every experiment that trains on one run-folder mechanism (experiments/session.py): Ctrl-C in the middle of a run
exits 130 with no traceback and prints a resume command; that command, run exactly as printed, ends with the
results an unbroken run gives; a second run of the same command never mixes with the first.

In-process on tiny runs: Ctrl-C is a KeyboardInterrupt raised from RunLogger.log_epoch halfway through the run (the
real signal, through a process, is in tests/training/test_faults.py).
"""

import json
import shlex
import sys

import pytest

from experiments import (gradient_noise, hidden_layers, learning_modes, linear_collapse, softmax_outputs, sweep,
                         xor)
from manual_backprop.tblog import RunLogger

TINY = {
    "learning_modes": (learning_modes, ["--dataset", "moons", "--n-samples", "60", "--sizes", "2", "6", "2",
                                        "--batch-size", "8", "--epochs", "3", "--dtype", "float64", "--device",
                                        "cpu"]),
    "sweep": (sweep, ["--seeds", "2", "--lrs", "1", "4", "--epochs", "30", "--device", "cpu"]),
    "xor": (xor, ["--seeds", "2", "--epochs-perceptron", "3", "--epochs-delta", "3", "--epochs-mlp", "6",
                  "--device", "cpu"]),
    "gradient_noise": (gradient_noise, ["--members", "4", "--epochs", "12"]),
    "hidden_layers": (hidden_layers, ["--epochs", "12", "--image-every", "6", "--device", "cpu"]),
    "linear_collapse": (linear_collapse, ["--seeds", "2", "--epochs", "12", "--log-seeds", "2", "--demo-inputs",
                                          "10", "--device", "cpu"]),
    "softmax_outputs": (softmax_outputs, ["--epochs", "2", "--device", "cpu"]),
}


def comparable(value):
    """Results without what differs between two equal runs: wall-clock seconds, the run's name, --resume."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if "seconds" not in k and k not in ("run", "resume")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def results(logdir, experiment, run):
    return comparable(json.loads((logdir / experiment / run / "results.json").read_text()))


def count_epochs(monkeypatch, stop_at=None):
    """Count RunLogger.log_epoch calls; with ``stop_at``, the call of that number raises KeyboardInterrupt."""
    calls = [0]
    original = RunLogger.log_epoch

    def log_epoch(self, *args, **kwargs):
        calls[0] += 1
        if stop_at is not None and calls[0] == stop_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunLogger, "log_epoch", log_epoch)
    return calls


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_ctrl_c_prints_a_resume_command_that_ends_with_the_unbroken_result(experiment, tmp_path, capsys, monkeypatch):
    script, args = TINY[experiment]
    base = [*args, "--logdir", str(tmp_path), "--quiet"]
    with monkeypatch.context() as m:
        calls = count_epochs(m)
        assert script.main([*base, "--run", "unbroken"]) == 0
    total = calls[0]
    assert total >= 4, "the tiny run logs enough epochs to be stopped in the middle"
    capsys.readouterr()

    with monkeypatch.context() as m:
        count_epochs(m, stop_at=total // 2 + 1)
        assert script.main([*base, "--run", "stopped"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    command = err.strip().splitlines()[-1].strip()
    prefix = f"python -m experiments.{experiment} "
    assert command.startswith(prefix), err
    argv = shlex.split(command[len(prefix):])
    assert argv[-3:] == ["--run", "stopped", "--resume"], command

    assert script.main(argv) == 0, capsys.readouterr().err  # exactly as printed
    assert results(tmp_path, experiment, "stopped") == results(tmp_path, experiment, "unbroken")


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_the_same_command_twice_never_mixes_two_runs(experiment, tmp_path, capsys):
    script, args = TINY[experiment]
    base = [*args, "--logdir", str(tmp_path), "--quiet"]
    assert script.main(base) == 0
    assert script.main(base) == 0
    folders = sorted(p.name for p in (tmp_path / experiment).iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "-2", folders
    assert script.main([*base, "--run", folders[0]]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "already" in line and folders[0] in line, line


def test_resume_without_run_says_which_folder_and_why(tmp_path, capsys, monkeypatch):
    script, args = TINY["learning_modes"]
    base = [*args, "--logdir", str(tmp_path), "--modes", "batch", "--epochs", "6"]
    assert script.main([*base, "--quiet"]) == 0  # moons-seed0, finished
    with monkeypatch.context() as m:
        count_epochs(m, stop_at=4)
        assert script.main([*base, "--quiet"]) == 130  # moons-seed0-2, stopped
    capsys.readouterr()
    assert script.main([*base, "--resume"]) == 0  # no --run: the newest run of the default name that is yours
    out = capsys.readouterr().out
    assert "--resume without --run: resuming" in out and "moons-seed0-2" in out and "newest" in out, out


def test_resume_from_epoch_n_of_the_limit(tmp_path, capsys, monkeypatch):
    script, args = TINY["learning_modes"]
    base = [*args, "--logdir", str(tmp_path), "--modes", "batch", "--epochs", "6", "--run", "r"]
    with monkeypatch.context() as m:
        count_epochs(m, stop_at=4)
        assert script.main([*base, "--quiet"]) == 130
    capsys.readouterr()
    assert script.main([*base, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming batch from epoch 2 of 6" in out or "resuming batch from epoch 3 of 6" in out, out


def test_resume_without_a_run_to_resume_is_one_line(tmp_path, capsys):
    script, args = TINY["gradient_noise"]
    assert script.main([*args, "--logdir", str(tmp_path), "--resume"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "no run of the default name" in line, line
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "nothing written"


def test_resume_refuses_other_settings_naming_each(tmp_path, capsys, monkeypatch):
    script, args = TINY["xor"]
    base = [*args, "--logdir", str(tmp_path), "--quiet", "--run", "r"]
    with monkeypatch.context() as m:
        count_epochs(m, stop_at=5)
        assert script.main(base) == 130
    capsys.readouterr()
    assert script.main([*base, "--resume", "--lr-mlp", "2"]) == 2
    line = capsys.readouterr().err.strip()
    assert "--lr-mlp 5.0 (now 2.0)" in line and "--config" in line, line


def test_resume_of_a_run_that_does_not_exist_creates_nothing(tmp_path, capsys):
    script, args = TINY["hidden_layers"]
    assert script.main([*args, "--logdir", str(tmp_path), "--resume", "--run", "nothere"]) == 2
    line = capsys.readouterr().err.strip()
    assert "no run 'nothere'" in line, line
    assert not (tmp_path / "hidden_layers" / "nothere").exists()


def test_a_sweep_continues_its_population_from_the_epoch_it_saved(tmp_path, capsys, monkeypatch):
    script, args = TINY["sweep"]
    base = [*args, "--modes", "online", "--logdir", str(tmp_path)]
    with monkeypatch.context() as m:
        calls = count_epochs(m)
        assert script.main([*base, "--run", "unbroken", "--quiet"]) == 0
    total = calls[0]
    with monkeypatch.context() as m:
        count_epochs(m, stop_at=total // 2)
        assert script.main([*base, "--run", "stopped", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "online saved at epoch" in err and "checkpoints" in err, err
    with monkeypatch.context() as m:
        calls = count_epochs(m)
        assert script.main([*base, "--run", "stopped", "--resume"]) == 0
    out = capsys.readouterr().out
    saved_at = int(out.split("resuming online from epoch ")[1].split()[0])
    assert saved_at > 0, out
    assert calls[0] < total, "the resumed run trains (and logs) only the epochs after its checkpoint"
    stopped, unbroken = results(tmp_path, "sweep", "stopped"), results(tmp_path, "sweep", "unbroken")
    assert stopped["rows"] == unbroken["rows"] and stopped["members"] == unbroken["members"]  # config: --quiet
    assert not (tmp_path / "sweep" / "stopped" / "checkpoints" / "online.pt").exists(), "removed once kept"


@pytest.mark.slow
def test_a_real_ctrl_c_of_a_sweep_then_the_printed_command_ends_with_the_unbroken_result(tmp_path):
    """The real signal, through a process: SIGINT mid-mode exits 130 with no traceback; the printed command, run as
    printed, continues the mode from its checkpoint to the results of an unbroken run (three processes: slow)."""
    import signal
    import subprocess
    import sys
    import time

    args = ["--seeds", "8", "--lrs", "2", "8", "--epochs", "4000", "--modes", "online", "--target-loss", "0.001",
            "--device", "cpu", "--logdir", str(tmp_path)]
    run = lambda argv, **kw: subprocess.run([sys.executable, "-m", "experiments.sweep", *argv],  # noqa: E731
                                            capture_output=True, text=True, timeout=600, **kw)
    unbroken = run([*args, "--run", "unbroken", "--quiet"])
    assert unbroken.returncode == 0, unbroken.stderr
    process = subprocess.Popen([sys.executable, "-m", "experiments.sweep", *args, "--run", "cut"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "sweep" / "cut" / "checkpoints" / "online.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "online saved at epoch" in err, err
    command = shlex.split(err.strip().splitlines()[-1].strip())
    assert command[:3] == ["python", "-m", "experiments.sweep"] and command[-3:] == ["--run", "cut", "--resume"]
    resumed = run(command[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming online from epoch" in resumed.stdout, resumed.stdout
    cut, whole = results(tmp_path, "sweep", "cut"), results(tmp_path, "sweep", "unbroken")
    assert cut["rows"] == whole["rows"] and cut["members"] == whole["members"]


def test_an_older_checkpoint_resumes_with_one_warning_line_naming_its_file(tmp_path):
    """A checkpoint without the architecture, data digest and loss (an older version's) is taken with one line that
    names the file and says what cannot be checked: not twice (the fit check and the load), not a library source
    line."""
    import subprocess

    import torch

    _, args = TINY["learning_modes"]
    base = [sys.executable, "-m", "experiments.learning_modes", *args, "--logdir", str(tmp_path), "--modes", "batch",
            "--run", "old", "--quiet"]
    assert subprocess.run(base, capture_output=True, text=True, timeout=300).returncode == 0
    path = tmp_path / "learning_modes" / "old" / "batch" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    for key in ("net_spec", "data_digest", "loss"):
        del state[key]
    torch.save(state, path)
    done = subprocess.run([*base, "--resume", "--epochs", "5", "--allow-changes", "epochs"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "older version" in line]
    assert len(lines) == 1 and lines[0].startswith(f"learning_modes: warning: {path} was written by an older "), \
        done.stderr
    assert "cannot be checked" in lines[0] and "warnings.warn" not in done.stderr


def _stopped_sweep(tmp_path, monkeypatch):
    """A sweep of online mode stopped halfway (its population saved in checkpoints/online.pt); its argv."""
    script, args = TINY["sweep"]
    base = [*args, "--modes", "online", "--logdir", str(tmp_path), "--run", "stopped"]
    with monkeypatch.context() as m:
        count_epochs(m, stop_at=15)
        assert script.main([*base, "--quiet"]) == 130
    return base


def test_a_damaged_sweep_checkpoint_is_one_line_before_anything_is_said_or_written(tmp_path, capsys, monkeypatch):
    base = _stopped_sweep(tmp_path, monkeypatch)
    path = tmp_path / "sweep" / "stopped" / "checkpoints" / "online.pt"
    path.write_bytes(b"not a checkpoint")
    before = {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*") if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert sweep.main([*base, "--resume"]) == 2
    out, err = capsys.readouterr()
    assert out == "", f"printed before the refusal: {out!r}"
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: ") and str(path) in err, err
    assert before == {p: p.read_bytes() for p in (tmp_path / "sweep").rglob("*") if p.is_file() and p.name != ".lock"}


def test_resuming_a_finished_sweep_writes_nothing_and_says_it_is_complete(tmp_path, capsys, monkeypatch):
    base = _stopped_sweep(tmp_path, monkeypatch)
    assert sweep.main([*base, "--resume", "--quiet"]) == 0
    run_dir = tmp_path / "sweep" / "stopped"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and
              p.name != ".lock"}
    capsys.readouterr()
    assert sweep.main([*base, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"run 'stopped' ({run_dir}) is already complete" in out and "nothing was trained or written" in out, out
    assert "the rest runs now" not in out and "online" in out.split("already complete")[1], out
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and
                      p.name != ".lock"}


def test_the_resume_command_under_torchrun_names_the_run_with_a_flag_torchrun_passes_through(monkeypatch):
    from experiments.running import resume_command

    monkeypatch.setenv("WORLD_SIZE", "2")
    command = resume_command("sweep", ["--distributed", "--run", "old"], "cut")
    # torchrun would take --run for an abbreviation of its own --run-path ("ambiguous option"), so --run-name
    assert command == "torchrun --standalone --nproc_per_node=2 -m experiments.sweep --distributed --run-name cut " \
                      "--resume", command


def test_checkpoints_another_number_of_processes_wrote_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    base = _stopped_sweep(tmp_path, monkeypatch)
    folder = tmp_path / "sweep" / "stopped" / "checkpoints"
    for name in ("online.members0-1.pt", "online.members2-3.pt"):  # as a 2-process --distributed sweep saves them
        (folder / name).write_bytes((folder / "online.pt").read_bytes())
    (folder / "online.pt").unlink()
    capsys.readouterr()
    assert sweep.main([*base, "--resume"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, (out, err)
    assert f"{folder / 'online.members0-1.pt'} was saved by a sweep of 2 processes (--distributed)" in err, err
    assert "this one runs in one process" in err and "torchrun --nproc_per_node=2" in err, err


@pytest.mark.parametrize("experiment", ["xor", "gradient_noise", "hidden_layers", "linear_collapse", "softmax_outputs"])
def test_resuming_a_run_that_ended_whole_writes_nothing_and_says_so(experiment, tmp_path, capsys):
    script, args = TINY[experiment]
    base = [*args, "--logdir", str(tmp_path), "--run", "whole"]
    assert script.main([*base, "--quiet"]) == 0
    run_dir = tmp_path / experiment / "whole"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and
              p.name != ".lock"}
    capsys.readouterr()
    assert script.main([*base, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"{experiment}: run 'whole' ({run_dir}) is already complete" in out, out
    assert "nothing was trained or written" in out and "the rest runs now" not in out, out
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and
                      p.name != ".lock"}, "a resume of a run that had ended whole wrote to its folder"


def test_under_torchrun_only_rank_0_says_what_ctrl_c_kept(monkeypatch, capsys):
    from experiments import common

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setenv("RANK", "1")  # every rank gets the SIGINT; rank 0 alone holds the run folder and prints
    assert common.run_main("x", lambda argv: None, interrupted, []) == 130
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    assert common.run_main("x", lambda argv: None, interrupted, []) == 130
    assert "interrupted" in capsys.readouterr().err
