"""The cases every per-update proof runs (tests/proof/): each hidden activation x each output activation and loss,
on ordinary and on saturated weights.

OUTPUTS holds every loss, every reduction, the 1/2 factor and softmax under both losses; REGIMES is the factor on
the initial weights (8: sigmoid and tanh units at 1 - x of 1e-4 .. 1e-12, where a careless f' loses digits).
"""

from __future__ import annotations

from manual_backprop.losses import SquaredError, get_loss

__all__ = ["SIZES", "HIDDEN", "OUTPUTS", "CASES", "CASE_IDS", "REGIMES", "case_id"]

SIZES = [3, 5, 4, 3]
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu:0.1", "identity"]
OUTPUTS = [("sigmoid", SquaredError()), ("tanh", SquaredError(reduction="sum")),
           ("identity", SquaredError(reduction="elementwise_mean")), ("relu", SquaredError(half=True)),
           ("softmax", SquaredError()), ("softmax", get_loss("cross_entropy")),
           ("sigmoid", get_loss("binary_cross_entropy")), ("softmax", get_loss("cross_entropy", reduction="sum"))]
REGIMES = {"ordinary": 1.0, "saturated": 8.0}


def case_id(hidden: str, output: str, loss_fn) -> str:
    """hidden-output-loss-reduction[-half]: a case's pytest id."""
    return f"{hidden}-{output}-{loss_fn.name}-{loss_fn.reduction}{'-half' if getattr(loss_fn, 'half', False) else ''}"


CASES = [(h, o, lf) for h in HIDDEN for o, lf in OUTPUTS]
CASE_IDS = [case_id(*c) for c in CASES]
