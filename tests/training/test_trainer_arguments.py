"""Every Trainer argument is checked in the constructor: bad modes, rates, sizes, types, data that does not fit the
network, each refused with one error that names the argument."""


import pytest
import torch

from manual_backprop import MLP
from manual_backprop.training import Trainer
from trainer_cases import F64, fresh, moons_data

moons = pytest.fixture(scope="module", name="moons")(moons_data)


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "stochastic", "lr": 0.1}, r"mode must be one of \['batch', 'online', 'minibatch'\], but got 'stochastic'"),
    ({"mode": "batch", "lr": -0.1}, "lr must be a finite number > 0, but got -0.1"),
    ({"mode": "minibatch", "lr": 0.1, "batch_size": 46}, r"batch_size must be an int in \[1, 45\]"),
    ({"mode": "minibatch", "lr": 0.1}, r"batch_size must be an int in \[1, 45\] .* but got None"),
    ({"mode": "batch", "lr": 0.1, "epochs": 0}, "epochs must be an int >= 1, but got 0"),
])
def test_bad_training_arguments_are_refused(moons, kwargs, message):
    kwargs.setdefault("epochs", 1)
    with pytest.raises(ValueError, match=message):
        Trainer(fresh(), moons, loss_fn="cross_entropy", **kwargs)


def test_data_that_does_not_fit_the_net_is_refused(moons):
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        Trainer(fresh(sizes=(3, 4, 2)), moons, mode="batch", lr=0.1, epochs=1)
    with pytest.raises(ValueError, match=r"sizes\[-1\] must equal the number of classes \(2\)"):
        Trainer(fresh(sizes=(2, 4, 3)), moons, mode="batch", lr=0.1, epochs=1, loss_fn="squared_error")


@pytest.mark.parametrize("kwargs,error,message", [
    ({"replacement": "no"}, TypeError, "replacement must be True or False, but got 'no'"),
    ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be an int >= 1, but got 0"),
    ({"histogram_every": 0}, ValueError, "histogram_every must be an int >= 1, but got 0"),
    ({"seed": "abc"}, TypeError, "seed must be an int, but got str: 'abc'"),
    ({"seed": 2 ** 70}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got 1180591620717411303424"),
    ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*63 - 1\], but got -1"),
    ({"logger": "runs"}, TypeError, "logger must be a tblog.RunLogger .* but got str"),
    ({"progress": 3}, TypeError, "progress must be True, False or a label string, but got int: 3"),
])
def test_every_trainer_argument_is_checked_in_the_constructor(moons, kwargs, error, message):
    with pytest.raises(error, match=message):
        Trainer(fresh(), moons, mode="minibatch", batch_size=5, lr=0.1, epochs=1, **kwargs)


def test_data_and_net_of_the_wrong_type_are_refused(moons):
    with pytest.raises(TypeError, match="data must be a Dataset .* but got str"):
        Trainer(fresh(), "moons", mode="batch", lr=0.1, epochs=1)
    with pytest.raises(TypeError, match="net must be a manual_backprop MLP, but got str"):
        Trainer("net", moons, mode="batch", lr=0.1, epochs=1)


def test_an_empty_split_is_refused_naming_it(moons):
    empty = type(moons)("empty", moons.x_train, moons.y_train, moons.x_test[:0], moons.y_test[:0], 2)
    with pytest.raises(ValueError, match="data.x_test is empty"):
        Trainer(fresh(), empty, mode="batch", lr=0.1, epochs=1)


def test_a_learning_rate_beyond_the_dtype_is_refused(moons):
    with pytest.raises(ValueError, match=r"lr=1e\+308 does not fit the network's dtype torch.float32"):
        Trainer(fresh(dtype=torch.float32), moons.to(dtype=torch.float32), mode="batch", lr=1e308, epochs=1)


def test_cross_entropy_on_regression_targets_is_refused(moons):
    regression = type(moons)("r", moons.x_train, moons.y_train[:, None].double(), moons.x_test,
                             moons.y_test[:, None].double(), None)
    with pytest.raises(ValueError, match="cross_entropy needs class labels, but the data holds regression targets"):
        Trainer(fresh(), regression, mode="batch", lr=0.1, epochs=1, loss_fn="cross_entropy")


def test_softmax_on_a_single_output_is_refused_before_training():
    """Softmax of one number is 1: such a network "trains" with loss 0 and learns nothing (a CSV with float labels
    and the default sizes made one). It is refused where the network is built, so no Trainer ever gets one."""
    with pytest.raises(ValueError, match="output_activation 'softmax' on a single output is always 1"):
        MLP([2, 3, 1], output_activation="softmax", dtype=F64, seed=0)
