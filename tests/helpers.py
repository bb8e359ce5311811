"""Helpers that several test areas share: the one maker of seeded targets for a loss and the problems the agreement
tests draw, the graph watcher that proves autograd is off, and the printed-digits comparison of the textbook
examples."""

import functools

import torch
from torch.overrides import TorchFunctionMode

from manual_backprop import BinaryCrossEntropy, CrossEntropy, SquaredError


def close_to_printed(value: float, printed: str, units: float = 0.5) -> bool:
    """|value - printed| <= units * (one unit in the last printed digit)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(value - float(printed)) <= units * 10.0 ** (-decimals) + 1e-15


class GraphWatcher(TorchFunctionMode):
    """Sees every torch op: records ops whose outputs carry a grad_fn or require grad, and ops run in grad mode."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.graph_ops = []
        self.grad_mode_ops = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        # Entering torch.no_grad() is itself seen as an op, called while grad mode is still on.
        if torch.is_grad_enabled() and name != "_set_grad_enabled":
            self.grad_mode_ops.append(name)
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and (t.grad_fn is not None or t.requires_grad):
                self.graph_ops.append(name)
        return out


OUTPUT_LOSSES = {
    "sigmoid-se-mean": ("sigmoid", SquaredError("mean"), "unit"),
    "identity-se-sum": ("identity", SquaredError("sum"), "real"),
    "tanh-se-elementwise-half": ("tanh", SquaredError("elementwise_mean", half=True), "real"),
    "relu-se-mean-half": ("relu", SquaredError("mean", half=True), "real"),
    "softmax-se-mean": ("softmax", SquaredError("mean"), "onehot"),
    "softmax-ce-index": ("softmax", CrossEntropy("mean"), "index"),
    "softmax-ce-onehot-sum": ("softmax", CrossEntropy("sum"), "onehot"),
    "sigmoid-bce-mean": ("sigmoid", BinaryCrossEntropy("mean"), "unit"),
    "sigmoid-bce-elementwise": ("sigmoid", BinaryCrossEntropy("elementwise_mean"), "binary"),
    "sigmoid-bce-sum": ("sigmoid", BinaryCrossEntropy("sum"), "unit"),
}


def draw_targets(kind: str, lead, n_out: int, g: torch.Generator) -> torch.Tensor:
    """The one maker of seeded targets, on the CPU: ``lead`` (B,) or (K, B) rows of ``n_out``, of the kind a loss
    wants: "index" (class indices, shape ``lead``), "onehot" (those as float64 rows), "binary" (0/1 floats), "unit"
    (uniform in [0, 1)) or "real" (standard normal)."""
    lead = tuple(lead)
    if kind == "index":
        return torch.randint(0, n_out, lead, generator=g)
    if kind == "onehot":
        return torch.nn.functional.one_hot(torch.randint(0, n_out, lead, generator=g), n_out).to(torch.float64)
    if kind == "binary":
        return torch.randint(0, 2, (*lead, n_out), generator=g).to(torch.float64)
    if kind == "unit":
        return torch.rand(*lead, n_out, generator=g, dtype=torch.float64)
    if kind == "real":
        return torch.randn(*lead, n_out, generator=g, dtype=torch.float64)
    raise ValueError(f"kind must be index, onehot, binary, unit or real, but got {kind!r}")


def target_kind(loss_fn, *, classes: str = "index", other: str = "binary") -> str:
    """The kind of target a loss takes: ``classes`` for cross-entropy, 0/1 for binary cross-entropy, ``other`` for
    squared error."""
    name = loss_fn if isinstance(loss_fn, str) else loss_fn.name
    return classes if name == "cross_entropy" else "binary" if name == "binary_cross_entropy" else other


def make_problem(sizes, target_kind, batch, dtype, device, seed=0):
    """Seeded inputs (B, n_0) and targets of the given kind, drawn on the CPU in float64, then cast and moved."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g, dtype=torch.float64)
    y = draw_targets(target_kind, (batch,), sizes[-1], g)
    y = y.to(dtype) if y.is_floating_point() else y
    return x.to(dtype=dtype, device=device), y.to(device)



@functools.lru_cache(maxsize=None)
def c_loop_reason():
    """Why the C loop cannot run here (no working C compiler, say), or None where it builds and loads."""
    from manual_backprop import fast

    try:
        fast.load_kernel()
        return None
    except fast.FastPathUnavailable as err:
        return str(err)
