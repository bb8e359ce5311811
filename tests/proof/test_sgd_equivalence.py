"""One manual update equals one torch.optim.SGD step on the twin; 100 equal 100, with the same loss at every step."""

import pytest
import torch

from conftest import assert_tensors_agree
from manual_backprop import MLP
from reference import TorchMLP, torch_loss


def sgd_twin_step(twin, opt, x, y, loss_fn):
    opt.zero_grad()
    out, zs = twin.forward_with_logits(x)
    loss = torch_loss(loss_fn, zs[-1], out, y)
    loss.backward()
    opt.step()
    return loss.detach()


CASES = {
    "xor-sigmoid-se": ([2, 2, 1], "sigmoid", "sigmoid", "squared_error", 0.5),
    "tanh-softmax-ce": ([4, 10, 3], "tanh", "softmax", "cross_entropy", 0.2),
    "relu-deep-bce": ([3, 8, 8, 8, 2], "relu", "sigmoid", "binary_cross_entropy", 0.1),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_100_manual_steps_equal_100_sgd_steps(case, device):
    sizes, hidden, output, loss_fn, lr = case
    net = MLP(sizes, activation=hidden, output_activation=output, bias_init="uniform", dtype=torch.float64,
              device=device, seed=4)
    twin = TorchMLP.from_manual(net)
    opt = torch.optim.SGD(twin.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, sizes[0], generator=g, dtype=torch.float64).to(device)
    if loss_fn == "cross_entropy":
        y = torch.randint(0, sizes[-1], (16,), generator=g).to(device)
    else:
        y = torch.randint(0, 2, (16, sizes[-1]), generator=g).to(torch.float64).to(device)
    from manual_backprop import get_loss

    loss_obj = get_loss(loss_fn)
    for step in range(100):
        loss_m, grads = net.loss_and_grads(x, y, loss_obj)
        net.step(grads, lr)
        loss_a = sgd_twin_step(twin, opt, x, y, loss_obj)
        assert_tensors_agree(f"loss at step {step}", loss_m.reshape(1), loss_a.reshape(1), rel=1e-12)
        if step == 0:
            for key, value in twin.state_dict().items():
                assert_tensors_agree(f"{key} after one step", net.state_dict()[key], value, rel=1e-14)
    for key, value in twin.state_dict().items():
        assert_tensors_agree(f"{key} after 100 steps", net.state_dict()[key], value, rel=1e-12)
