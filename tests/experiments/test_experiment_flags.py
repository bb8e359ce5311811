"""The experiments' flags come from their Config dataclasses (experiments/common.py): every setting has a flag with
its help text and default, --config FILE replays a run's saved config.json, and a bad file is one line, exit 2."""

import importlib
import json
from dataclasses import asdict, fields

import pytest

from experiments import learning_modes
from experiments.common import build_parser, flag_name

EXPERIMENTS = ["experiments.learning_modes", "experiments.xor", "experiments.linear_collapse",
               "experiments.softmax_outputs", "experiments.sweep", "experiments.gradient_noise",
               "experiments.hidden_layers"]
SCRIPTS = [*EXPERIMENTS, "benchmarks.bench", "benchmarks.population"]
QUICK = ["--dataset", "moons", "--n-samples", "80", "--sizes", "2", "8", "2", "--batch-size", "8", "--epochs", "1",
         "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_every_setting_with_its_help_text_and_default(name, capsys):
    script = importlib.import_module(name)
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    out = "".join(printed.split())  # argparse wraps lines (at spaces and hyphens): compare without whitespace
    assert "".join(script.__doc__.split()) in out, "the module docstring is the description"
    assert "--config FILE" in printed
    parser = build_parser(script.Config, prog=name)
    for f in fields(script.Config):
        flag = f.metadata.get("flags", (flag_name(f.name),))[0]
        assert flag in out, f"{name}: no flag for {f.name}"
        assert "".join(f.metadata["help"].split()) in out, f"{name}: {flag} lacks its help text"
        action = next(a for a in parser._actions if a.dest == f.name)
        assert "(default" in action.help, f"{name}: {flag} does not show its default"
        assert "".join((action.help % {}).split()) in out


def test_config_file_replays_a_run_and_flags_override_it(tmp_path):
    argv = [*QUICK, "--logdir", str(tmp_path), "--run", "first", "--lr-online", "0.05", "--modes", "batch", "online"]
    original = learning_modes.parse_args(argv)
    assert learning_modes.main(argv) == 0
    saved = tmp_path / "learning_modes" / "first" / "online" / "config.json"
    assert {"mode", "lr", "net", "data", "world_size"} <= set(json.loads(saved.read_text())), "the extras it writes"

    replayed = learning_modes.parse_args(["--config", str(saved)])
    assert asdict(replayed) == asdict(original)

    changed = learning_modes.parse_args(["--config", str(saved), "--run", "second", "--epochs", "3", "--no-quiet"])
    assert (changed.run, changed.epochs, changed.quiet) == ("second", 3, False)
    assert asdict(changed) == {**asdict(original), "run": "second", "epochs": 3, "quiet": False}
    assert learning_modes.main(["--config", str(saved), "--run", "second"]) == 0
    results = json.loads((tmp_path / "learning_modes" / "second" / "results.json").read_text())
    first = json.loads((tmp_path / "learning_modes" / "first" / "results.json").read_text())
    assert list(results) == ["batch", "online"] and results["online"]["train_loss"] == first["online"]["train_loss"]


@pytest.mark.parametrize("content,message", [
    (None, "cannot read it"),
    (" " * (2 << 20), "2097152 bytes, expected a config.json of at most 1048576 bytes"),  # not read whole first
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "must hold a JSON object"),
    ('{"epochs": 2, "learning_rate": 0.1}', "unknown setting 'learning_rate'"),
    ('{"epochs": "ten"}', "'epochs' must be an int, but got 'ten'"),
    ('{"modes": ["batch", "sideways"]}', "'modes' must be a list of values from ['batch', 'online', 'minibatch']"),
])
def test_a_bad_config_file_is_one_line_naming_it_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert learning_modes.main(["--config", str(path), "--logdir", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"learning_modes: error: --config {path}: ") and message in lines[0], lines[0]
    assert not (tmp_path / "runs").exists(), "nothing was written"


def test_a_field_check_refuses_a_bad_value_from_a_flag_or_a_file(tmp_path, capsys):
    assert learning_modes.main([*QUICK, "--epochs", "0", "--logdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "learning_modes: error: --epochs must be >= 1, but got 0"
    path = tmp_path / "config.json"
    path.write_text('{"epochs": 0}')
    assert learning_modes.main(["--config", str(path), "--logdir", str(tmp_path)]) == 2
    assert "--epochs must be >= 1, but got 0" in capsys.readouterr().err
    assert learning_modes.main(["--config", str(path), *QUICK, "--logdir", str(tmp_path)]) == 0, \
        "a flag overrides the file's bad value"


# ---------------------------------------------------------------------------------------------- one meaning per flag
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_has_the_same_run_resume_quiet_and_device_flags(name):
    config = importlib.import_module(name).Config
    by_name = {f.name: f for f in fields(config)}
    for key in ("run", "resume", "quiet", "logdir", "plots", "device"):
        assert key in by_name, f"{name} has no --{key}"
    from experiments.common import QUIET_HELP, RESUME_HELP

    assert by_name["quiet"].metadata["help"] == QUIET_HELP
    assert by_name["resume"].metadata["help"].startswith(RESUME_HELP)
    defaults = {"device": by_name["device"].default}
    assert defaults["device"] in ("auto", "cpu")
    if name in ("experiments.learning_modes", "experiments.sweep"):
        assert defaults["device"] == "auto", "the two training scripts agree on their default device"


@pytest.mark.parametrize("argv", [["--seeds", "2", "--lrs", "1", "--epochs", "3", "--device", "cpu", "--quiet"]])
def test_quiet_prints_nothing_in_the_sweep_as_in_learning_modes(tmp_path, capsys, argv):
    from experiments import sweep

    assert sweep.main([*argv, "--logdir", str(tmp_path)]) == 0
    assert learning_modes.main([*QUICK, "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", out


@pytest.mark.parametrize("flags, key, value", [
    (["--optimizer", "adam", "--lr-batch", "0.01"], "optimizer", "adam"),
    (["--optimizer", "sgd", "--momentum", "0.9"], "momentum", 0.9),
    (["--init", "he_normal"], "init", "he_normal"),
    (["--target-loss", "0.5"], "target_loss", 0.5),
    (["--replacement"], "replacement", True),
    (["--threads", "1"], "threads", 1),
])
def test_learning_modes_takes_the_trainers_settings(tmp_path, flags, key, value):
    # Three epochs: momentum's first step is plain SGD's (its velocity starts as the first gradient).
    args = [*QUICK, "--epochs", "3", "--modes", "batch", "minibatch", "--logdir", str(tmp_path), "--run", "r", *flags]
    assert learning_modes.main(args) == 0
    saved = json.loads((tmp_path / "learning_modes" / "r" / "batch" / "config.json").read_text())
    assert saved[key] == value
    plain = [*QUICK, "--epochs", "3", "--modes", "batch", "minibatch", "--logdir", str(tmp_path), "--run", "plain"]
    if key in ("optimizer", "momentum", "init"):  # these change the numbers of the run
        assert learning_modes.main(plain) == 0
        read = lambda run: json.loads((tmp_path / "learning_modes" / run / "results.json").read_text())  # noqa: E731
        assert read("r")["batch"]["train_loss"] != read("plain")["batch"]["train_loss"]


def test_run_names_of_seeds_sort_in_numeric_order(tmp_path):
    from experiments import xor

    assert xor.main(["--problems", "xor", "--methods", "delta", "--seeds", "11", "--epochs-delta", "1", "--quiet",
                     "--device", "cpu", "--logdir", str(tmp_path), "--run", "r"]) == 0
    names = sorted(p.name for p in (tmp_path / "xor" / "r").iterdir() if p.name.startswith("xor-delta-seed"))
    assert names == [f"xor-delta-seed{k:02d}" for k in range(11)]


# ---------------------------------------------------------------------------------- the Trainer's flags, everywhere
TINY = {  # a run of a few seconds of each script that trains
    "experiments.learning_modes": [*QUICK[:-1], "--epochs", "2"],
    "experiments.sweep": ["--seeds", "2", "--lrs", "1", "4", "--epochs", "8", "--device", "cpu"],
    "experiments.xor": ["--problems", "xor", "--methods", "mlp", "--seeds", "2", "--epochs-mlp", "6", "--device",
                        "cpu"],
    "experiments.gradient_noise": ["--members", "3", "--epochs", "6"],
    "experiments.hidden_layers": ["--epochs", "6", "--image-every", "3", "--device", "cpu"],
    "experiments.linear_collapse": ["--seeds", "2", "--epochs", "6", "--demo-inputs", "10", "--device", "cpu"],
    "experiments.softmax_outputs": ["--epochs", "1", "--device", "cpu"],
}


def test_every_script_that_trains_has_the_trainers_flags_from_one_place():
    from experiments.common import TRAINER_GROUP, TrainerFlags

    shared = {f.name: f for f in fields(TrainerFlags)}
    assert set(shared) == {"init", "optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay", "target_loss",
                           "replacement", "threads"}
    for name in EXPERIMENTS:
        config = importlib.import_module(name).Config
        assert issubclass(config, TrainerFlags), name
        own = {f.name: f for f in fields(config)}
        for key, f in shared.items():
            assert own[key].metadata.get("group") == TRAINER_GROUP, f"{name} --{key}: not in the Trainer's section"
            if key != "target_loss":  # a script whose target is its success criterion gives its own default
                assert own[key] is f or (own[key].default, own[key].metadata["help"]) == \
                    (f.default, f.metadata["help"]), f"{name} --{key} differs from the shared flag"


def _results(logdir, experiment, run):
    from pathlib import Path

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k and k not in ("config", "run")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads((Path(logdir) / experiment / run / "results.json").read_text()))


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("flags, key, value", [
    (["--init", "he_normal"], "init", "he_normal"),
    (["--optimizer", "adam"], "optimizer", "adam"),
])
def test_the_trainers_flags_change_every_scripts_training(name, flags, key, value, tmp_path):
    script = importlib.import_module(name)
    experiment = name.split(".")[1]
    base = [*TINY[name], "--logdir", str(tmp_path), "--quiet"]
    assert script.main([*base, "--run", "plain"]) == 0
    assert script.main([*base, "--run", "flagged", *flags]) == 0
    saved = json.loads(min((tmp_path / experiment / "flagged").rglob("config.json")).read_text())  # learning_modes:
    assert saved[key] == value, "recorded with the run's settings (HPARAMS, --resume)"  # one per mode folder
    assert _results(tmp_path, experiment, "flagged") != _results(tmp_path, experiment, "plain"), \
        f"{name} {flags} trained the same numbers"


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("flags, message", [
    (["--beta1", "1.5"], "--beta1 must be in [0, 1), but got 1.5"),
    (["--threads", "0"], "--threads must be >= 1, but got 0"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0, but got -1.0"),
    (["--eps", "0"], "--eps must be a finite number > 0, but got 0.0"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum is sgd's, but --optimizer is adam"),
])
def test_a_bad_trainer_flag_is_one_line_exit_2_in_every_script(name, flags, message, tmp_path, capsys):
    script = importlib.import_module(name)
    assert script.main([*TINY[name], "--logdir", str(tmp_path), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / name.split(".")[1]).exists(), "nothing was written"


@pytest.mark.parametrize("name", ["experiments.xor", "experiments.hidden_layers", "experiments.linear_collapse"])
def test_replacement_is_refused_where_the_training_is_batch_only(name, tmp_path, capsys):
    script = importlib.import_module(name)
    assert script.main([*TINY[name], "--logdir", str(tmp_path), "--quiet", "--replacement"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--replacement" in err and "batch mode" in err, err


def test_threads_sets_torchs_threads(tmp_path):
    import torch

    from experiments import sweep

    before = torch.get_num_threads()
    try:
        assert sweep.main([*TINY["experiments.sweep"], "--logdir", str(tmp_path), "--quiet", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
