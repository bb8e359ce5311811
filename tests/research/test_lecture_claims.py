"""The lecture's claims about the network itself, shown numerically."""

import pytest
import torch

from manual_backprop import MLP

F64 = torch.float64


@pytest.mark.parametrize("sizes", [[2, 3, 1], [4, 8, 8, 3], [5, 16, 2, 16, 7, 2]])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_network_is_one_matrix(sizes, bias, device):
    """With identity activations, x -> W_L(...(W_1 x + b_1)...) + b_L equals x -> M x + c for
    M = W_L ... W_1 and c = the biases composed through the later layers: a single layer in disguise."""
    net = MLP(sizes, activation="identity", output_activation="identity", bias=bias, bias_init="normal",
              init="normal", init_scale=0.7, dtype=F64, device=device, seed=len(sizes))
    M = torch.eye(sizes[0], dtype=F64, device=device)
    c = torch.zeros(sizes[0], dtype=F64, device=device)
    for k in range(net.num_layers):
        M = net.weights[k] @ M  # (n_{k+1}, n_0)
        c = net.weights[k] @ c + (net.biases[k] if bias else 0.0)  # (n_{k+1},)
    x = torch.randn(50, sizes[0], dtype=F64, device=device)
    collapsed = MLP.from_tensors([M], [c] if bias else None, activation=[], output_activation="identity")
    out = net(x)
    assert torch.allclose(out, x @ M.T + c, rtol=1e-12, atol=1e-12)
    assert torch.allclose(collapsed(x), out, rtol=1e-12, atol=1e-12)


def test_nonlinear_network_is_not_one_matrix():
    """The same check fails as soon as f is not linear: the best single affine map leaves a clear residual."""
    net = MLP([2, 8, 1], activation="tanh", output_activation="identity", init="normal", init_scale=2.0,
              dtype=F64, seed=0)
    x = torch.randn(400, 2, dtype=F64)
    out = net(x)
    design = torch.cat([x, torch.ones(400, 1, dtype=F64)], dim=1)
    solution = torch.linalg.lstsq(design, out).solution
    residual = (design @ solution - out).norm() / out.norm()
    assert residual > 0.05
