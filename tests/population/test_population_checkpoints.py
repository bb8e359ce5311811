"""PopulationTrainer's checkpoints (population/checkpoints.py): a run interrupted anywhere (mid-epoch, mid-chunk of
the C engine, inside the logging of a row) and resumed from its checkpoint ends bit for bit where the unbroken run
ends: parameters, history tables, stops, generator states. A checkpoint that does not fit, or is damaged, is refused
by name and changes nothing."""

import pytest
import torch

from manual_backprop.checkpoint import load_checkpoint, save_checkpoint
from manual_backprop.datasets import load_dataset
from manual_backprop.optim import Adam
from manual_backprop.population import Population, PopulationTrainer

XOR = load_dataset("xor", dtype=torch.float64)
SEEDS = list(range(6))
LRS = [0.5, 2.0, 8.0, 0.5, 2.0, 8.0]

CASES = {  # name: (mode, engine, extra trainer settings)
    "batch": ("batch", "eager", {}),
    "online-eager": ("online", "eager", {}),
    "online-c": ("online", "c", {}),
    "minibatch": ("minibatch", "eager", {"batch_size": 2}),
    "minibatch-replacement": ("minibatch", "eager", {"batch_size": 3, "replacement": True}),
    "adam": ("minibatch", "eager", {"batch_size": 2, "optimizer": "adam"}),
}


def make(case, path=None, epochs=40, epochs_per_draw=7, device="cpu", engine=None):
    mode, own_engine, extra = CASES[case]
    engine, extra = engine or own_engine, dict(extra)
    pop = Population([2, 3, 1], seeds=SEEDS, dtype=torch.float64, device=device)
    lr = LRS
    if extra.pop("optimizer", None):
        lr = [0.05] * len(SEEDS)
        extra["optimizer"] = Adam(pop, lr=lr)
    return PopulationTrainer(pop, XOR, mode=mode, lr=lr, epochs=epochs, target_loss=0.03, engine=engine,
                             epochs_per_draw=epochs_per_draw, checkpoint_path=path, checkpoint_every=5, **extra)


def same(a: PopulationTrainer, b: PopulationTrainer) -> None:
    for p, q in zip(a.pop.weights + a.pop.biases, b.pop.weights + b.pop.biases):
        assert torch.equal(p, q)
    ha, hb = a.history, b.history
    for name in ("train_loss", "test_loss", "train_accuracy"):
        assert torch.equal(ha.table(name), hb.table(name)), name
    for name in ("epoch", "updates", "last_epoch", "stop_reason", "epochs_to_target", "diverged_update", "message"):
        assert getattr(ha, name) == getattr(hb, name), name
    if a.orders is not None:
        for g, h in zip(a.orders.generators, b.orders.generators):
            assert torch.equal(g.get_state(), h.get_state())
    assert a.epoch == b.epoch


def interrupt_after(monkeypatch, target, name, calls, *, after=False):
    """The ``calls``-th call of target.name raises KeyboardInterrupt, before doing anything (``after``: once it
    returned, where a real SIGINT lands after a C call)."""
    original = getattr(target, name)
    count = [0]

    def cut(*args, **kwargs):
        count[0] += 1
        if count[0] == calls and not after:
            raise KeyboardInterrupt
        out = original(*args, **kwargs)
        if count[0] == calls:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(target, name, cut)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("where", ["mid-epoch", "logging a row"])
def test_interrupted_then_resumed_equals_the_unbroken_run_bit_for_bit(case, where, tmp_path, monkeypatch):
    unbroken = make(case)
    unbroken.run()
    path = tmp_path / "pop.pt"
    stopped = make(case, path)
    with monkeypatch.context() as m:
        if stopped._c_kernel is not None:  # the kernel trained a chunk: parameters, generators and mask moved
            interrupt_after(m, stopped._c_kernel, "run", 2 if where == "mid-epoch" else 3, after=True)
        elif where == "logging a row":
            interrupt_after(m, stopped, "_append_row", 13)
        else:
            interrupt_after(m, stopped._fn.optimizer, "update", 23)  # updates already made to the parameters
        with pytest.raises(KeyboardInterrupt):
            stopped.run()
    assert 0 < load_checkpoint(path)["epoch"] < unbroken.epoch
    resumed = make(case, path).resume(path)
    assert resumed.epoch == load_checkpoint(path)["epoch"]
    resumed.run()
    same(resumed, unbroken)


@pytest.mark.parametrize("engine", ["eager", "cuda_graph"])
@pytest.mark.parametrize("case", ["batch", "minibatch", "adam"])
def test_the_same_on_the_device_and_its_engines(case, engine, device, tmp_path, monkeypatch):
    """The scenario on each device (CUDA: eager and CUDA graphs, which replay on the same tensors a resume writes)."""
    if engine == "cuda_graph" and (device == "cpu" or case == "adam"):
        pytest.skip("CUDA graphs run on CUDA, with plain SGD")
    unbroken = make(case, device=device, engine=engine)
    unbroken.run()
    path = tmp_path / "pop.pt"
    stopped = make(case, path, device=device, engine=engine)
    with monkeypatch.context() as m:
        interrupt_after(m, stopped, "_append_row", 13)
        with pytest.raises(KeyboardInterrupt):
            stopped.run()
    resumed = make(case, path, device=device, engine=engine).resume(path)
    resumed.run()
    same(resumed, unbroken)


@pytest.mark.parametrize("case", ["online-eager", "online-c", "batch"])
def test_resume_of_a_finished_run_with_more_epochs_continues_it(case, tmp_path):
    longer = make(case, epochs=60)
    longer.run()
    path = tmp_path / "pop.pt"
    make(case, path, epochs=30).run()
    resumed = make(case, path, epochs=60).resume(path)
    resumed.run()
    same(resumed, longer)


def test_checkpoints_are_written_every_n_epochs_and_at_the_end(tmp_path):
    path = tmp_path / "pop.pt"
    trainer = make("online-eager", path, epochs=12)
    seen = []
    original = trainer.save_checkpoint
    trainer.save_checkpoint = lambda p: (seen.append(trainer.epoch), original(p))
    trainer.run()
    assert seen[:3] == [0, 5, 10] and seen[-1] == trainer.epoch


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "pop.pt"
    make("online-eager", path, epochs=10).run()
    return load_checkpoint(path)


def refused(state, case="online-eager", **kwargs):
    fresh = make(case, **kwargs)
    before = [p.clone() for p in fresh.pop.weights]
    with pytest.raises(ValueError) as err:
        fresh.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(before, fresh.pop.weights)), "nothing changes"
    assert fresh.epoch == 0 and len(fresh.history.epoch) == 0
    return str(err.value)


def test_a_damaged_weight_is_refused_by_name(saved):
    saved["weights"][1][0, 0, 0] = float("nan")
    assert "weights[1] holds NaN or inf" in refused(saved)


def test_another_network_mode_or_data_is_refused_by_name(saved):
    assert "sizes" in refused(dict(saved, spec={**saved["spec"], "sizes": [2, 4, 1]}))
    assert "mode" in refused(saved, case="batch")
    assert "other data" in refused(dict(saved, data_digest="0" * 64))
    assert "lr" in refused(dict(saved, settings={**saved["settings"], "lr": [1.0] * 6}))


def test_a_trainer_checkpoint_or_a_cut_history_is_refused(saved):
    assert "not a PopulationTrainer checkpoint" in refused({"net": {}, "epoch": 3})
    cut = dict(saved, history={"scalars": saved["history"]["scalars"],
                               "tables": {**saved["history"]["tables"],
                                          "train_loss": saved["history"]["tables"]["train_loss"][:-1]}})
    assert "'train_loss'" in refused(cut) and "damaged" in refused(cut)


def _with_member0(saved, reason, running):
    scalars = dict(saved["history"]["scalars"])
    scalars["stop_reason"] = [reason, *scalars["stop_reason"][1:]]
    active = saved["active"].clone()
    active[0] = running
    return dict(saved, active=active, history={**saved["history"], "scalars": scalars})


def test_a_member_whose_activity_contradicts_its_stop_is_refused(saved):
    """'active' and the history's stops say the same thing: an all-False 'active' would freeze members that never
    stopped, and a resumed sweep would report fewer successes without a word."""
    assert "member 0 is not stopped in its history but frozen" in refused(_with_member0(saved, "", False))
    assert "member 0 is stopped (target_loss) in its history but active" in refused(
        _with_member0(saved, "target_loss", True))
    assert "member 0 is stopped (diverged)" in refused(_with_member0(saved, "diverged", True))


def test_a_damaged_generator_state_is_refused_by_member(saved):
    orders = dict(saved["orders"])
    orders["generators"] = orders["generators"][:, :100].clone()  # cut short
    message = refused(dict(saved, orders=orders))
    assert "generator state" in message


def test_a_damaged_optimizer_state_is_refused(tmp_path):
    path = tmp_path / "pop.pt"
    make("adam", path, epochs=4).run()
    state = load_checkpoint(path)
    inner = state["optimizer"]["state"]["state"]
    first = next(iter(inner))
    inner[first]["exp_avg"].view(-1)[0] = float("inf")
    assert "optimizer state 'exp_avg'" in refused(state, case="adam")


def test_the_file_round_trips_through_the_atomic_writer(saved, tmp_path):
    save_checkpoint(saved, tmp_path / "again.pt")
    resumed = make("online-eager", epochs=10).resume(tmp_path / "again.pt")
    assert resumed.epoch == saved["epoch"]


def test_a_resumed_history_keeps_each_epoch_row_in_its_own_small_storage(tmp_path):
    """A gathered history (sharding.py, a --distributed sweep) pickles each row with its storage: rows that were
    views of one (epochs, K) table made a resumed run of 20000 epochs pickle gigabytes and die of memory."""
    import pickle

    from manual_backprop.population.checkpoints import shard_checkpoint_path

    path = tmp_path / "population.pt"
    make("online-eager", path, epochs=30).run()
    resumed = make("online-eager", epochs=30)
    resumed.resume(path)
    K = len(SEEDS)
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        rows = getattr(resumed.history, name)
        assert len(rows) == 31 and all(r.untyped_storage().nbytes() == K * 8 for r in rows), name
    assert len(pickle.dumps(resumed.history.train_loss)) < 31 * 1000
    assert shard_checkpoint_path(tmp_path / "online.pt", 4, 8) == tmp_path / "online.members4-7.pt"


def test_an_eager_epochs_history_rows_hold_no_update_losses():
    """Each epoch's figures are read back packed with its (T, K) update losses: a row kept as a view of that read-back
    held the whole block, and a gathered history pickled it once per row."""
    trainer = make("online-eager", epochs=5)
    trainer.run()
    K = len(SEEDS)
    for name in ("train_loss", "test_loss"):
        rows = getattr(trainer.history, name)[1:]
        assert rows and all(r.untyped_storage().nbytes() <= 4 * K * 8 for r in rows), name
