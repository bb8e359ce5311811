"""The one maker of seeded targets y for a loss: the tests, the proof harness and the commands draw them here.

A kind names what a loss wants of y (B, n_L): "index" (class indices (B,), cross-entropy's labels), "onehot" (those
as float64 rows), "binary" (0/1 floats), "unit" (uniform in [0, 1): inside a sigmoid's or softmax's range),
"symmetric" (uniform in [-0.9, 0.9): inside tanh's range) or "real" (standard normal).
"""

from __future__ import annotations

import torch

__all__ = ["TARGET_KINDS", "draw_targets", "target_kind", "output_target_kind"]

TARGET_KINDS = ("index", "onehot", "binary", "unit", "symmetric", "real")


def draw_targets(kind: str, lead, n_out: int, g: torch.Generator) -> torch.Tensor:
    """Seeded targets on the CPU: ``lead`` (B,) or (K, B) rows of ``n_out`` of the given kind (float64, or int64
    class indices of shape ``lead`` for "index")."""
    lead = tuple(lead)
    if kind == "index":
        return torch.randint(0, n_out, lead, generator=g)
    if kind == "onehot":
        return torch.nn.functional.one_hot(torch.randint(0, n_out, lead, generator=g), n_out).to(torch.float64)
    if kind == "binary":
        return torch.randint(0, 2, (*lead, n_out), generator=g).to(torch.float64)
    if kind == "unit":
        return torch.rand(*lead, n_out, generator=g, dtype=torch.float64)
    if kind == "symmetric":
        return torch.rand(*lead, n_out, generator=g, dtype=torch.float64) * 1.8 - 0.9
    if kind == "real":
        return torch.randn(*lead, n_out, generator=g, dtype=torch.float64)
    raise ValueError(f"kind must be one of {', '.join(TARGET_KINDS)}, but got {kind!r}")


def target_kind(loss_fn, *, classes: str = "index", other: str = "binary") -> str:
    """The kind of target a loss takes: ``classes`` for cross-entropy, 0/1 for binary cross-entropy, ``other`` for
    squared error."""
    name = loss_fn if isinstance(loss_fn, str) else loss_fn.name
    return classes if name == "cross_entropy" else "binary" if name == "binary_cross_entropy" else other


def output_target_kind(loss_fn, output: str, *, classes: str = "index") -> str:
    """The kind the commands draw for a loss and output activation (by name): ``classes`` for cross-entropy; inside
    the output's range for binary cross-entropy and sigmoid or softmax outputs ("unit") and tanh ("symmetric");
    "real" otherwise."""
    name = loss_fn if isinstance(loss_fn, str) else loss_fn.name
    if name == "cross_entropy":
        return classes
    if name == "binary_cross_entropy" or output in ("sigmoid", "softmax"):
        return "unit"
    return "symmetric" if output == "tanh" else "real"
