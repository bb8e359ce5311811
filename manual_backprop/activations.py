"""Activation functions f and their derivatives f', written by hand.

Every activation here can compute its derivative from its own output x = f(net), so the forward pass keeps only
the activities x^k of each layer and never the weighted inputs net (the lecture's "w . x"):

    sigmoid     f' = x (1 - x)
    tanh        f' = 1 - x^2 = (1 - x)(1 + x)
    relu        f' = 1 where x > 0, else 0          (x > 0 exactly where net > 0)
    leaky_relu  f' = 1 where x > 0, else slope      (needs slope >= 0, so that sign(x) = sign(net))
    identity    f' = 1                              (the lecture's linear neuron)
    softmax     a Jacobian, not a scalar f': backward applies it as J^T g = x * (g - sum(g * x))

``backward(x, grad_x)`` turns dE/dx into dE/dnet for a whole layer, shape (..., B, n) -> (..., B, n). At net = 0
the derivatives of relu and leaky_relu follow torch.autograd (0 for relu, slope for leaky_relu), so the two agree.

Each class also carries its own kernel code for the fast paths (manual_backprop.fast), next to the reference
formula it derives from, so that a new activation touches its class and nothing else:
    forward_(z, out), backward_(x, g, scratch)   in-place torch versions for the fused step; the defaults call
                                                 forward/backward and copy (correct for any activation, not fast)
    c_forward, c_derivative                      C expressions (of the net input v, of the output x) that the C loop
                                                 is generated from; None: the C loop refuses the activation
    c_forward_row(), c_backward_row()            the C statements on one row (default: built from the two above)
The per-update proof (tests/proof/test_update_proof.py) checks every one of them against ``forward``/``backward``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .derived import CountsChanges

__all__ = [
    "Activation",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Identity",
    "Softmax",
    "ACTIVATIONS",
    "get_activation",
]


class Activation(CountsChanges):
    """One activation function f applied element-wise (or row-wise, for softmax) to a layer's weighted input."""

    name: str = ""

    def forward(self, z: Tensor) -> Tensor:
        """x = f(net), shape (B, n) -> (B, n)."""
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        """f'(net) computed from the output x = f(net), shape (B, n)."""
        raise NotImplementedError

    def backward(self, x: Tensor, grad_x: Tensor) -> Tensor:
        """dE/dnet = f'(net) * dE/dx, the lecture's delta rule factor f'(w . x), shape (B, n)."""
        return grad_x * self.derivative(x)

    def torch_module(self) -> torch.nn.Module:
        """The torch.nn module that computes the same f (used by the autograd twin and for export)."""
        raise NotImplementedError

    # ---- kernel code of the fast paths, each derived from forward/backward above
    c_forward: "str | None" = None  # C expression of the net input v (a REAL) and slope alone giving f(v)
    c_derivative: "str | None" = None  # C expression of the output x (a REAL) giving f'(net)
    # whether an overridden c_forward_row still acts element by element (the base class's row always does)
    c_elementwise: bool = False

    def forward_(self, z: Tensor, out: Tensor) -> None:
        """out = f(z) without temporaries where the class can (``out`` may be ``z``); the fused step's forward."""
        out.copy_(self.forward(z))

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        """g <- backward(x, g) in place, with the same arithmetic; scratch: two buffers shaped like x."""
        g.copy_(self.backward(x, g))

    def c_forward_row(self) -> "str | None":
        """C statements that replace z[0..n) by f(z) in place (variables: z, n, i, slope)."""
        if self.c_forward is None:
            return None
        return f"for (i = 0; i < n; i++) {{ const REAL v = z[i]; z[i] = {self.c_forward}; }}"

    def c_backward_row(self) -> "str | None":
        """C statements for g[0..n) <- f'(net) * g, f' read off x[0..n) (variables: x, g, n, i, slope)."""
        if self.c_derivative is None:
            return None
        return f"for (i = 0; i < n; i++) {{ const REAL xi = x[i]; g[i] = g[i] * ({self.c_derivative}); }}"

    def spec(self) -> str:
        """A string that ``get_activation`` turns back into this activation."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.spec())


class Sigmoid(Activation):
    """f(net) = 1 / (1 + exp(-net)); f' = x (1 - x)."""

    name = "sigmoid"

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z)

    def derivative(self, x: Tensor) -> Tensor:
        return x * (1.0 - x)

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.Sigmoid()

    c_forward = "(REAL)1 / ((REAL)1 + R_EXP(-v))"
    c_derivative = "xi * ((REAL)1 - xi)"

    def forward_(self, z: Tensor, out: Tensor) -> None:
        torch.sigmoid(z, out=out)

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        d = torch.neg(x, out=scratch[0]).add_(1.0).mul_(x)  # x (1 - x), with 1 - x as (-x) + 1: the same rounding
        g.mul_(d)


class Tanh(Activation):
    """f(net) = tanh(net); f' = 1 - x^2, computed as (1 - x)(1 + x)."""

    name = "tanh"

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z)

    def derivative(self, x: Tensor) -> Tensor:
        # (1 - x)(1 + x), not 1 - x*x: near saturation (|x| -> 1) the factor nearest 0 is exact (Sterbenz), so f'
        # keeps full relative precision where 1 - x*x would lose the digits that x*x rounded away.
        return (1.0 - x) * (1.0 + x)

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.Tanh()

    c_forward = "R_TANH(v)"
    c_derivative = "((REAL)1 - xi) * ((REAL)1 + xi)"
    c_elementwise = True  # its row is c_forward on each element, through the array version

    def c_forward_row(self) -> str:
        # R_VTANH: R_TANH over the row, bit for bit (float's reads tables: its array version picks their entries with
        # vector permutes, where a loop over R_TANH would gather them)
        return "R_VTANH(z, z, n);"

    def forward_(self, z: Tensor, out: Tensor) -> None:
        torch.tanh(z, out=out)

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        one_minus = torch.neg(x, out=scratch[0]).add_(1.0)  # 1 - x
        one_plus = torch.add(x, 1.0, out=scratch[1])  # 1 + x
        g.mul_(one_minus.mul_(one_plus))


class ReLU(Activation):
    """f(net) = max(net, 0); f' = 1 where x > 0, else 0."""

    name = "relu"

    def forward(self, z: Tensor) -> Tensor:
        return torch.relu(z)

    def derivative(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)

    def backward(self, x: Tensor, grad_x: Tensor) -> Tensor:
        return grad_x.masked_fill(x <= 0, 0.0)

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.ReLU()

    c_forward = "v > 0 ? v : (v != v ? v : (REAL)0)"  # NaN stays NaN, as in torch.relu

    def forward_(self, z: Tensor, out: Tensor) -> None:
        # torch.relu takes no out=; relu is clamp_min(z, 0) in aten, the same values (NaN kept, -0 kept)
        torch.clamp_min(z, 0, out=out) if out is not z else z.relu_()

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        # x <= 0 ? 0 : g, masked_fill's values in one vectorised pass (masked_fill_ is not vectorised)
        torch.ops.aten.threshold_backward.grad_input(g, x, 0.0, grad_input=g)

    def c_backward_row(self) -> str:
        return "for (i = 0; i < n; i++) if (x[i] <= 0) g[i] = 0;"  # masked_fill: exactly 0, never 0 * g


class LeakyReLU(Activation):
    """f(net) = net where net > 0, else slope * net; f' = 1 where x > 0, else slope."""

    name = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        if not isinstance(negative_slope, (int, float)) or not (0.0 <= negative_slope < 1.0) or math.isnan(negative_slope):
            raise ValueError(
                "negative_slope of leaky_relu must be a number in [0, 1) (so that sign(x) = sign(net) and f' can be "
                f"read off the output), but got {negative_slope!r}"
            )
        self.negative_slope = float(negative_slope)

    def forward(self, z: Tensor) -> Tensor:
        return torch.nn.functional.leaky_relu(z, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        one = torch.ones((), dtype=x.dtype, device=x.device)
        return torch.where(x > 0, one, one * self.negative_slope)

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.LeakyReLU(self.negative_slope)

    c_forward = "v > 0 ? v : v * slope"
    c_derivative = "xi > 0 ? (REAL)1 : slope"

    def forward_(self, z: Tensor, out: Tensor) -> None:
        if out is not z:
            out.copy_(z)
        torch.nn.functional.leaky_relu_(out, self.negative_slope)

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        # x > 0 ? g : g * slope, the reference's g * where(x > 0, 1, slope) exactly
        torch.ops.aten.leaky_relu_backward.grad_input(g, x, self.negative_slope, True, grad_input=g)

    def spec(self) -> str:
        return self.name if self.negative_slope == 0.01 else f"{self.name}:{self.negative_slope!r}"

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope!r})"


class Identity(Activation):
    """f(net) = net, the linear neuron; f' = 1."""

    name = "identity"

    def forward(self, z: Tensor) -> Tensor:
        return z

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def backward(self, x: Tensor, grad_x: Tensor) -> Tensor:
        return grad_x

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.Identity()

    c_forward = "v"
    c_derivative = "(REAL)1"

    def forward_(self, z: Tensor, out: Tensor) -> None:
        if out is not z:
            out.copy_(z)

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        pass

    def c_backward_row(self) -> str:
        return ""


class Softmax(Activation):
    """x_j = exp(net_j) / sum_c exp(net_c) over a row: outputs are probabilities that sum to 1.

    Its derivative is the Jacobian dx_j/dnet_c = x_j (1[j = c] - x_c), so ``backward`` applies it to dE/dx row by row
    instead of multiplying by an element-wise f'. Only allowed on the output layer.
    """

    name = "softmax"

    def forward(self, z: Tensor) -> Tensor:
        return torch.softmax(z, dim=-1)

    def derivative(self, x: Tensor) -> Tensor:
        raise TypeError("softmax has no element-wise derivative; use Softmax.backward(x, grad_x) (a Jacobian product)")

    def backward(self, x: Tensor, grad_x: Tensor) -> Tensor:
        # J^T g with J = diag(x) - x x^T, one row (sample) at a time.
        return x * (grad_x - (grad_x * x).sum(dim=-1, keepdim=True))

    def torch_module(self) -> torch.nn.Module:
        return torch.nn.Softmax(dim=-1)

    def forward_(self, z: Tensor, out: Tensor) -> None:
        torch.softmax(z, -1, out=out)

    def backward_(self, x: Tensor, g: Tensor, scratch: tuple) -> None:
        row = scratch[1][..., :1]  # (..., B, 1)
        torch.sum(torch.mul(g, x, out=scratch[0]), -1, keepdim=True, out=row)
        g.sub_(row).mul_(x)  # x (g - sum(g x))

    def c_forward_row(self) -> str:
        # exp(net - max) * (1 / sum), as torch's softmax kernel does
        return ("REAL m = z[0], sum = 0; for (i = 1; i < n; i++) m = z[i] > m ? z[i] : m; "
                "for (i = 0; i < n; i++) z[i] = R_EXP(z[i] - m); for (i = 0; i < n; i++) sum += z[i]; "
                "const REAL inv = (REAL)1 / sum; for (i = 0; i < n; i++) z[i] = z[i] * inv;")

    def c_backward_row(self) -> str:
        return ("REAL s = 0; for (i = 0; i < n; i++) s += g[i] * x[i]; "
                "for (i = 0; i < n; i++) g[i] = x[i] * (g[i] - s);")


ACTIVATIONS = {cls.name: cls for cls in (Sigmoid, Tanh, ReLU, LeakyReLU, Identity, Softmax)}
# Common spellings users type; each maps to one of the names above.
_ALIASES = {"linear": "identity", "none": "identity", "logistic": "sigmoid", "leakyrelu": "leaky_relu"}


def get_activation(spec: "str | Activation", *, argument: str = "activation") -> Activation:
    """Turn a name ("tanh", "leaky_relu:0.2") or an Activation instance into an Activation.

    Raises ValueError naming ``argument`` and listing the valid names when the name is unknown.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{argument} must be an activation name or an Activation, but got {type(spec).__name__}: {spec!r}")
    name, _, param = spec.strip().lower().partition(":")
    name = _ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise ValueError(f"{argument} must be one of {sorted(ACTIVATIONS)}, but got {spec!r}")
    if param:
        if name != "leaky_relu":
            raise ValueError(f"{argument} {spec!r}: only leaky_relu takes a parameter (leaky_relu:SLOPE)")
        try:
            slope = float(param)
        except ValueError:
            raise ValueError(f"{argument} {spec!r}: the slope after ':' must be a number, but got {param!r}") from None
        return LeakyReLU(slope)
    return ACTIVATIONS[name]()

def resolve_activations(sizes, activation, output_activation) -> list:
    """f of every layer, hidden ones first and the output's last: one activation for all hidden layers or one each."""
    hidden = len(sizes) - 2
    if isinstance(activation, (list, tuple)):
        if len(activation) != hidden:
            raise ValueError(
                f"activation must be one activation or a list with one per hidden layer ({hidden} for sizes {sizes}), "
                f"but got a list of {len(activation)}"
            )
        fs = [get_activation(a, argument=f"activation[{k}]") for k, a in enumerate(activation)]
    else:
        fs = [get_activation(activation, argument="activation")] * hidden
    for k, f in enumerate(fs):
        if isinstance(f, Softmax):
            raise ValueError(f"softmax is only allowed as output_activation, but activation for hidden layer {k + 1} is softmax")
    fs.append(get_activation(output_activation, argument="output_activation"))
    return fs
