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

These are network.py's own functions (forward_phase, backward_phase, update), which work over any leading batch
axes: the population keeps no copy of the lecture's equations. Losses reduce over each member's own (B, n).

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
and a trajectory that escapes a plateau amplifies that. tests/population/test_population.py checks every epoch from
the same state to 1e-12 in float64, and deltas and gradients against the autograd twin to 1e-10.

A member whose loss becomes NaN or inf is put back to its parameters at the end of the previous epoch (the last
good state, as Trainer does), frozen and marked diverged, while the others go on; a member that reaches
``target_loss`` is frozen there (Trainer stops there). The freeze mask is computed on the device; losses are read
back once an epoch.

Checkpoints: PopulationTrainer(checkpoint_path=...) (checkpoints.py). Left out: histograms and decision-boundary
images (take a member out with ``member(i)`` for those).

Example:
    >>> pop = Population([2, 2, 1], seeds=list(range(100)), dtype=torch.float64)
    >>> history = PopulationTrainer(pop, load_dataset("xor", dtype=torch.float64), mode="online",
    ...                             lr=[0.5] * 50 + [2.0] * 50, epochs=2000, target_loss=0.04).run()
    >>> history.success_rate(), history.median_epochs_to_target()
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..checks import check_finite, check_input, check_positive_number, check_seeds
from .c_init import stacked_initial_parameters
from ..losses import Loss
from ..network import MLP, Gradients, resolve_architecture, update

__all__ = ["Population", "POPULATION_ULPS"]

# One population update agrees with each member's own update through network.py within this many units in the last
# place of each tensor's largest entry (tests/proof/test_update_proof.py): the batched kernels (bmm, and element-wise
# ops vectorised over (K, B, n) where a small (B, n) tensor runs scalar code) round a few entries differently.
POPULATION_ULPS = 4


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
        vars(self).update(resolve_architecture(sizes, activation, output_activation, bias, init, init_scale,
                                               bias_init, dtype, device))
        self.seeds = check_seeds("seeds", seeds)
        # Each seed's initial_parameters, stacked on the CPU in float64 (many members: drawn by the C kernel, bit for
        # bit), and only then cast and moved, exactly as MLP casts each of its draws.
        weights, biases = stacked_initial_parameters(self.sizes, init=self.init, bias_init=self.bias_init,
                                                     scale=self.init_scale, seeds=self.seeds, bias=bias)
        self.weights = [w.to(dtype=self.dtype).to(self.device) for w in weights]
        self.biases = [b.to(dtype=self.dtype).to(self.device) for b in biases]

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

    # ------------------------------------------------------------------ the two phases: MLP's own methods
    # They call network.py's functions on the stacked tensors, after this class's checks (check_x, check_y,
    # check_loss), so shapes gain a leading K: forward_cache(x).activations[k] is (K, B, n_k), backward and
    # loss_and_grads return Gradients whose tensors are (K, ...), and losses (MLP.loss) is (K,).
    forward_cache = MLP.forward_cache
    forward = MLP.forward
    __call__ = MLP.forward
    backward = MLP.backward
    losses = MLP.loss
    loss_and_grads = MLP.loss_and_grads

    @torch.no_grad()
    def step(self, grads: Gradients, lr) -> None:
        """Gradient descent in place, each member with its own rate: W_i <- W_i - lr_i dE_i/dW_i.

        lr: one number for all members, or K numbers (a sequence or a (K,) tensor).
        """
        lr = self.check_lr(lr, allow_zero=True)
        if len(grads.weights) != self.num_layers or len(grads.biases) != len(self.biases):
            raise ValueError(f"grads must hold {self.num_layers} weight and {len(self.biases)} bias gradients, "
                             f"but got {len(grads.weights)} and {len(grads.biases)}")
        for k, (w, g) in enumerate(zip(self.weights + self.biases, grads.weights + grads.biases)):
            if g.shape != w.shape:
                raise ValueError(f"grads tensor {k} must have shape {tuple(w.shape)}, but got {tuple(g.shape)}")
        update(self.weights, self.biases, grads, lr)

    # ------------------------------------------------------------------ checks at the public edge
    def _check_member(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not -self.size <= i < self.size:
            raise IndexError(f"member index must be an int in [0, {self.size - 1}], but got {i!r}")
        return i % self.size

    # As MLP's: types, dtypes, devices and shapes per call; NaN and inf only with finite=True (where data enters).
    check_loss = MLP.check_loss

    def check_x(self, x, *, finite: bool = False) -> Tensor:
        """x as (K, B, n_0): one batch shared by every member, (B, n_0), or one per member, (K, B, n_0)."""
        if isinstance(x, Tensor) and x.dim() == 3:
            if x.shape[0] != self.size:
                raise ValueError(f"x with a member axis must have shape ({self.size}, B, {self.sizes[0]}) for "
                                 f"K={self.size}, but got {tuple(x.shape)}")
            check_input("x", x[0], n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes,
                        finite=False)
            if x.shape[2] != self.sizes[0]:
                raise ValueError(f"x must have shape ({self.size}, B, {self.sizes[0]}) for sizes {self.sizes}, "
                                 f"but got {tuple(x.shape)}")
            if finite:
                check_finite("x", x)
            return x
        x = check_input("x", x, n_features=self.sizes[0], dtype=self.dtype, device=self.device, sizes=self.sizes,
                        finite=finite)
        return x.unsqueeze(0).expand(self.size, -1, -1)  # the same samples for every member: (K, B, n_0)

    def check_y(self, y, out_shape, loss_fn: Loss, *, finite: bool = False) -> Tensor:
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
        if finite:
            check_finite("y", y)
        return y

    def check_lr(self, lr, *, allow_zero: bool = False) -> Tensor:
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
