"""The members' initial parameters, stacked: init.py's draws for every seed, made by the population kernel where
there are many members (mbp_pop_uniform: one mt19937 per seed, the draws in init.py's order), else by init.py."""

from __future__ import annotations

import math

import torch

from ..fast.common import FastPathUnavailable
from ..init import initial_parameters, resolve_init
from .c_engine import load_population_kernel

__all__ = ["stacked_initial_parameters"]

# init.py's uniform schemes: the bound of W ~ U(-a, a) (and of b for the uniform biases); draws as init.py makes them
_UNIFORM_BOUNDS = {"uniform": lambda fan_in, fan_out, scale: scale,
                   "xavier_uniform": lambda fan_in, fan_out, scale: math.sqrt(6.0 / (fan_in + fan_out)),
                   "he_uniform": lambda fan_in, fan_out, scale: math.sqrt(6.0 / fan_in),
                   "torch_default": lambda fan_in, fan_out, scale: 1.0 / math.sqrt(fan_in)}
_BIAS_BOUNDS = {"uniform": _UNIFORM_BOUNDS["uniform"], "torch_default": _UNIFORM_BOUNDS["torch_default"]}
_KERNEL_DRAWS_FROM = 64  # members: below this, init.py's own draws cost less than loading the kernel


def stacked_initial_parameters(sizes, *, init: str, bias_init: str, scale: float, seeds, bias: bool) -> tuple:
    """(weights, biases): each layer's ``initial_parameters`` of every seed stacked, (K, n_{k+1}, n_k) and (K, n_{k+1})
    float64 on the CPU, bit for bit. For many members and init.py's uniform schemes (biases uniform or zeros) the
    kernel draws them (mbp_pop_uniform: K torch generators and their small draws cost more than a short run), once
    its first member is checked against init.py's own draw; otherwise init.py draws each one."""
    init, bias_init = resolve_init(init, bias_init)
    drawn = None
    if len(seeds) >= _KERNEL_DRAWS_FROM and init in _UNIFORM_BOUNDS and bias_init in ("zeros", *_BIAS_BOUNDS):
        try:
            drawn = _kernel_draws(sizes, init, bias_init, scale, seeds, bias)
        except FastPathUnavailable:
            drawn = None
        if drawn is not None:
            own_w, own_b = initial_parameters(sizes, init=init, bias_init=bias_init, scale=scale, seed=seeds[0],
                                              bias=bias)
            if not all(torch.equal(a[0], b) for a, b in zip(drawn[0] + drawn[1], own_w + own_b)):
                drawn = None  # another torch's generator or draws: init.py's own
    if drawn is None:
        each = [initial_parameters(sizes, init=init, bias_init=bias_init, scale=scale, seed=s, bias=bias)
                for s in seeds]
        L = len(sizes) - 1
        drawn = ([torch.stack([w[k] for w, _ in each]) for k in range(L)],
                 [torch.stack([b[k] for _, b in each]) for k in range(L)] if bias else [])
    return drawn


def _kernel_draws(sizes, init, bias_init, scale, seeds, bias) -> tuple:
    """init.py's order of draws, layer by layer, W (row-major) then b, from one generator per seed."""
    shapes = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        shapes.append(("w", (fan_out, fan_in), _UNIFORM_BOUNDS[init](fan_in, fan_out, scale)))
        if bias:
            shapes.append(("b", (fan_out,), _BIAS_BOUNDS[bias_init](fan_in, fan_out, scale)
                           if bias_init != "zeros" else None))
    count = sum(math.prod(shape) for _, shape, bound in shapes if bound is not None)
    values = torch.tensor(seeds, dtype=torch.int64)  # seeds < 2**63: the same bits as uint64
    u = torch.empty(len(seeds), count, dtype=torch.float64)
    load_population_kernel().mbp_pop_uniform(values.data_ptr(), len(seeds), count, u.data_ptr())
    weights, biases, at = [], [], 0
    for kind, shape, bound in shapes:
        if bound is None:
            t = torch.zeros(len(seeds), *shape, dtype=torch.float64)
        else:
            size = math.prod(shape)
            t = ((u[:, at:at + size] * 2.0 - 1.0) * bound).reshape(len(seeds), *shape)  # init.py's _uniform
            at += size
        (weights if kind == "w" else biases).append(t)
    return weights, biases
