"""Weight initialisation, drawn on the CPU in float64 from a seeded generator.

Drawing on the CPU and only then casting and moving makes the same seed give the same network on CPU and CUDA,
and a float32 network the rounding of the float64 one. Schemes (fan_in = n_k, fan_out = n_{k+1}):

    normal          W ~ N(0, scale^2)                                the lecture's plain random weights
    uniform         W ~ U(-scale, scale)
    xavier_uniform  W ~ U(-a, a),  a = sqrt(6 / (fan_in + fan_out))  Glorot & Bengio 2010
    xavier_normal   W ~ N(0, 2 / (fan_in + fan_out))
    he_uniform      W ~ U(-a, a),  a = sqrt(6 / fan_in)              He et al. 2015, for relu
    he_normal       W ~ N(0, 2 / fan_in)
    torch_default   W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))         what torch.nn.Linear does

Biases: "zeros", "normal" or "uniform" at ``scale``, or "torch_default".
"""

from __future__ import annotations

import math

import torch

__all__ = ["INITS", "BIAS_INITS", "initial_parameters"]

INITS = ("normal", "uniform", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "torch_default")
BIAS_INITS = ("zeros", "normal", "uniform", "torch_default")
_ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal", "xavier": "xavier_uniform",
            "glorot": "xavier_uniform", "kaiming_uniform": "he_uniform", "kaiming_normal": "he_normal",
            "he": "he_normal", "kaiming": "he_normal"}


def _normal(shape, std, g):
    return torch.randn(shape, generator=g, dtype=torch.float64) * std


def _uniform(shape, bound, g):
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2.0 - 1.0) * bound


def _draw_weight(init: str, fan_out: int, fan_in: int, scale: float, g: torch.Generator) -> torch.Tensor:
    shape = (fan_out, fan_in)
    if init == "normal":
        return _normal(shape, scale, g)
    if init == "uniform":
        return _uniform(shape, scale, g)
    if init == "xavier_uniform":
        return _uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), g)
    if init == "xavier_normal":
        return _normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), g)
    if init == "he_uniform":
        return _uniform(shape, math.sqrt(6.0 / fan_in), g)
    if init == "he_normal":
        return _normal(shape, math.sqrt(2.0 / fan_in), g)
    assert init == "torch_default"
    return _uniform(shape, 1.0 / math.sqrt(fan_in), g)


def _draw_bias(bias_init: str, fan_out: int, fan_in: int, scale: float, g: torch.Generator) -> torch.Tensor:
    if bias_init == "zeros":
        return torch.zeros(fan_out, dtype=torch.float64)
    if bias_init == "normal":
        return _normal((fan_out,), scale, g)
    if bias_init == "uniform":
        return _uniform((fan_out,), scale, g)
    assert bias_init == "torch_default"
    return _uniform((fan_out,), 1.0 / math.sqrt(fan_in), g)


def resolve_init(init: str, bias_init: str) -> tuple:
    if not isinstance(init, str) or _ALIASES.get(init.lower(), init.lower()) not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, but got {init!r}")
    if not isinstance(bias_init, str) or bias_init.lower() not in BIAS_INITS:
        raise ValueError(f"bias_init must be one of {list(BIAS_INITS)}, but got {bias_init!r}")
    return _ALIASES.get(init.lower(), init.lower()), bias_init.lower()


def initial_parameters(sizes, *, init: str, bias_init: str, scale: float, seed: int, bias: bool):
    """Draw W^{k->k+1} (n_{k+1}, n_k) and b (n_{k+1},) for every layer, in float64 on the CPU.

    Layers are drawn in order, weight then bias, from one generator seeded with ``seed``.
    """
    init, bias_init = resolve_init(init, bias_init)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(_draw_weight(init, fan_out, fan_in, scale, g))
        if bias:
            biases.append(_draw_bias(bias_init, fan_out, fan_in, scale, g))
    return weights, biases
