"""The main experiment: three modes from one initial network, logged so TensorBoard overlays them."""

import json

import pytest

from experiments.learning_modes import main
from manual_backprop.tblog import read_scalars
from tbserver import get_json, scalars, tensorboard_server

MODES = ["batch", "online", "minibatch"]
QUICK = ["--dataset", "moons", "--n-samples", "80", "--sizes", "2", "8", "2", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    assert main([*QUICK, "--epochs", "3", "--logdir", str(logdir), "--run", "quick"]) == 0
    return logdir / "learning_modes" / "quick"


def test_every_mode_writes_its_scalars(finished_run):
    for mode in MODES:
        series = read_scalars(finished_run / mode)
        for tag in ("loss/train", "loss/test", "accuracy/train", "accuracy/test"):
            assert [step for step, _ in series[tag]] == [0, 1, 2, 3], f"{mode} {tag}"
        assert series["loss/update"], mode
        results = json.loads((finished_run / "results.json").read_text())[mode]
        assert [v for _, v in series["loss/train"]] == pytest.approx(results["train_loss"], rel=1e-6)
        config = json.loads((finished_run / mode / "config.json").read_text())
        assert config["mode"] == mode and config["sizes"] == [2, 8, 2]
    # one update per epoch in batch mode, one per sample online, ceil(60 / 8) per epoch for minibatch
    results = json.loads((finished_run / "results.json").read_text())
    assert [results[m]["updates"][-1] for m in MODES] == [3, 3 * 60, 3 * 8]


def test_modes_start_from_the_same_network(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    assert len({results[m]["train_loss"][0] for m in MODES}) == 1


def test_real_tensorboard_serves_every_mode(finished_run, tmp_path):
    def ready(runs, tags):
        return set(runs) == set(MODES) and all("loss/train" in tags.get(m, {}) for m in MODES)

    with tensorboard_server(finished_run, tmp_path, ready) as base:
        assert sorted(get_json(f"{base}/data/runs")) == sorted(MODES)
        for mode in MODES:
            assert scalars(base, mode, "loss/train") == read_scalars(finished_run / mode)["loss/train"]


def test_resume_continues_to_the_same_result(tmp_path):
    assert main([*QUICK, "--epochs", "4", "--logdir", str(tmp_path), "--run", "unbroken"]) == 0
    assert main([*QUICK, "--epochs", "2", "--logdir", str(tmp_path), "--run", "stopped"]) == 0
    assert main([*QUICK, "--epochs", "4", "--logdir", str(tmp_path), "--run", "stopped", "--resume",
                 "--allow-changes", "epochs"]) == 0  # more epochs: a change that must be allowed
    read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
    unbroken, resumed = read("unbroken"), read("stopped")
    for mode in MODES:
        assert resumed[mode]["train_loss"] == unbroken[mode]["train_loss"], mode
        assert resumed[mode]["test_accuracy"] == unbroken[mode]["test_accuracy"], mode


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path, capsys):
    assert main([*QUICK, "--epochs", "1", "--logdir", str(tmp_path), "--run", "r"]) == 0
    assert main([*QUICK, "--epochs", "1", "--logdir", str(tmp_path), "--run", "r"]) == 2
    assert "pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "imagenet"], "must be one of"),
    (["--lr-online", "-0.5"], "--lr-online must be a finite number > 0, but got -0.5"),
    (["--batch-size", "1000"], r"--batch-size must be in [1, 60]"),
    (["--epochs", "0"], "--epochs must be >= 1, but got 0"),
])
def test_bad_flags_are_refused_before_training(tmp_path, capsys, flags, message):
    args = [*QUICK, "--epochs", "1", "--logdir", str(tmp_path), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "learning_modes").exists(), "nothing was written"


def test_default_settings_smoke(tmp_path, capsys):
    """The README's first command, cut to one epoch: digits, 64-32-10, all modes, table and tensorboard command."""
    assert main(["--epochs", "1", "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "batch" in out and "online" in out and "minibatch" in out and "--logdir" in out
    assert sorted(p.name for p in (tmp_path / "learning_modes" / "digits-seed0").iterdir()) == \
        [".lock", "batch", "minibatch", "online", "results.json"]


def test_resuming_a_finished_run_writes_nothing_and_says_it_is_complete(tmp_path, capsys):
    args = [*QUICK[:-1], "--epochs", "2", "--logdir", str(tmp_path), "--run", "done"]  # QUICK without --quiet
    assert main([*args, "--quiet"]) == 0
    run_dir = tmp_path / "learning_modes" / "done"

    def files():  # every file but the lock (which a resume must take to read the run) with its bytes and time
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.rglob("*"))
                if p.is_file() and p.name != ".lock"}

    before = files()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert files() == before, "a resume of a finished run wrote or changed files"
    assert f"run 'done' ({run_dir}) is already complete" in out and "nothing was trained or written" in out, out
    assert "resuming batch" not in out, out
    assert "minibatch" in out.split("already complete")[1], "the table of the finished modes is shown"


def test_a_resume_keeps_the_modes_that_finished_without_writing_to_them(tmp_path, capsys, monkeypatch):
    from manual_backprop.tblog import RunLogger

    args = [*QUICK[:-1], "--epochs", "3", "--logdir", str(tmp_path)]
    calls, original = [0], RunLogger.log_epoch

    def log_epoch(self, *a, **kw):
        calls[0] += 1
        if calls[0] == stop_at:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(RunLogger, "log_epoch", log_epoch)
    stop_at = None
    assert main([*args, "--run", "unbroken", "--quiet"]) == 0
    stop_at, calls[0] = calls[0] - 1, 0  # in minibatch, the last mode: batch and online have finished
    assert main([*args, "--run", "cut", "--quiet"]) == 130
    run_dir = tmp_path / "learning_modes" / "cut"
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for m in ("batch", "online") for p in (run_dir / m).rglob("*")}
    stop_at = None
    capsys.readouterr()
    assert main([*args, "--run", "cut", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "keeping batch: it finished at epoch 3 of 3" in out and "keeping online" in out, out
    assert "resuming minibatch" in out, out
    assert kept == {p: (p.read_bytes(), p.stat().st_mtime_ns) for m in ("batch", "online")
                    for p in (run_dir / m).rglob("*")}, "a finished mode's folder was written to"
    read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
    for mode in MODES:
        assert read("cut")[mode]["train_loss"] == read("unbroken")[mode]["train_loss"], mode
