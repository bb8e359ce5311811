"""vecmath.h (the C kernels' exp, tanh and sigmoid) against torch on the same inputs, element by element.

The stated bound (VECMATH_ULPS): exp and tanh within 1 ulp of torch.exp and torch.tanh in float64 and float32 (the
float32 versions are the double cores rounded once); sigmoid, the class formula 1 / (1 + exp(-x)), within 4 ulps of
torch.sigmoid, whose own rounding of the same formula differs by its exp's ulp and two roundings. Special values
(0, -0, +-inf, NaN, overflow and gradual underflow) as torch has them.
"""

import ctypes
import math

import pytest
import torch

from manual_backprop import fast
from helpers import c_loop_reason

VECMATH_ULPS = {"exp": 1, "tanh": 1, "sigmoid": 4}
REFERENCE = {"exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")


def _vecmath(name: str, x: torch.Tensor) -> torch.Tensor:
    fn = getattr(fast.load_kernel(), f"mbp_vecmath_{'f64' if x.dtype == torch.float64 else 'f32'}")
    fn.restype, fn.argtypes = None, [ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    y = torch.empty_like(x)
    fn(list(REFERENCE).index(name), x.data_ptr(), y.data_ptr(), x.numel())
    return y


def _ulps(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|got - ref| in units of the spacing of floats at |ref| (0 where equal, NaN and NaN included)."""
    spacing = torch.nextafter(ref.abs(), torch.full_like(ref, math.inf)) - ref.abs()
    same = (got == ref) | (got.isnan() & ref.isnan())
    return torch.where(same, torch.zeros_like(ref), (got - ref).abs() / spacing)


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    spread = torch.cat([torch.randn(200_000, generator=g, dtype=torch.float64) * s for s in (0.05, 1, 4, 30, 300)])
    edges = torch.tensor([0.0, -0.0, 1e-300, -1e-30, 0.625, -0.625, 19.0, 88.7, 88.8, -87.4, -103.9, 709.7, 709.8,
                          -745.1, -745.2, 1e4, -1e4], dtype=torch.float64)
    return torch.cat([spread, torch.linspace(-1, 1, 200_001, dtype=torch.float64), edges]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_vecmath_is_within_its_bound_of_torch(name, dtype):
    x = _inputs(dtype)
    got, ref = _vecmath(name, x), REFERENCE[name](x)
    worst = _ulps(got, ref)
    assert not worst.isnan().any() and worst.max().item() <= VECMATH_ULPS[name], (
        f"{name} {dtype}: {worst.max().item():.2f} ulps from torch at x = {x[worst.argmax()].item()!r}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_vecmath_special_values(dtype):
    x = torch.tensor([math.inf, -math.inf, math.nan, -0.0, 1e6, -1e6], dtype=dtype)
    for name, ref in REFERENCE.items():
        got, expected = _vecmath(name, x), ref(x)
        assert torch.equal(got.isnan(), expected.isnan()), f"{name}: NaN where torch has none, or not where it has"
        keep = ~expected.isnan()
        assert torch.equal(got[keep], expected[keep]), f"{name} {dtype}: {got.tolist()} vs torch {expected.tolist()}"
        assert torch.equal(torch.signbit(got[keep]), torch.signbit(expected[keep])), f"{name}: the sign of -0"
