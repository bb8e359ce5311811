"""The run-folder rules against a shared logdir and bad input (issue 20 items 2, 3, 4, 6, 9, 12, 13, 20, 22, 23):
a lock that is a link or another's file is refused, --resume without --run never adopts another user's run, a
symlinked results.json is refused, gradient_noise checks --run before any write and keeps one run per folder,
repeated modes, empty lists in a --config file, a --config file that is not UTF-8, networks and populations too big
for memory, and damaged checkpoints are each one line, exit status 2.
"""

import json
import os

import pytest

from experiments import common, gradient_noise, learning_modes, sweep
from experiments.run_folder import open_run_folder

QUICK = ["--dataset", "moons", "--n-samples", "60", "--sizes", "2", "6", "2", "--batch-size", "8", "--epochs", "2",
         "--dtype", "float64", "--device", "cpu", "--quiet"]
NOISE = ["--members", "4", "--epochs", "6", "--quiet"]
OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                             reason="making a file another user's needs root")


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------- 2: the lock
def test_a_lock_that_is_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "logs" / "e" / "r"
    folder.mkdir(parents=True)
    (folder / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        open_run_folder(tmp_path / "logs", "e", "r", "d")
    assert victim.read_text() == "precious\n"


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path):
    folder = tmp_path / "logs" / "e" / "r"
    (folder / ".lock").mkdir(parents=True)
    with pytest.raises(ValueError, match="lock"):
        open_run_folder(tmp_path / "logs", "e", "r", "d")


@as_root
def test_a_lock_another_user_owns_is_refused(tmp_path):
    folder = tmp_path / "logs" / "e" / "r"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("")
    os.chown(folder / ".lock", OTHER_UID, OTHER_UID)
    with pytest.raises(ValueError, match="another user"):
        open_run_folder(tmp_path / "logs", "e", "r", "d")


# ---------------------------------------------------------------------------------------------- 3: --resume, no --run
@as_root
def test_resume_without_run_never_adopts_another_users_newest_run(tmp_path, capsys):
    logdir = tmp_path / "shared"
    assert gradient_noise.main([*NOISE, "--logdir", str(logdir)]) == 0
    planted = logdir / "gradient_noise" / "xor-h2-lr5-k4-seed0-2"
    planted.mkdir()
    (planted / "config.json").write_text(json.dumps({"members": 4}))
    for p in (planted, planted / "config.json"):
        os.chown(p, OTHER_UID, OTHER_UID)
    folder = open_run_folder(logdir, "gradient_noise", None, "xor-h2-lr5-k4-seed0", resume=True)
    folder.release()
    assert folder.name == "xor-h2-lr5-k4-seed0", "the user's own run, not the newer planted one"
    assert "yours" in folder.chosen and "skipped xor-h2-lr5-k4-seed0-2" in folder.chosen, folder.chosen


def test_resume_without_run_skips_a_run_whose_checkpoint_is_a_link(tmp_path):
    base = tmp_path / "e"
    (base / "d").mkdir(parents=True)
    (base / "d" / "config.json").write_text("{}")
    (base / "d-2" / "batch").mkdir(parents=True)
    (base / "d-2" / "config.json").write_text("{}")
    (base / "d-2" / "batch" / "checkpoint.pt").symlink_to(tmp_path / "elsewhere.pt")
    folder = open_run_folder(tmp_path, "e", None, "d", resume=True)
    folder.release()
    assert folder.name == "d" and "d-2" in folder.chosen


# ---------------------------------------------------------------------------------------------- 4, 9: gradient_noise
@pytest.mark.parametrize("name", ["../../outside", "/tmp/absolute", "..", "a/b"])
def test_gradient_noise_checks_run_before_any_write(tmp_path, capsys, name):
    assert gradient_noise.main([*NOISE, "--logdir", str(tmp_path / "logs"), "--run", name]) == 2
    assert "--run" in one_line(capsys)
    assert files(tmp_path) == []


def test_gradient_noise_run_name_from_a_config_file_is_checked_too(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"run": "../../escaped", "members": 4}))
    assert gradient_noise.main(["--config", str(config), "--logdir", str(tmp_path / "logs"), "--quiet"]) == 2
    assert "--run" in one_line(capsys)
    assert not (tmp_path / "logs").exists() and not (tmp_path.parent / "escaped").exists()


def test_gradient_noise_twice_with_other_settings_keeps_both_runs_apart(tmp_path, capsys):
    args = [*NOISE, "--logdir", str(tmp_path), "--run", "r"]
    assert gradient_noise.main(args) == 0
    before = {p: (tmp_path / "gradient_noise" / "r" / p).read_bytes() for p in files(tmp_path / "gradient_noise" / "r")}
    assert gradient_noise.main([*args, "--lr", "2"]) == 2
    assert "already exists" in one_line(capsys)
    after = {p: (tmp_path / "gradient_noise" / "r" / p).read_bytes() for p in files(tmp_path / "gradient_noise" / "r")}
    assert after == before, "results.json and the event files of the first run are untouched"


# ---------------------------------------------------------------------------------------------- 6: results.json link
def test_a_symlinked_results_json_is_refused_and_its_target_not_merged(tmp_path, capsys):
    args = [*QUICK, "--logdir", str(tmp_path), "--run", "r"]
    assert learning_modes.main([*args, "--modes", "batch"]) == 0
    target = tmp_path / "secret.json"
    target.write_text(json.dumps({"token": "x"}))
    results = tmp_path / "learning_modes" / "r" / "results.json"
    results.unlink()
    results.symlink_to(target)
    assert learning_modes.main([*args, "--modes", "online"]) == 2
    assert "symbolic link" in one_line(capsys)
    assert json.loads(target.read_text()) == {"token": "x"} and results.is_symlink()


# ---------------------------------------------------------------------------------------------- 12, 13: flags
@pytest.mark.parametrize("script, args", [(learning_modes, QUICK), (sweep, ["--seeds", "2", "--quiet"])])
def test_a_mode_named_twice_is_refused(tmp_path, capsys, script, args):
    assert script.main([*args, "--logdir", str(tmp_path), "--modes", "batch", "batch"]) == 2
    line = one_line(capsys)
    assert "--modes" in line and "batch" in line and "once" in line, line
    assert files(tmp_path) == []


@pytest.mark.parametrize("key", ["sizes", "modes"])
def test_an_empty_list_in_a_config_file_is_refused_as_the_flag_refuses_it(tmp_path, capsys, key):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({key: []}))
    assert learning_modes.main([*QUICK, "--config", str(config), "--logdir", str(tmp_path / "logs")]) == 2
    line = one_line(capsys)
    assert repr(key) in line and "non-empty" in line and str(config) in line, line


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_bytes(b'{"epochs": 3, "dataset": "\xff\xfe"}')
    assert learning_modes.main(["--config", str(config), "--logdir", str(tmp_path / "logs")]) == 2
    line = one_line(capsys)
    assert "UTF-8" in line and str(config) in line, line


# ---------------------------------------------------------------------------------------------- 20, 22: memory
def test_a_network_too_big_for_memory_is_refused_before_it_is_drawn(tmp_path, capsys):
    args = [*QUICK, "--logdir", str(tmp_path), "--sizes", "2", "1000000", "1000000", "2"]
    assert learning_modes.main(args) == 2
    line = one_line(capsys)
    assert "1000000" in line and "bytes" in line and "memory" in line, line
    assert files(tmp_path) == []


def test_a_sweep_too_big_for_memory_is_refused_before_any_write(tmp_path, capsys):
    assert sweep.main(["--seeds", "100000000", "--logdir", str(tmp_path), "--quiet"]) == 2
    line = one_line(capsys)
    assert "--seeds 100000000" in line and "GB" in line, line
    assert files(tmp_path) == []


# ---------------------------------------------------------------------------------------------- 23: user errors
def test_a_runtime_error_from_the_library_is_one_line(capsys):
    def run(cfg):
        raise RuntimeError("a tensor of shape (3,) does not fit (2,)")

    assert common.run_main("x", lambda argv: None, run, []) == 2
    assert one_line(capsys) == "x: error: a tensor of shape (3,) does not fit (2,)"


@pytest.mark.parametrize("damage", ["epoch_text", "short_generator", "history_not_a_dict", "not_a_dict"])
def test_a_malformed_checkpoint_through_resume_is_one_line(tmp_path, capsys, damage):
    import torch

    from manual_backprop.checkpoint import load_checkpoint

    args = [*QUICK, "--logdir", str(tmp_path), "--run", "r", "--modes", "batch"]
    assert learning_modes.main(args) == 0
    path = tmp_path / "learning_modes" / "r" / "batch" / "checkpoint.pt"
    state = load_checkpoint(path)
    if damage == "epoch_text":
        state["epoch"] = "1"
    elif damage == "short_generator":
        for key, value in state.items():
            if "generator" in key or "rng" in key:
                state[key] = torch.zeros(10, dtype=torch.uint8)
    elif damage == "history_not_a_dict":
        state["history"] = [1, 2, 3]
    else:
        state = [1, 2]
    torch.save(state, path)
    assert learning_modes.main([*args, "--resume", "--epochs", "2"]) == 2
    line = one_line(capsys)
    assert "checkpoint.pt" in line, line
