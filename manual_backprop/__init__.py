"""manual_backprop: multilayer perceptrons trained by backpropagation written by hand on torch tensors.

The forward phase, the backward phase (the delta rule propagated layer by layer) and the gradient-descent update
are all hand-written; autograd stays off. Here is what a reader reaches for: the MLP, the slide's functions, the
losses and activations, and the Trainer with its History. Everything else (populations, the single-layer rules,
datasets, TensorBoard logging, torch.distributed, the fast paths, optimizers, research quantities) is imported
from its own subpackage. ``reference`` holds the same network built on torch.autograd.
"""

from .activations import Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, get_activation
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredError, get_loss
from .network import (MLP, ForwardCache, Gradients, backward_phase, bias_gradient, forward_phase, hidden_delta,
                      output_delta, update, weight_gradient)
from .training import History, Trainer, train
from .fast import one_update as _one_update

_one_update.register()  # MLP.loss_and_grads's one C call for small CPU networks (MANUAL_BACKPROP_PURE=1: off)

__version__ = "0.1.0"

__all__ = [
    "MLP", "ForwardCache", "Gradients",
    "forward_phase", "backward_phase", "output_delta", "hidden_delta", "weight_gradient", "bias_gradient", "update",
    "Loss", "SquaredError", "CrossEntropy", "BinaryCrossEntropy", "get_loss",
    "Activation", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Identity", "Softmax", "get_activation",
    "Trainer", "History", "train",
]
