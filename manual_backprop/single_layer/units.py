"""The single-layer units and their update rules: Perceptron (the perceptron rule) and LinearUnit (the delta rule).

Lecture, "Who needs multi-layer networks?" and "From single- to multi-layer networks": the perceptron and delta
rules are the error-correction methods of single-layer networks. Both units compute net = W x + b, W (n_out, n_in)
and b (n_out,); ``step`` makes one update of the unit's rule on a batch (the mean of the per-sample updates):

    Perceptron   the perceptron rule: yhat = 1 if net >= 0 else 0;  w <- w + eta (y - yhat) x,  b <- b + eta (y - yhat)
    LinearUnit   the delta rule (Widrow-Hoff): out = net (f' = 1, "for the linear neuron in the delta rule f' = 1",
                 slide "Backpropagation – output layer");  Delta w = 2 eta (y - out) x,  Delta b = 2 eta (y - out)

``check_data`` is the one check of (x, y) for both units and the training loop (training.py).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..checks import check_finite, check_int, check_positive_number, resolve_device, resolve_dtype
from ..init import initial_parameters, resolve_init


# ---------------------------------------------------------------------------------------------------- the units
class _SingleLayer:
    """One layer of units, net = x @ W.T + b; subclasses say what the output is and how the rule updates W, b."""

    rule: str = ""

    def __init__(self, n_in: int, n_out: int = 1, *, init: str = "uniform", init_scale: float = 0.5,
                 bias_init: str = "uniform", dtype: Optional[torch.dtype] = torch.float64,
                 device: Union[str, torch.device, None] = "cpu", seed: int = 0):
        self.n_in = check_int("n_in", n_in, minimum=1)
        self.n_out = check_int("n_out", n_out, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.init_scale = check_positive_number("init_scale", init_scale)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        if isinstance(init, str) and init.lower() == "zeros":
            # The classic perceptron start; drawn like any other init so bias_init still applies.
            _, biases = initial_parameters([self.n_in, self.n_out], init="uniform", bias_init=bias_init,
                                           scale=self.init_scale, seed=self.seed, bias=True)
            weight = torch.zeros(self.n_out, self.n_in, dtype=torch.float64)
            self.init, self.bias_init = "zeros", resolve_init("uniform", bias_init)[1]
        else:
            self.init, self.bias_init = resolve_init(init, bias_init)
            weights, biases = initial_parameters([self.n_in, self.n_out], init=self.init, bias_init=self.bias_init,
                                                 scale=self.init_scale, seed=self.seed, bias=True)
            weight = weights[0]
        self.weight = weight.to(dtype=self.dtype).to(self.device)  # W: (n_out, n_in)
        self.bias = biases[0].to(dtype=self.dtype).to(self.device)  # b: (n_out,)

    @classmethod
    def from_tensors(cls, weight: Tensor, bias: Optional[Tensor] = None):
        """A unit with the given W (n_out, n_in) and b (n_out,) (zeros when None); dtype and device are W's.

        The tensors are copied.
        """
        if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
            got = f"shape {tuple(weight.shape)}, dtype {weight.dtype}" if isinstance(weight, Tensor) \
                else type(weight).__name__
            raise ValueError(f"weight must be a 2-D floating-point tensor (n_out, n_in), but got {got}")
        unit = cls.__new__(cls)
        unit.n_out, unit.n_in = int(weight.shape[0]), int(weight.shape[1])
        unit.dtype, unit.device = weight.dtype, weight.device
        unit.seed, unit.init, unit.bias_init, unit.init_scale = None, "given", "given", None
        if bias is None:
            bias = torch.zeros(unit.n_out, dtype=unit.dtype, device=unit.device)
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (unit.n_out,):
            got = f"shape {tuple(bias.shape)}" if isinstance(bias, Tensor) else type(bias).__name__
            raise ValueError(f"bias must be a tensor of shape ({unit.n_out},) for weight {tuple(weight.shape)}, "
                             f"but got {got}")
        unit.weight = weight.detach().clone()
        unit.bias = bias.detach().to(dtype=unit.dtype, device=unit.device).clone()
        check_finite("weight", unit.weight)
        check_finite("bias", unit.bias)
        return unit

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def net_input(self, x: Tensor) -> Tensor:
        """net = W x + b for every sample: x (B, n_in) or (n_in,) -> (B, n_out)."""
        return self._net(self._check_x(x))

    def _net(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x, self.weight.t())  # (B, n_out)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """The unit's output, (B, n_out): threshold outputs for the perceptron, net itself for the linear unit."""
        return self._output(self._net(self._check_x(x)))

    __call__ = forward

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The predicted 0/1 targets, (B, n_out), in the unit's dtype."""
        return self._classify(self._output(self._net(self._check_x(x))))

    @torch.no_grad()
    def errors(self, x: Tensor, y: Tensor) -> int:
        """Number of samples with at least one output on the wrong side of the threshold."""
        x, y = check_data(x, y, n_in=self.n_in, n_out=self.n_out, dtype=self.dtype, device=self.device)
        return int(self._evaluate(x, y)[0].item())

    def _output(self, net: Tensor) -> Tensor:
        raise NotImplementedError

    def _classify(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def _evaluate(self, x: Tensor, y: Tensor) -> Tensor:
        """(misclassified samples, e(w) = 1/N sum of squared output errors) as one device tensor of 2 values."""
        out = self._output(self._net(x))  # (N, n_out)
        wrong = (self._classify(out) != y).any(dim=1).sum().to(out.dtype)
        e = out - y
        return torch.stack([wrong, (e * e).sum() / x.shape[0]])

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        """One update of the rule from the samples x (B, n_in) and 0/1 targets y (B, n_out) or (B,): the mean of
        the per-sample updates (B = 1 is the online rule). Returns the rule's per-step figure as a 0-dim tensor
        (the perceptron: samples corrected; the delta rule: e(w) before the step)."""
        lr = check_positive_number("lr", lr)
        x, y = check_data(x, y, n_in=self.n_in, n_out=self.n_out, dtype=self.dtype, device=self.device)
        return self._step(x, y, lr)

    def _step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """{"weight": W, "bias": b}, the keys (and shapes) of a torch.nn.Linear(n_in, n_out)."""
        return {"weight": self.weight, "bias": self.bias}

    def parameters(self) -> list:
        return [self.weight, self.bias]

    def copy(self):
        """An independent copy with equal parameters (the same initial unit for several runs)."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.weight, new.bias = self.weight.clone(), self.bias.clone()
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_in={self.n_in}, n_out={self.n_out}, dtype={self.dtype}, device={self.device})"

    def _check_x(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, but got {type(x).__name__}")
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"x must have shape (B, {self.n_in}) or ({self.n_in},), but got {tuple(x.shape)}")
        if not x.is_floating_point() or x.dtype != self.dtype or x.device != self.device:
            raise TypeError(f"x must be a floating tensor of dtype {self.dtype} on {self.device}, but got dtype "
                            f"{x.dtype} on {x.device}; convert it with .to({str(self.device)!r}, {self.dtype})")
        return x


class Perceptron(_SingleLayer):
    """Threshold units trained by the perceptron rule (Rosenblatt): the lecture's error-correction rule.

    Output yhat = 1 if W x + b >= 0 else 0 (targets 0/1). Update on samples x with targets y:
    w <- w + eta (y - yhat) x, b <- b + eta (y - yhat), averaged over the samples of a batch.

    Args:
        n_in, n_out: inputs and threshold units.
        init: "zeros" (the classic start) or a scheme of init.py ("uniform", "normal", "xavier_uniform", ...).
        init_scale, bias_init: as for ``MLP``; the default draws W and b uniformly from [-0.5, 0.5].
        dtype, device: where W and b live; data must match them ("auto" picks CUDA when present).
        seed: seeds the CPU generator that draws W and b.

    Example:
        >>> unit = Perceptron(2, seed=0)
        >>> unit.step(x[:1], y[:1], lr=1.0)     # one online correction
        >>> unit.predict(x)                     # (4, 1) of 0/1
    """

    rule = "perceptron"

    def _output(self, net: Tensor) -> Tensor:
        return (net >= 0).to(net.dtype)  # yhat: (B, n_out) of 0/1

    def _classify(self, out: Tensor) -> Tensor:
        return out

    def _step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        yhat = self._output(self._net(x))  # (B, n_out)
        err = y - yhat  # (B, n_out) in {-1, 0, 1}: nonzero only on a mistake
        scale = lr / x.shape[0]
        self.weight.add_(err.t() @ x, alpha=scale)  # (n_out, n_in): eta (y - yhat) x
        self.bias.add_(err.sum(dim=0), alpha=scale)
        return (err != 0).any(dim=1).sum()  # samples corrected by this update


class LinearUnit(_SingleLayer):
    """Linear units trained by the delta rule (Widrow-Hoff, "Adaline"): gradient descent on the squared error.

    Output out = W x + b (f' = 1). Update on samples x with targets y, for e^2 = (y - out)^2:
    Delta w = 2 eta (y - out) x, Delta b = 2 eta (y - out), averaged over the samples of a batch, i.e. one step of
    gradient descent on e(w) = 1/B sum_i (y_i - out_i)^2. A sample is predicted as class 1 when out >= 0.5.

    Batch mode is stable for eta < N / lambda_max(X~^T X~) (X~ = [x, 1]); an online step on sample x~ shrinks that
    sample's error for eta < 1 / |x~|^2.

    Args: as for ``Perceptron``.
    """

    rule = "delta"

    def _output(self, net: Tensor) -> Tensor:
        return net  # out = net: (B, n_out)

    def _classify(self, out: Tensor) -> Tensor:
        return (out >= 0.5).to(out.dtype)

    def _step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        err = y - self._net(x)  # (B, n_out): e = y - out
        scale = 2.0 * lr / x.shape[0]
        self.weight.add_(err.t() @ x, alpha=scale)  # (n_out, n_in): 2 eta (y - out) x
        self.bias.add_(err.sum(dim=0), alpha=scale)
        return (err * err).sum() / x.shape[0]  # e(w) before the step


# ---------------------------------------------------------------------------------------------------- checks
def check_data(x, y, *, n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> tuple:
    """x (N, n_in) finite floats of the unit's dtype and device; y (N,) or (N, n_out) of 0/1 -> (N, n_out) floats."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            hint = " (convert it with torch.as_tensor)" if type(t).__module__.startswith("numpy") else ""
            raise TypeError(f"{name} must be a torch.Tensor, but got {type(t).__name__}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, but got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[1] != n_in or x.shape[0] < 1:
        raise ValueError(f"x must have shape (N, {n_in}) with N >= 1, but got {tuple(x.shape)}")
    if x.dtype != dtype or x.device != device:
        raise TypeError(f"x must have dtype {dtype} on {device} like the unit, but got dtype {x.dtype} on "
                        f"{x.device}; convert it with .to({str(device)!r}, {dtype})")
    check_finite("x", x)
    shape = tuple(y.shape)
    if y.dim() == 1 and n_out == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or tuple(y.shape) != (x.shape[0], n_out):
        want = f"({x.shape[0]},) or ({x.shape[0]}, 1)" if n_out == 1 else f"({x.shape[0]}, {n_out})"
        raise ValueError(f"y must have shape {want} to match x {tuple(x.shape)} and {n_out} unit(s), but got {shape}")
    if y.device != device:
        raise ValueError(f"y is on device {y.device}, but the unit is on {device}; move it with .to({str(device)!r})")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y must hold 0/1 targets as numbers, but got dtype {y.dtype}")
    y = y.to(dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        bad = y[(y != 0) & (y != 1)][0].item()
        raise ValueError(f"y must hold 0/1 targets (the perceptron and delta rules learn 0/1 outputs), but got {bad}")
    return x, y
