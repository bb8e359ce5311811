"""The ``decision_boundary`` image: a classifier's regions over 2-D data with the data points on top, drawn without
matplotlib, in the class colours of ``PALETTE``."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..checks import check_int

# Class colours (RGB in [0, 1]), the "tab10" cycle that matplotlib users know; class c gets PALETTE[c % 10].
PALETTE = torch.tensor(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    ],
    dtype=torch.float32,
) / 255.0
_BORDER = torch.tensor([0.1, 0.1, 0.1])  # dark outline of a data point, visible on every class colour


@torch.no_grad()
def decision_boundary_image(
    predict_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    resolution: int = 128,
    *,
    margin: float = 0.1,
    point_size: Optional[int] = None,
    extent: Optional[tuple] = None,
) -> Tensor:
    """An RGB image of the classifier's regions over 2-D data, with the data points on top.

    Each pixel is coloured by the predicted class (argmax for several outputs, output >= 0.5 for one output),
    blended with white by the confidence: the gap between the two largest outputs (several outputs) or |2p - 1|
    (one output), so the boundary shows as a pale band. Data points are squares in their label's colour with a
    dark border. Row 0 is the top, i.e. the largest x[:, 1]; column 0 is the smallest x[:, 0].

    Args:
        predict_fn: maps a (P, 2) grid (dtype and device of x) to outputs (P, C) or (P,).
        x: (N, 2) inputs; the grid covers their range plus ``margin`` times it on each side, or ``extent``.
        y: labels: class indices (N,), one-hot or probabilities (N, C), or 0/1 targets (N,) or (N, 1).
        resolution: the image is resolution x resolution pixels.
        point_size: side of a point's square in pixels (default resolution // 40, at least 3).
        extent: (x0_min, x0_max, x1_min, x1_max), the region drawn instead of the data's range (a fixed view for
            every frame of an animation, say); points outside it are drawn on its border.

    Returns:
        float32 tensor (3, resolution, resolution) on the CPU, values in [0, 1] (CHW, for SummaryWriter.add_image).
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (N, 2) with N >= 1, but got {got}")
    resolution = check_int("resolution", resolution, minimum=8)
    labels = _class_labels(y, x.shape[0])  # (N,) on the CPU
    xf = x.detach().to(torch.float64)
    if extent is not None:
        if len(extent) != 4 or not (extent[0] < extent[1] and extent[2] < extent[3]):
            raise ValueError(f"extent must be (x0_min, x0_max, x1_min, x1_max) with min < max, but got {extent!r}")
        lo = torch.tensor([extent[0], extent[2]], dtype=torch.float64, device=x.device)
        hi = torch.tensor([extent[1], extent[3]], dtype=torch.float64, device=x.device)
    else:
        lo, hi = xf.min(dim=0).values, xf.max(dim=0).values  # (2,), (2,)
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        lo, hi = lo - margin * span, hi + margin * span
    H = W = resolution
    centres = (torch.arange(W, dtype=torch.float64, device=x.device) + 0.5) / W  # (W,)
    gx = lo[0] + centres * (hi[0] - lo[0])  # (W,) left to right
    gy = hi[1] - centres * (hi[1] - lo[1])  # (H,) top to bottom
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).reshape(H * W, 2).to(x.dtype)  # (H*W, 2)

    out = predict_fn(grid)
    if not isinstance(out, Tensor) or out.shape[0] != H * W or out.dim() > 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"predict_fn must return (P, C) or (P,) outputs for a (P, 2) grid with P={H * W}, but got {got}"
        )
    out = out.detach().to("cpu", torch.float32)
    out = out.reshape(H * W, -1)  # (P, C)
    if out.shape[1] == 1:
        p = out[:, 0]
        cls = (p >= 0.5).long()
        confidence = (2 * p - 1).abs()
    else:
        top2 = out.topk(2, dim=1).values  # (P, 2)
        cls = out.argmax(dim=1)
        confidence = top2[:, 0] - top2[:, 1]
    alpha = (0.2 + 0.6 * confidence.clamp(0, 1)).unsqueeze(1)  # (P, 1): pale near the boundary, strong far away
    colours = PALETTE[cls % len(PALETTE)]  # (P, 3)
    image = (1 - alpha) + alpha * colours  # blend with white, (P, 3)

    # Data points: a dark square, then a smaller square of the label's colour inside it.
    size = max(3, resolution // 40) if point_size is None else check_int("point_size", point_size, minimum=1)
    col = ((xf[:, 0].cpu() - lo[0].cpu()) / (hi[0] - lo[0]).cpu() * W).floor().long().clamp(0, W - 1)  # (N,)
    row = ((hi[1].cpu() - xf[:, 1].cpu()) / (hi[1] - lo[1]).cpu() * H).floor().long().clamp(0, H - 1)  # (N,)
    half = size // 2
    for radius, fill in ((half + 1, None), (half, labels)):
        offsets = torch.arange(-radius, radius + 1)
        dr, dc = torch.meshgrid(offsets, offsets, indexing="ij")
        rr = row[:, None] + dr.reshape(1, -1)  # (N, K)
        cc = col[:, None] + dc.reshape(1, -1)  # (N, K)
        inside = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        index = (rr * W + cc)[inside]
        if fill is None:
            image[index] = _BORDER
        else:
            image[index] = PALETTE[fill % len(PALETTE)][:, None, :].expand(-1, rr.shape[1], -1)[inside]
    return image.reshape(H, W, 3).permute(2, 0, 1).contiguous().clamp_(0, 1)  # (3, H, W)


def _class_labels(y, n: int) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of labels, but got {type(y).__name__}")
    y = y.detach().cpu()
    if y.dim() == 2 and y.shape[1] > 1:
        labels = y.argmax(dim=1)
    elif y.is_floating_point():
        labels = (y.reshape(-1) >= 0.5).long()
    else:
        labels = y.reshape(-1).long()
    if labels.shape[0] != n:
        raise ValueError(f"y must hold one label per sample ({n}), but got shape {tuple(y.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"y must hold class indices >= 0, but got {int(labels.min())}")
    return labels


def grid_predict_fn(net) -> Callable[[Tensor], Tensor]:
    """``net``'s forward as the predict_fn of decision_boundary_image, the grid cast to the net's dtype, device."""
    forward = getattr(net, "forward", net)
    dtype, device = getattr(net, "dtype", None), getattr(net, "device", None)
    if isinstance(dtype, torch.dtype):
        return lambda grid: forward(grid.to(dtype=dtype, device=device))
    return forward
