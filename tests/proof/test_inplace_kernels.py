"""The activations' in-place kernels (``forward_(z, out)``), which the fused step and the CUDA graphs run, give the
class's own forward bit for bit, into a separate buffer as well as in place (issue 22, item 11: ReLU's out= kernel
called ``torch.relu(z, out=out)``, which raises TypeError; the fused step reaches it when the output keeps its
logits apart, e.g. a relu output under cross-entropy)."""

import pytest
import torch

from manual_backprop import MLP, fast, get_loss
from manual_backprop.activations import ACTIVATIONS, get_activation
from reference.update_proof import prove_paths

F64 = torch.float64


def _inputs(dtype):
    # ordinary values, both zeros, saturating magnitudes and a NaN: where kernels are most likely to differ
    z = torch.linspace(-40.0, 40.0, 37, dtype=dtype).reshape(-1, 1).repeat(1, 3)
    z[0, 0], z[1, 1], z[2, 2] = -0.0, 0.0, float("nan")
    return z


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("into", ["a separate buffer", "place"])
def test_forward_in_place_kernel_equals_the_forward_bit_for_bit(name, into, dtype):
    f = get_activation(name)
    z = _inputs(dtype)
    expected = f.forward(z.clone())
    if into == "place":
        out = z
    else:
        out = torch.full_like(z, 7.0)
    f.forward_(z, out)
    assert torch.equal(out.isnan(), expected.isnan()), f"{name}: NaN pattern differs"
    ok = ~expected.isnan()
    assert torch.equal(out[ok], expected[ok]), f"{name} into {into}: max |diff| {(out - expected)[ok].abs().max()}"
    assert torch.equal(torch.signbit(out[ok]), torch.signbit(expected[ok])), f"{name}: the sign of a zero differs"


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_fused_update_on_a_relu_output_with_kept_logits_equals_network_py(loss):
    net = MLP([3, 5, 2], activation="tanh", output_activation="relu", dtype=F64, seed=0)
    loss_fn = get_loss(loss)
    step = fast.FusedStep(net, loss_fn, 6)
    assert step.separate_logits, "the case must keep the logits apart (the out= branch of ReLU.forward_)"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, dtype=F64, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 2, (6,), generator=g), 2).to(F64)
    for path, bound, rows in prove_paths(net, x, y, loss_fn, 0.1, ["fused-exact", "fused"]):
        bad = [(name, miss) for name, miss, ok in rows if not ok]
        assert not bad, f"{path} (bound {bound} ulps): {bad}"
