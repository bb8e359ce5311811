"""The generated toy sets: the logic gates xor, and, or and the seeded 2-D clouds xor_noisy, moons, circles,
spirals and blobs.

Drawn from a seeded CPU ``torch.Generator`` (scikit-learn is not needed). The logic gates are the four points
(0,0), (0,1), (1,0), (1,1) with no unseen data: their test split is a copy of the training set.

Each maker returns (x_train, y_train, x_test, y_test, info) with float64 inputs and int64 class indices; it owns
its split because the logic gates have none (test = train) and MNIST-1D keeps its package's own.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..checks import check_int
from .splitting import train_test_split

_GATES = {
    "xor": ([0, 1, 1, 0], "XOR of two bits: not linearly separable, needs a hidden layer"),
    "and": ([0, 0, 0, 1], "AND of two bits: linearly separable"),
    "or": ([0, 1, 1, 1], "OR of two bits: linearly separable"),
}
_CORNERS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


def make_gate(gate: str):
    def make(n_samples, noise, seed, test_fraction):
        labels, description = _GATES[gate]
        x = _CORNERS.clone()                                         # (4, 2)
        y = torch.tensor(labels, dtype=torch.int64)                 # (4,)
        info = {
            "description": description,
            "split": "none: the test split is a copy of the four training points (the lecture's logic problems "
                     "have no unseen data)",
        }
        return x, y, x.clone(), y.clone(), info
    return make


def make_xor_noisy(n_samples, noise, seed, test_fraction):
    g = torch.Generator().manual_seed(seed)
    corner = torch.arange(n_samples) % 4                              # balanced: n/4 points per corner
    x = _CORNERS[corner] + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)   # (N, 2)
    y = torch.tensor(_GATES["xor"][0], dtype=torch.int64)[corner]
    info = {"description": "XOR clouds: Gaussian noise of std `noise` around the four corners of the unit square"}
    return (*train_test_split(x, y, test_fraction, seed), info)


def make_moons(n_samples, noise, seed, test_fraction):
    g = torch.Generator().manual_seed(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    t_outer = torch.linspace(0, math.pi, n_outer, dtype=torch.float64)
    t_inner = torch.linspace(0, math.pi, n_inner, dtype=torch.float64)
    outer = torch.stack([torch.cos(t_outer), torch.sin(t_outer)], dim=1)
    inner = torch.stack([1 - torch.cos(t_inner), 0.5 - torch.sin(t_inner)], dim=1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_outer, dtype=torch.int64), torch.ones(n_inner, dtype=torch.int64)])
    info = {"description": "two interleaved half circles (moons) with Gaussian noise of std `noise`"}
    return (*train_test_split(x, y, test_fraction, seed), info)


def make_circles(n_samples, noise, seed, test_fraction, factor=0.5):
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor < 1:
        raise ValueError(f"factor (inner radius / outer radius) must be a number in (0, 1), but got {factor!r}")
    g = torch.Generator().manual_seed(seed)
    n_outer = n_samples // 2
    n_inner = n_samples - n_outer
    t_outer = torch.arange(n_outer, dtype=torch.float64) * (2 * math.pi / n_outer)
    t_inner = torch.arange(n_inner, dtype=torch.float64) * (2 * math.pi / n_inner)
    outer = torch.stack([torch.cos(t_outer), torch.sin(t_outer)], dim=1)
    inner = factor * torch.stack([torch.cos(t_inner), torch.sin(t_inner)], dim=1)
    x = torch.cat([outer, inner]) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat([torch.zeros(n_outer, dtype=torch.int64), torch.ones(n_inner, dtype=torch.int64)])
    info = {"description": f"a circle of radius {factor} (class 1) inside one of radius 1 (class 0), "
                           f"Gaussian noise of std `noise`", "factor": float(factor)}
    return (*train_test_split(x, y, test_fraction, seed), info)


def make_spirals(n_samples, noise, seed, test_fraction, turns=1.5):
    if isinstance(turns, bool) or not isinstance(turns, numbers.Real) or not 0 < turns <= 10:
        raise ValueError(f"turns must be a number in (0, 10], but got {turns!r}")
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n_c in enumerate((n_samples // 2, n_samples - n_samples // 2)):
        t = torch.arange(1, n_c + 1, dtype=torch.float64) / n_c                 # radius in (0, 1]
        theta = 2 * math.pi * turns * t + math.pi * c                              # the second arm is turned by pi
        xs.append(torch.stack([t * torch.cos(theta), t * torch.sin(theta)], dim=1))
        ys.append(torch.full((n_c,), c, dtype=torch.int64))
    x = torch.cat(xs) + noise * torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    y = torch.cat(ys)
    info = {"description": f"two interleaved spirals of {turns} turns, radius 0 to 1, Gaussian noise of std `noise`",
            "turns": float(turns)}
    return (*train_test_split(x, y, test_fraction, seed), info)


def make_blobs(n_samples, noise, seed, test_fraction, num_classes=3, n_features=2):
    check_int("num_classes", num_classes, minimum=2)
    check_int("n_features", n_features, minimum=2)
    if n_samples < 2 * num_classes:
        raise ValueError(
            f"n_samples must be at least 2 * num_classes = {2 * num_classes} for 'blobs', but got {n_samples}"
        )
    g = torch.Generator().manual_seed(seed)
    # Centres evenly on a circle in the first two features, its radius grown with num_classes so neighbouring
    # centres stay about 4 std apart (for noise 1); further features get uniform offsets in [-3, 3].
    radius = max(3.0, 2.0 / math.sin(math.pi / num_classes))
    phase = float(torch.rand(1, generator=g, dtype=torch.float64)) * 2 * math.pi
    angles = phase + 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
    centres = torch.zeros(num_classes, n_features, dtype=torch.float64)
    centres[:, 0], centres[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    if n_features > 2:
        centres[:, 2:] = 6 * torch.rand(num_classes, n_features - 2, generator=g, dtype=torch.float64) - 3
    y = torch.arange(n_samples) % num_classes                                     # balanced classes
    x = centres[y] + noise * torch.randn(n_samples, n_features, generator=g, dtype=torch.float64)
    info = {"description": f"{num_classes} Gaussian blobs of std `noise` in {n_features} features",
            "centres": centres.tolist()}
    return (*train_test_split(x, y, test_fraction, seed), info)
