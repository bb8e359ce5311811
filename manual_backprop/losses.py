"""Cost functions e(w), each with its value and its output-layer delta dE/dnet written by hand.

Conventions are explicit, never implied (B samples, n outputs, x = network output, y = desired output):

    SquaredError(reduction="mean")              E = 1/B     sum_i sum_j (x_ij - y_ij)^2   the lecture's e(w)
    SquaredError(reduction="sum")               E =         sum_i sum_j (x_ij - y_ij)^2   the lecture's e^2
    SquaredError(reduction="elementwise_mean")  E = 1/(B n) sum_i sum_j (x_ij - y_ij)^2   torch.nn.MSELoss()
    SquaredError(..., half=True)                the same times 1/2 (Nielsen and most textbooks)
    CrossEntropy()                              E = -1/B sum_i sum_j y_ij log x_ij       on a softmax output
    BinaryCrossEntropy()                        E = -1/B sum_i sum_j [y log x + (1-y) log(1-x)]  on sigmoid outputs

The output-layer delta (autograd's sign, dE/dnet; the lecture's delta is its negative) is, for squared error,
dE/dnet_j = 2c (x_j - y_j) f'(net_j), the lecture's delta_j = 2 (y_j - x_j) f'(net_j) with c the reduction's factor.
For cross-entropy on softmax and binary cross-entropy on sigmoid, f' cancels and the fused delta is c (x - y).
Only the "mean" reductions give a learning rate the same meaning in batch, online and minibatch learning.

Tensors may carry leading axes before (B, n): a stack of K networks gives (K, B, n), and ``value`` then returns the
K losses, each reduced over its own B samples, as the network functions in network.py expect.

Each class also carries its kernel code for the fast paths, beside the reference it derives from:
``value_and_delta_`` (in place, for the fused step; the default calls value and output_delta and copies) and
``c_output_row`` (the C loop's statements for one sample's row; None: the C loop refuses the loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import Activation, Sigmoid, Softmax
from .checks import check_bool
from .derived import CountsChanges

__all__ = ["Loss", "SquaredError", "CrossEntropy", "BinaryCrossEntropy", "LOSSES", "REDUCTIONS", "get_loss"]

REDUCTIONS = ("mean", "sum", "elementwise_mean")


class Loss(CountsChanges):
    """A cost function of the network output; subclasses define ``value`` and ``output_delta``."""

    name: str = ""
    reductions: tuple = REDUCTIONS

    def __init__(self, reduction: str = "mean"):
        if reduction not in self.reductions:
            raise ValueError(f"reduction of {self.name} must be one of {list(self.reductions)}, but got {reduction!r}")
        self.reduction = reduction

    def scale(self, batch: int, n_out: int) -> float:
        """The factor c in E = c * sum over samples and outputs."""
        if self.reduction == "mean":
            return 1.0 / batch
        if self.reduction == "elementwise_mean":
            return 1.0 / (batch * n_out)
        return 1.0

    def check_output_activation(self, activation: Activation) -> None:
        """Raise ValueError if this loss makes no sense on that output activation."""

    def prepare_target(self, y: Tensor, out_shape: tuple, dtype: torch.dtype) -> Tensor:
        """Return y as a (B, n_out) tensor of the output's dtype, or raise ValueError saying what shape fits."""
        _check_not_empty(out_shape)
        if y.shape != out_shape:
            raise ValueError(f"y must have shape {tuple(out_shape)} to match the output for {self.name}, but got {tuple(y.shape)}")
        if not y.is_floating_point():
            raise TypeError(f"y for {self.name} must be a floating-point tensor, but got dtype {y.dtype}")
        return y

    def value(self, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """E from the output layer's weighted input z and output x = f(z), both (..., B, n): a 0-dim tensor for
        (B, n), one E per leading index otherwise."""
        raise NotImplementedError

    def output_delta(self, z: Tensor, x: Tensor, y: Tensor, activation: Activation) -> Tensor:
        """dE/dnet at the output layer, shape (..., B, n): the start of the backward phase."""
        raise NotImplementedError

    # ---- kernel code of the fast paths, derived from value and output_delta above
    # C statements for one sample's row of the output layer (see SquaredError for the variables): add the row's
    # terms of E / c to acc and write dE/dnet into d. None: the C loop refuses this loss.
    c_output_row: "str | None" = None

    def value_and_delta_(self, z: Tensor, x: Tensor, y: Tensor, f: Activation, d: Tensor, loss_out: Tensor,
                         scratch: tuple) -> None:
        """loss_out <- value(z, x, y) and d <- output_delta(z, x, y, f), in place where the class can."""
        loss_out.copy_(self.value(z, x, y))
        d.copy_(self.output_delta(z, x, y, f))

    def c_factor(self) -> float:
        """The constant factor of ``scale`` beside the reduction's 1/B or 1/(B n) (the C loop computes those)."""
        return 1.0

    def spec(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loss) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.spec().items())))


class SquaredError(Loss):
    """Sum of squared errors over outputs, reduced over samples as ``reduction`` says, optionally halved."""

    name = "squared_error"

    def __init__(self, reduction: str = "mean", half: bool = False):
        super().__init__(reduction)
        self.half = check_bool("half", half)

    def scale(self, batch: int, n_out: int) -> float:
        return super().scale(batch, n_out) * (0.5 if self.half else 1.0)

    def value(self, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        e = x - y
        return (e * e).sum(dim=(-2, -1)) * self.scale(*x.shape[-2:])

    def output_delta(self, z: Tensor, x: Tensor, y: Tensor, activation: Activation) -> Tensor:
        grad_x = (x - y) * (2.0 * self.scale(*x.shape[-2:]))  # dE/dx, (B, n)
        return activation.backward(x, grad_x)  # dE/dnet = f'(net) dE/dx, (B, n)

    def spec(self) -> dict:
        return {"name": self.name, "reduction": self.reduction, "half": self.half}

    def c_factor(self) -> float:
        return 0.5 if self.half else 1.0

    # Variables of a C output row: z, x, y, d (rows of n values), c (the scale, a double), acc (REAL, the sum of
    # the row terms; E = acc * c), and activation_backward(x, d) for the output layer's f.
    c_output_row = ("const REAL c2 = (REAL)(2.0 * c); for (j = 0; j < n; j++) { const REAL e = x[j] - y[j]; "
                    "acc += e * e; d[j] = e * c2; } activation_backward(x, d);")

    def value_and_delta_(self, z, x, y, f, d, loss_out, scratch) -> None:
        c = self.scale(*x.shape[-2:])
        torch.sub(x, y, out=d)  # e = x - y
        torch.sum(torch.mul(d, d, out=scratch[0]), dim=(-2, -1), out=loss_out)
        loss_out.mul_(c)  # (e * e).sum() * c
        d.mul_(2.0 * c)  # dE/dx
        f.backward_(x, d, scratch)  # dE/dnet = f'(net) dE/dx


class CrossEntropy(Loss):
    """Cross-entropy of a softmax output against class indices (B,) or one-hot / probability rows (B, C)."""

    name = "cross_entropy"
    reductions = ("mean", "sum")

    def check_output_activation(self, activation: Activation) -> None:
        if not isinstance(activation, Softmax):
            raise ValueError(
                f"loss 'cross_entropy' needs output_activation='softmax', but got {activation.spec()!r}; "
                "use 'binary_cross_entropy' on sigmoid outputs, or 'squared_error' with any output activation"
            )

    def prepare_target(self, y: Tensor, out_shape: tuple, dtype: torch.dtype) -> Tensor:
        """Class indices (B,) become one-hot rows; floating rows (B, C) must be probability distributions.

        The fused delta c (p - y) is dE/dnet only where every row of y sums to 1 (the exact one is
        c (p * sum_j y_j - y)), so rows that do not (one-hot x 2, all-zero rows) or that hold negative entries are
        refused rather than given a silently wrong gradient.
        """
        batch, classes = out_shape
        _check_not_empty(out_shape)
        if y.dtype == torch.bool or y.is_complex():
            raise TypeError(
                f"y for cross_entropy must be class indices (an integer tensor) or probability rows (a floating-point "
                f"tensor), but got dtype {y.dtype}"
            )
        if not y.is_floating_point():
            if y.shape != (batch,):
                raise ValueError(
                    f"class-index targets y for cross_entropy must have shape ({batch},), but got {tuple(y.shape)}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
                raise ValueError(
                    f"class indices in y must lie in [0, {classes - 1}] for {classes} outputs, "
                    f"but got values in [{int(y.min())}, {int(y.max())}]"
                )
            return torch.nn.functional.one_hot(y.long(), classes).to(dtype)
        if y.shape != (batch, classes):
            raise ValueError(
                f"y for cross_entropy must be class indices of shape ({batch},) or one-hot rows of shape "
                f"({batch}, {classes}), but got {tuple(y.shape)} with dtype {y.dtype}"
            )
        _check_distribution_rows(y)
        return y

    def value(self, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        # log softmax from z, not log(x): x can underflow to 0 where log x is still finite.
        log_p = z - torch.logsumexp(z, dim=-1, keepdim=True)
        return -(y * log_p).sum(dim=(-2, -1)) * self.scale(*x.shape[-2:])

    def output_delta(self, z: Tensor, x: Tensor, y: Tensor, activation: Activation) -> Tensor:
        # Fused softmax + cross-entropy: dE/dnet = c (p - y) for rows of y that sum to 1.
        return (x - y) * self.scale(*x.shape[-2:])

    c_output_row = ("REAL m = z[0], s = 0; for (j = 1; j < n; j++) m = z[j] > m ? z[j] : m; "
                    "for (j = 0; j < n; j++) s += R_EXP(z[j] - m); const REAL lse = m + R_LOG(s); "
                    "for (j = 0; j < n; j++) { acc -= y[j] * (z[j] - lse); d[j] = (x[j] - y[j]) * (REAL)c; }")

    def value_and_delta_(self, z, x, y, f, d, loss_out, scratch) -> None:
        c = self.scale(*x.shape[-2:])
        row = scratch[1][..., :1]
        torch.logsumexp(z, -1, keepdim=True, out=row)
        torch.sub(z, row, out=scratch[0]).mul_(y)  # y * log softmax(z)
        torch.sum(scratch[0], dim=(-2, -1), out=loss_out)
        loss_out.neg_().mul_(c)
        torch.sub(x, y, out=d).mul_(c)  # c (p - y)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy of independent sigmoid outputs against targets in [0, 1]."""

    name = "binary_cross_entropy"

    def check_output_activation(self, activation: Activation) -> None:
        if not isinstance(activation, Sigmoid):
            raise ValueError(
                f"loss 'binary_cross_entropy' needs output_activation='sigmoid', but got {activation.spec()!r}; "
                "use 'cross_entropy' on a softmax output, or 'squared_error' with any output activation"
            )

    def value(self, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        # -[y log s(z) + (1-y) log(1-s(z))] = max(z, 0) - y z + log(1 + exp(-|z|)), stable for any z.
        per_element = z.clamp_min(0) - y * z + torch.log1p(torch.exp(-z.abs()))
        return per_element.sum(dim=(-2, -1)) * self.scale(*x.shape[-2:])

    def output_delta(self, z: Tensor, x: Tensor, y: Tensor, activation: Activation) -> Tensor:
        return (x - y) * self.scale(*x.shape[-2:])

    c_output_row = ("for (j = 0; j < n; j++) { const REAL zj = z[j]; const REAL relu = zj < 0 ? (REAL)0 : zj; "
                    "acc += (relu - y[j] * zj) + R_LOG1P(R_EXP(-(zj < 0 ? -zj : zj))); "
                    "d[j] = (x[j] - y[j]) * (REAL)c; }")

    def value_and_delta_(self, z, x, y, f, d, loss_out, scratch) -> None:
        c = self.scale(*x.shape[-2:])
        t = torch.abs(z, out=scratch[0]).neg_().exp_().log1p_()  # log(1 + exp(-|z|))
        t.add_(torch.clamp_min(z, 0, out=scratch[1]).sub_(torch.mul(y, z, out=d)))  # + (max(z, 0) - y z)
        torch.sum(t, dim=(-2, -1), out=loss_out)
        loss_out.mul_(c)
        torch.sub(x, y, out=d).mul_(c)


def _check_not_empty(out_shape: tuple) -> None:
    if out_shape[-2] == 0:
        raise ValueError("empty batch: x and y hold 0 samples; a cost averaged over samples needs at least one")


def _check_distribution_rows(y: Tensor) -> None:
    """Every finite row of y (B, C) is a probability distribution: no negative entry, sum 1 up to rounding.

    Rows with a NaN or inf are left to the finiteness check that follows, which names the element.
    """
    finite = torch.isfinite(y).all(dim=-1)  # (B,)
    negative = (y < 0).any(dim=-1) & finite
    if bool(negative.any()):
        i = int(negative.nonzero()[0])
        j = int((y[i] < 0).nonzero()[0])
        raise ValueError(
            f"y for cross_entropy holds probabilities, which must not be negative, but row {i} has "
            f"y[{i}, {j}] = {y[i, j].item():g}"
        )
    # Summing C entries rounds by at most about C ulps; 16 C ulps leaves room for rows computed by the user.
    tol = 16 * y.shape[-1] * torch.finfo(y.dtype).eps
    off = ((y.sum(dim=-1) - 1).abs() > tol) & finite
    if bool(off.any()):
        i = int(off.nonzero()[0])
        raise ValueError(
            f"y for cross_entropy must hold probability rows that sum to 1 (one-hot or soft labels), but row {i} "
            f"sums to {y[i].sum().item():.10g}: the fused delta p - y is dE/dnet only for such rows"
        )


LOSSES = {"squared_error": SquaredError, "cross_entropy": CrossEntropy, "binary_cross_entropy": BinaryCrossEntropy}
_ALIASES = {"mse": "squared_error", "sse": "squared_error", "ce": "cross_entropy", "bce": "binary_cross_entropy"}


def get_loss(spec: "str | Loss", *, reduction: "str | None" = None, half: "bool | None" = None) -> Loss:
    """Turn a name ("squared_error", "mse", "cross_entropy", "bce", ...) or a Loss into a Loss.

    ``reduction`` and ``half`` override the defaults when a name is given. "sse" means squared error with
    reduction="sum" (the lecture's e^2).
    """
    if isinstance(spec, Loss):
        if reduction is not None or half is not None:
            raise ValueError("reduction and half apply only when the loss is given by name, not as a Loss instance")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a loss name or a Loss, but got {type(spec).__name__}: {spec!r}")
    key = spec.strip().lower()
    name = _ALIASES.get(key, key)
    if name not in LOSSES:
        valid = sorted(set(LOSSES) | set(_ALIASES))
        raise ValueError(f"loss must be one of {valid}, but got {spec!r}")
    kwargs = {}
    if reduction is not None or key == "sse":
        kwargs["reduction"] = reduction if reduction is not None else "sum"
    if half is not None:
        if name != "squared_error":
            raise ValueError(f"half=True applies only to squared_error, not to {name}")
        kwargs["half"] = half
    return LOSSES[name](**kwargs)


def default_loss_for(activation: Activation) -> Loss:
    """The natural loss for an output activation: cross-entropy on softmax, squared error otherwise."""
    return CrossEntropy() if isinstance(activation, Softmax) else SquaredError()

