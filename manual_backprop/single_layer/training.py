"""Training a single layer by the perceptron rule or the delta rule, online or batch, and the run's per-epoch history.

Lecture, "Who needs multi-layer networks?": on a problem that is not linearly separable (XOR) "the perceptron rule
would never converge, forever striving to find a line", while "the delta rule would converge to some local
minimum, resulting in a line that would separate the classes, to some extent and with errors". ``perceptron_train``
and ``delta_rule_train`` run the rules of units.py for a number of epochs and record, in ``SingleLayerHistory``,
what those sentences claim: errors, accuracy, e(w), corrections, and why the run stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields
from typing import Optional

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_int, check_positive_number, check_seed
from ..modes import online_order
from ..training.loop import diverged_message, epoch_limit_message
from .units import LinearUnit, Perceptron, check_data

RULES = ("perceptron", "delta")
SINGLE_LAYER_MODES = ("online", "batch")


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
    check_choice("mode", mode, SINGLE_LAYER_MODES)
    lr = check_positive_number("lr", lr)
    epochs = check_int("epochs", epochs, minimum=1)
    seed = check_seed("seed", seed)
    image_every = check_int("image_every", image_every, minimum=1)
    check_bool("shuffle", shuffle)
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
    x, y = check_data(x.to(device=unit.device, dtype=unit.dtype) if x.is_floating_point() else x,
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
            history.message = diverged_message(epoch, lr, quantity="e(w)", note=f"; batch mode is stable below "
                                               f"{_delta_batch_lr_limit(x):.3g} on these inputs")
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
        history.message = (f"{epoch_limit_message(epochs)}; {kept}{wrong} of {n} samples misclassified at the end, "
                           f"at least {min(history.errors)} in every epoch")
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
