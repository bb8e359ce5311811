"""Optimizers written by hand on the Gradients structure: SGD (momentum, Nesterov, L2), Adam (L2, AMSGrad) and AdamW.

Each follows torch.optim's single-tensor algorithm line by line (torch/optim/sgd.py ``_single_tensor_sgd``,
torch/optim/adam.py ``_single_tensor_adam``), with the same operations in the same order, so 100 steps of a manual
network and of its autograd twin under torch.optim end on the same numbers (tests/training/test_optim.py):

    SGD     g <- g + wd p;  buf <- g (first step), else buf <- momentum buf + (1 - dampening) g
            g <- g + momentum buf (nesterov) or g <- buf;  p <- p - lr g
    Adam    t <- t + 1;  g <- g + wd p (Adam) or p <- p (1 - lr wd) (AdamW, decoupled)
            m <- m + (1 - beta1)(g - m);  v <- beta2 v + (1 - beta2) g^2;  v_max <- max(v_max, v) (amsgrad)
            p <- p - lr / (1 - beta1^t) * m / (sqrt(v or v_max) / sqrt(1 - beta2^t) + eps)

``step(grads)`` takes the Gradients that ``loss_and_grads`` returns (or a list in ``net.parameters()`` order) and
updates the parameters in place; the gradients are the code's dE/dW, autograd's sign (network.py), so plain SGD with
lr is exactly ``MLP.step(grads, lr)``, the lecture's Delta w = eta delta x. State is kept per parameter, keyed by its
index in ``net.parameters()``; ``state_dict()`` holds copies in torch.optim's layout (it loads into the
torch.optim optimizer of the twin, and theirs into these), ``load_state_dict()`` puts state and settings back.

Populations: the parameters of a ``Population`` have a leading member axis K, and every rule above is element-wise,
so one optimizer steps all members. Any numeric setting may then be K numbers (a (K,) tensor or a sequence), one
per member, e.g. ``SGD(pop, lr=torch.tensor([0.1, 0.5, 1.0]), momentum=[0.0, 0.9, 0.9])``; member i then follows
the run of that member alone with its own numbers (to rounding: a per-member number is applied as a tensor product
where a single run's is a scalar argument). This is what torch.func's model ensembling cannot express.

Left out: maximize, foreach/fused kernels, parameter groups, closures and learning-rate schedulers (change
``opt.lr`` between steps).

A trainer given no optimizer holds hooks.py's ``PlainGradientDescent`` (network.update with its lr), so a training
loop asks the same of every optimizer: ``update``, ``state_dict``/``load_state_dict`` and its checkpoint entry.
"""

from .algorithms import OPTIMIZERS, SGD, Adam, AdamW, get_optimizer
from .base import Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer", "OPTIMIZERS"]
