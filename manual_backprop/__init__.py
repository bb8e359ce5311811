"""manual_backprop: multilayer perceptrons trained by backpropagation written by hand on torch tensors.

The forward phase, the backward phase (the delta rule propagated layer by layer) and the gradient-descent update
are all hand-written; autograd stays off. ``reference`` holds the same network built on torch.autograd.
"""

from .activations import ACTIVATIONS, Activation, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh, get_activation
from .losses import LOSSES, BinaryCrossEntropy, CrossEntropy, Loss, SquaredError, get_loss
from .network import MLP, ForwardCache, Gradients
from .training import MODES, History, Trainer, train

__version__ = "0.1.0"

__all__ = [
    "MLP", "ForwardCache", "Gradients",
    "Activation", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Identity", "Softmax", "ACTIVATIONS", "get_activation",
    "Loss", "SquaredError", "CrossEntropy", "BinaryCrossEntropy", "LOSSES", "get_loss",
    "MODES", "History", "Trainer", "train",
]
# Populations (manual_backprop.population), single-layer rules (.single_layer), datasets (.datasets), TensorBoard
# logging (.tblog), torch.distributed (.distributed) and the fast paths (.fast) are imported from their modules.
