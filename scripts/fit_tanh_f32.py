"""The tables of vecmath.h's float tanh (mbp_tanh_f32): 32 segments of a = |x| in [0, 9.5], a degree-6 polynomial
in u = a - c on each, coefficients in float. Prints the C text that vecmath.h holds between its table markers.

    python scripts/fit_tanh_f32.py > /tmp/table.h

Segments: i = floor(4a) for a < 7.75 (quarter-wide), i = 31 for [7.75, 9.5] (the clamp: tanh rounds to 1 in float
from 9.01). On segments 0 and 1 (the relative form, c = 0) t = u + u S(u), S(u) = C2 u + ... + C6 u^5 a fit of
tanh(u)/u - 1: the leading u is exact and the correction is under 8% of t, so the result is near correctly rounded
where the ulp is relative. Elsewhere t = hi + (C1 u + ... + C6 u^6), one fused multiply-add at the end, with hi the
float nearest tanh(c): the center c is picked, on a grid of 2^-14 within 1/64 of the segment's midpoint (8.625 for
segment 31), where tanh(c) lies nearest a float (within about 1/200 of an ulp), so that no second float (a "lo"
term) is needed for tanh(c) to be exact enough. Every c is a multiple of 2^-14 and |u| < 1, so u = a - c is exact.
Each coefficient is fitted by least squares on 4000 Chebyshev points in double, rounded to float, and the ones
after it refitted to what is left (so each rounding is partly made good by the coefficients that follow). The
proof is not this fit but tests/proof/test_vecmath.py: every float, against the double core rounded once.
"""

from __future__ import annotations

import numpy as np

DEGREE = 6
SEGMENTS = 32
POINTS = 4000


def _midpoint(i: int) -> float:
    return 8.625 if i == SEGMENTS - 1 else 0.25 * i + 0.125


def _center(i: int) -> float:
    """The multiple of 2^-14 within 1/64 of segment i's midpoint where tanh is nearest a float (ties: nearest the
    midpoint)."""
    mid = _midpoint(i)
    grid = mid + np.arange(-256, 257) / 16384.0
    t = np.tanh(grid)
    hi = t.astype(np.float32).astype(np.float64)
    miss = np.abs(t - hi) / np.spacing(np.float32(hi)).astype(np.float64)
    order = np.lexsort((np.abs(grid - mid), miss))
    return float(grid[order[0]])


def segment(i: int) -> tuple:
    """(left, right, center) of segment i."""
    if i <= 1:
        return 0.25 * i, 0.25 * (i + 1), 0.0
    if i == SEGMENTS - 1:
        return 7.75, 9.5, _center(i)
    return 0.25 * i, 0.25 * (i + 1), _center(i)


def _sequential_fit(u: np.ndarray, target: np.ndarray, powers: list) -> list:
    """Float coefficients of u^p for p in powers, each rounded to float before the rest are refitted."""
    out, rest = [], target.copy()
    for j, p in enumerate(powers):
        basis = np.stack([u ** q for q in powers[j:]], axis=1)
        c = float(np.float32(np.linalg.lstsq(basis, rest, rcond=None)[0][0]))
        out.append(c)
        rest = rest - c * u ** p
    return out


def fit(i: int) -> list:
    """[hi, C1, ..., C6] of segment i (hi = C1 = 0 on the relative-form segments)."""
    left, right, center = segment(i)
    s = np.cos(np.pi * (np.arange(POINTS) + 0.5) / POINTS)
    a = (left + right) / 2 + (right - left) / 2 * s
    u = a - center
    if i <= 1:  # t = u + u * (C2 u + ... + C6 u^5): fit tanh(u)/u - 1, the relative error of t
        return [0.0, 0.0] + _sequential_fit(u, np.tanh(u) / u - 1.0, list(range(1, DEGREE)))
    hi = float(np.float32(np.tanh(center)))
    return [hi] + _sequential_fit(u, np.tanh(a) - hi, list(range(1, DEGREE + 1)))


def _hex(v: float) -> str:
    """v (a float) as a C hex literal, its mantissa's trailing zeros dropped: 0x1.1bf47ep-1f."""
    mantissa, exponent = float(np.float32(v)).hex().split("p")
    mantissa = mantissa.rstrip("0")
    return f"{mantissa}0p{exponent}f" if mantissa.endswith(".") else f"{mantissa}p{exponent}f"


def c_text() -> str:
    rows = [fit(i) for i in range(SEGMENTS)]
    names = ["hi"] + [f"C{k}" for k in range(1, DEGREE + 1)]

    def floats(values) -> str:
        items = [_hex(v) for v in values]
        return ",\n".join("    " + ", ".join(items[k:k + 6]) for k in range(0, len(items), 6))

    lines = [f"#define MBP_TANH_F32_DEGREE {DEGREE}",
             f"static const float mbp_tanh_f32_center[{SEGMENTS}] = {{",
             floats([segment(i)[2] for i in range(SEGMENTS)]) + "};",
             f"static const float mbp_tanh_f32_table[{DEGREE + 1}][{SEGMENTS}] = {{ /* hi, C1 .. C{DEGREE} */"]
    for k, name in enumerate(names):
        lines += [f"  {{ /* {name} */", floats([r[k] for r in rows]) + "},"]
    lines.append("};")
    return "\n".join(lines)


if __name__ == "__main__":
    print(c_text())
