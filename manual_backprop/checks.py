"""Argument checks for the public edges, shared by every module: each error names the argument, what must hold and
what was got. Public on purpose: the library, reference/ and experiments/ all check their inputs with these."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_sizes(sizes) -> list:
    """Layer widths [n_0, n_1, ..., n_L]: at least two positive integers."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a sequence of layer widths like [2, 2, 1], but got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, like [2, 1], but got {sizes!r}")
    for k, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"sizes[{k}] must be an int, but got {type(n).__name__}: {n!r} (sizes={sizes!r})")
        if n <= 0:
            raise ValueError(f"sizes[{k}] must be a positive width, but got {n} (sizes={sizes!r})")
    return [int(n) for n in sizes]


def check_positive_number(name: str, value, *, allow_zero: bool = False) -> float:
    # a plain float skips the ABC check (a microsecond, paid per member of a population); the messages are the same
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a number, but got {type(value).__name__}: {value!r}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {bound}, but got {value!r}")
    return value


def check_tensor_like(name: str, t, *, dtype: torch.dtype, device: torch.device) -> None:
    """t must be a torch.Tensor on ``device``; floating tensors must have ``dtype``."""
    if not isinstance(t, Tensor):
        hint = " (convert it with torch.as_tensor)" if type(t).__module__.startswith("numpy") else ""
        raise TypeError(f"{name} must be a torch.Tensor, but got {type(t).__name__}{hint}")
    if t.device != device:
        raise ValueError(f"{name} is on device {t.device}, but the network is on {device}; move it with .to({str(device)!r})")
    if t.is_floating_point() and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, but the network has dtype {dtype}; convert it with .to({dtype})")


def check_finite(name: str, t: Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} must be finite, but {name}{bad} = {t[tuple(bad)].item()}")


def check_input(name: str, x, *, n_features: int, dtype: torch.dtype, device: torch.device, sizes: list,
                finite: bool = True) -> Tensor:
    """x must be (B, n_0) or (n_0,) with the network's dtype and device (and finite, unless ``finite=False``: that
    check reads every value, and on CUDA synchronises with the device). Returns a 2-D view."""
    check_tensor_like(name, x, dtype=dtype, device=device)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of dtype {dtype}, but got dtype {x.dtype}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != n_features:
        raise ValueError(
            f"{name} must have shape (B, {n_features}) or ({n_features},) for sizes {sizes}, but got {tuple(x.shape)}"
        )
    if finite:
        check_finite(name, x)
    return x


def check_int(name: str, value, *, minimum: int, note: str = "") -> int:
    """An int (not a bool) that is at least ``minimum``; ``note`` follows the rule in the error ("(or None for the
    default)", say)."""
    note = f" {note}" if note else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{note}, but got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{note}, but got {value}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, but got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    """One of ``choices`` (the learning modes, say)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, but got {value!r}")
    return value


def check_seeds(name: str, seeds) -> list:
    """A non-empty list of non-negative int seeds (one per population member, say)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"{name} must be a list of non-negative ints, one per member, but got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{name} must hold at least one seed (one per member), but got an empty list")
    return [check_seed(f"{name}[{i}]", s) for i, s in enumerate(seeds)]


def resolve_dtype(dtype) -> torch.dtype:
    """A floating-point torch dtype from a dtype or its name ("float64", "torch.float32"); None: torch's default."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""), dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype like torch.float64, but got {dtype!r}")
    return dtype


def resolve_device(device) -> torch.device:
    """A torch.device from "cpu", "cuda", "cuda:N" or "auto" (CUDA when available); "cuda" gets its index."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', but got {device!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for, but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


_SEED_MAX = 2 ** 63 - 1  # torch.Generator.manual_seed takes a 64-bit seed


def check_seed(name: str, seed, *, allow_none: bool = False):
    """A seed for torch.Generator: an int in [0, 2**63 - 1] (or None, where ``allow_none`` says so). The one seed
    rule: the weights', the sample orders', the datasets' and the single-layer rules' seeds all pass through it."""
    if seed is None and allow_none:
        return None
    none = " or None" if allow_none else ""
    if type(seed) is not int and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"{name} must be an int{none}, but got {type(seed).__name__}: {seed!r}")
    if not 0 <= seed <= _SEED_MAX:
        raise ValueError(f"{name} must be an int in [0, 2**63 - 1]{none}, but got {seed}")
    return int(seed)


# ------------------------------------------------------------------------------------------------------- memory
def network_bytes(sizes, dtype=torch.float32) -> int:
    """The bytes of one network's parameters: sum over layers of (n_{l-1} n_l + n_l) * the dtype's item size."""
    sizes = check_sizes(sizes)
    itemsize = torch.empty((), dtype=resolve_dtype(dtype)).element_size()
    return itemsize * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def available_memory() -> int:
    """The bytes of memory the machine can give now: Linux's MemAvailable (free plus reclaimable cache), else the
    physical memory; 2**62 where the system cannot tell."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 ** 62


def check_memory(what: str, nbytes: int, *, available=None) -> None:
    """Refuse (ValueError, one line naming ``what`` and both sizes) a request for more memory than is available
    (``available``: the bytes free, default ``available_memory()``), before any of it is allocated."""
    free = available_memory() if available is None else available
    if nbytes > free:
        raise ValueError(f"{what} needs about {_human_bytes(nbytes)}, but the machine has {_human_bytes(free)} of "
                         f"memory free; use smaller widths or fewer members")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


_LARGEST: dict = {}


def largest_finite(dtype: torch.dtype) -> float:
    """torch.finfo(dtype).max, looked up once per dtype (finfo costs a microsecond a call)."""
    got = _LARGEST.get(dtype)
    if got is None:
        got = _LARGEST[dtype] = torch.finfo(dtype).max
    return got


def check_fits_dtype(label: str, value: float, dtype: torch.dtype) -> None:
    """A rate (lr, momentum, ...) the parameters' dtype can hold: above its largest finite number it would become
    inf there, and every update NaN."""
    if value > largest_finite(dtype):
        raise ValueError(f"{label}={value:g} does not fit the network's dtype {dtype} (largest finite number "
                         f"{largest_finite(dtype):g})")
