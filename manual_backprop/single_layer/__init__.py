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
learning rate means the same step size in both modes, as in the Trainer.

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

The package holds the two units with their rules' updates (Perceptron, LinearUnit), their training runs and
history, and the theory the tests check (the mistake bound, the collapse of a linear MLP).

Left out: the pocket algorithm, margins (the perceptron of optimal stability), and multi-class rules beyond one
independent 0/1 unit per output.
"""

from .theory import collapse_linear_mlp, perceptron_mistake_bound
from .training import RULES, SINGLE_LAYER_MODES, SingleLayerHistory, delta_rule_train, perceptron_train
from .units import LinearUnit, Perceptron

__all__ = [
    "Perceptron", "LinearUnit", "SingleLayerHistory", "perceptron_train", "delta_rule_train",
    "perceptron_mistake_bound", "collapse_linear_mlp", "RULES", "SINGLE_LAYER_MODES",
]
