"""The fused step: network.py's update on preallocated buffers, with no temporary tensors.

``FusedStep.update`` is ``loss_and_gradients`` followed by ``update`` (network.py), computed with the in-place
kernels that each Activation and Loss class carries beside its reference formula (``forward_``, ``backward_``,
``value_and_delta_``), on buffers allocated once. With ``keep_grads=True`` it runs the same operations as the
reference, so one update is bit-equal to it. With ``keep_grads=False`` the step is fused into the weight-gradient
product, W.addmm_(delta^T, x, alpha=-lr): one pass over W instead of two, and one rounding of W - lr delta^T x
instead of two, so one update agrees with the reference within ``FUSED_ULPS`` units in the last place of each
parameter tensor's largest entry (tests/proof/test_update_proof.py). On the CPU a layer with few inputs (at most
NARROW_COLUMNS) computes its gradient transposed, x^T delta, and steps W with it transposed: the same bound.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from torch import Tensor

from ..losses import BinaryCrossEntropy, CrossEntropy, Loss
from ..network import MLP, Gradients
from ..activations import Softmax
from .narrow import _same_state as _same_tensor_state, _state as _tensor_state

__all__ = ["FusedStep", "FUSED_ULPS"]

FUSED_ULPS = 4
# The widest layer input whose weight gradient is computed transposed, as x^T delta (see FusedStep.__init__).
NARROW_COLUMNS = 8


class FusedStep:
    """One update of the hand-written backprop on preallocated buffers (see the module docstring).

    Args:
        net: the MLP (its parameter tensors are updated in place; rebuild the step if they are replaced).
        loss_fn: a Loss.
        max_batch: the largest batch the step will see (buffers are sized for it; smaller batches use views).
        keep_grads: keep dE/dW, dE/db of the last update in ``self.grads`` (the same operations as the reference).
    """

    def __init__(self, net: MLP, loss_fn: Loss, max_batch: int, *, keep_grads: bool = False):
        self.net, self.loss_fn, self.max_batch, self.keep_grads = net, loss_fn, int(max_batch), keep_grads
        self.params = [*net.weights, *net.biases]
        dt, dev, sizes = net.dtype, net.device, net.sizes

        def buf(*shape):
            return torch.empty(*shape, dtype=dt, device=dev)

        B = self.max_batch
        # The output keeps its logits apart from its activity only where the loss or the activation reads them.
        self.separate_logits = (isinstance(loss_fn, (CrossEntropy, BinaryCrossEntropy))
                                or isinstance(net.output_activation, Softmax))
        self._bufs = {
            "x0": buf(B, sizes[0]), "y": buf(B, sizes[-1]),
            "acts": [buf(B, n) for n in sizes[1:]],  # x^1..x^L
            "logits": buf(B, sizes[-1]) if self.separate_logits else None,
            "deltas": [buf(B, n) for n in sizes[1:]],  # deltas[k]: (B, n_{k+1})
            "scratch": [(buf(B, n), buf(B, n)) for n in sizes],  # per width, for the classes' in-place kernels
        }
        self._grad_b = [buf(n) for n in sizes[1:]]
        # dE/dW[k] = delta^T x has sizes[k] columns. Where that is narrow (a few inputs, many more outputs), the CPU's
        # BLAS is slow at a product whose output has so few columns (6 GFLOP/s for 32 x 10,000 @ 10,000 x 4, against
        # 100): x^T delta, its transpose, runs at full speed, and W then takes it transposed (W.add_(g.t())).
        self._narrow_t = [buf(n_in, n_out) if dev.type == "cpu" and not keep_grads and n_in <= NARROW_COLUMNS < n_out
                          else None for n_in, n_out in zip(sizes[:-1], sizes[1:])]
        self._weights_t = [w.t() for w in net.weights]
        self.grads = Gradients(weights=[torch.zeros_like(w) for w in net.weights],
                               biases=[torch.zeros_like(b) for b in net.biases]) if keep_grads else None
        self._views = {}
        self.shared_seconds = 0.0  # the seconds of the kept forward phase the last update used (else 0)
        self._kept = None  # (state of parameters and data, E, seconds) after evaluate: the next update's forward

    def forget_kept(self) -> None:
        """Drop the kept forward phase (between runs: a write through ``.data`` or numpy bumps no version)."""
        self._kept = None

    def is_bound_to(self, net: MLP) -> bool:
        """Whether the step still works on the network's own parameter tensors (net.to() replaces them)."""
        return len(self.params) == len(net.weights) + len(net.biases) and all(
            a is b for a, b in zip(self.params, [*net.weights, *net.biases]))

    def kept_bytes(self, batch: int) -> int:
        """Bytes kept for the backward phase: x^0..x^L (and the logits where kept separately) for ``batch`` rows."""
        n = sum(self.net.sizes) + (self.net.sizes[-1] if self.separate_logits else 0)
        return batch * n * self.net.weights[0].element_size()

    def _batch_views(self, B: int) -> dict:
        views = self._views.get(B)
        if views is None:
            def narrow(t):
                if t is None:
                    return None
                if isinstance(t, (list, tuple)):
                    return type(t)(narrow(u) for u in t)
                return t[:B]

            views = {name: narrow(t) for name, t in self._bufs.items()}
            views["deltas_t"] = [d.t() for d in views["deltas"]]
            self._views[B] = views
        return views

    def _forward_and_delta(self, v: dict, x: Tensor, y: Tensor, loss_out: Tensor) -> None:
        """The forward phase (network.forward_phase), E into loss_out and the output delta (network.output_delta)
        into the step's buffers ``v`` for the samples x, y."""
        net = self.net
        L = net.num_layers
        acts = [x] + v["acts"]
        for k, f in enumerate(net.activation_functions):
            z = v["logits"] if k == L - 1 and self.separate_logits else acts[k + 1]
            if net.bias:
                torch.addmm(net.biases[k], acts[k], self._weights_t[k], out=z)  # net^{k+1}: (B, n_{k+1})
            else:
                torch.mm(acts[k], self._weights_t[k], out=z)
            f.forward_(z, acts[k + 1])  # x^{k+1}, in place unless the logits are kept
        z = v["logits"] if self.separate_logits else acts[L]
        self.loss_fn.value_and_delta_(z, acts[L], y, net.output_activation, v["deltas"][L - 1], loss_out,
                                      v["scratch"][L])

    def _state(self, x: Tensor, y: Tensor) -> tuple:
        return _tensor_state([*self.params, x, y])

    def evaluate(self, x_all: Tensor, y_all: Tensor, loss_out: Tensor) -> Tensor:
        """The forward phase, E (into ``loss_out``) and the output delta on all samples at the current parameters,
        kept for the next batch-mode update (``update(..., idx=None, ...)``), which then skips its own forward
        phase: the same operations on the same parameters, so the same update. Returns the output x^L (B, n_L), a
        view of the step's buffer (valid until the next call). Call under torch.no_grad()."""
        v = self._batch_views(x_all.shape[0])
        began = time.perf_counter()
        self._forward_and_delta(v, x_all, y_all, loss_out)
        # its seconds count as the next update's training time (shared_seconds): on the CPU, where they are known
        # without waiting on the device
        seconds = time.perf_counter() - began if x_all.device.type == "cpu" else 0.0
        self._kept = (self._state(x_all, y_all), loss_out.clone(), seconds)
        return v["acts"][-1]

    def update(self, x_all: Tensor, y_all: Tensor, idx: Optional[Tensor], lr: float, loss_out: Tensor) -> None:
        """Forward phase, output delta, hidden deltas and update on the samples ``idx`` of (x_all, y_all) (None: all
        of them, which must fit max_batch); the loss goes into the 0-dim ``loss_out``. Call under torch.no_grad()."""
        net = self.net
        L = net.num_layers
        if idx is None:
            v = self._batch_views(x_all.shape[0])
            x, y = x_all, y_all
        else:
            v = self._batch_views(idx.shape[0])
            x = torch.index_select(x_all, 0, idx, out=v["x0"])  # x^0: (B, n_0)
            y = torch.index_select(y_all, 0, idx, out=v["y"])  # (B, n_L)
        acts, scratch, deltas = [x] + v["acts"], v["scratch"], v["deltas"]
        kept = self._kept
        self.shared_seconds = 0.0
        if idx is not None or kept is None or not _same_tensor_state(kept[0], self._state(x, y)):
            self._forward_and_delta(v, x, y, loss_out)
        else:  # batch mode: the evaluation's forward phase at these very parameters (evaluate)
            loss_out.copy_(kept[1])
            self.shared_seconds = kept[2]  # training time the evaluation spent
        self._kept = None  # the parameters change below
        # ---- hidden deltas and the update, output layer first (network.hidden_delta, weight_gradient, update)
        for k in range(L - 1, -1, -1):
            if k > 0:
                torch.mm(deltas[k], net.weights[k], out=deltas[k - 1])  # sum_c delta_c w_cj, before W[k] steps
            if self.keep_grads:
                torch.mm(v["deltas_t"][k], acts[k], out=self.grads.weights[k])
                net.weights[k].add_(self.grads.weights[k], alpha=-lr)
            else:
                if self._narrow_t[k] is not None:
                    g_t = torch.mm(acts[k].t(), deltas[k], out=self._narrow_t[k])  # (dE/dW)^T: (n_k, n_{k+1})
                    net.weights[k].add_(g_t.t(), alpha=-lr)
                else:
                    net.weights[k].addmm_(v["deltas_t"][k], acts[k], alpha=-lr)  # W <- W - lr delta^T x, one pass
            if net.bias:
                gb = self.grads.biases[k] if self.keep_grads else self._grad_b[k]
                torch.sum(deltas[k], 0, out=gb)
                net.biases[k].add_(gb, alpha=-lr)
            if k > 0:
                net.activation_functions[k - 1].backward_(acts[k], deltas[k - 1], scratch[k])  # times f'(net_j)
