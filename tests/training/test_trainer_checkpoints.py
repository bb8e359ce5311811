"""The Trainer's checkpoints: a resume equals the unbroken run (after Ctrl-C too, inside a fast epoch too), files are
written atomically and load without unpickling code, a crafted, damaged or unwritable checkpoint is one error naming
the file."""


import pytest
import torch

from manual_backprop import MLP
from manual_backprop.training import Trainer, train
from manual_backprop.checkpoint import load_checkpoint, save_checkpoint
from trainer_cases import F64, fresh, moons_data

moons = pytest.fixture(scope="module", name="moons")(moons_data)


def test_checkpoint_resume_equals_an_unbroken_run(moons, tmp_path):
    for mode, kwargs in [("online", {}), ("minibatch", {"batch_size": 7}), ("batch", {})]:
        unbroken = fresh()
        h_full = train(unbroken, moons, mode=mode, lr=0.2, epochs=6, loss_fn="cross_entropy", seed=2, **kwargs)
        path = tmp_path / f"{mode}.pt"
        first = fresh()
        train(first, moons, mode=mode, lr=0.2, epochs=3, loss_fn="cross_entropy", seed=2, checkpoint_path=path,
              **kwargs)
        resumed = fresh(seed=123)  # other initial weights: everything must come from the checkpoint
        trainer = Trainer(resumed, moons, mode=mode, lr=0.2, epochs=6, loss_fn="cross_entropy", seed=2,
                          checkpoint_path=path, **kwargs)
        trainer.resume(path)
        h_resumed = trainer.run()
        assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters())), mode
        assert h_resumed.train_loss == h_full.train_loss and h_resumed.updates == h_full.updates, mode
        assert load_checkpoint(path)["epoch"] == 6


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}, "the previous checkpoint is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "no temporary file is left behind"


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_result(moons, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    net = fresh()
    trainer = Trainer(net, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                      checkpoint_path=path, fast=False)  # interrupted inside the plain per-update loop
    original = Trainer._update
    calls = {"n": 0}

    def interrupt(self, idx):
        calls["n"] += 1
        if calls["n"] == 25:  # in the middle of epoch 3
            raise KeyboardInterrupt
        return original(self, idx)

    monkeypatch.setattr(Trainer, "_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["history"]["stop_reason"] == "interrupted"
    resumed = fresh(seed=9)
    t2 = Trainer(resumed, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                 fast=False)
    t2.resume(path)
    t2.run()
    unbroken = fresh()
    train(unbroken, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy", fast=False)
    assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters()))


def test_a_folder_as_checkpoint_path_is_refused_in_the_constructor(moons, tmp_path):
    with pytest.raises(ValueError, match=rf"checkpoint_path {str(tmp_path)!r} is a folder; give a file path"):
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1, checkpoint_path=tmp_path)


def test_trainer_state_dict_needs_a_mapping(moons):
    with pytest.raises(TypeError, match="state must be a Trainer.state_dict\\(\\) dict, but got NoneType"):
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1).load_state_dict(None)


def test_checkpoints_load_without_unpickling_code(moons, tmp_path, monkeypatch):
    """Every field of a Trainer checkpoint loads under torch.load(weights_only=True)."""
    path = tmp_path / "ckpt.pt"
    trainer = Trainer(fresh(), moons, mode="minibatch", batch_size=7, lr=0.2, epochs=2, checkpoint_path=path)
    trainer.run()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 2 and state["history"]["epoch"] == [0, 1, 2] and state["generator"].dtype == torch.uint8
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    load_checkpoint(path)
    assert loads == [True]


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match=rf"checkpoint {str(path)!r} holds objects that are not plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists(), "the checkpoint ran code"


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", "truncated"])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(moons, tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        Trainer(fresh(), moons, mode="batch", lr=0.1, epochs=1, checkpoint_path=path).run()
        content = path.read_bytes()[:len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"checkpoint {str(path)!r} cannot be read .*delete it"):
        load_checkpoint(path)


def test_resuming_a_diverged_run_with_a_new_lr_continues_from_the_last_good_state(moons, tmp_path):
    path = tmp_path / "ckpt.pt"
    regression = type(moons)(name="moons-regression", x_train=moons.x_train * 50, y_train=torch.randn(45, 1, dtype=F64),
                             x_test=moons.x_test, y_test=torch.randn(15, 1, dtype=F64), num_classes=None)

    def trainer(lr):
        net = MLP([2, 8, 1], activation="relu", output_activation="identity", init="normal", init_scale=1.0,
                  dtype=F64, seed=0)
        return Trainer(net, regression, mode="online", lr=lr, epochs=3, loss_fn="squared_error")

    first = trainer(0.5)
    first.checkpoint_path = path
    assert first.run().stop_reason == "diverged"
    same = trainer(0.5).resume(path)
    assert same.run().stop_reason == "diverged", "the same lr would only diverge again: the run stays finished"
    history = trainer(1e-6).resume(path).run()
    assert history.stop_reason == "max_epochs" and history.epoch == [0, 1, 2, 3], history.message


def test_ctrl_c_inside_a_fast_epoch_resumes_to_the_unbroken_fast_run(moons, tmp_path, monkeypatch):
    """The default Trainer runs a fast path (fast="auto"); Ctrl-C inside its epoch rewinds that epoch as well."""
    from manual_backprop.fast import CKernel

    path = tmp_path / "ckpt.pt"
    trainer = Trainer(fresh(), moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy",
                      checkpoint_path=path)
    assert trainer._fast_runner is not None and trainer._fast_runner.path == "c"
    original, calls = CKernel.call_epochs, {"n": 0}

    def interrupt(self, epochs):  # Ctrl-C as the C loop's call returns, before its epochs are recorded
        original(self, epochs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(CKernel, "call_epochs", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 2
    resumed = fresh(seed=9)
    Trainer(resumed, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy").resume(path).run()
    unbroken = fresh()
    train(unbroken, moons, mode="minibatch", batch_size=5, lr=0.2, epochs=5, loss_fn="cross_entropy")
    assert all(torch.equal(p, q) for p, q in zip(unbroken.parameters(), resumed.parameters()))


def test_a_checkpoint_that_cannot_be_written_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    """A folder that turns read-only (or a full disk): the error names the checkpoint, the previous one stays."""
    from manual_backprop import checkpoint

    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1}, path)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError, match=rf"cannot write {path}: Permission denied"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}
