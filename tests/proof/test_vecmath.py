"""vecmath.h (the C kernels' exp, tanh and sigmoid) against torch on the same inputs, element by element.

The stated bound (VECMATH_ULPS): exp and tanh within 1 ulp of torch.exp and torch.tanh in float64 and float32 (float32
exp is the double core rounded once; float32 tanh is float-native, proven within 1 ulp of the double core rounded
once on every float, TANH_F32_ULPS below, the exhaustive run marked slow); sigmoid, the class formula 1 / (1 + exp(-x)), within 4 ulps of
torch.sigmoid, whose own rounding of the same formula differs by its exp's ulp and two roundings. Special values
(0, -0, +-inf, NaN, overflow and gradual underflow) as torch has them.
"""

import contextlib
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


# float tanh is float-native (vecmath.h's mbp_tanh_f32), not the double core rounded once: its bound is proven on
# every float against that double core (within 1 ulp, so within 1 ulp of the correctly rounded tanh but for ties of
# the double core), and checked against torch.tanh on all floats of a few binades and a large random sample.
TANH_F32_ULPS = 1
# Binades that hold each of its forms and every switch: the tiny inputs where tanh(x) rounds to x, the relative form
# (segments 0 and 1, below 0.5) and its switch to the centred form at 0.5, every segment of [0.5, 8), and the last
# segment with the clamp and saturation (tanh rounds to 1 from 9.01; clamp at 9.5). _check_tanh_f32 also counts
# the inputs where the array version (AVX-512 permutes) and the scalar function disagree by a bit.
TANH_BINADES = [-13, -12, -2, -1, 0, 1, 2, 3]


def _check_tanh_f32(lo: int, hi: int):
    from manual_backprop.fast.narrow import load_narrow_kernel

    hist, worst = (ctypes.c_int64 * 8)(), ctypes.c_uint32()
    bad = load_narrow_kernel().narrow_check_tanh_f32(lo, hi, hist, ctypes.byref(worst))
    return bad, list(hist), torch.tensor([worst.value], dtype=torch.int64).to(torch.int32).view(torch.float32).item()


def _binade_bits(e: int, negative: bool):
    lo = ((e + 127) << 23) | (0x80000000 if negative else 0)
    return lo, lo + (1 << 23)


def test_the_array_versions_the_checks_compare_are_the_ones_this_cpu_has():
    """narrow_check_tanh_f32 (every test below) compares each array version of float tanh the build has with the
    scalar function, bit for bit: the AVX-512 one, and the AVX2 one that CPUs without AVX-512 run. A build never
    has a version its CPU lacks, and a build with the AVX-512 one (-march=native on such a CPU) has the AVX2 one
    too, so a CPU with AVX-512 checks both here. (A compiler that refuses -march=native builds neither.)"""
    from manual_backprop.fast.narrow import load_narrow_kernel

    flags = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    arrays = load_narrow_kernel().narrow_tanh_f32_arrays()
    if flags:
        assert not arrays & 1 or "avx512f" in flags, "an AVX-512 array version on a CPU without AVX-512"
        assert not arrays & 2 or {"avx2", "fma"} <= flags, "an AVX2 array version on a CPU without AVX2 and FMA"
    assert not arrays & 1 or arrays & 2, "a build with the AVX-512 version lacks the AVX2 one: it goes unchecked"
    if flags and "avx512f" in flags and not arrays & 1:
        pytest.skip("this build is not -march=native (the compiler refused it): no array version to check")


@pytest.mark.parametrize("e", TANH_BINADES)
def test_float_tanh_is_within_one_ulp_of_the_double_core_on_whole_binades(e):
    for negative in (False, True):
        bad, hist, worst = _check_tanh_f32(*_binade_bits(e, negative))
        assert bad == 0, f"tanh on [2^{e}, 2^{e + 1}): {bad} inputs with the wrong sign or NaN, or array != scalar"
        assert sum(hist[TANH_F32_ULPS + 1:]) == 0, f"tanh on +-[2^{e}, 2^{e + 1}): {hist} (ulps 0..7+), x = {worst!r}"


def test_float_tanh_special_values_and_extremes_on_the_double_core():
    for lo, hi in [(0, 1 << 23), (0x7F000000, 0x80000000), (0x80000000, 0x80800000), (0xFF000000, 1 << 32)]:
        bad, hist, worst = _check_tanh_f32(lo, hi)  # subnormals and 0, huge values, inf and every NaN, both signs
        assert bad == 0 and sum(hist[TANH_F32_ULPS + 1:]) == 0, f"bits [{lo:#x}, {hi:#x}): {bad} bad, {hist}"


@pytest.mark.slow
def test_float_tanh_is_within_one_ulp_of_the_double_core_on_every_float():
    bad, hist, worst = _check_tanh_f32(0, 1 << 32)
    assert bad == 0, f"{bad} inputs with the wrong sign or NaN, or where the array version differs from the scalar"
    assert sum(hist[TANH_F32_ULPS + 1:]) == 0, f"every float: {hist} (ulps 0..7+), farthest at x = {worst!r}"


def test_float_tanh_is_within_one_ulp_of_torch_on_binades_and_a_large_sample():
    g = torch.Generator().manual_seed(1)
    sample = torch.randint(-(1 << 31), 1 << 31, (1 << 22,), generator=g, dtype=torch.int64).to(torch.int32)
    binades = [torch.arange(*_binade_bits(e, neg), 7, dtype=torch.int64) for e in TANH_BINADES for neg in (0, 1)]
    bits = torch.cat([sample, *[(b - (1 << 32) * (b >= (1 << 31))).to(torch.int32) for b in binades]])
    x = bits.view(torch.float32)
    x = x[x.isfinite()]
    from manual_backprop.fast.narrow import load_narrow_kernel

    got = torch.empty_like(x)  # the narrow kernel's array tanh: vecmath.h's mbp_vtanh_f32, as the C loop's
    load_narrow_kernel().narrow_vecmath_tanh_f32(x.data_ptr(), got.data_ptr(), x.numel())
    worst = _ulps(got, torch.tanh(x))
    assert worst.max().item() <= TANH_F32_ULPS, (
        f"tanh float32: {worst.max().item():.2f} ulps from torch at x = {x[worst.argmax()].item()!r}")
