"""One epoch of a population in lockstep, as one function of plain tensors (what every engine runs).

``EpochFunction`` makes every update of the epoch through network.py's forward_phase, backward_phase and update
(or an optimizer's step) on the stacked parameters, then evaluates every member, and does the freeze bookkeeping
(reached and diverged members go back to their last good parameters), all on the device.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..losses import Loss
from ..network import backward_phase, forward_phase
from ..training.history import accuracy
from .stack import Population

__all__ = ["EpochFunction", "evaluate_members", "compile_epoch"]


def evaluate_members(weights, biases, functions, loss_fn: Loss, x: Tensor, y: Tensor, labels):
    """(losses (K,), accuracies (K,) or None) of every member on one split; x (N, n_0) is shared by all."""
    K = weights[0].shape[0]
    cache = forward_phase(weights, biases, functions, x.unsqueeze(0).expand(K, -1, -1))
    losses = loss_fn.value(cache.logits, cache.output, y.unsqueeze(0).expand(K, -1, -1))
    return losses, (accuracy(cache.output, labels) if labels is not None else None)


class EpochFunction:
    """One epoch of the lockstep: every update, the evaluation, and the freeze bookkeeping, all on the device.

    State (mutated in place): weights, biases, their last good copies, and ``active`` (K,) bool. Inputs: the
    epoch's per-member samples and targets, xs (K, S, n_0) and ys (K, S, n_L). Returns (update losses (T, K),
    figures (4, K): train loss, train accuracy, test loss, test accuracy, ok (K,), reached (K,)).
    """

    def __init__(self, population: Population, loss_fn: Loss, lr: Tensor, chunks: list, evals: dict,
                 target_loss: Optional[float], optimizer):
        self.functions = population.activation_functions
        self.optimizer = optimizer  # PlainGradientDescent: network.update with lr * active
        self.bias = population.bias
        self.loss_fn, self.lr, self.chunks, self.evals = loss_fn, lr, chunks, evals
        self.target_loss = target_loss

    def __call__(self, weights, biases, good_w, good_b, active, xs, ys):
        fs, dtype, loss_fn = self.functions, weights[0].dtype, self.loss_fn
        lr = self.lr * active.to(dtype)  # (K,): a frozen member moves by 0
        losses = []
        for start, stop in self.chunks:
            x, y = xs[:, start:stop], ys[:, start:stop]  # (K, b, n_0), (K, b, n_L)
            cache = forward_phase(weights, biases, fs, x)
            losses.append(loss_fn.value(cache.logits, cache.output, y))  # (K,)
            grads = backward_phase(weights, fs, cache, y, loss_fn, bias=self.bias)
            self.optimizer.update(weights, biases, grads, lr, active)  # a frozen member does not move
        update_losses = torch.stack(losses)  # (T, K)
        figures = []
        for split in ("train", "test"):
            if split == "test" and self.evals["test"] is None:  # the test split is the training split
                figures += figures[:2]
                continue
            x, y, labels = self.evals[split]
            loss, acc = evaluate_members(weights, biases, fs, loss_fn, x, y, labels)
            figures += [loss, acc if acc is not None else torch.zeros_like(loss)]
        figures = torch.stack(figures)  # (4, K)
        ok = active & torch.isfinite(update_losses).all(dim=0) & torch.isfinite(figures).all(dim=0)
        # A member that is not ok now (diverged) or any more (frozen) goes back to its last good parameters.
        for p, good in zip(weights + biases, good_w + good_b):
            keep = ok.view(-1, *([1] * (p.dim() - 1)))
            p.copy_(torch.where(keep, p, good))
            good.copy_(p)
        if self.target_loss is not None:
            reached = ok & (figures[0].to(torch.float64) <= self.target_loss)
        else:
            reached = torch.zeros_like(ok)
        active.copy_(ok & ~reached)
        return update_losses, figures, ok, reached


def compile_epoch(fn: EpochFunction):
    """torch.compile of one population's epoch, on a code object of its own, that never runs uncompiled unsaid.

    Dynamo keeps its compiled graphs on the code object it compiles and, past ``recompile_limit`` (8) graphs on
    one code object, silently runs the function eagerly. Every compiled population would otherwise share one code
    object (Dynamo's wrapper of a callable object), so the 9th architecture, dtype or size of a process ran
    uncompiled while reported as compiled (issue 22). A private copy of the code per population holds only that
    population's graph, and goes with it; should the limit still be hit, the call says so in one line.
    """
    import types

    def epoch(weights, biases, good_w, good_b, active, xs, ys):
        return fn(weights, biases, good_w, good_b, active, xs, ys)

    own = types.FunctionType(epoch.__code__.replace(), epoch.__globals__, "population_epoch", None,
                             epoch.__closure__)
    compiled = torch.compile(own, dynamic=False)
    compiled_once = []

    def call(*args):
        if compiled_once:  # shapes and strides stay the same every epoch: compiled once, replayed after
            return compiled(*args)
        import torch._dynamo

        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                out = compiled(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit as err:
            raise RuntimeError(f"engine 'compiled': torch.compile hit Dynamo's recompile_limit "
                               f"({torch._dynamo.config.recompile_limit}) and would run this epoch uncompiled; "
                               f"use engine='eager', or raise torch._dynamo.config.recompile_limit") from err
        compiled_once.append(True)
        return out

    return call
