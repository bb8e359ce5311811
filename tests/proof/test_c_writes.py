"""Every kernel that writes a network's parameters through their addresses (which torch does not see) bumps their
version counters, as torch's own in-place ops do (fast.common.mark_written): the C loop (one call, and a Trainer's
epochs), MLP.step's C call, the population's C engine, and a CUDA graph's replays. What is keyed on a parameter's
version (the narrow kernel's kept pass: test_narrow_kernel.py's between-runs tests) then sees the change. The CUDA
tests skip without CUDA; their path does not exist on the CPU.
"""

import pytest
import torch

from manual_backprop import MLP, fast
from manual_backprop.datasets import load_dataset
from manual_backprop.fast.one_update import plan_of
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import Trainer

from helpers import c_loop_reason

pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")
HAS_CUDA = torch.cuda.is_available()


def _versions(tensors):
    return [t._version for t in tensors]


def _assert_all_bumped(before, tensors, what):
    after = _versions(tensors)
    assert all(a > b for a, b in zip(after, before)), f"{what}: versions {before} -> {after}"


def test_one_c_loop_call_bumps_every_parameters_version():
    net = MLP([3, 5, 2], activation="tanh", seed=0)
    x, y = torch.randn(8, 3), torch.rand(8, 2)
    kernel = fast.CKernel(net, net.check_loss("squared_error"))
    params = net.parameters()
    before = _versions(params)
    kernel.run(x, y, torch.arange(8), torch.tensor([0, 4, 8]), 0.1)
    _assert_all_bumped(before, params, "CKernel.run")


def test_new_tensor_objects_at_the_same_addresses_are_the_ones_marked():
    """``net.weights[k] = w.data`` puts a new tensor (with its own version counter) at the same memory: the kernel
    rebinds, and marks the tensors the network holds now."""
    net = MLP([3, 5, 2], activation="tanh", seed=0)
    x, y = torch.randn(8, 3), torch.rand(8, 2)
    kernel = fast.CKernel(net, net.check_loss("squared_error"))
    kernel.run(x, y, torch.arange(8), torch.tensor([0, 4, 8]), 0.1)
    net.weights = [w.data for w in net.weights]
    net.biases = [b.data for b in net.biases]
    params = net.parameters()
    before = _versions(params)
    kernel.run(x, y, torch.arange(8), torch.tensor([0, 4, 8]), 0.1)
    _assert_all_bumped(before, params, "CKernel.run after new tensors at the same addresses")


def test_a_trainers_c_epochs_bump_every_parameters_version():
    net = MLP([2, 2, 1], seed=0)
    trainer = Trainer(net, load_dataset("xor"), mode="online", lr=0.5, epochs=3, fast="c", seed=0)
    before = _versions(net.parameters())
    trainer.run()
    assert trainer._fast_runner.path == "c"
    _assert_all_bumped(before, net.parameters(), "the C loop's epochs")


def test_the_c_step_bumps_every_parameters_version():
    net = MLP([2, 3, 1], seed=0)
    x, y = torch.rand(2, 2), torch.rand(2, 1)
    _, grads = net.loss_and_grads(x, y, "squared_error")
    assert plan_of(net) is not None and plan_of(net).step_fn is not None, "the C step must be the one tested"
    before = _versions(net.parameters())
    net.step(grads, 0.1)
    _assert_all_bumped(before, net.parameters(), "MLP.step's C call")


def test_the_population_c_engine_bumps_every_parameters_version():
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=torch.float64)
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=torch.float64), mode="online", lr=0.5, epochs=4,
                                engine="c", order_seeds=[10, 11, 12])
    params = pop.parameters()
    before = _versions(params)
    trainer.run()
    _assert_all_bumped(before, params, "the population's C engine")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")
def test_cuda_graph_replays_bump_every_parameters_version():
    """The capture's in-place ops bump the versions once; the replays after it must too."""
    net = MLP([2, 2, 1], seed=0, device="cuda")
    trainer = Trainer(net, load_dataset("xor"), mode="online", lr=0.5, epochs=2, fast="cuda_graph", seed=0)
    trainer.run()
    assert isinstance(trainer._fast_runner._engine, fast.CudaGraphRunner)
    before = _versions(net.parameters())
    trainer.epochs = 200
    trainer.run()
    _assert_all_bumped(before, net.parameters(), "the CUDA graph's replays")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")
def test_a_cuda_graph_replay_alone_bumps_every_parameters_version():
    """Two calls of exactly one chunk: the first captures (its in-place ops bump the versions), the second only
    replays."""
    net = MLP([3, 4, 2], seed=0, device="cuda")
    runner = fast.CudaGraphRunner(net, net.check_loss("squared_error"), batch=2, chunk=4)
    x, y = torch.randn(8, 3, device="cuda"), torch.rand(8, 2, device="cuda")
    order, offsets = torch.arange(8, device="cuda"), [0, 2, 4, 6, 8]
    losses = torch.empty(4, device="cuda")
    runner.run(x, y, order, offsets, 0.1, losses)
    assert runner.captures == 1
    before = _versions(net.parameters())
    runner.run(x, y, order, offsets, 0.1, losses)
    assert runner.captures == 1, "the second call must only replay"
    _assert_all_bumped(before, net.parameters(), "a CUDA graph replay")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")
def test_the_populations_cuda_graph_replays_bump_every_parameters_version():
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=torch.float64, device="cuda")
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=torch.float64), mode="online", lr=0.5, epochs=2,
                                engine="cuda_graph", order_seeds=[10, 11, 12])
    trainer.run()  # captured, and replayed
    before = _versions(pop.parameters())
    trainer.epochs = 6
    trainer.run()  # replays only
    _assert_all_bumped(before, pop.parameters(), "the population's CUDA graph replays")
