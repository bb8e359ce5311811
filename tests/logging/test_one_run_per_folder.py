"""RunLogger keeps one run per folder (issue 21 item 4), names the event file it cannot write (a full disk,
``ulimit -f``), and ``python -m experiments.plotting`` turns every bad folder, file or results.json into one line
(issue 20 item 24 and the plotting items of its "unclear" list).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import sweep
from experiments.plotting.__main__ import main as plotting
from manual_backprop.tblog import RunLogger

ROOT = Path(__file__).resolve().parents[2]


def events(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("events.out.tfevents."))


# ---------------------------------------------------------------------------------------------- one run per folder
def test_the_readme_snippet_run_twice_is_refused_instead_of_mixing_two_runs(tmp_path):
    for attempt in range(2):
        if attempt == 1:
            with pytest.raises(ValueError, match="already holds the events of another run") as err:
                RunLogger(tmp_path, "my_experiment", "run1", "minibatch")
            assert str(tmp_path / "my_experiment" / "run1" / "minibatch") in str(err.value)
            break
        with RunLogger(tmp_path, "my_experiment", "run1", "minibatch") as logger:
            logger.log_epoch(0, {"loss/train": 1.0})
    assert len(events(tmp_path / "my_experiment" / "run1" / "minibatch")) == 1


def test_a_run_that_resumes_may_write_on_in_its_own_folder(tmp_path):
    with RunLogger(tmp_path, "e", "r", "m") as logger:
        logger.log_epoch(1, {"loss/train": 1.0})
    with RunLogger(tmp_path, "e", "r", "m", resume=True) as logger:
        logger.log_epoch(2, {"loss/train": 0.5})
    assert len(events(tmp_path / "e" / "r" / "m")) == 2


def test_other_modes_of_the_same_run_share_its_folder(tmp_path):
    for mode in ("batch", "online"):
        with RunLogger(tmp_path, "e", "r", mode) as logger:
            logger.log_epoch(0, {"loss/train": 1.0})
    assert [len(events(tmp_path / "e" / "r" / m)) for m in ("batch", "online")] == [1, 1]


def test_a_mode_folder_that_is_a_file_is_one_error(tmp_path):
    (tmp_path / "e" / "r").mkdir(parents=True)
    (tmp_path / "e" / "r" / "m").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        RunLogger(tmp_path, "e", "r", "m")


@pytest.mark.skipif(not hasattr(os, "setpgid") or sys.platform != "linux", reason="RLIMIT_FSIZE is POSIX")
def test_a_file_size_limit_names_the_event_file(tmp_path):
    code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
            "from experiments.common import run_main\n"
            "from manual_backprop.tblog import RunLogger\n"
            "def run(cfg):\n"
            "    with RunLogger('runs', 'e', 'r', 'm') as log:\n"
            "        for i in range(20000):\n"
            "            log.log_epoch(i, {'loss/train': 0.5})\n"
            "raise SystemExit(run_main('x', lambda argv: None, run, []))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the event file runs/e/r/m/events.out.tfevents." in lines[0], lines


# ---------------------------------------------------------------------------------------------- plotting
@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    logdir = tmp_path_factory.mktemp("logs")
    assert sweep.main(["--seeds", "2", "--lrs", "1", "2", "--epochs", "5", "--device", "cpu", "--logdir", str(logdir),
                       "--run", "s", "--quiet"]) == 0
    return logdir / "sweep" / "s"


def plot_error(capsys, *argv) -> str:
    assert plotting([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plotting: error: "), err
    return err[0]


def test_plotting_a_missing_folder_or_a_file_says_which(sweep_run, tmp_path, capsys):
    assert "does not exist" in plot_error(capsys, sweep_run.parent / "nope", tmp_path / "out")
    assert "is a file" in plot_error(capsys, sweep_run / "results.json", tmp_path / "out")


def test_plotting_into_an_existing_file_is_refused(sweep_run, tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    assert "OUT" in plot_error(capsys, sweep_run, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "mine"


def test_plotting_with_the_wrong_experiment_names_it(sweep_run, tmp_path, capsys):
    line = plot_error(capsys, sweep_run, tmp_path / "out", "--experiment", "xor")
    assert "not a results file of xor" in line, line


def test_plotting_results_without_lr_or_with_bad_json_is_one_line(sweep_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "sweep" / "s"
    shutil.copytree(sweep_run, copy)
    results = json.loads((copy / "results.json").read_text())
    for row in results["rows"]:
        del row["lr"]
    (copy / "results.json").write_text(json.dumps(results))
    assert "does not hold what sweep writes" in plot_error(capsys, copy, tmp_path / "out")
    (copy / "results.json").write_text("{")
    assert "not valid JSON" in plot_error(capsys, copy, tmp_path / "out")


def test_a_folder_name_with_dollars_is_drawn_as_text_not_mathtext(sweep_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "sweep" / "$\\frac{a$"
    shutil.copytree(sweep_run, copy)
    shutil.copytree(sweep_run / "batch_lr1", copy / "batch_$\\frac{a$")  # a curve labelled with the name
    assert plotting([str(copy), str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "success_heatmap.png").stat().st_size > 0
