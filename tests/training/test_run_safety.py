"""What a run guarantees (issue 12): nothing a user wrote is lost or mixed up, no code runs from a file, and every
bad file, folder or flag is one line naming it with exit status 2 (a diverged run: 3).

All in-process on tiny data (moons, 80 samples, a few epochs); the process-level faults (kills, two runs at once,
torchrun) are in test_faults.py.
"""

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from experiments import learning_modes, softmax_outputs, xor
from experiments.learning_modes import main

QUICK = ["--dataset", "moons", "--n-samples", "80", "--sizes", "2", "8", "2", "--batch-size", "8", "--quiet",
         "--device", "cpu"]
DIVERGES = ["--modes", "batch", "--loss", "squared_error", "--output-activation", "identity", "--lr-batch", "1e6"]


def run_dir(logdir, name):
    return logdir / "learning_modes" / name


def read(path):
    return json.loads(path.read_text())


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def snapshot(folder):
    """Every file under folder with its bytes: what "nothing was written" compares."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- 1: results.json
def test_a_second_run_under_the_same_name_adds_its_modes_to_results_json(tmp_path):
    args = [*QUICK, "--epochs", "2", "--logdir", str(tmp_path), "--run", "sep"]
    assert main([*args, "--modes", "minibatch"]) == 0
    first = read(run_dir(tmp_path, "sep") / "results.json")
    assert main([*args, "--modes", "batch"]) == 0
    results = read(run_dir(tmp_path, "sep") / "results.json")
    assert list(results) == ["minibatch", "batch"], "the earlier mode's results are kept"
    assert results["minibatch"] == first["minibatch"]


def test_a_mode_added_with_other_settings_is_refused(tmp_path, capsys):
    args = [*QUICK, "--epochs", "2", "--logdir", str(tmp_path), "--run", "sep"]
    assert main([*args, "--modes", "minibatch"]) == 0
    before = snapshot(tmp_path)
    assert main([*args, "--modes", "batch", "--seed", "5"]) == 2
    line = one_line(capsys)
    assert "--seed" in line and "0" in line and "5" in line and "sep" in line, line
    assert snapshot(tmp_path) == before, "nothing was written"


# ---------------------------------------------------------------------------------------------- 2: resume
def test_resume_refuses_changed_settings_naming_each_and_writes_nothing(tmp_path, capsys):
    args = [*QUICK, "--epochs", "2", "--logdir", str(tmp_path), "--run", "r", "--modes", "batch", "minibatch"]
    assert main(args) == 0
    before = snapshot(tmp_path)
    assert main([*args, "--resume", "--lr-batch", "0.5", "--seed", "3", "--loss", "squared_error"]) == 2
    line = one_line(capsys)
    for flag in ("--lr-batch 2.0 (now 0.5)", "--seed 0 (now 3)", "--loss cross_entropy (now squared_error)"):
        assert flag in line, line
    assert "--allow-changes" in line
    assert snapshot(tmp_path) == before, "a refused resume writes nothing"
    assert main([*args[:-7], "--sizes", "2", "16", "2", "--epochs", "2", "--logdir", str(tmp_path), "--run", "r",
                 "--modes", "batch", "--resume"]) == 2
    assert "--sizes [2, 8, 2] (now [2, 16, 2])" in one_line(capsys)
    assert snapshot(tmp_path) == before


def test_allowed_changes_are_recorded_per_segment(tmp_path, capsys):
    args = [*QUICK, "--logdir", str(tmp_path), "--run", "r", "--modes", "batch"]
    assert main([*args, "--epochs", "2"]) == 0
    assert main([*args, "--epochs", "4", "--resume"]) == 2, "more epochs is a change, refused by default"
    assert "--epochs 2 (now 4)" in one_line(capsys)
    assert main([*args, "--epochs", "4", "--lr-batch", "1.0", "--seed", "1", "--resume",
                 "--allow-changes", "lr", "epochs"]) == 2, "--allow-changes lr epochs does not allow a new seed"
    line = one_line(capsys)
    assert "--seed 0 (now 1)" in line and "--epochs" not in line.split("; ")[0], line
    assert main([*args, "--epochs", "4", "--lr-batch", "1.0", "--resume", "--allow-changes", "lr", "epochs"]) == 0
    config = read(run_dir(tmp_path, "r") / "batch" / "config.json")
    assert config["lr"] == 1.0 and config["epochs"] == 4
    assert config["segments"] == [
        {"from_epoch": 0, "epochs": 2, "lr": 2.0},
        {"from_epoch": 2, "epochs": 4, "lr": 1.0, "changed": {"epochs": [2, 4], "lr": [2.0, 1.0]}},
    ]
    assert read(run_dir(tmp_path, "r") / "results.json")["batch"]["epoch"] == [0, 1, 2, 3, 4]
    assert learning_modes.parse_args(["--config", str(run_dir(tmp_path, "r") / "batch" / "config.json")]).epochs == 4


# ---------------------------------------------------------------------------------------------- 7: float labels
def test_a_csv_with_float_labels_is_refused_before_training_not_trained_to_loss_zero(tmp_path, capsys):
    path = tmp_path / "prices.csv"
    path.write_text("a,b,price\n" + "".join(f"{i},{i % 3},{i * 0.37 + 0.1:.2f}\n" for i in range(60)))
    assert main(["--dataset", str(path), "--logdir", str(tmp_path / "runs"), "--quiet", "--device", "cpu"]) == 2
    line = one_line(capsys)
    assert "softmax' on a single output" in line and "squared_error" in line, line
    assert not (tmp_path / "runs").exists(), "refused before a folder was made"
    assert main(["--dataset", str(path), "--sizes", "2", "8", "3", "--logdir", str(tmp_path / "runs"), "--quiet",
                 "--device", "cpu"]) == 2
    assert "cross_entropy needs class labels, but the data holds regression targets" in one_line(capsys)


# ---------------------------------------------------------------------------------------------- 5: the name first
@pytest.mark.parametrize("script,name", [(learning_modes, "learning_modes"), (xor, "xor"),
                                         (softmax_outputs, "softmax_outputs")])
def test_a_run_name_with_a_path_is_refused_before_any_write(tmp_path, capsys, script, name):
    logdir = tmp_path / "a" / "b" / "logs"
    assert script.main(["--run", "../../x", "--logdir", str(logdir), "--quiet", "--device", "cpu"]) == 2
    line = one_line(capsys)
    assert line == f"{name}: error: --run must be one folder name without path separators, but got '../../x'"
    assert list(tmp_path.rglob("*")) == [], "nothing was written anywhere"


# ---------------------------------------------------------------------------------------------- 20: default name
def test_the_default_run_name_starts_a_new_folder_and_resume_takes_the_newest(tmp_path, capsys):
    args = [*QUICK, "--epochs", "1", "--logdir", str(tmp_path), "--modes", "batch"]
    assert main(args) == 0
    assert main(args) == 0, "the quick start can be run twice"
    assert sorted(p.name for p in (tmp_path / "learning_modes").iterdir()) == ["moons-seed0", "moons-seed0-2"]
    assert main([*args, "--resume"]) == 0
    assert sorted(p.name for p in (tmp_path / "learning_modes").iterdir()) == ["moons-seed0", "moons-seed0-2"]
    assert main([*args, "--run", "moons-seed0"]) == 2, "an explicit --run is still refused"
    assert "pass --resume" in one_line(capsys)


# ---------------------------------------------------------------------------------------------- 21: --distributed
def test_distributed_defaults_to_the_modes_that_can_run(monkeypatch, capsys):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = learning_modes.parse_args(["--distributed"])
    assert learning_modes.resolved_modes(cfg) == ["batch", "minibatch"]
    assert learning_modes.resolved_modes(learning_modes.parse_args([])) == ["batch", "online", "minibatch"]
    assert main(["--distributed", "--epochs", "1", "--device", "cpu"]) == 2  # no torchrun here: says how to launch
    assert "online" not in capsys.readouterr().err
    assert main(["--distributed", "--modes", "online", "batch", "--device", "cpu"]) == 2
    assert "--distributed cannot run online mode" in one_line(capsys)


# ---------------------------------------------------------------------------------------------- 22, 17: divergence
def test_a_diverged_run_exits_3_with_its_message_and_its_results(tmp_path, capsys):
    assert main([*QUICK, *DIVERGES, "--epochs", "5", "--logdir", str(tmp_path), "--run", "d"]) == 3
    err = capsys.readouterr().err
    assert "batch: diverged in epoch" in err
    assert read(run_dir(tmp_path, "d") / "results.json")["batch"]["stop_reason"] == "diverged"


def test_resuming_a_diverged_run_needs_a_new_lr(tmp_path, capsys):
    args = [*QUICK, *DIVERGES, "--epochs", "5", "--logdir", str(tmp_path), "--run", "d"]
    assert main(args) == 3
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main([*args, "--resume"]) == 2
    line = one_line(capsys)
    assert "diverged" in line and "--lr-batch" in line and "--allow-changes lr" in line, line
    assert snapshot(tmp_path) == before
    assert main([*args[:-6], "--epochs", "5", "--logdir", str(tmp_path), "--run", "d", "--resume",
                 "--allow-changes", "lr", "--lr-batch", "0.01"]) == 0
    results = read(run_dir(tmp_path, "d") / "results.json")["batch"]
    assert results["stop_reason"] == "max_epochs" and results["epoch"][-1] == 5


def test_a_seed_beyond_64_bits_is_one_line(tmp_path, capsys):
    assert main([*QUICK, "--seed", str(2 ** 70), "--logdir", str(tmp_path)]) == 2
    assert one_line(capsys) == f"learning_modes: error: --seed must be an int in [0, 2**63 - 1], but got {2 ** 70}"


# ---------------------------------------------------------------------------------------------- 11, 13: checkpoints
class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_checkpoint_is_refused_on_resume_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*QUICK, "--epochs", "1", "--logdir", str(tmp_path / "logs"), "--run", "r", "--modes", "batch"]
    assert main(args) == 0
    checkpoint = run_dir(tmp_path / "logs", "r") / "batch" / "checkpoint.pt"
    torch.save({"epoch": 1, "payload": _RunsCode()}, checkpoint)
    before = snapshot(tmp_path / "logs")
    assert main([*args, "--resume"]) == 2
    line = one_line(capsys)
    assert str(checkpoint) in line and "not plain data" in line, line
    assert not (tmp_path / "pwned").exists(), "the checkpoint ran code"
    assert snapshot(tmp_path / "logs") == before


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, capsys, damage):
    args = [*QUICK, "--epochs", "1", "--logdir", str(tmp_path), "--run", "r", "--modes", "batch"]
    assert main(args) == 0
    checkpoint = run_dir(tmp_path, "r") / "batch" / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes({"empty": b"", "garbage": b"\x00garbage" * 10, "truncated": data[:len(data) // 2]}[damage])
    assert main([*args, "--resume"]) == 2
    line = one_line(capsys)
    assert str(checkpoint) in line and "cannot be read" in line and "delete it" in line, line


# ---------------------------------------------------------------------------------------------- 14: OS errors
def test_a_logdir_that_is_a_file_is_one_line(tmp_path, capsys):
    logdir = tmp_path / "runs"
    logdir.write_text("not a folder")
    assert main([*QUICK, "--logdir", str(logdir)]) == 2
    line = one_line(capsys)
    assert str(logdir) in line and "not a folder" in line, line


def test_an_unwritable_run_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from experiments import run_folder

    real_open = os.open

    def denied(path, *args, **kwargs):  # what a read-only folder does to the lock file (root ignores chmod)
        if str(path).endswith(run_folder.LOCK_NAME):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(run_folder.os, "open", denied)
    assert main([*QUICK, "--logdir", str(tmp_path), "--run", "r"]) == 2
    line = one_line(capsys)
    assert "Permission denied" in line and str(tmp_path / "learning_modes" / "r") in line, line


def test_an_unreadable_csv_is_one_line(tmp_path, capsys, monkeypatch):
    from manual_backprop.datasets import csv_file

    path = tmp_path / "data.csv"
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(csv_file, "open", denied, raising=False)
    assert main(["--dataset", str(path), "--logdir", str(tmp_path / "runs"), "--quiet"]) == 2
    line = one_line(capsys)
    assert str(path) in line and "Permission denied" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_logdir_is_one_line(tmp_path, capsys):
    logdir = tmp_path / "runs"
    logdir.mkdir()
    logdir.chmod(0o555)
    try:
        assert main([*QUICK, "--logdir", str(logdir)]) == 2
        assert str(logdir) in one_line(capsys)
    finally:
        logdir.chmod(0o755)


# ---------------------------------------------------------------------------------------------- 12: file modes
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert main([*QUICK, "--epochs", "1", "--logdir", str(tmp_path), "--run", "r", "--modes", "batch"]) == 0
    finally:
        os.umask(old)
    folder = run_dir(tmp_path, "r")
    for path in (folder / "results.json", folder / "batch" / "config.json", folder / "batch" / "checkpoint.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# ---------------------------------------------------------------------------------------------- 12b: the C cache
MARKER_C = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("a planted library ran", f); fclose(f); }
}
"""


@pytest.mark.skipif(__import__("shutil").which("gcc") is None and __import__("shutil").which("cc") is None,
                    reason="no C compiler")
def test_the_c_loop_is_never_loaded_from_a_cache_folder_others_control(tmp_path, monkeypatch):
    """A library planted under the project's own name in a cache folder owned by another user (or writable by
    others) is never loaded: the folder is refused and the library built in a fresh private temporary folder."""
    import shutil
    import subprocess
    import tempfile

    from manual_backprop.fast import c_loop

    cache = tmp_path / "cache"
    monkeypatch.setenv("MANUAL_BACKPROP_CACHE", str(cache))
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    built, real_compile = [], c_loop._compile

    def note_name(cc, target, header, main="mlp.c", cxx=False):  # the name the project computes, not loaded from the cache
        built.append(target)
        if target.parent == cache:
            raise c_loop.FastPathUnavailable("the test builds elsewhere")
        return real_compile(cc, target, header, main=main, cxx=cxx)

    monkeypatch.setattr(c_loop, "_compile", note_name)
    c_loop.load_kernel()
    name = built[0].name
    good = tmp_path / "good.so"
    shutil.copyfile(built[-1], good)
    shutil.rmtree(built[-1].parent)

    # Another user's folder, writable by everyone, holding a library under that very name.
    marker = tmp_path / "planted_ran"
    (tmp_path / "planted.c").write_text(MARKER_C % marker)
    cc = c_loop._compiler()
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(cache / name), str(tmp_path / "planted.c")], check=True)
    real_lstat, other_uid = os.lstat, os.getuid() + 1

    def lstat(path, *args, **kwargs):
        info = real_lstat(path, *args, **kwargs)
        if os.fspath(path) == str(cache):
            fields = list(info)
            fields[stat.ST_MODE], fields[stat.ST_UID] = stat.S_IFDIR | 0o777, other_uid
            return os.stat_result(fields)
        return info

    monkeypatch.setattr(c_loop.os, "lstat", lstat)
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    monkeypatch.setattr(c_loop, "_compile", lambda cc, target, header, main="mlp.c", cxx=False: shutil.copyfile(good, target))
    loaded = []
    real_cdll = c_loop.ctypes.CDLL
    monkeypatch.setattr(c_loop.ctypes, "CDLL", lambda path, *a, **k: loaded.append(os.path.realpath(path)) or
                        real_cdll(path, *a, **k))  # the file an open descriptor (/proc/self/fd/N) names
    lib = c_loop.load_kernel()
    assert not marker.exists(), "the planted library ran"
    assert loaded and all(not p.startswith(str(cache)) for p in loaded), loaded
    folder = Path(loaded[-1]).parent
    assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith("manual_backprop_"), folder
    assert stat.S_IMODE(real_lstat(folder).st_mode) == 0o700, "a fresh private folder"
    assert lib.mbp_abi_version() == c_loop._ABI_VERSION
    shutil.rmtree(folder)

    # Our own folder, made writable by others: made private again before anything is loaded from it.
    monkeypatch.setattr(c_loop.os, "lstat", real_lstat)
    monkeypatch.setattr(c_loop, "_lib_cache", {})
    shutil.copyfile(good, cache / name)
    (cache / name).chmod(0o700)
    cache.chmod(0o777)
    c_loop.load_kernel()
    assert stat.S_IMODE(cache.stat().st_mode) & 0o022 == 0 and loaded[-1] == str(cache / name)
