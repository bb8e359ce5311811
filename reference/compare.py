"""Three-way comparison of the manual network with its autograd twin and with finite differences, per layer.

For each layer and each quantity (delta, dE/dW, dE/db) it reports the max absolute difference and the norm-relative
error ||a - b|| / max(||a||, ||b||) of every pair. Norm-relative error is the measure that means something in float32,
where a per-element relative error blows up near zero.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import Tensor

from manual_backprop.losses import Loss, default_loss_for, get_loss
from manual_backprop.network import MLP, ONE_UPDATE

from .finite_diff import finite_differences
from .torch_mlp import TorchMLP

__all__ = ["Row", "Report", "compare", "norm_relative_error", "tolerance_for", "FD_TOLERANCE"]

# Manual vs autograd: both are exact up to rounding, so the bound is a few hundred ulps of the dtype.
_TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# Finite differences (eps = 1e-6, float64) are accurate to about 1e-9 relative; 1e-6 leaves room for unlucky curvature.
FD_TOLERANCE = 1e-6


def tolerance_for(dtype: torch.dtype) -> float:
    """The norm-relative tolerance for manual vs autograd in ``dtype``."""
    return _TOLERANCES.get(dtype, 1e-5)


def norm_relative_error(a: Tensor, b: Tensor, mask: Optional[Tensor] = None) -> float:
    """||a - b|| / max(||a||, ||b||) in float64 over the entries in mask (0 when both are zero)."""
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    peak = max(a.abs().max().item(), b.abs().max().item()) if a.numel() else 0.0
    if 0.0 < peak < float("inf"):  # scaled by a power of two (exact) first: squares above ~1e154 overflow to inf
        s = 2.0 ** -math.frexp(peak)[1]
        a, b = a * s, b * s
    scale = max(a.norm().item(), b.norm().item())
    return 0.0 if scale == 0.0 else (a - b).norm().item() / scale


def _max_abs(a: Tensor, b: Tensor, mask: Optional[Tensor] = None) -> float:
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return (a - b).abs().max().item() if a.numel() else 0.0


@dataclass
class Row:
    layer: int  # 1-based: layer k+1 is the one whose weights are W[k]
    quantity: str  # "delta", "dW", "db"
    pair: str  # "manual~autograd", "manual~fd", "autograd~fd"
    max_abs: float
    rel_err: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_err <= self.tolerance


@dataclass
class Report:
    """The per-layer agreement table, with the loss and output comparisons."""

    dtype: torch.dtype
    loss_manual: float
    loss_autograd: float
    output_max_abs: float
    output_rel_err: float
    rows: list = field(default_factory=list)
    fd_loss: Optional[float] = None

    @property
    def tolerance(self) -> float:
        return tolerance_for(self.dtype)

    @property
    def passed(self) -> bool:
        loss_rel = abs(self.loss_manual - self.loss_autograd) / max(abs(self.loss_autograd), 1e-300)
        return (self.output_rel_err <= self.tolerance and (loss_rel <= self.tolerance or self.loss_autograd == 0)
                and all(r.ok for r in self.rows))

    def failures(self) -> list:
        return [r for r in self.rows if not r.ok]

    def table(self) -> str:
        lines = [
            f"dtype {str(self.dtype).replace('torch.', '')}: loss manual {self.loss_manual:.17g}, "
            f"autograd {self.loss_autograd:.17g}" + ("" if self.fd_loss is None else f", fd forward {self.fd_loss:.17g}"),
            f"forward output: max |diff| {self.output_max_abs:.3e}, norm-rel {self.output_rel_err:.3e} "
            f"(tolerance {self.tolerance:.0e})",
            f"{'layer':>5}  {'quantity':<8} {'pair':<16} {'max |diff|':>11} {'norm-rel err':>12} {'tol':>7}  ok",
        ]
        for r in self.rows:
            lines.append(f"{r.layer:>5}  {r.quantity:<8} {r.pair:<16} {r.max_abs:>11.3e} {r.rel_err:>12.3e} "
                         f"{r.tolerance:>7.0e}  {'yes' if r.ok else 'NO'}")
        lines.append("PASS: every layer agrees" if self.passed else
                     f"FAIL: {len(self.failures())} comparisons beyond tolerance")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare(net: MLP, x: Tensor, y: Tensor, loss_fn: Union[str, Loss, None] = None, *,
            finite_diff: bool = True, fd_max_per_tensor: Optional[int] = None, fd_eps: float = 1e-6,
            seed: int = 0) -> Report:
    """Run the manual network, its autograd twin and (optionally) finite differences on (x, y), and tabulate.

    The manual side is network.py's own functions (the slide): a registered derivative (``ONE_UPDATE``, the one C
    call of small CPU networks) is off here, so a wrong f' in an activation class shows; each derivative is held
    to network.py by reference/update_proof.py. TF32 is switched off for the duration so CUDA matrix products are
    true float32.
    """
    loss_fn = default_loss_for(net.output_activation) if loss_fn is None else get_loss(loss_fn)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        twin = TorchMLP.from_manual(net)
        with ONE_UPDATE.off():
            loss_m, grads_m = net.loss_and_grads(x, y, loss_fn)
        loss_a, grads_a = twin.loss_and_grads(x, y, loss_fn)
        out_m = net.forward(x)
        with torch.no_grad():
            out_a = twin(x.unsqueeze(0) if x.dim() == 1 else x)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    tol = tolerance_for(net.dtype)
    report = Report(dtype=net.dtype, loss_manual=float(loss_m), loss_autograd=float(loss_a),
                    output_max_abs=_max_abs(out_m, out_a), output_rel_err=norm_relative_error(out_m, out_a))
    fd = None
    if finite_diff:
        fd = finite_differences(net, x, y, loss_fn, eps=fd_eps, max_per_tensor=fd_max_per_tensor, seed=seed)
        report.fd_loss = fd.loss
    fd_tol = max(FD_TOLERANCE, tol)
    quantities = [("delta", "deltas"), ("dW", "weights"), ("db", "biases")]
    for k in range(net.num_layers):
        for label, attr in quantities:
            if not getattr(grads_m, attr):
                continue
            m, a = getattr(grads_m, attr)[k], getattr(grads_a, attr)[k]
            report.rows.append(Row(k + 1, label, "manual~autograd", _max_abs(m, a), norm_relative_error(m, a), tol))
            if fd is not None:
                f, mask = getattr(fd, attr)[k], fd.masks[attr][k]
                report.rows.append(Row(k + 1, label, "manual~fd", _max_abs(m, f, mask),
                                       norm_relative_error(m, f, mask), fd_tol))
                report.rows.append(Row(k + 1, label, "autograd~fd", _max_abs(a, f, mask),
                                       norm_relative_error(a, f, mask), fd_tol))
    return report
