"""Helpers that several test areas share: the one maker of seeded targets for a loss (reference/targets.py, here
for the tests) and the problems the agreement tests draw, the graph watcher that proves autograd is off, and the
printed-digits comparison of the textbook examples."""

import functools

import torch
from torch.overrides import TorchFunctionMode

from manual_backprop import BinaryCrossEntropy, CrossEntropy, SquaredError
from reference.targets import draw_targets, target_kind  # noqa: F401 - the one maker, re-exported to the tests


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


def make_problem(sizes, kind, batch, dtype, device, seed=0):
    """Seeded inputs (B, n_0) and targets of the given kind, drawn on the CPU in float64, then cast and moved."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g, dtype=torch.float64)
    y = draw_targets(kind, (batch,), sizes[-1], g)
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


def move_memory(t: torch.Tensor) -> None:
    """Give t's storage new memory holding its old values, as ``t.untyped_storage().resize_()`` can: the tensor keeps
    its storage object, shape, strides, dtype and version, and only its address changes (what a C call that kept the
    old address must see)."""
    storage, values = t.untyped_storage(), t.clone()
    n, before = storage.nbytes(), t.data_ptr()
    storage.resize_(0)
    hold = torch.empty(max(n, 1), dtype=torch.uint8)  # takes the freed block where the allocator would hand it back
    storage.resize_(n)
    with torch.no_grad():
        t.copy_(values)
    assert t.data_ptr() != before, "the storage kept its memory"
    del hold
