"""Where a declared derivative plugs into network.py's MLP, and the per-update methods' grad-mode switch.

network.py holds the reference and imports no fast path. A faster path registers itself here instead (the C calls of
manual_backprop.fast.one_update, when manual_backprop is imported), and ``MLP.loss_and_grads`` and ``MLP.step`` ask
it first; the proof that it makes the reference's update is tests/proof/test_one_update.py.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["DerivedPath", "ONE_STEP", "ONE_UPDATE", "grad_off", "CountsChanges", "changes_made"]


class DerivedPath:
    """Where a declared derivative of ``loss_and_gradients`` plugs into ``MLP.loss_and_grads``, which asks it first.

    network.py never imports a fast path: manual_backprop.fast.one_update registers its C call here when
    manual_backprop is imported (proven in tests/proof/test_one_update.py). ``path(net, x, y, loss_fn)`` takes the
    checked data and returns (E, Gradients), or None where it does not apply. The pure path, network.py's functions
    alone: MANUAL_BACKPROP_PURE=1 in the environment, ``ONE_UPDATE.enabled = False``, or ``with ONE_UPDATE.off():``.
    """

    def __init__(self):
        self.path = None
        self.enabled = os.environ.get("MANUAL_BACKPROP_PURE", "") in ("", "0")

    def register(self, path) -> None:
        self.path = path

    @contextlib.contextmanager
    def off(self):
        saved, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = saved


ONE_UPDATE = DerivedPath()
# MLP.step's derivative: ``path(net, grads, lr)`` makes the step and returns True, or returns False where it does not
# apply (network.update then runs). fast/one_update.py registers one C call for the Gradients its own call returned.
ONE_STEP = DerivedPath()


# Changes made in place to an attribute of an Activation or a Loss after it was made (``f.negative_slope = 0.2``,
# ``loss_fn.reduction = "sum"``), counted over all of them: the fast paths' C plans copy those attributes when they
# are built, and one that was built at another count is made again.
_CHANGES = [0]


def changes_made() -> int:
    """How many in-place attribute changes of Activations and Losses there have been (see CountsChanges)."""
    return _CHANGES[0]


class CountsChanges:
    """A base of Activation and Loss: setting an attribute an object already has counts as a change (changes_made),
    so that a plan built before it is not trusted after it (an attribute's first setting, in __init__, is none)."""

    def __setattr__(self, name: str, value) -> None:
        if name in self.__dict__:
            _CHANGES[0] += 1
        object.__setattr__(self, name, value)


def grad_off(method):
    """torch.no_grad() for the per-update methods, at a third of the decorator's cost per call."""
    @functools.wraps(method)
    def run(*args, **kwargs):
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            return method(*args, **kwargs)
        finally:
            torch._C._set_grad_enabled(enabled)
    return run
