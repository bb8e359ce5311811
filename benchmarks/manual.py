"""The hand-written update as the benchmark times it: the plain path (the Trainer's per-update loop) and each fast
path of manual_backprop.fast on its own. Whole Trainer epochs (evaluation included) are epochs.py's."""

from __future__ import annotations

import torch

from benchmarks.cases import Impl
from manual_backprop import fast
from manual_backprop.fast.runner import kept_bytes
from manual_backprop.network import forward_phase, loss_and_gradients, update


class ManualPlain(Impl):
    """The Trainer's plain per-update loop: index_select, loss_and_gradients, update (manual_backprop.network)."""

    name = "manual-plain"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.net, self.loss_fn, self.x, self.y, self.lr, self.b = net, loss_fn, x, y, lr, batch
        self.order = order.to(x.device)
        self.last = None

    def run(self, u0, n):
        b = self.b
        with torch.no_grad():
            for u in range(u0, u0 + n):
                idx = self.order[u * b:(u + 1) * b]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
                loss, grads = loss_and_gradients(self.net, xb, yb, self.loss_fn)
                update(self.net.weights, self.net.biases, grads, self.lr)
        self.last = loss

    def kept_bytes(self):
        with torch.no_grad():
            x = self.x.index_select(0, self.order[:self.b])
            return kept_bytes(forward_phase(self.net.weights, self.net.biases, self.net.activation_functions, x))

    def final_loss(self):
        return float(self.last) if self.last is not None else None


class ManualAPI(Impl):
    """The checked public API, one update at a time as a user's own loop makes it: the batch gathered, then
    ``net.loss_and_grads`` (E, gradients and deltas; one C call for small CPU networks, network.ONE_UPDATE) and
    ``net.step``. The numpy and autograd rows do the same work: gather, loss, gradients, step."""

    name = "manual-api"
    chunk_note = "1 update per call (loss_and_grads + step)"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.net, self.loss_fn, self.x, self.y, self.lr, self.b = net, loss_fn, x, y, lr, batch
        self.order = order.to(x.device)
        self.last = None

    def run(self, u0, n):
        b, net, loss_fn, lr = self.b, self.net, self.loss_fn, self.lr
        for u in range(u0, u0 + n):
            idx = self.order[u * b:(u + 1) * b]
            loss, grads = net.loss_and_grads(self.x.index_select(0, idx), self.y.index_select(0, idx), loss_fn)
            net.step(grads, lr)
        self.last = loss

    def kept_bytes(self):
        return ManualPlain.kept_bytes(self)

    def final_loss(self):
        return float(self.last) if self.last is not None else None


class ManualFused(Impl):
    name = "manual-fused"

    def __init__(self, net, loss_fn, x, y, order, batch, lr):
        self.step = fast.FusedStep(net, loss_fn, batch)
        self.x, self.y, self.lr, self.batch = x, y, lr, batch
        self.order = order.to(x.device)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype, device=x.device)

    def run(self, u0, n):
        b = self.batch
        with torch.no_grad():
            for u in range(u0, u0 + n):
                self.step.update(self.x, self.y, self.order[u * b:(u + 1) * b], self.lr, self.losses[u])

    def kept_bytes(self):
        return self.step.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])


class ManualC(Impl):
    name = "manual-c"

    def __init__(self, net, loss_fn, x, y, order, batch, lr, chunk):
        self.kernel = fast.CKernel(net, loss_fn)
        self.x, self.y, self.lr, self.batch, self.chunk = x, y, lr, batch, max(1, chunk)
        self.order = order.contiguous()
        self.offsets = torch.arange(0, order.numel() + 1, batch)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype)
        self.chunk_note = f"{self.chunk} updates per call"

    def run(self, u0, n):
        # one call per chunk, as the Trainer makes one call per epoch; slices by address, not by tensor views
        b, kernel, item = self.batch, self.kernel, self.order.element_size()
        kernel.bind(self.x, self.y)
        order, offsets, losses = self.order.data_ptr(), self.offsets.data_ptr(), self.losses.data_ptr()
        u = u0
        while u < u0 + n:
            m = min(self.chunk, u0 + n - u)
            kernel.call(order + u * b * item, offsets, m, self.lr, losses + u * self.losses.element_size())
            u += m

    def kept_bytes(self):
        return self.kernel.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])


class ManualCudaGraph(Impl):
    name = "manual-cuda_graph"

    def __init__(self, net, loss_fn, x, y, order, batch, lr, chunk=64):
        self.runner = fast.CudaGraphRunner(net, loss_fn, batch, chunk=chunk)
        self.x, self.y, self.lr, self.batch = x, y, lr, batch
        self.order = order.to(x.device)
        self.losses = torch.zeros(order.numel() // batch, dtype=x.dtype, device=x.device)
        self.granule = chunk  # timed on whole graphs only (bench_timing): a replay per chunk, no eager tail
        self.eager_updates = 0  # updates that ran eagerly, outside a graph (0 in every timed run)
        self.chunk_note = f"graphs of {chunk} updates, replayed"

    def run(self, u0, n):
        b = self.batch
        offsets = list(range(0, n * b + 1, b))
        self.eager_updates += n % self.runner.chunk
        with torch.no_grad():
            self.runner.run(self.x, self.y, self.order[u0 * b:(u0 + n) * b], offsets, self.lr,
                            self.losses[u0:u0 + n])

    def kept_bytes(self):
        return self.runner.step.kept_bytes(self.batch)

    def final_loss(self):
        return float(self.losses[-1])
