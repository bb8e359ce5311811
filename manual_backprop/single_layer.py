"""The lecture's single-layer rules, the perceptron rule and the delta rule, on torch tensors with autograd off.

The lecture starts here: "so far, we focused on 1-layer networks and saw that they can classify only linearly
separable problems, either using the perceptron or delta rules". Both rules train one layer of units,
net = W x + b, with W of shape (n_out, n_in) (the layout of ``torch.nn.Linear.weight``) and b of shape (n_out,);
with samples as rows (B of them), net = x @ W.T + b, shape (B, n_out). Targets y are 0/1.

    perceptron rule   threshold unit, yhat = 1 if net >= 0 else 0. Error correction:
                      w <- w + eta (y - yhat) x,   b <- b + eta (y - yhat)
                      (y - yhat) is 0 on a correct sample, so only mistakes move the weights.
    delta rule        linear unit, out = net (f' = 1), trained by gradient descent on the squared error
    (Widrow-Hoff)     e^2 = (y - out)^2:  Delta w = -eta d(e^2)/dw = 2 eta (y - out) x,  Delta b = 2 eta (y - out).
                      A sample counts as class 1 when out >= 0.5, halfway between the targets 0 and 1.

The delta rule's update is the lecture's backprop update of the output layer, Delta w = 2 eta (y - x) f'(net) x,
with f' = 1 ("for the linear neuron in the delta rule f' = 1"); it is exactly one gradient-descent step of
``MLP([n_in, n_out], output_activation="identity")`` on ``SquaredError(reduction="mean")``.

Modes (the lecture's modes of learning): "online" updates after each sample, in a fresh random order each epoch;
"batch" updates once an epoch with the MEAN of the per-sample updates (the lecture's e(w) = 1/m sum_i ...), so a
learning rate means the same step size in both modes, as in ``training.py``.

What the mathematics guarantees, and what the tests assert for every seed:
- A linear threshold unit (either rule's classifier) cannot classify XOR: the four points are not linearly
  separable, so it misclassifies at least one of them and its accuracy is at most 75%, at every epoch.
- Perceptron convergence theorem (Novikoff 1962): on linearly separable data (AND, OR) the perceptron makes at most
  ``perceptron_mistake_bound`` corrections, then classifies every sample; on XOR it never stops correcting.
- The delta rule minimises e(w) = 1/N sum (y - W x - b)^2, a convex quadratic; on XOR its minimum is e = 0.25
  (W = 0, b = 0.5: every output is 0.5), a line that "separates the classes to some extent and with errors".

Autograd is off: parameters never require grad and every rule runs under ``torch.no_grad()``. Weights are drawn on
the CPU in float64 from a seeded generator (init.py) and only then cast and moved, so a CPU and a CUDA run start
identical; the online sample order is drawn on the CPU too.

Left out: the pocket algorithm, margins (the perceptron of optimal stability), and multi-class rules beyond one
independent 0/1 unit per output.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from dataclasses import dataclass, field, fields
from typing import Optional, Union

import torch
from torch import Tensor

from .checks import check_finite, check_int, check_positive_number, resolve_device, resolve_dtype
from .init import initial_parameters, resolve_init
from .modes import online_order
from .network import MLP

__all__ = [
    "Perceptron", "LinearUnit", "SingleLayerHistory", "perceptron_train", "delta_rule_train",
    "perceptron_mistake_bound", "collapse_linear_mlp", "RULES", "SINGLE_LAYER_MODES",
]

RULES = ("perceptron", "delta")
SINGLE_LAYER_MODES = ("online", "batch")


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
        x, y = _check_data(x, y, n_in=self.n_in, n_out=self.n_out, dtype=self.dtype, device=self.device)
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
        x, y = _check_data(x, y, n_in=self.n_in, n_out=self.n_out, dtype=self.dtype, device=self.device)
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


# ---------------------------------------------------------------------------------------------------- the history
@dataclass
class SingleLayerHistory:
    """Per-epoch record of a single-layer run. Index 0 is the unit before any update (epoch 0).

    errors: samples misclassified by the weights at the end of each epoch.
    squared_error: e(w) = 1/N sum_i sum_j (y_ij - out_ij)^2 of the unit's output (the perceptron's output is its
        0/1 threshold output, so there it counts wrong output bits per sample).
    updates: cumulative count of the rule's work: for the perceptron the samples it corrected (its mistakes; one batch
        update corrects every misclassified sample at once), for the delta rule its steps.
    stop_reason: "converged" (perceptron: an epoch ended with no errors, so the rule changes nothing any more;
        delta rule: e(w) changed by less than ``tol`` in an epoch), "max_epochs" or "diverged".
    unit: the trained Perceptron or LinearUnit.
    """

    rule: str
    mode: str
    lr: float
    epoch: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    squared_error: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    stop_reason: str = ""
    message: str = ""
    unit: object = field(default=None, repr=False, compare=False)

    @property
    def converged(self) -> bool:
        return self.stop_reason == "converged"

    @property
    def epochs_to_solve(self) -> Optional[int]:
        """The first epoch that ended with no misclassified sample (0: the initial weights), or None."""
        return next((e for e, n in zip(self.epoch, self.errors) if n == 0), None)

    @property
    def solved(self) -> bool:
        return self.epochs_to_solve is not None

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracy)

    @property
    def final(self) -> dict:
        keys = ["epoch", "errors", "accuracy", "squared_error", "updates", "seconds"]
        return {k: getattr(self, k)[-1] if getattr(self, k) else None for k in keys}

    def to_dict(self) -> dict:
        """The record without the unit, JSON-friendly."""
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if f.name != "unit"}


# ---------------------------------------------------------------------------------------------------- training
def perceptron_train(x: Tensor, y: Tensor, *, mode: str = "online", lr: float = 1.0, epochs: int = 100,
                     seed: int = 0, shuffle: bool = True, init: str = "uniform", init_scale: float = 0.5,
                     bias_init: str = "uniform", dtype=torch.float64, device="cpu",
                     unit: Optional[Perceptron] = None, stop_when_converged: bool = True, logger=None,
                     image_every: int = 10) -> SingleLayerHistory:
    """Train threshold units by the perceptron rule until an epoch ends with no errors, or for ``epochs`` epochs.

    Args:
        x: inputs (N, n_in), floating; moved once to the unit's device and dtype.
        y: 0/1 targets, (N,) (one unit) or (N, n_out); class indices 0/1 are fine.
        mode: "online" (one correction per misclassified sample, visited in a fresh random order each epoch unless
            ``shuffle=False``) or "batch" (one update per epoch, the mean of all samples' corrections).
        lr: eta. With the "zeros" init, eta only scales W and b and never changes a prediction.
        epochs: the epoch limit; on XOR the rule runs into it, "forever striving to find a line".
        seed: draws the initial W, b (unless ``unit`` is given) and the online sample order (a separate CPU
            generator with the same seed).
        init, init_scale, bias_init, dtype, device: the new unit's, see ``Perceptron``.
        unit: train this Perceptron in place instead of a new one.
        stop_when_converged: stop at the first epoch that ends with no errors.
        logger: a ``tblog.RunLogger``: per epoch ``errors/train``, ``accuracy/train``, ``loss/train`` (e(w)),
            ``updates/epoch`` and ``weights/w{i}``, ``weights/bias`` (one unit only); a ``decision_boundary`` image
            every ``image_every`` epochs and at the end, for 2-D inputs.

    Returns:
        SingleLayerHistory (its ``unit`` is the trained Perceptron).
    """
    return _train("perceptron", x, y, mode=mode, lr=lr, epochs=epochs, seed=seed, shuffle=shuffle, init=init,
                  init_scale=init_scale, bias_init=bias_init, dtype=dtype, device=device, unit=unit,
                  stop=stop_when_converged, tol=None, logger=logger, image_every=image_every)


def delta_rule_train(x: Tensor, y: Tensor, *, mode: str = "online", lr: float = 0.05, epochs: int = 200,
                     seed: int = 0, shuffle: bool = True, tol: Optional[float] = None, init: str = "uniform",
                     init_scale: float = 0.5, bias_init: str = "uniform", dtype=torch.float64, device="cpu",
                     unit: Optional[LinearUnit] = None, logger=None, image_every: int = 10) -> SingleLayerHistory:
    """Train linear units by the delta rule (gradient descent on e(w) = 1/N sum (y - W x - b)^2).

    Args: as for ``perceptron_train``, and
        lr: eta; batch mode diverges for eta >= N / lambda_max(X~^T X~) (0.628 for the four gate points), and a run
            that diverges stops with the unit put back to its last finite state and a message that says so.
        tol: stop ("converged") once e(w) changes by less than ``tol`` in an epoch; None runs every epoch.

    Returns:
        SingleLayerHistory (its ``unit`` is the trained LinearUnit).
    """
    if tol is not None:
        tol = check_positive_number("tol", tol)
    return _train("delta", x, y, mode=mode, lr=lr, epochs=epochs, seed=seed, shuffle=shuffle, init=init,
                  init_scale=init_scale, bias_init=bias_init, dtype=dtype, device=device, unit=unit,
                  stop=tol is not None, tol=tol, logger=logger, image_every=image_every)


@torch.no_grad()
def _train(rule, x, y, *, mode, lr, epochs, seed, shuffle, init, init_scale, bias_init, dtype, device, unit, stop,
           tol, logger, image_every) -> SingleLayerHistory:
    if mode not in SINGLE_LAYER_MODES:
        raise ValueError(f"mode must be one of {list(SINGLE_LAYER_MODES)}, but got {mode!r}")
    lr = check_positive_number("lr", lr)
    epochs = check_int("epochs", epochs, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    image_every = check_int("image_every", image_every, minimum=1)
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be True or False, but got {shuffle!r}")
    cls = Perceptron if rule == "perceptron" else LinearUnit
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        bad, value = ("x", x) if not isinstance(x, Tensor) else ("y", y)
        hint = " (convert it with torch.as_tensor)" if type(value).__module__.startswith("numpy") else ""
        raise TypeError(f"{bad} must be a torch.Tensor, but got {type(value).__name__}{hint}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, n_in), but got {tuple(x.shape)}")
    n_out = 1 if y.dim() == 1 else (int(y.shape[1]) if y.dim() == 2 else -1)
    if unit is None:
        unit = cls(int(x.shape[1]), max(n_out, 1), init=init, init_scale=init_scale, bias_init=bias_init,
                   dtype=dtype, device=device, seed=seed)
    elif not isinstance(unit, cls):
        raise TypeError(f"unit must be a {cls.__name__} for the {rule} rule, but got {type(unit).__name__}")
    x, y = _check_data(x.to(device=unit.device, dtype=unit.dtype) if x.is_floating_point() else x,
                       y.to(unit.device), n_in=unit.n_in, n_out=unit.n_out, dtype=unit.dtype, device=unit.device)
    n = x.shape[0]
    order_generator = torch.Generator().manual_seed(seed)
    history = SingleLayerHistory(rule=rule, mode=mode, lr=lr, unit=unit)
    good = [p.clone() for p in unit.parameters()]
    updates, seconds = 0, 0.0

    def record(epoch: int, changes: int) -> tuple:
        wrong, e = unit._evaluate(x, y).tolist()  # the epoch's one read-back
        history.epoch.append(epoch)
        history.errors.append(int(wrong))
        history.accuracy.append(1.0 - wrong / n)
        history.squared_error.append(e)
        history.updates.append(updates)
        history.seconds.append(seconds)
        if logger is not None and math.isfinite(e):
            metrics = {"errors/train": wrong, "accuracy/train": 1.0 - wrong / n, "loss/train": e}
            if epoch > 0:
                metrics["updates/epoch"] = changes
            if unit.n_out == 1:
                metrics.update({f"weights/w{i + 1}": w for i, w in enumerate(unit.weight[0].tolist())})
                metrics["weights/bias"] = unit.bias[0].item()
            logger.log_epoch(epoch, metrics)
            if epoch % image_every == 0:
                logger.log_decision_boundary(epoch, unit, x, y)
        return int(wrong), e

    wrong, e_prev = record(0, 0)
    if rule == "perceptron" and stop and wrong == 0:
        history.stop_reason, history.message = "converged", "the initial weights already classify every sample"
    epoch = 0
    while not history.stop_reason and epoch < epochs:
        start = time.perf_counter()
        if mode == "batch":
            figures = [unit._step(x, y, lr)]
        else:
            order, _ = online_order(n, order_generator if shuffle else None)  # the stored order unless shuffled
            order = order.to(unit.device)
            xs, ys = x.index_select(0, order), y.index_select(0, order)  # (N, n_in), (N, n_out)
            figures = [unit._step(xs[i:i + 1], ys[i:i + 1], lr) for i in range(n)]
        if unit.device.type == "cuda":
            torch.cuda.synchronize(unit.device)
        seconds += time.perf_counter() - start
        epoch += 1
        if rule == "perceptron":
            changes = int(torch.stack(figures).sum().item())  # corrections made this epoch
        else:
            changes = len(figures)
        updates += changes
        wrong, e = record(epoch, changes)
        if not math.isfinite(e):  # W or b not finite makes e(w) inf or nan (0 * inf is nan), so this covers them
            for p, g in zip(unit.parameters(), good):
                p.copy_(g)
            for name in ("epoch", "errors", "accuracy", "squared_error", "updates", "seconds"):
                getattr(history, name).pop()
            history.stop_reason = "diverged"
            history.message = (f"diverged in epoch {epoch}: e(w) is not finite; the weights were put back to the end "
                               f"of epoch {epoch - 1}. Try a smaller learning rate (lr={lr:g}; batch mode is stable "
                               f"below {_delta_batch_lr_limit(x):.3g} on these inputs).")
            break
        if rule == "delta":
            good = [p.clone() for p in unit.parameters()]  # the perceptron's steps are bounded; it cannot diverge
        if rule == "perceptron" and stop and wrong == 0:
            history.stop_reason = "converged"
            history.message = f"converged at epoch {epoch}: no sample misclassified after {updates} corrections"
        elif tol is not None and abs(e - e_prev) < tol:
            history.stop_reason = "converged"
            history.message = (f"converged at epoch {epoch}: e(w) = {e:.6g} changed by less than tol={tol:g}; "
                               f"{wrong} of {n} samples misclassified")
        e_prev = e
    if not history.stop_reason:
        history.stop_reason = "max_epochs"
        kept = "kept misclassifying: " if rule == "perceptron" and wrong > 0 else ""
        history.message = (f"stopped at the epoch limit ({epochs}); {kept}{wrong} of {n} samples misclassified at "
                           f"the end, at least {min(history.errors)} in every epoch")
    if logger is not None:
        if history.epoch[-1] % image_every != 0:
            logger.log_decision_boundary(history.epoch[-1], unit, x, y)
        f = history.final
        logger.log_hparams(
            {"rule": rule, "mode": mode, "lr": lr, "seed": seed, "init": unit.init, "epochs": epochs},
            {"final/errors": float(f["errors"]), "final/accuracy": f["accuracy"],
             "final/loss": f["squared_error"], "final/updates": float(f["updates"]),
             "final/epochs_to_solve": float(history.epochs_to_solve if history.solved else -1)},
        )
        logger.flush()
    return history


def _delta_batch_lr_limit(x: Tensor) -> float:
    """N / lambda_max(X~^T X~): batch gradient descent on e(w) diverges at and above this learning rate."""
    xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1).double()
    return x.shape[0] / torch.linalg.eigvalsh(xt.t() @ xt)[-1].item()


# ---------------------------------------------------------------------------------------------------- theory
def perceptron_mistake_bound(radius: float, margin: float, *, initial_norm: float = 0.0, lr: float = 1.0) -> float:
    """Novikoff's bound on the number of online perceptron corrections on linearly separable data.

    If some unit vector u (over the augmented weights [w, b]) has s_i u . x~_i >= margin > 0 for every sample
    (x~ = [x, 1], s = +1 for class 1 and -1 for class 0) and |x~_i| <= radius, then from initial weights of norm
    ``initial_norm`` the rule makes at most (radius / margin)^2 + 2 initial_norm / (lr margin) corrections:
    each correction raises u . w by at least lr * margin and |w|^2 by at most (lr * radius)^2.

    In batch mode each epoch that is not the last corrects at least one of N samples with weight 1/N, so the
    number of batch epochs before convergence is at most N times this bound.
    """
    radius = check_positive_number("radius", radius)
    margin = check_positive_number("margin", margin)
    initial_norm = check_positive_number("initial_norm", initial_norm, allow_zero=True)
    lr = check_positive_number("lr", lr)
    return (radius / margin) ** 2 + 2.0 * initial_norm / (lr * margin)


def collapse_linear_mlp(net: MLP) -> LinearUnit:
    """The single layer a linear MLP is: W = W_L ... W_2 W_1 and b = the biases composed through the later layers.

    "If the network contains only linear neurons, it practically reduces to a single layer": with identity
    activations x^L = W_L(... (W_1 x + b_1) ...) + b_L = W x + b. Returns a LinearUnit with that W (n_L, n_0) and
    b (n_L,), in the network's dtype and on its device.

    Raises:
        ValueError: when any activation of ``net`` is not the identity (the collapse would not be exact).
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a manual_backprop.MLP, but got {type(net).__name__}")
    names = [f.spec() for f in net.activation_functions]
    if any(name != "identity" for name in names):
        raise ValueError(f"net must have identity activations in every layer to collapse into one matrix, but "
                         f"got {names}")
    weight = torch.eye(net.sizes[0], dtype=net.dtype, device=net.device)  # (n_0, n_0)
    bias = torch.zeros(net.sizes[0], dtype=net.dtype, device=net.device)  # (n_0,)
    for k in range(net.num_layers):
        weight = net.weights[k] @ weight  # (n_{k+1}, n_0)
        bias = net.weights[k] @ bias + (net.biases[k] if net.bias else 0.0)  # (n_{k+1},)
    return LinearUnit.from_tensors(weight, bias)


# ---------------------------------------------------------------------------------------------------- checks
def _check_data(x, y, *, n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> tuple:
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
