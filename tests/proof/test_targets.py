"""The one maker of targets (reference/targets.py): each kind in its range, and the commands draw through it."""

import pytest
import torch

from commands.cli import random_problem
from manual_backprop import MLP
from manual_backprop.losses import get_loss
from reference.targets import TARGET_KINDS, draw_targets, output_target_kind


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_each_kind_is_in_its_range(kind):
    y = draw_targets(kind, (2, 50), 4, torch.Generator().manual_seed(0))
    if kind == "index":
        assert y.shape == (2, 50) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < 4
        return
    assert y.shape == (2, 50, 4) and y.dtype == torch.float64
    low, high = {"onehot": (0, 1), "binary": (0, 1), "unit": (0, 1), "symmetric": (-0.9, 0.9),
                 "real": (-10, 10)}[kind]
    assert low <= y.min() and y.max() <= high
    if kind == "onehot":
        assert torch.equal(y.sum(-1), torch.ones(2, 50, dtype=torch.float64))
    if kind in ("onehot", "binary"):
        assert set(y.unique().tolist()) == {0.0, 1.0}


def test_an_unknown_kind_is_one_clear_error():
    with pytest.raises(ValueError, match="kind must be one of index, .* but got 'classes'"):
        draw_targets("classes", (3,), 2, torch.Generator())


COMMAND_KINDS = [("softmax", "cross_entropy", "index"), ("sigmoid", "squared_error", "unit"),
                 ("softmax", "squared_error", "unit"), ("sigmoid", "binary_cross_entropy", "unit"),
                 ("tanh", "squared_error", "symmetric"), ("identity", "squared_error", "real")]


@pytest.mark.parametrize("output,loss,kind", COMMAND_KINDS)
def test_check_and_trace_draw_their_targets_through_the_one_maker(output, loss, kind):
    assert output_target_kind(loss, output) == kind
    net = MLP([3, 4, 3], output_activation=output, dtype=torch.float64, seed=0)
    x, y = random_problem(net, get_loss(loss), 5, seed=2)
    g = torch.Generator().manual_seed(3)  # random_problem's generator: seed + 1, the inputs first
    torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert torch.equal(y, draw_targets(kind, (5,), 3, g))
