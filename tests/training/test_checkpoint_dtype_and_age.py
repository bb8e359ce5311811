"""A checkpoint resumes only in the dtype it was written in, and an old checkpoint that lacks what a resume checks
(issue 20 items 2 and 3, second pass) is taken with one warning naming the file and what cannot be checked."""

import warnings

import pytest
import torch

from manual_backprop.checkpoint import save_checkpoint
from manual_backprop.datasets import load_dataset
from manual_backprop.network import MLP
from manual_backprop.training import Trainer


def trainer(dtype, epochs=3):
    data = load_dataset("moons", n_samples=40, seed=0, dtype=torch.float32).to(dtype=dtype)  # the same values
    net = MLP([2, 5, 2], activation="tanh", output_activation="softmax", dtype=dtype, seed=0)
    return Trainer(net, data, mode="minibatch", batch_size=8, lr=0.05, epochs=epochs, seed=1)


@pytest.fixture(scope="module")
def float32_state():
    t = trainer(torch.float32)
    t.run()
    return t.state_dict()


def test_a_float32_checkpoint_on_float64_data_of_the_same_values_is_refused_by_name(float32_state):
    t = trainer(torch.float64, epochs=5)
    before = [p.clone() for p in t.net.parameters()]
    with pytest.raises(ValueError, match="checkpoint was written by a float32 run, but this run's network and data "
                                         "are float64"):
        t.load_state_dict(float32_state)
    assert all(torch.equal(a, b) for a, b in zip(before, t.net.parameters())) and t.epoch == 0


def test_an_old_checkpoint_without_net_spec_is_refused_by_its_tensors_dtype(float32_state):
    old = {k: v for k, v in float32_state.items() if k not in ("net_spec", "data_digest")}
    with pytest.raises(ValueError, match="written by a float32 run"):
        trainer(torch.float64).load_state_dict(old)


def test_the_same_dtype_resumes_without_a_warning(float32_state):
    t = trainer(torch.float32, epochs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.load_state_dict(float32_state)
    assert t.epoch == float32_state["epoch"]


@pytest.mark.parametrize("dropped,named", [
    (("data_digest",), ["the training and test data"]),
    (("net_spec", "data_digest", "loss"), ["the activations", "the training and test data", "the loss"]),
])
def test_an_old_checkpoint_resumes_with_one_warning_naming_the_file_and_what_is_unchecked(float32_state, tmp_path,
                                                                                           dropped, named):
    path = tmp_path / "old.pt"
    save_checkpoint({k: v for k, v in float32_state.items() if k not in dropped}, path)
    t = trainer(torch.float32, epochs=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.resume(path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert str(path) in messages[0] and "older version" in messages[0], messages[0]
    assert all(what in messages[0] for what in named), messages[0]
    assert t.epoch == float32_state["epoch"], "an old checkpoint of the same run still resumes"


def test_the_warning_is_shown_once_for_a_checkpoint_loaded_twice(float32_state):
    """learning_modes loads each checkpoint into a probe first, then into its trainer: one warning, not two."""
    old = {k: v for k, v in float32_state.items() if k != "data_digest"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        trainer(torch.float32, epochs=5).load_state_dict(old, source="checkpoint 'r/batch/checkpoint.pt'")
        trainer(torch.float32, epochs=5).load_state_dict(old, source="checkpoint 'r/batch/checkpoint.pt'")
    assert len(caught) == 1, [str(w.message) for w in caught]
