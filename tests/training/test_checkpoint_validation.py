"""A resume takes a checkpoint only when it is whole and this run's (issue 20 items 8, 10, 11, 23): damaged fields,
another architecture, other data and damaged optimizer state are refused by name, and nothing changes first."""

import math

import pytest
import torch

from manual_backprop.datasets import load_dataset
from manual_backprop.network import MLP
from manual_backprop.optim import Adam
from manual_backprop.training import Trainer

F64 = torch.float64


def data(name="moons"):
    return load_dataset(name, n_samples=40, seed=0, dtype=F64)


def trainer(activation="tanh", dataset=None, optimizer=False, epochs=4):
    net = MLP([2, 5, 2], activation=activation, output_activation="softmax", dtype=F64, seed=0)
    opt = Adam(net, lr=0.01) if optimizer else None
    return Trainer(net, dataset or data(), mode="minibatch", batch_size=8, lr=0.01, epochs=epochs, seed=1,
                   optimizer=opt)


@pytest.fixture(scope="module")
def saved():
    t = trainer(optimizer=True)
    t.run()
    return t.state_dict()


def fresh_after(state, **kwargs):
    """A fresh Trainer whose load of ``state`` must fail without changing anything."""
    t = trainer(optimizer=True, **kwargs)
    before = ([p.clone() for p in t.net.parameters()], t.epoch, t.updates, t.generator.get_state().clone())
    return t, before


def unchanged(t, before):
    params, epoch, updates, gen = before
    assert all(torch.equal(a, b) for a, b in zip(params, t.net.parameters()))
    assert (t.epoch, t.updates) == (epoch, updates) and torch.equal(t.generator.get_state(), gen)


def edited(state, **changes):
    out = dict(state)
    out.update(changes)
    return out


@pytest.mark.parametrize("change,message", [
    (dict(generator=torch.zeros(10, dtype=torch.uint8)), r"generator state is damaged \(10 bytes, expected \d+\)"),
    (dict(epoch=-5), r"checkpoint's 'epoch' must be a whole number >= 0, but got -5"),
    (dict(epoch="3"), r"checkpoint's 'epoch' must be a whole number >= 0, but got '3'"),
    (dict(updates=2.5), r"checkpoint's 'updates' must be a whole number"),
    (dict(train_seconds=math.nan), r"checkpoint's 'train_seconds' must be a finite number"),
])
def test_damaged_fields_are_refused_by_name_and_nothing_changes(saved, change, message):
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=message):
        t.load_state_dict(edited(saved, **change))
    unchanged(t, before)


@pytest.mark.parametrize("history,message", [
    ("not a dict", "history must be a dict"),
    ({"mode": "minibatch", "train_loss": 5}, r"history\['train_loss'\] must be a list of numbers, but got int"),
    ({"mode": "minibatch", "epoch": ["a"]}, r"history\['epoch'\] must be a list of numbers"),
])
def test_a_history_that_is_not_lists_is_refused_by_name(saved, history, message):
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=message):
        t.load_state_dict(edited(saved, history=history))
    unchanged(t, before)


def test_another_activation_is_refused(saved):
    t, before = fresh_after(saved, activation="relu")
    with pytest.raises(ValueError, match=r"written for a network with activation=\['tanh'\], but this run's network "
                                         r"has activation=\['relu'\]"):
        t.load_state_dict(saved)
    unchanged(t, before)


def test_other_data_is_refused(saved):
    t, before = fresh_after(saved, dataset=data("circles"))
    with pytest.raises(ValueError, match="written for other data"):
        t.load_state_dict(saved)
    unchanged(t, before)
    edited_data = data()
    edited_data.x_train[3, 1] += 0.5  # one number of the file changed
    t, before = fresh_after(saved, dataset=edited_data)
    with pytest.raises(ValueError, match="written for other data"):
        t.load_state_dict(saved)


def test_the_same_run_resumes(saved, tmp_path):
    t = trainer(optimizer=True, epochs=6)
    t.load_state_dict(saved)
    assert t.epoch == saved["epoch"]


def _with_optimizer_state(state, edit):
    opt = {**state["optimizer"], "state": {**state["optimizer"]["state"]}}
    per = {i: dict(s) for i, s in opt["state"]["state"].items()}
    edit(per)
    opt["state"]["state"] = per
    return edited(state, optimizer=opt)


def test_an_adam_state_with_a_parameter_deleted_is_refused(saved):
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=r"optimizer state lacks parameter 2 \(of 4\)"):
        t.load_state_dict(_with_optimizer_state(saved, lambda per: per.pop(2)))
    unchanged(t, before)


def test_nan_in_the_weights_or_the_optimizer_state_is_damage_not_divergence(saved):
    net = {k: v.clone() for k, v in saved["net"].items()}
    net["2.weight"][0, 0] = math.nan
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=r"checkpoint's net\['2.weight'\] holds NaN or inf: the file is damaged"):
        t.load_state_dict(edited(saved, net=net))
    unchanged(t, before)

    def poison(per):
        per[1]["exp_avg_sq"] = per[1]["exp_avg_sq"].clone().fill_(math.inf)

    with pytest.raises(ValueError, match=r"optimizer state 'exp_avg_sq' of parameter 1 holds NaN or inf"):
        t.load_state_dict(_with_optimizer_state(saved, poison))
    unchanged(t, before)


def _net_with(state, key, value):
    return edited(state, net={**state["net"], key: value})


@pytest.mark.parametrize("make,message", [
    (lambda t: torch.zeros_like(t, device="meta"), r"checkpoint's net\['2.bias'\] is a meta tensor"),
    (lambda t: t.to_sparse(), r"checkpoint's net\['2.bias'\] is a sparse tensor"),
    (lambda t: t.float(), r"checkpoint's net\['2.bias'\] is float32, but its other parameters are float64"),
    (lambda t: t.long(), r"checkpoint's net\['2.bias'\] is torch.int64, not a floating-point tensor"),
    (lambda t: t.tolist(), r"checkpoint's net\['2.bias'\] must be a tensor, but got list"),
])
def test_a_parameter_of_another_kind_is_refused_by_name_and_nothing_changes(saved, make, message):
    """Second red-team pass: a meta or sparse value got torch's own message (a page of dispatcher text), and a value
    of another dtype was cast silently."""
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=message):
        t.load_state_dict(_net_with(saved, "2.bias", make(saved["net"]["2.bias"])))
    unchanged(t, before)


@pytest.mark.parametrize("key", ["epoch", "updates"])
def test_a_counter_too_large_for_int64_is_refused_by_name(saved, key):
    """Second pass: "updates": 10**30 reached the C loop and came back as "Value out of range: 1000...1"."""
    t, before = fresh_after(saved)
    with pytest.raises(ValueError, match=rf"checkpoint's {key!r} must be a whole number >= 0, but got 10+ \(2\*\*63 or more\)"):
        t.load_state_dict(edited(saved, **{key: 10 ** 30}))
    unchanged(t, before)
