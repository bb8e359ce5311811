"""History.seconds and Trainer.train_seconds are training time (evaluation excluded) on every path, including the
paths whose evaluation of the training split makes the next update's pass: the narrow kernel's (the whole forward
and backward phase) and the fused step's in batch mode (the forward phase). That pass is the update's work, so it
counts as training time whichever call made it; before this was kept, the narrow path reported the step alone
(200 epochs of S as 15 us of training).

The claims are accounting ones, with wide margins: the narrow path's training time holds at least 0.4 of a pass
measured alone per epoch (it had held about 1%), and a fused step whose forward phase is made 10 ms slower counts
those 10 ms an update."""

import time

import pytest
import torch

from manual_backprop import MLP, Trainer
from manual_backprop.datasets import Dataset
from manual_backprop.fast import FastPathUnavailable
from manual_backprop.fast.narrow import NarrowKernel, load_narrow_kernel
from manual_backprop.fast.narrow_epochs import chunks_unsupported


def _regression(n: int, classes: bool) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    if classes:
        y, y_test = (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), (x_test[:, 0] > 0).long() + (x_test[:, 1] > 0).long()
        return Dataset(name="three", x_train=x, y_train=y, x_test=x_test, y_test=y_test, num_classes=3)
    return Dataset(name="regression", x_train=x, y_train=torch.tanh(x @ torch.ones(4, 4) / 2), x_test=x_test,
                   y_test=torch.tanh(x_test @ torch.ones(4, 4) / 2), num_classes=None)


def _trainer(data, classes: bool, fast, epochs: int) -> Trainer:
    out = 3 if classes else 4
    net = MLP([4, 32, 16, out], activation="tanh", output_activation="softmax" if classes else "identity", seed=0)
    return Trainer(net, data, mode="batch", lr=0.01, epochs=epochs, seed=0, fast=fast,
                   loss_fn="cross_entropy" if classes else "squared_error")


@pytest.mark.parametrize("classes", [False, True], ids=["several epochs a call", "epoch by epoch"])
def test_the_narrow_path_counts_each_update_its_pass(classes):
    """Each epoch's update uses a pass the previous evaluation made (in C, or kept by NarrowBatch): the training
    time must hold that pass once an epoch, so it is at least most of the epochs times the pass measured alone."""
    try:
        load_narrow_kernel()  # built before any clock starts
    except FastPathUnavailable as err:
        pytest.skip(f"the narrow kernel cannot be built here: {err}")
    data = _regression(10_000, classes)
    _trainer(data, classes, "auto", 2).run()  # warm: every kernel and buffer made once
    t = _trainer(data, classes, "auto", 30)
    assert t._fast_runner.path == "narrow"
    assert (chunks_unsupported(t) is not None) == classes, "the two ways the narrow path runs its epochs"
    kernel = NarrowKernel(t.net, t.loss_fn)
    alone = []
    for _ in range(5):
        began = time.perf_counter()
        kernel.loss_and_gradients(t.x_train, t.y_train)
        alone.append(time.perf_counter() - began)
    history = t.run()
    assert history.seconds[-1] == t.train_seconds
    assert all(b > a for a, b in zip(history.seconds, history.seconds[1:])), "every epoch takes time"
    assert t.train_seconds >= 0.4 * 30 * min(alone), (t.train_seconds, min(alone))


def test_the_fused_step_counts_the_forward_phase_its_evaluation_kept(monkeypatch):
    """In batch mode the fused step's update takes the forward phase the evaluation kept: that forward phase (made
    10 ms slower here) counts as training time."""
    from manual_backprop.fast.fused import FusedStep

    forward = FusedStep._forward_and_delta

    def slow_forward(self, *args):
        time.sleep(0.01)
        return forward(self, *args)

    monkeypatch.setattr(FusedStep, "_forward_and_delta", slow_forward)
    t = _trainer(_regression(500, False), False, True, 20)
    assert t._fast_runner.path == "fused"
    t.run()
    # 20 updates, each on a kept forward phase (the evaluation before it) of at least 10 ms
    assert t.train_seconds >= 20 * 0.01, t.train_seconds
