"""Shared fixtures: devices (CUDA runs when present, skips cleanly otherwise), TF32 off, comparison helpers."""

import pytest
import torch

from reference.compare import norm_relative_error

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _no_tf32():
    """Agreement is checked in true float32: TF32 would round matrix-product inputs to 10 mantissa bits."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                                pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")])]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def assert_tensors_agree(name: str, manual: torch.Tensor, expected: torch.Tensor, *, rel: float = 1e-10):
    """Compare shape, then dtype, then values; float64 by norm-relative error, float32 with assert_close."""
    assert manual.shape == expected.shape, f"{name}: shape {tuple(manual.shape)} != {tuple(expected.shape)}"
    assert manual.dtype == expected.dtype, f"{name}: dtype {manual.dtype} != {expected.dtype}"
    if manual.dtype == torch.float64:
        err = norm_relative_error(manual, expected)
        assert err <= rel, f"{name}: norm-relative error {err:.3e} > {rel:.0e} (max |diff| " \
                           f"{(manual - expected).abs().max().item():.3e})"
    else:
        torch.testing.assert_close(manual, expected, msg=lambda m: f"{name}: {m}")


def assert_grads_agree(manual, expected, *, rel: float = 1e-10):
    """Every delta, weight gradient and bias gradient, named by layer (1-based, layer k+1 owns W[k])."""
    assert len(manual.deltas) == len(expected.deltas)
    for k in range(len(manual.weights)):
        assert_tensors_agree(f"layer {k + 1} delta", manual.deltas[k], expected.deltas[k], rel=rel)
        assert_tensors_agree(f"layer {k + 1} dE/dW", manual.weights[k], expected.weights[k], rel=rel)
    assert len(manual.biases) == len(expected.biases)
    for k in range(len(manual.biases)):
        assert_tensors_agree(f"layer {k + 1} dE/db", manual.biases[k], expected.biases[k], rel=rel)


@pytest.fixture(params=["checks in C++", "checks in Python"])
def both_checks(request, monkeypatch):
    """Run a one-update test with the C calls' checks in C++ (fast/tensor_state.py) and with the same questions
    asked from Python (where no C++ compiler is found): plans made during the test use the one asked for."""
    from manual_backprop.fast import one_update, tensor_state

    cpp = request.param == "checks in C++"
    if cpp and tensor_state.checker() is None:
        pytest.skip(f"no C++ checks here: {tensor_state.unavailable}")
    monkeypatch.setattr(one_update, "CHECKS_IN_CPP", cpp)
