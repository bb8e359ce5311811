"""Proof that autograd is off: a whole manual step, with grad mode on and inputs that require grad, builds no graph."""

import pytest
import torch
from helpers import GraphWatcher

from manual_backprop import MLP




CASES = [("sigmoid", "sigmoid", "squared_error"), ("relu", "softmax", "cross_entropy"),
         ("tanh", "sigmoid", "binary_cross_entropy"), ("leaky_relu", "identity", "squared_error")]


@pytest.mark.parametrize("path", ["one C call", "pure"])
@pytest.mark.parametrize("hidden,output,loss", CASES)
def test_manual_step_builds_no_graph(hidden, output, loss, device, path, monkeypatch):
    """Both ways MLP.loss_and_grads runs: network.ONE_UPDATE's C call (fast/one_update.py, on the CPU where a
    compiler works) and the pure path, network.py's functions alone."""
    from manual_backprop.network import ONE_UPDATE

    ran = []
    if path == "pure":
        monkeypatch.setattr(ONE_UPDATE, "enabled", False)
    else:
        real = ONE_UPDATE.path
        monkeypatch.setattr(ONE_UPDATE, "path", lambda *args: ran.append(real(*args)) or ran[-1])
    net = MLP([3, 5, 4, 2], activation=hidden, output_activation=output, dtype=torch.float64, device=device, seed=0)
    x = torch.randn(6, 3, dtype=torch.float64, device=device, requires_grad=True)
    if loss == "cross_entropy":
        y = torch.tensor([0, 1, 1, 0, 1, 0], device=device)
    else:
        y = torch.rand(6, 2, dtype=torch.float64, device=device, requires_grad=True)
    saved = []
    watcher = GraphWatcher()
    assert torch.is_grad_enabled()
    # saved_tensors_hooks fire whenever autograd saves a tensor for a backward pass, i.e. whenever a graph is built.
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t), watcher:
        out = net(x)
        loss_value, grads = net.loss_and_grads(x, y, loss)
        net.step(grads, lr=0.1)
    assert watcher.ops > 20, "the mode must have seen the step's ops"
    if path == "one C call" and device == "cpu":
        from helpers import c_loop_reason

        assert ran and (ran[0] is not None or c_loop_reason() is not None), "the C call did not run"
    assert watcher.graph_ops == [], f"ops that built autograd graph nodes: {watcher.graph_ops}"
    assert watcher.grad_mode_ops == [], f"ops run with grad mode on: {watcher.grad_mode_ops}"
    assert saved == [], f"autograd saved tensors for backward: {saved}"
    assert torch.is_grad_enabled(), "grad mode is restored after the step"
    for t in [out, loss_value, *grads.weights, *grads.biases, *grads.deltas, *net.parameters()]:
        assert not t.requires_grad and t.grad_fn is None


def test_parameters_never_require_grad(device):
    net = MLP([2, 3, 1], dtype=torch.float32, device=device, seed=0)
    assert all(not p.requires_grad for p in net.parameters())
    net.to(dtype=torch.float64)
    net2 = net.copy()
    assert all(not p.requires_grad for p in net.parameters() + net2.parameters())
    # Loading parameters that require grad (from a torch.nn module, say) does not make the net's require grad.
    state = {k: v.clone().requires_grad_() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(not p.requires_grad for p in net.parameters())


def test_watcher_detects_a_graph():
    """The detector itself works: the autograd twin (which does build a graph) is caught."""
    from reference import TorchMLP

    net = MLP([2, 3, 1], dtype=torch.float64, seed=0)
    twin = TorchMLP.from_manual(net)
    watcher = GraphWatcher()
    with watcher:
        twin(torch.randn(4, 2, dtype=torch.float64))
    assert watcher.graph_ops, "a forward pass of the nn.Module twin must be seen building a graph"
