"""A population of K networks of the same layer sizes, trained in lockstep by hand-written backprop.

Experiments are rarely one run: learning rates and seeds are swept, and "how often does the network solve XOR?" is
a question about many initialisations. Training the K runs one after another spends nearly all the time on the
overhead of tiny matrix products. A ``Population`` stacks the K networks' parameters,

    weights[k]: (K, n_{k+1}, n_k)        biases[k]: (K, n_{k+1})        member i is weights[k][i], biases[k][i]

and runs the lecture's two phases for all members at once with batched products (torch.bmm / baddbmm), the
samples of member i in row i of a (K, B, n) tensor:

    x^{k+1}     = f(x^k @ W[k]^T + b[k])                   (K, B, n_{k+1}), one baddbmm for all members
    deltas[L-1] = dE_i/dnet^L                              the output delta of each member's own loss E_i
    deltas[k-1] = f'(net^k) * (deltas[k] @ W[k])           (K, B, n_k)
    dE/dW[k]    = deltas[k]^T @ x^k                        (K, n_{k+1}, n_k)
    W[k]       <- W[k] - lr_i * dE_i/dW[k]                 each member with its own learning rate lr_i

The members never mix: E_i depends on member i's parameters only, so the gradient of the sum of the E_i with
respect to member i's parameters is member i's own gradient, and each member follows the path it would follow
alone. Signs follow network.py: ``deltas[k]`` is dE/dnet (autograd's sign), the lecture's delta is minus it.

Member i has its own initial weights (``MLP(..., seed=seeds[i])``, drawn by init.py), its own learning rate and its
own sample order (a CPU generator seeded with ``order_seeds[i]``, drawn exactly as ``Trainer(seed=order_seeds[i])``
draws it: ``randperm`` each epoch, minibatch chunks sorted, or sorted ``randint`` rows with replacement). So member
i of a population trained in any mode ends with the parameters of ``Trainer(population.member(i) at the start,
mode, lr=lr_i, seed=order_seeds[i]).run()``, with the same stops at the same epochs. Equal to rounding, not bit
for bit: ATen picks kernels by tensor size (sigmoid's exp is vectorized on a (K, B, n) tensor and scalar on a
small (B, n) one; a batched product is not the BLAS gemm of a single one), so an entry can differ in its last bit,
and a trajectory that escapes a plateau amplifies that. tests/test_population.py checks every epoch from the same
state to 1e-12 in float64, and deltas and gradients against the autograd twin to 1e-10.

A member whose loss becomes NaN or inf is put back to its parameters at the end of the previous epoch (the last
good state, as Trainer does), frozen and marked diverged, while the others go on; a member that reaches
``target_loss`` is frozen there (Trainer stops there). The freeze mask is computed on the device; losses are read
back once an epoch.

Left out: checkpoints, histograms and decision-boundary images (take a member out with ``member(i)`` for those),
and losses other than squared error, cross-entropy and binary cross-entropy (the per-member loss is written here).

Example:
    >>> pop = Population([2, 2, 1], seeds=list(range(100)), dtype=torch.float64)
    >>> history = PopulationTrainer(pop, load_dataset("xor", dtype=torch.float64), mode="online",
    ...                             lr=[0.5] * 50 + [2.0] * 50, epochs=2000, target_loss=0.04).run()
    >>> history.success_rate(), history.median_epochs_to_target()
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .checks import check_finite, check_input, check_positive_number, check_sizes
from .activations import Activation, Softmax
from .init import initial_parameters, resolve_init
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredError, default_loss_for, get_loss
from .activations import resolve_activations
from .checks import check_seeds as _check_seeds, resolve_device, resolve_dtype
from .network import MLP, Gradients
from .training import MODES, History, encode_for, samples_per_update

__all__ = [
    "Population", "PopulationCache", "PopulationTrainer", "PopulationHistory", "PopulationLogger",
    "member_losses", "member_output_delta", "SampleOrders", "ENGINES",
]

ENGINES = ("eager", "compiled", "cuda_graph")

# Sample orders of up to this many samples are drawn by replaying torch.randperm's Fisher-Yates shuffle on bulk
# draws of each member's generator (exact, see SampleOrders); larger ones call torch.randperm once per member.
_EMULATE_RANDPERM_UP_TO = 512


# ---------------------------------------------------------------------------------------------------- per-member loss
def _scale(loss_fn: Loss, x: Tensor) -> float:
    """The loss's factor c for one member's batch: x is (K, B, n), a member's batch is (B, n)."""
    return loss_fn.scale(x.shape[1], x.shape[2])


def member_losses(loss_fn: Loss, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """E_i of every member, shape (K,): Loss.value applied to each member's (B, n) slice.

    z: output-layer weighted input, x = f(z) the output, y the prepared target, all (K, B, n). The formulas are
    those of losses.py, summed over each member's samples and outputs instead of over everything.
    """
    c = _scale(loss_fn, x)
    if isinstance(loss_fn, SquaredError):
        e = x - y
        return (e * e).sum(dim=(1, 2)) * c
    if isinstance(loss_fn, CrossEntropy):
        log_p = z - torch.logsumexp(z, dim=-1, keepdim=True)  # stable log softmax, as in losses.py
        return -(y * log_p).sum(dim=(1, 2)) * c
    if isinstance(loss_fn, BinaryCrossEntropy):
        per_element = z.clamp_min(0) - y * z + torch.log1p(torch.exp(-z.abs()))
        return per_element.sum(dim=(1, 2)) * c
    raise TypeError(f"population training supports squared_error, cross_entropy and binary_cross_entropy, "
                    f"but got {loss_fn!r}")


def member_output_delta(loss_fn: Loss, z: Tensor, x: Tensor, y: Tensor, activation: Activation) -> Tensor:
    """dE_i/dnet at the output layer for every member, (K, B, n): Loss.output_delta with each member's own scale.

    Squared error: 2c (x - y) f'(net) (f' through Activation.backward, which works on (K, B, n) as on (B, n));
    cross-entropy on softmax and binary cross-entropy on sigmoid: the fused c (x - y). c is 1/B for "mean", the
    same factor the single network uses for its batch of B samples.
    """
    c = _scale(loss_fn, x)
    if isinstance(loss_fn, SquaredError):
        return activation.backward(x, (x - y) * (2.0 * c))
    if isinstance(loss_fn, (CrossEntropy, BinaryCrossEntropy)):
        return (x - y) * c
    raise TypeError(f"population training supports squared_error, cross_entropy and binary_cross_entropy, "
                    f"but got {loss_fn!r}")


def member_accuracy(output: Tensor, labels: Tensor) -> Tensor:
    """training.accuracy for every member: output (K, N, n), labels (N,) -> (K,)."""
    predicted = (output[..., 0] >= 0.5).long() if output.shape[-1] == 1 else output.argmax(dim=-1)  # (K, N)
    return (predicted == labels).to(output.dtype).mean(dim=-1)


# ---------------------------------------------------------------------------------------------------- the math
# Module-level functions of plain tensors and lists, so that the eager path, torch.compile and CUDA-graph capture
# run the same code. Two layouts of the member axis:
#   members first, (K, B, n): the Population's own layout; products are bmm / baddbmm (the fewest eager kernels);
#   members last, (B, n, K): what the compiled engine uses; with members innermost and contiguous, every product
#   is a broadcast multiply + sum over a tiny axis, and inductor fuses a whole epoch into loops over K that the
#   compiler vectorises. The formulas are the same; the loss and the activations always see (K, B, n) views.

def _affine(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    """net = x W^T + b for every member: x (K, B, n_in), w (K, n_out, n_in), b (K, n_out) -> (K, B, n_out)."""
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


def _forward(weights, biases, functions, x: Tensor):
    """Forward phase for all members: returns (activations x^0..x^L, logits net^L), each (K, B, n_k)."""
    activations = [x]
    z = x
    for k, f in enumerate(functions):
        z = _affine(x, weights[k], biases[k] if biases else None)  # net^{k+1}: (K, B, n_{k+1})
        x = f.forward(z)  # x^{k+1}: (K, B, n_{k+1})
        activations.append(x)
    return activations, z


def _backward(weights, functions, bias: bool, activations, logits, y, loss_fn: Loss):
    """Backward phase for all members: (grad_w, grad_b, deltas) with the shapes of Gradients plus a leading K."""
    L = len(weights)
    x = activations
    deltas = [None] * L
    grad_w = [None] * L
    grad_b = [None] * L if bias else []
    deltas[L - 1] = member_output_delta(loss_fn, logits, x[L], y, functions[-1])  # (K, B, n_L)
    for k in range(L - 1, -1, -1):
        grad_w[k] = torch.bmm(deltas[k].transpose(1, 2), x[k])  # (K, n_{k+1}, n_k)
        if bias:
            grad_b[k] = deltas[k].sum(dim=1)  # (K, n_{k+1})
        if k > 0:
            back = torch.bmm(deltas[k], weights[k])  # sum_c delta_c w_cj: (K, B, n_k)
            deltas[k - 1] = functions[k - 1].backward(x[k], back)  # times f'(net_j): (K, B, n_k)
    return grad_w, grad_b, deltas


def _step(weights, biases, grad_w, grad_b, neg_lr: Tensor) -> None:
    """W <- W - lr_i dE_i/dW for every member, in place; neg_lr is (K,) holding -lr_i (0 for a frozen member)."""
    for w, g in zip(weights, grad_w):
        w.addcmul_(g, neg_lr.view(-1, 1, 1))
    for b, g in zip(biases, grad_b):
        b.addcmul_(g, neg_lr.view(-1, 1))


def _evaluate(weights, biases, functions, loss_fn, x, y, labels):
    """(losses (K,), accuracies (K,) or None) of every member on one split; x (N, n_0) is shared by all."""
    K = weights[0].shape[0]
    activations, logits = _forward(weights, biases, functions, x.unsqueeze(0).expand(K, -1, -1))
    out = activations[-1]
    yk = y.unsqueeze(0).expand(K, -1, -1)
    losses = member_losses(loss_fn, logits, out, yk)
    acc = member_accuracy(out, labels) if labels is not None else None
    return losses, acc


def _km(t: Tensor) -> Tensor:
    """A members-last (B, n, K) tensor as the members-first (K, B, n) view."""
    return t.movedim(-1, 0)


def _mk(t: Tensor) -> Tensor:
    """A members-first (K, B, n) tensor as the members-last (B, n, K) view."""
    return t.movedim(0, -1)


def _f_forward(f: Activation, z: Tensor) -> Tensor:
    """f on a members-last (B, n, K) tensor: element-wise as it is; softmax (over n) on the (K, B, n) view."""
    return _mk(f.forward(_km(z))) if isinstance(f, Softmax) else f.forward(z)


def _forward_ml(weights, biases, functions, x: Tensor):
    """Forward phase, members last: weights[k] (n_{k+1}, n_k, K), biases[k] (n_{k+1}, K), x (B, n_0, K) or a
    shared (B, n_0, 1). Returns activations (B, n_k, K) and the logits."""
    activations = [x]
    z = x
    for k, f in enumerate(functions):
        z = (x.unsqueeze(1) * weights[k].unsqueeze(0)).sum(dim=2)  # sum_i w_ji x_i: (B, n_{k+1}, K)
        if biases:
            z = z + biases[k].unsqueeze(0)
        x = _f_forward(f, z)
        activations.append(x)
    return activations, z


def _backward_ml(weights, functions, bias: bool, activations, logits, y, loss_fn: Loss):
    """Backward phase, members last: (grad_w (n_{k+1}, n_k, K), grad_b (n_{k+1}, K))."""
    L = len(weights)
    x = activations
    grad_w = [None] * L
    grad_b = [None] * L if bias else []
    delta = _mk(member_output_delta(loss_fn, _km(logits), _km(x[L]), _km(y), functions[-1]))  # (B, n_L, K)
    for k in range(L - 1, -1, -1):
        grad_w[k] = (delta.unsqueeze(2) * x[k].unsqueeze(1)).sum(dim=0)  # (n_{k+1}, n_k, K)
        if bias:
            grad_b[k] = delta.sum(dim=0)  # (n_{k+1}, K)
        if k > 0:
            back = (delta.unsqueeze(2) * weights[k].unsqueeze(0)).sum(dim=1)  # (B, n_k, K)
            delta = functions[k - 1].backward(x[k], back)  # hidden f is element-wise: (B, n_k, K)
    return grad_w, grad_b


def _evaluate_ml(weights, biases, functions, loss_fn, x, y, labels):
    """_evaluate, members last: x (N, n_0) and y (N, n_L) are shared by all members."""
    K = weights[0].shape[-1]
    activations, logits = _forward_ml(weights, biases, functions, x.unsqueeze(-1))
    out = _km(activations[-1])  # (K, N, n_L)
    losses = member_losses(loss_fn, _km(logits), out, y.unsqueeze(0).expand(K, -1, -1))
    acc = member_accuracy(out, labels) if labels is not None else None
    return losses, acc


# ---------------------------------------------------------------------------------------------------- Population
@dataclass
class PopulationCache:
    """What the forward phase keeps for the backward phase, for all members.

    activations: x^0 ... x^L, ``activations[k]`` of shape (K, B, sizes[k]); logits: net^L, (K, B, sizes[-1]).
    """

    activations: list
    logits: Tensor

    @property
    def output(self) -> Tensor:
        return self.activations[-1]


class Population:
    """K multilayer perceptrons of the same sizes, stored stacked, trained by hand-written backprop in lockstep.

    Args:
        sizes, activation, output_activation, bias, init, init_scale, bias_init, dtype, device: as for MLP; all
            members share them.
        seeds: one weight seed per member (K = len(seeds)); member i starts exactly as MLP(..., seed=seeds[i]).

    Shape:
        weights[k]: (K, sizes[k+1], sizes[k]); biases[k]: (K, sizes[k+1]).
        input (B, sizes[0]) shared by all members, or (K, B, sizes[0]), one batch per member; output (K, B, sizes[-1]).

    Example:
        >>> pop = Population([2, 3, 1], seeds=[0, 1, 2], dtype=torch.float64)
        >>> losses, grads = pop.loss_and_grads(x, y, "squared_error")   # losses (3,), grads.weights[0] (3, 3, 2)
        >>> pop.step(grads, lr=torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64))
        >>> net = pop.member(1)                                          # an MLP with member 1's parameters
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation="sigmoid",
        output_activation="sigmoid",
        bias: bool = True,
        init: str = "xavier_uniform",
        init_scale: float = 0.5,
        bias_init: str = "zeros",
        seeds: Sequence[int] = (0,),
        dtype: Optional[torch.dtype] = None,
        device: Union[str, torch.device, None] = "cpu",
    ):
        self.sizes = check_sizes(sizes)
        self.activation_functions = resolve_activations(self.sizes, activation, output_activation)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, but got {bias!r}")
        self.bias = bias
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.init, self.bias_init = resolve_init(init, bias_init)
        self.init_scale = check_positive_number("init_scale", init_scale)
        self.seeds = _check_seeds("seeds", seeds)
        drawn = [initial_parameters(self.sizes, init=self.init, bias_init=self.bias_init, scale=self.init_scale,
                                    seed=s, bias=bias) for s in self.seeds]
        # Stacked on the CPU in float64 and only then cast and moved, exactly as MLP casts each of its draws.
        self.weights = [torch.stack([w[k] for w, _ in drawn]).to(dtype=self.dtype).to(self.device)
                        for k in range(self.num_layers)]
        self.biases = [torch.stack([b[k] for _, b in drawn]).to(dtype=self.dtype).to(self.device)
                       for k in range(self.num_layers)] if bias else []

    # ------------------------------------------------------------------ structure
    @property
    def size(self) -> int:
        """K, the number of members."""
        return len(self.seeds)

    def __len__(self) -> int:
        return self.size

    # The layer structure is the MLP's: the same attributes, each tensor with a leading member axis.
    num_layers = MLP.num_layers
    output_activation = MLP.output_activation
    parameters = MLP.parameters

    def member(self, i: int) -> MLP:
        """Member i as an independent MLP (copied parameters), with the population's spec and its own seed."""
        i = self._check_member(i)
        net = MLP.from_tensors([w[i] for w in self.weights], [b[i] for b in self.biases] if self.bias else None,
                               activation=self.activation_functions[:-1], output_activation=self.output_activation)
        net.init, net.bias_init, net.init_scale, net.seed = self.init, self.bias_init, self.init_scale, self.seeds[i]
        return net

    def members(self) -> list:
        return [self.member(i) for i in range(self.size)]

    def __repr__(self) -> str:
        acts = [f.spec() for f in self.activation_functions]
        return (f"Population(K={self.size}, sizes={self.sizes}, activations={acts}, bias={self.bias}, "
                f"dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------ the two phases
    @torch.no_grad()
    def forward_cache(self, x: Tensor) -> PopulationCache:
        """Forward phase for every member: x^{k+1} = f(x^k W[k]^T + b[k]), keeping what backward needs."""
        activations, logits = _forward(self.weights, self.biases, self.activation_functions, self._check_x(x))
        return PopulationCache(activations=activations, logits=logits)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Every member's output, (K, B, sizes[-1])."""
        return self.forward_cache(x).output

    __call__ = forward

    @torch.no_grad()
    def backward(self, cache: PopulationCache, y: Tensor, loss_fn=None) -> Gradients:
        """Backward phase for every member: Gradients whose tensors have a leading member axis K. Pure."""
        loss_fn = self._check_loss(loss_fn)
        y = self._check_y(y, cache.output.shape, loss_fn)
        grad_w, grad_b, deltas = _backward(self.weights, self.activation_functions, self.bias, cache.activations,
                                           cache.logits, y, loss_fn)
        return Gradients(weights=grad_w, biases=grad_b, deltas=deltas)

    @torch.no_grad()
    def losses(self, x: Tensor, y: Tensor, loss_fn=None) -> Tensor:
        """E_i of every member on (x, y), shape (K,)."""
        loss_fn = self._check_loss(loss_fn)
        cache = self.forward_cache(x)
        y = self._check_y(y, cache.output.shape, loss_fn)
        return member_losses(loss_fn, cache.logits, cache.output, y)

    @torch.no_grad()
    def loss_and_grads(self, x: Tensor, y: Tensor, loss_fn=None):
        """Forward and backward phase: (losses (K,), Gradients with a leading K axis). Changes nothing.

        x: (B, n_0) for the same samples in every member, or (K, B, n_0). y: targets as MLP.loss_and_grads takes
        them, for one batch (shared) or with a leading K axis; class indices (B,) or (K, B) for cross-entropy.
        """
        loss_fn = self._check_loss(loss_fn)
        cache = self.forward_cache(x)
        y = self._check_y(y, cache.output.shape, loss_fn)
        grad_w, grad_b, deltas = _backward(self.weights, self.activation_functions, self.bias, cache.activations,
                                           cache.logits, y, loss_fn)
        return member_losses(loss_fn, cache.logits, cache.output, y), Gradients(grad_w, grad_b, deltas)

    @torch.no_grad()
    def step(self, grads: Gradients, lr) -> None:
        """Gradient descent in place, each member with its own rate: W_i <- W_i - lr_i dE_i/dW_i.

        lr: one number for all members, or K numbers (a sequence or a (K,) tensor).
        """
        lr = self._check_lr(lr, allow_zero=True)
        if len(grads.weights) != self.num_layers or len(grads.biases) != len(self.biases):
            raise ValueError(f"grads must hold {self.num_layers} weight and {len(self.biases)} bias gradients, "
                             f"but got {len(grads.weights)} and {len(grads.biases)}")
        for k, (w, g) in enumerate(zip(self.weights + self.biases, grads.weights + grads.biases)):
            if g.shape != w.shape:
                raise ValueError(f"grads tensor {k} must have shape {tuple(w.shape)}, but got {tuple(g.shape)}")
        _step(self.weights, self.biases, grads.weights, grads.biases, -lr)

    # ------------------------------------------------------------------ checks at the public edge
    def _check_member(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not -self.size <= i < self.size:
            raise IndexError(f"member index must be an int in [0, {self.size - 1}], but got {i!r}")
        return i % self.size

    def _check_x(self, x) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 3:
            if x.shape[0] != self.size:
                raise ValueError(f"x with a member axis must have shape ({self.size}, B, {self.sizes[0]}) for "
                                 f"K={self.size}, but got {tuple(x.shape)}")
            check_input("x", x[0], n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes)
            if x.shape[2] != self.sizes[0]:
                raise ValueError(f"x must have shape ({self.size}, B, {self.sizes[0]}) for sizes {self.sizes}, "
                                 f"but got {tuple(x.shape)}")
            check_finite("x", x)
            return x
        x = check_input("x", x, n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes)
        return x.unsqueeze(0).expand(self.size, -1, -1)  # the same samples for every member: (K, B, n_0)

    def _check_loss(self, loss_fn) -> Loss:
        loss_fn = default_loss_for(self.output_activation) if loss_fn is None else get_loss(loss_fn)
        loss_fn.check_output_activation(self.output_activation)
        if not isinstance(loss_fn, (SquaredError, CrossEntropy, BinaryCrossEntropy)):
            raise TypeError(f"population training supports squared_error, cross_entropy and binary_cross_entropy, "
                            f"but got {loss_fn!r}")
        return loss_fn

    def _check_y(self, y, out_shape, loss_fn: Loss) -> Tensor:
        """Targets as (K, B, n_L) floats: one batch's targets (shared) or one per member, prepared by the loss."""
        K, B, n = out_shape
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor, but got {type(y).__name__}")
        if y.device != self.device:
            raise ValueError(f"y is on device {y.device}, but the population is on {self.device}")
        per_member = (y.dim() == 3) or (y.dim() == 2 and not y.is_floating_point() and y.shape == (K, B))
        if per_member:
            if y.shape[0] != K:
                raise ValueError(f"y with a member axis must have {K} rows (one per member), but got {tuple(y.shape)}")
            rows = [loss_fn.prepare_target(y[i], (B, n), self.dtype) for i in range(K)]
            y = torch.stack(rows)
        else:
            y = loss_fn.prepare_target(y, (B, n), self.dtype).unsqueeze(0).expand(K, -1, -1)
        if y.is_floating_point() and y.dtype != self.dtype:
            raise TypeError(f"y has dtype {y.dtype}, but the population has dtype {self.dtype}")
        check_finite("y", y)
        return y

    def _check_lr(self, lr, *, allow_zero: bool = False) -> Tensor:
        """lr as a (K,) tensor of the population's dtype and device."""
        if isinstance(lr, Tensor):
            values = lr.detach().to("cpu", torch.float64).reshape(-1).tolist()
            if lr.dim() > 1 or (lr.dim() == 1 and lr.shape[0] != self.size):
                raise ValueError(f"lr must be one number or {self.size} numbers (one per member), "
                                 f"but got a tensor of shape {tuple(lr.shape)}")
        elif isinstance(lr, (list, tuple)):
            values = list(lr)
            if len(values) != self.size:
                raise ValueError(f"lr must be one number or {self.size} numbers (one per member), "
                                 f"but got {len(values)} numbers")
        else:
            values = [lr]
        values = [check_positive_number(f"lr[{i}]" if len(values) > 1 else "lr", v, allow_zero=allow_zero)
                  for i, v in enumerate(values)]
        if len(values) == 1:
            values = values * self.size
        return torch.tensor(values, dtype=torch.float64).to(dtype=self.dtype, device=self.device)


def _check_seeds(name: str, seeds) -> list:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"{name} must be a list of non-negative ints, one per member, but got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{name} must hold at least one seed (one per member), but got an empty list")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"{name}[{i}] must be a non-negative int, but got {s!r}")
    return [int(s) for s in seeds]


# ---------------------------------------------------------------------------------------------------- sample orders
def _raw_draws(generators: Sequence[torch.Generator], m: int) -> Tensor:
    """The next m 32-bit outputs of each CPU generator's Mersenne twister, in order: (len(generators), m) int64.

    ``random_`` over the full int64 range returns random64() = (first draw << 32) | second draw with no modulo, so
    the high and low halves of each value are two consecutive draws of the raw stream that randperm and randint
    consume. An odd m still takes m + 1 draws from each generator.
    """
    v = torch.empty(len(generators), (m + 1) // 2, dtype=torch.int64)
    for row, g in zip(v, generators):
        row.random_(-(2 ** 63), None, generator=g)
    return torch.stack([(v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF], dim=2).reshape(len(generators), -1)[:, :m]


def _fisher_yates(draws: Tensor, n: int) -> Tensor:
    """torch.randperm(n)'s CPU shuffle replayed on draws (..., n-1): for i < n-1, swap r[i] and r[i + u_i % (n-i)]."""
    lead = draws.shape[:-1]
    u = draws.reshape(math.prod(lead), n - 1).t()  # (n-1, M): one column per permutation, rows contiguous
    r = torch.arange(n).unsqueeze(1).repeat(1, u.shape[1])  # (n, M)
    for i in range(n - 1):
        j = (u[i] % (n - i)).add_(i).unsqueeze(0)  # (1, M): the position swapped with i
        a = r[i].clone()
        r[i] = r.gather(0, j)[0]
        r.scatter_(0, j, a.unsqueeze(0))
    return r.t().reshape(*lead, n)


class SampleOrders:
    """Each member's sample indices, epoch by epoch, exactly as Trainer(seed=order_seeds[i]).batches() draws them.

    ``epoch()`` returns a (K, S) int64 tensor: member i's samples of one epoch in update order (S = n without
    replacement, ceil(n / b) * b with it); consecutive runs of b entries are one minibatch, already sorted.

    One torch.Generator per member, as a Trainer has. Calling ``torch.randperm`` K times per epoch would cost more
    than the K updates it orders, so for n <= 512 the orders are computed from bulk draws of each generator (one call
    per member per few hundred epochs), replaying randperm's shuffle for all members and epochs at once. The replay
    is checked against torch.randperm once; if it ever disagreed (another torch), the orders come from randperm.
    """

    def __init__(self, order_seeds: Sequence[int], n: int, batch_size: int, *, replacement: bool = False,
                 block_draws: int = 1024):
        self.n, self.b, self.replacement = int(n), int(batch_size), bool(replacement)
        self.seeds = _check_seeds("order_seeds", order_seeds)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.batches_per_epoch = math.ceil(self.n / self.b)
        # Draws one epoch consumes: randperm(n) takes n - 1; randint (m, b) with n < 2^32 takes one per entry.
        self.draws_per_epoch = self.batches_per_epoch * self.b if self.replacement else self.n - 1
        self.emulate = self.replacement or (self.n <= _EMULATE_RANDPERM_UP_TO and _randperm_replay_agrees())
        self._block = max(2 * self.draws_per_epoch, int(block_draws))
        self._block += self._block % 2
        self._draws = torch.empty(len(self.seeds), 0, dtype=torch.int64)
        self._cursor = 0

    @property
    def epoch_length(self) -> int:
        """S, the number of sample indices of one epoch (the updates times the batch size)."""
        return self.batches_per_epoch * self.b if self.replacement else self.n

    def epochs(self, count: int) -> Tensor:
        """The orders of the next ``count`` epochs: (count, K, S)."""
        if not self.emulate:
            return torch.stack([self._epoch_by_randperm() for _ in range(count)])
        d = self.draws_per_epoch
        need = count * d
        if self._cursor + need > self._draws.shape[1]:
            rest = self._draws[:, self._cursor:]
            more = max(self._block, need - rest.shape[1])
            more += more % 2
            fresh = _raw_draws(self.generators, more)  # (K, more)
            self._draws, self._cursor = torch.cat([rest, fresh], dim=1), 0
        draws = self._draws[:, self._cursor:self._cursor + need].reshape(len(self.seeds), count, d)
        self._cursor += need
        draws = draws.transpose(0, 1)  # (count, K, d)
        if self.replacement:
            order = (draws % self.n).reshape(count, len(self.seeds), self.batches_per_epoch, self.b)
            return order.sort(dim=-1).values.reshape(count, len(self.seeds), -1)
        return self._sorted_chunks(_fisher_yates(draws, self.n))

    def epoch(self) -> Tensor:
        return self.epochs(1)[0]

    def _epoch_by_randperm(self) -> Tensor:
        order = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])  # (K, n)
        return self._sorted_chunks(order)

    def _sorted_chunks(self, order: Tensor) -> Tensor:
        """Sort each minibatch's indices (Trainer: order.split(b), each chunk sorted); order (..., n)."""
        if self.b == 1:
            return order
        full = (self.n // self.b) * self.b
        head = order[..., :full].reshape(*order.shape[:-1], -1, self.b).sort(dim=-1).values.flatten(-2)
        tail = order[..., full:].sort(dim=-1).values
        return torch.cat([head, tail], dim=-1)


_REPLAY_CHECKED: Optional[bool] = None


def _randperm_replay_agrees() -> bool:
    """Whether the bulk-draw replay reproduces this torch's randperm (checked once, on a few seeds and sizes)."""
    global _REPLAY_CHECKED
    if _REPLAY_CHECKED is None:
        ok = True
        for seed, n in ((0, 4), (1, 17), (12345, 40)):
            g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            expected = torch.stack([torch.randperm(n, generator=g1) for _ in range(3)])
            draws = _raw_draws([g2], 3 * n)[0, :3 * (n - 1)].reshape(3, n - 1)
            ok = ok and torch.equal(_fisher_yates(draws, n), expected)
        _REPLAY_CHECKED = ok
    return _REPLAY_CHECKED


# ---------------------------------------------------------------------------------------------------- history
@dataclass
class PopulationHistory:
    """Per-epoch record of every member. Row e of a per-epoch field is a (K,) float64 tensor of all members at
    epoch e (row 0: the initial networks); a member that stopped keeps its frozen figures in later rows (a diverged
    one: the figures of the parameters it was put back to).

    Member i's own record, the one a single Trainer would write, is rows 0..last_epoch[i]: ``member(i)`` returns it
    as a training.History.
    """

    mode: str
    lr: list  # (K,) learning rates
    seeds: list  # (K,) weight seeds
    order_seeds: list  # (K,) sample-order seeds
    target_loss: Optional[float] = None
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)  # [epoch] -> (K,) tensor
    test_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)  # [epoch] -> (K,) tensor, or None for regression
    test_accuracy: list = field(default_factory=list)
    updates: list = field(default_factory=list)  # cumulative updates of an active member at each epoch
    seconds: list = field(default_factory=list)  # cumulative wall time of the lockstep epochs (evaluation included)
    last_epoch: list = field(default_factory=list)  # (K,) the last epoch of each member's own record
    stop_reason: list = field(default_factory=list)  # (K,) "max_epochs", "target_loss" or "diverged"
    epochs_to_target: list = field(default_factory=list)  # (K,) the epoch its train loss reached the target, else None
    diverged_update: list = field(default_factory=list)  # (K,) the first non-finite update (1-based), else None
    message: list = field(default_factory=list)  # (K,) what happened, in Trainer's words

    @property
    def size(self) -> int:
        return len(self.lr)

    def table(self, name: str) -> Optional[Tensor]:
        """A per-epoch field as one (epochs + 1, K) tensor (None for the accuracies of a regression)."""
        rows = getattr(self, name)
        return None if not rows or rows[0] is None else torch.stack(rows)

    def member(self, i: int) -> History:
        """Member i's record as the History a single Trainer run writes (seconds are the population's)."""
        last = self.last_epoch[i]

        def column(name):
            t = self.table(name)
            return [None] * (last + 1) if t is None else t[:last + 1, i].tolist()

        return History(mode=self.mode, epoch=list(self.epoch[:last + 1]), train_loss=column("train_loss"),
                       test_loss=column("test_loss"), train_accuracy=column("train_accuracy"),
                       test_accuracy=column("test_accuracy"), updates=list(self.updates[:last + 1]),
                       seconds=list(self.seconds[:last + 1]), stop_reason=self.stop_reason[i],
                       message=self.message[i])

    def succeeded(self) -> list:
        """Per member: whether it reached the target loss."""
        return [e is not None for e in self.epochs_to_target]

    def success_rate(self, members: Optional[Sequence[int]] = None) -> float:
        """The fraction of the members (of ``members``) that reached the target loss."""
        members = range(self.size) if members is None else members
        hits = [self.epochs_to_target[i] is not None for i in members]
        return sum(hits) / len(hits) if hits else float("nan")

    def median_epochs_to_target(self, members: Optional[Sequence[int]] = None) -> Optional[float]:
        """Median epochs to the target over the members (of ``members``) that reached it; None if none did."""
        members = range(self.size) if members is None else members
        reached = [self.epochs_to_target[i] for i in members if self.epochs_to_target[i] is not None]
        return float(statistics.median(reached)) if reached else None

    def diverged(self) -> list:
        return [r == "diverged" for r in self.stop_reason]

    def to_dict(self) -> dict:
        """JSON-friendly: per-epoch fields become lists of lists [epoch][member]."""
        d = {k: v for k, v in self.__dict__.items()}
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            d[name] = [row.tolist() if row is not None else None for row in d[name]]
        return d


# ---------------------------------------------------------------------------------------------------- TensorBoard
class PopulationLogger:
    """TensorBoard runs for a population: aggregate curves per group of members, per-member runs when K is small.

    Folders (RunLogger layout ``<logdir>/<experiment>/<run>/<folder>``):
    - ``<mode>`` (or ``<mode>_<group>`` for each named group, e.g. one per learning rate): per epoch
      ``loss/train/mean``, ``loss/train/median``, ``loss/train/q10``, ``loss/train/q90`` (and the same for
      ``loss/test``), ``accuracy/train/mean``, ``success/fraction`` (members that have reached the target loss),
      ``diverged/fraction``; hparams of the group (mode, lr, K, ...) with its success rate and median epochs;
    - ``<mode>_m<i>`` for each member when K <= ``member_runs``: its own ``loss/train``, ``loss/test``,
      ``accuracy/...`` curves (ending where the member stopped), and its hparams (mode, lr, seed, order seed) with
      its final figures, so the HPARAMS dashboard has one row per member.

    Args:
        logdir, experiment, run: as for RunLogger.
        groups: {name: member indices}; None: one group of all members, written to the folder ``<mode>``.
        member_runs: the largest K that still gets one run per member.
        log_every: write the curves every this many epochs (and always epoch 0 and the last one): a sweep of
            thousands of epochs does not need a point per epoch.
        enabled: False makes it a no-op.
    """

    def __init__(self, logdir, experiment: str, run: str, *, groups: Optional[dict] = None, member_runs: int = 16,
                 log_every: int = 1, enabled: bool = True):
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an int >= 1, but got {log_every!r}")
        self.log_every = log_every
        self._last_logged: Optional[int] = None
        self.logdir, self.experiment, self.run = logdir, experiment, run
        self.groups = None if groups is None else {str(k): list(v) for k, v in groups.items()}
        if isinstance(member_runs, bool) or not isinstance(member_runs, int) or member_runs < 0:
            raise ValueError(f"member_runs must be an int >= 0, but got {member_runs!r}")
        self.member_runs = member_runs
        self.enabled = enabled
        self._group_loggers: dict = {}
        self._member_loggers: dict = {}
        self._mode: Optional[str] = None

    def start(self, mode: str, size: int, updates_per_epoch: int) -> None:
        """Open the run folders for a population of ``size`` members trained in ``mode``."""
        from .tblog import RunLogger

        self._mode = mode
        groups = self.groups if self.groups is not None else {"": list(range(size))}
        for name, members in groups.items():
            if not members or min(members) < 0 or max(members) >= size:
                raise ValueError(f"group {name!r} must list member indices in [0, {size - 1}], but got {members!r}")
            folder = mode if name == "" else f"{mode}_{name}"
            self._group_loggers[name] = (RunLogger(self.logdir, self.experiment, self.run, folder,
                                                   updates_per_epoch=updates_per_epoch, enabled=self.enabled), members)
        if size <= self.member_runs:
            width = len(str(size - 1))
            for i in range(size):
                self._member_loggers[i] = RunLogger(self.logdir, self.experiment, self.run, f"{mode}_m{i:0{width}d}",
                                                    updates_per_epoch=updates_per_epoch, enabled=self.enabled)

    def log_epoch(self, epoch: int, history: PopulationHistory, row: int, *, force: bool = False) -> None:
        """Aggregates (and member curves) of history row ``row`` (= epoch), if the epoch is one to log."""
        if not (force or epoch % self.log_every == 0) or self._last_logged == epoch:
            return
        self._last_logged = epoch
        for logger, members in self._group_loggers.values():
            logger.log_epoch(epoch, _aggregate(history, row, members))
        for i, logger in self._member_loggers.items():
            if history.stop_reason[i] and row > history.last_epoch[i]:
                continue  # the member's own record ended: its curve stops where a single run's would
            metrics = {"loss/train": history.train_loss[row][i].item(), "loss/test": history.test_loss[row][i].item()}
            if history.train_accuracy[row] is not None:
                metrics.update({"accuracy/train": history.train_accuracy[row][i].item(),
                                "accuracy/test": history.test_accuracy[row][i].item()})
            logger.log_epoch(epoch, metrics)

    def log_hparams(self, history: PopulationHistory, common: dict) -> None:
        """Hparams and final figures: one row per group, and one per member run."""
        # Every run gets the same keys (TensorBoard takes the columns from one run); -1 marks "not one value".
        for name, (logger, members) in self._group_loggers.items():
            lrs = sorted({history.lr[i] for i in members})
            hp = {**common, "group": name or "all", "K": len(members), "member": -1,
                  "lr": lrs[0] if len(lrs) == 1 else -1.0, "seed": -1, "order_seed": -1}
            median = history.median_epochs_to_target(members)
            logger.log_hparams(hp, {"final/success_rate": history.success_rate(members),
                                    "final/median_epochs_to_target": median,
                                    "final/diverged_fraction": sum(history.diverged()[i] for i in members)
                                    / len(members)})
        for i, logger in self._member_loggers.items():
            h = history.member(i)
            f = h.final
            hp = {**common, "group": f"m{i}", "K": 1, "member": i, "lr": history.lr[i], "seed": history.seeds[i],
                  "order_seed": history.order_seeds[i]}
            metrics = {"final/loss_train": f["train_loss"], "final/loss_test": f["test_loss"],
                       "final/epochs_to_target": history.epochs_to_target[i],
                       "final/diverged": float(history.stop_reason[i] == "diverged")}
            if f["train_accuracy"] is not None:
                metrics.update({"final/accuracy_train": f["train_accuracy"], "final/accuracy_test": f["test_accuracy"]})
            logger.log_hparams(hp, metrics)

    def folders(self) -> list:
        return [lg.path for lg, _ in self._group_loggers.values()] + [lg.path for lg in self._member_loggers.values()]

    def close(self) -> None:
        for logger, _ in self._group_loggers.values():
            logger.close()
        for logger in self._member_loggers.values():
            logger.close()

    def __enter__(self) -> "PopulationLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quantiles(values: Tensor) -> dict:
    """mean, median, 10% and 90% quantiles of the finite values of a 1-D tensor ({} if none is finite)."""
    t = values[torch.isfinite(values)].to(torch.float64)
    if t.numel() == 0:
        return {}
    q = torch.quantile(t, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"mean": t.mean().item(), "median": q[1], "q10": q[0], "q90": q[2]}


def _aggregate(history: PopulationHistory, row: int, members: list) -> dict:
    """The aggregate scalars of one epoch over ``members``."""
    idx = torch.as_tensor(members, dtype=torch.long)
    metrics = {}
    for split in ("train", "test"):
        for stat, value in _quantiles(getattr(history, f"{split}_loss")[row][idx]).items():
            metrics[f"loss/{split}/{stat}"] = value
        accuracy = getattr(history, f"{split}_accuracy")[row]
        if accuracy is not None:
            metrics[f"accuracy/{split}/mean"] = accuracy[idx].mean().item()
    epoch = history.epoch[row]
    reached = [history.epochs_to_target[i] is not None and history.epochs_to_target[i] <= epoch for i in members]
    diverged = [history.stop_reason[i] == "diverged" and history.last_epoch[i] < epoch for i in members]
    if history.target_loss is not None:
        metrics["success/fraction"] = sum(reached) / len(members)
    metrics["diverged/fraction"] = sum(diverged) / len(members)
    return metrics


# ---------------------------------------------------------------------------------------------------- the trainer
def _same_split(a: tuple, b: tuple) -> bool:
    """Whether two (x, y, labels) splits hold the same samples in the same order."""
    return all((u is None and v is None) or (u is not None and v is not None and u.shape == v.shape
                                             and u.dtype == v.dtype and torch.equal(u, v)) for u, v in zip(a, b))


class _EpochFunction:
    """One epoch of the lockstep: every update, the evaluation, and the freeze bookkeeping, all on the device.

    State (mutated in place): weights, biases, their last good copies (the Population's layout), and ``active``
    (K,) bool. Inputs: the epoch's per-member samples and targets, xs (K, S, n_0) and ys (K, S, n_L), or members
    last, (S, n_0, K) and (S, n_L, K), when ``members_last``. Returns (update losses (T, K), figures (4, K): train
    loss, train accuracy, test loss, test accuracy, ok (K,), reached (K,)).
    """

    def __init__(self, population: Population, loss_fn: Loss, lr: Tensor, chunks: list, evals: dict,
                 target_loss: Optional[float], members_last: bool):
        self.functions = population.activation_functions
        self.bias = population.bias
        self.loss_fn, self.lr, self.chunks, self.evals = loss_fn, lr, chunks, evals
        self.target_loss, self.members_last = target_loss, members_last

    def __call__(self, weights, biases, good_w, good_b, active, xs, ys):
        fs, dtype, loss_fn = self.functions, weights[0].dtype, self.loss_fn
        neg_lr = -(self.lr * active.to(dtype))  # (K,): a frozen member moves by 0
        if self.members_last:  # work on contiguous members-last copies, written back at the end
            params = [w.permute(1, 2, 0).contiguous() for w in weights] + [b.t().contiguous() for b in biases]
        else:
            params = weights + biases
        ws, bs = params[:len(weights)], params[len(weights):]
        losses = []
        for start, stop in self.chunks:
            if self.members_last:
                x, y = xs[start:stop], ys[start:stop]  # (b, n_0, K), (b, n_L, K)
                activations, logits = _forward_ml(ws, bs, fs, x)
                losses.append(member_losses(loss_fn, _km(logits), _km(activations[-1]), _km(y)))
                grad_w, grad_b = _backward_ml(ws, fs, self.bias, activations, logits, y, loss_fn)
                for p, g in zip(ws + bs, grad_w + grad_b):
                    p.addcmul_(g, neg_lr)
            else:
                x, y = xs[:, start:stop], ys[:, start:stop]  # (K, b, n_0), (K, b, n_L)
                activations, logits = _forward(ws, bs, fs, x)
                losses.append(member_losses(loss_fn, logits, activations[-1], y))
                grad_w, grad_b, _ = _backward(ws, fs, self.bias, activations, logits, y, loss_fn)
                _step(ws, bs, grad_w, grad_b, neg_lr)
        update_losses = torch.stack(losses)  # (T, K)
        figures = []
        for split in ("train", "test"):
            if split == "test" and self.evals["test"] is None:  # the test split is the training split
                figures += figures[:2]
                continue
            x, y, labels = self.evals[split]
            evaluate = _evaluate_ml if self.members_last else _evaluate
            loss, acc = evaluate(ws, bs, fs, loss_fn, x, y, labels)
            figures += [loss, acc if acc is not None else torch.zeros_like(loss)]
        figures = torch.stack(figures)  # (4, K)
        ok = active & torch.isfinite(update_losses).all(dim=0) & torch.isfinite(figures).all(dim=0)
        # A member that is not ok now (diverged) or any more (frozen) goes back to its last good parameters.
        for p, q, good in zip(weights + biases, params, good_w + good_b):
            if self.members_last:
                q = q.permute(2, 0, 1) if q.dim() == 3 else q.t()  # back to the Population's layout (a view)
            keep = ok.view(-1, *([1] * (p.dim() - 1)))
            p.copy_(torch.where(keep, q, good))
            good.copy_(p)
        if self.target_loss is not None:
            reached = ok & (figures[0].to(torch.float64) <= self.target_loss)
        else:
            reached = torch.zeros_like(ok)
        active.copy_(ok & ~reached)
        return update_losses, figures, ok, reached


class PopulationTrainer:
    """Trains every member of a Population in one learning mode, in lockstep, each exactly as a Trainer would.

    Args:
        population: the Population (changed in place).
        data: a Dataset, moved once to the population's device and dtype.
        mode: "batch", "online" or "minibatch".
        lr: one learning rate for all members, or K of them (sequence or tensor).
        epochs: the maximum number of epochs.
        batch_size: b for minibatch mode.
        loss_fn: a Loss or a name (squared_error, cross_entropy, binary_cross_entropy); None: the default for the
            output activation.
        target_loss: a member whose training loss at the end of an epoch is at most this reaches its target: it
            is frozen there (a Trainer stops there) and counts as a success.
        replacement: minibatch draws with replacement.
        order_seeds: one sample-order seed per member (Trainer's ``seed``); None: the population's weight seeds.
        logger: a PopulationLogger, or None.
        engine: "eager" (plain torch ops with bmm, CPU or CUDA), "compiled" (the epoch function through
            torch.compile, on a members-last copy of the parameters, so that inductor fuses the tiny products into
            vectorized loops over the members; compiles once, tens of seconds; needs a C++ compiler on the CPU) or
            "cuda_graph" (CUDA only: the eager epoch is captured once as a CUDA graph and replayed).
        epochs_per_draw: epochs whose sample orders are drawn and gathered at once.
        progress: a tqdm bar over epochs; a string is its label.
    """

    def __init__(self, population: Population, data, *, mode: str, lr, epochs: int,
                 batch_size: Optional[int] = None, loss_fn=None, target_loss: Optional[float] = None,
                 replacement: bool = False, order_seeds: Optional[Sequence[int]] = None,
                 logger: Optional[PopulationLogger] = None, engine: str = "eager", epochs_per_draw: int = 64,
                 progress: Union[bool, str] = False):
        if not isinstance(population, Population):
            raise TypeError(f"population must be a Population, but got {type(population).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, but got {mode!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {list(ENGINES)}, but got {engine!r}")
        if engine == "cuda_graph" and population.device.type != "cuda":
            raise ValueError(f"engine 'cuda_graph' needs a population on CUDA, but it is on {population.device}")
        self.pop, self.mode, self.engine = population, mode, engine
        K = population.size
        self.lr = population._check_lr(lr)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, but got {epochs!r}")
        self.epochs = epochs
        self.loss_fn = population._check_loss(loss_fn)
        self.target_loss = None if target_loss is None else check_positive_number("target_loss", target_loss,
                                                                                 allow_zero=True)
        self.order_seeds = list(population.seeds) if order_seeds is None else _check_seeds("order_seeds", order_seeds)
        if len(self.order_seeds) != K:
            raise ValueError(f"order_seeds must hold one seed per member ({K}), but got {len(self.order_seeds)}")
        self.x_train, self.y_train, self.labels_train = self._prepare(data, "train")
        self.x_test, self.y_test, self.labels_test = self._prepare(data, "test")
        n = self.x_train.shape[0]
        self.batch_size = samples_per_update(mode, batch_size, n)
        self.replacement = bool(replacement)
        if isinstance(epochs_per_draw, bool) or not isinstance(epochs_per_draw, int) or epochs_per_draw < 1:
            raise ValueError(f"epochs_per_draw must be an int >= 1, but got {epochs_per_draw!r}")
        self.epochs_per_draw = epochs_per_draw
        self.orders = None if mode == "batch" else SampleOrders(self.order_seeds, n, self.batch_size,
                                                                replacement=self.replacement)
        S = n if self.orders is None else self.orders.epoch_length
        b = self.batch_size
        self.chunks = [(s, min(s + b, S)) for s in range(0, S, b)]
        self.logger = logger
        self.progress = progress
        dtype, device = population.dtype, population.device
        self.history = PopulationHistory(mode=mode, lr=self.lr.to("cpu", torch.float64).tolist(),
                                         seeds=list(population.seeds), order_seeds=list(self.order_seeds),
                                         target_loss=self.target_loss, last_epoch=[-1] * K,
                                         stop_reason=[""] * K, epochs_to_target=[None] * K,
                                         diverged_update=[None] * K, message=[""] * K)
        self.epoch = 0
        self.active = torch.ones(K, dtype=torch.bool, device=device)
        self._active_host = torch.ones(K, dtype=torch.bool)  # the same mask, on the CPU, updated once an epoch
        self._any_active = True
        self.good_w = [w.clone() for w in population.weights]
        self.good_b = [b_.clone() for b_ in population.biases]
        self.members_last = engine == "compiled"
        evals = {"train": (self.x_train, self.y_train, self.labels_train),
                 "test": (self.x_test, self.y_test, self.labels_test)}
        if _same_split(evals["train"], evals["test"]):
            evals["test"] = None  # the logic gates: evaluating the same samples twice would give the same figures
        self._fn = _EpochFunction(population, self.loss_fn, self.lr, self.chunks, evals, self.target_loss,
                                  self.members_last)
        self._call = self._fn
        if engine == "compiled":
            self._call = torch.compile(self._fn, dynamic=False)
        self._graph = None
        self._pending: list = []  # gathered epochs not yet trained: (xs, ys)
        self.train_seconds = 0.0
        self._dtype = dtype

    # ------------------------------------------------------------------ data
    def _prepare(self, data, split: str):
        pop = self.pop
        x = getattr(data, f"x_{split}").to(device=pop.device, dtype=pop.dtype)
        y = getattr(data, f"y_{split}").to(pop.device)
        x = check_input(f"x_{split}", x, n_features=pop.sizes[0], dtype=pop.dtype, device=pop.device, sizes=pop.sizes)
        labels = None if y.is_floating_point() else y
        y = encode_for(self.loss_fn, y, getattr(data, "num_classes", None), pop.sizes[-1], pop.dtype)
        y = self.loss_fn.prepare_target(y, (x.shape[0], pop.sizes[-1]), pop.dtype)
        check_finite(f"y_{split}", y)
        return x, y, labels

    def _next_epoch_data(self):
        """(xs (K, S, n_0), ys (K, S, n_L)) of the next epoch, from blocks of epochs drawn and gathered at once."""
        K = self.pop.size
        if self.orders is None:  # batch mode: every member sees all samples in their stored order
            if self.members_last:
                return self.x_train.unsqueeze(-1).expand(-1, -1, K), self.y_train.unsqueeze(-1).expand(-1, -1, K)
            return self.x_train.unsqueeze(0).expand(K, -1, -1), self.y_train.unsqueeze(0).expand(K, -1, -1)
        if not self._pending:
            count = min(self.epochs_per_draw, self.epochs - self.epoch)
            order = self.orders.epochs(count).to(self.pop.device)  # (count, K, S)
            xs = self.x_train[order]  # (count, K, S, n_0)
            ys = self.y_train[order]  # (count, K, S, n_L)
            if self.members_last:
                xs, ys = xs.permute(0, 2, 3, 1), ys.permute(0, 2, 3, 1)  # (count, S, n, K)
            xs, ys = xs.contiguous(), ys.contiguous()  # the same strides every block: no recompilation
            self._pending = [(xs[e], ys[e]) for e in range(count)]
        return self._pending.pop(0)

    # ------------------------------------------------------------------ running
    def run(self) -> PopulationHistory:
        """Train until every member has stopped or ``epochs`` ran; returns the PopulationHistory.

        Calling it again after raising ``epochs`` continues the members that stopped at the epoch limit.
        """
        K = self.pop.size
        h = self.history
        for i in range(K):
            if h.stop_reason[i] == "max_epochs":  # a longer run continues a finished one
                h.stop_reason[i], h.message[i] = "", ""
        if self.logger is not None:
            self.logger.start(self.mode, K, len(self.chunks))
        with torch.no_grad():
            if not h.epoch:
                self._record_initial()
            bar = self._progress_bar()
            try:
                while self.epoch < self.epochs and self._any_active:
                    self._run_epoch()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(active=int(self._active_host.sum()),
                                        reached=sum(e is not None for e in h.epochs_to_target))
            finally:
                if bar is not None:
                    bar.close()
        for i in range(K):
            if not h.stop_reason[i]:
                h.stop_reason[i] = "max_epochs"
                h.message[i] = f"stopped at the epoch limit ({self.epochs})"
                h.last_epoch[i] = self.epoch
        if self.logger is not None:
            self.logger.log_epoch(self.epoch, h, len(h.epoch) - 1, force=True)  # the curves end at the last epoch
            self.logger.log_hparams(h, self.hparams())
            self.logger.close()
        return h

    def _record_initial(self) -> None:
        figures = []
        for split in ("train", "test"):
            if self._fn.evals[split] is None:
                figures += figures[:2]
                continue
            x, y, labels = self._fn.evals[split]
            loss, acc = _evaluate(self.pop.weights, self.pop.biases, self.pop.activation_functions, self.loss_fn,
                                  x, y, labels)
            figures += [loss, acc if acc is not None else torch.zeros_like(loss)]
        self._append_row(torch.stack(figures).to("cpu", torch.float64), updates=0)

    def _append_row(self, figures: Tensor, updates: int) -> None:
        """Record one epoch: figures is (4, K) on the CPU (train loss, train accuracy, test loss, test accuracy)."""
        h = self.history
        classification = self.labels_train is not None
        h.epoch.append(self.epoch)
        h.train_loss.append(figures[0])
        h.test_loss.append(figures[2])
        h.train_accuracy.append(figures[1] if classification else None)
        h.test_accuracy.append(figures[3] if classification else None)
        h.updates.append(updates)
        h.seconds.append(self.train_seconds)
        if self.logger is not None:
            self.logger.log_epoch(self.epoch, h, len(h.epoch) - 1, force=self.epoch == 0)

    def _run_epoch(self) -> None:
        xs, ys = self._next_epoch_data()
        start = time.perf_counter()
        if self.engine == "cuda_graph":
            outputs = self._replay(xs, ys)
        else:
            outputs = self._call(self.pop.weights, self.pop.biases, self.good_w, self.good_b, self.active, xs, ys)
        update_losses, figures, ok, reached = outputs
        T = update_losses.shape[0]
        # The epoch's one read-back: update losses, figures and the two masks together.
        packed = torch.cat([update_losses.to(torch.float64), figures.to(torch.float64),
                            ok.to(torch.float64).unsqueeze(0), reached.to(torch.float64).unsqueeze(0)]).cpu()
        self.train_seconds += time.perf_counter() - start
        update_losses, figures, ok, reached = packed[:T], packed[T:T + 4], packed[T + 4] > 0, packed[T + 5] > 0
        self.epoch += 1
        h = self.history
        was_active = self._active_host
        diverged = was_active & ~ok
        reached = was_active & reached
        for i in diverged.nonzero().flatten().tolist():
            self._diverged(i, update_losses[:, i], (self.epoch - 1) * T)
        for i in reached.nonzero().flatten().tolist():
            h.stop_reason[i] = "target_loss"
            h.epochs_to_target[i] = self.epoch
            h.last_epoch[i] = self.epoch
            h.message[i] = (f"reached the target loss {self.target_loss:g} at epoch {self.epoch} "
                            f"(train loss {figures[0, i].item():.6g})")
        self._active_host = was_active & ok & ~reached
        self._any_active = bool(self._active_host.any())
        if bool(diverged.any()):
            # A diverged member was put back to its last good state: its row repeats that state's figures.
            previous = torch.stack([h.train_loss[-1], h.train_accuracy[-1] if h.train_accuracy[-1] is not None
                                    else figures[1], h.test_loss[-1],
                                    h.test_accuracy[-1] if h.test_accuracy[-1] is not None else figures[3]])
            figures = torch.where(diverged, previous, figures)
        self._append_row(figures, updates=self.epoch * T)

    def _diverged(self, i: int, losses: Tensor, first_update: int) -> None:
        h = self.history
        bad = (~torch.isfinite(losses)).nonzero()
        if bad.numel():
            h.diverged_update[i] = first_update + int(bad[0]) + 1
            where = f"update {h.diverged_update[i]} (loss {losses[int(bad[0])].item()})"
        else:
            where = "the end-of-epoch evaluation"
        h.stop_reason[i] = "diverged"
        h.last_epoch[i] = self.epoch - 1
        h.message[i] = (f"diverged in epoch {self.epoch} at {where}: the loss is not finite; the parameters were "
                        f"restored to the end of epoch {self.epoch - 1}, the last good state. Try a smaller "
                        f"learning rate (lr={h.lr[i]:g}).")

    # ------------------------------------------------------------------ CUDA graphs
    def _replay(self, xs: Tensor, ys: Tensor):
        if self._graph is None:
            self._capture(xs, ys)
        self._static_x.copy_(xs)
        self._static_y.copy_(ys)
        self._graph.replay()
        return self._static_out

    def _capture(self, xs: Tensor, ys: Tensor) -> None:
        """Capture one epoch as a CUDA graph on static buffers (the pattern of torch.cuda.graphs' documentation).

        Warm-up runs change the state, so it is saved before and put back after the capture.
        """
        self._static_x, self._static_y = xs.clone(), ys.clone()
        state = [*self.pop.weights, *self.pop.biases, *self.good_w, *self.good_b, self.active]
        saved = [t.clone() for t in state]
        args = (self.pop.weights, self.pop.biases, self.good_w, self.good_b, self.active)
        side = torch.cuda.Stream(device=self.pop.device)
        side.wait_stream(torch.cuda.current_stream(self.pop.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._fn(*args, self._static_x, self._static_y)
        torch.cuda.current_stream(self.pop.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = self._fn(*args, self._static_x, self._static_y)
        for t, s in zip(state, saved):
            t.copy_(s)

    # ------------------------------------------------------------------ misc
    def hparams(self) -> dict:
        pop = self.pop
        return {"mode": self.mode, "batch_size": self.batch_size, "sizes": str(pop.sizes),
                "activation": ",".join(f.spec() for f in pop.activation_functions[:-1]) or "none",
                "output_activation": pop.output_activation.spec(), "loss": self.loss_fn.name,
                "reduction": self.loss_fn.reduction, "replacement": self.replacement,
                "target_loss": self.target_loss if self.target_loss is not None else -1.0, "engine": self.engine}

    def _progress_bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        label = self.progress if isinstance(self.progress, str) else self.mode
        return tqdm(total=self.epochs, initial=self.epoch, desc=label, unit="epoch", leave=True, dynamic_ncols=True)
