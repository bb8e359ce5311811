"""The fused step captured as a CUDA graph of ``chunk`` updates and replayed: the same updates, one launch.

Follows PyTorch's CUDA-graph rules (torch.cuda.graphs, "CUDA Graphs" in the CUDA semantics notes): warm-up on a
side stream before capture; static input buffers (sample indices refilled device to device before each replay) and
static outputs (the chunk's losses); no host synchronisation, RNG or value-dependent branching inside the capture;
updates that do not fill a whole chunk (and a smaller last minibatch) run eagerly through the same FusedStep.
Each runner warms up and captures on its own stream, inside ``torch.cuda.device(net.device)`` (a capture on another
device's current stream would record nothing, and the replays would do nothing), and drops its old graph before
capturing a new one (an lr change): a graph reset frees its cuBLAS workspace, which another live graph captured on
the same stream may still use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import Loss
from ..network import MLP
from .common import FastPathUnavailable, mark_written
from .fused import FusedStep

__all__ = ["CudaGraphRunner", "capture_graph"]


def capture_graph(fn, state: list, *, device: torch.device, stream, warmups: int = 1) -> tuple:
    """(graph, fn's outputs): ``fn()`` captured once as a CUDA graph, the pattern of torch.cuda.graphs' documentation.

    Warm-up (cuBLAS handles, workspaces) runs ``warmups`` calls on the side ``stream`` outside the capture; they
    change the ``state`` tensors, so those are saved before and put back before the capture, which records on the
    same stream. Call it inside ``torch.cuda.device(device)`` and drop any old graph first (see the module
    docstring). The PopulationTrainer's cuda_graph engine captures its epoch with it too.
    """
    saved = [t.clone() for t in state]
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    for t, s in zip(state, saved):  # the warm-up's changes are undone
        t.copy_(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = fn()
    return graph, out


class CudaGraphRunner:
    """``chunk`` updates of ``batch`` samples each through FusedStep, captured once and replayed.

    keep_grads: the step keeps the last update's gradients (bit-equal to the reference's), for the histograms.
    """

    def __init__(self, net: MLP, loss_fn: Loss, batch: int, *, chunk: int = 64, keep_grads: bool = False):
        if net.device.type != "cuda" or not torch.cuda.is_available():
            raise FastPathUnavailable(f"CUDA graphs need a CUDA device, but the network is on {net.device}")
        self.net, self.loss_fn, self.batch, self.chunk = net, loss_fn, int(batch), int(chunk)
        self.step = FusedStep(net, loss_fn, self.batch, keep_grads=keep_grads)
        self._idx = torch.zeros(self.chunk * self.batch, dtype=torch.int64, device=net.device)
        self._losses = torch.zeros(self.chunk, dtype=net.dtype, device=net.device)
        self._stream = torch.cuda.Stream(device=net.device)
        self._graph, self._key = None, None
        self.captures = 0  # how many graphs this runner has captured (tests read it)

    @property
    def grads(self):
        return self.step.grads

    def is_bound_to(self, net: MLP) -> bool:
        return self.step.is_bound_to(net)

    def _chunk_updates(self, x: Tensor, y: Tensor, lr: float) -> None:
        B = self.batch
        for j in range(self.chunk):
            self.step.update(x, y, self._idx[j * B:(j + 1) * B], lr, self._losses[j])

    def _capture(self, x: Tensor, y: Tensor, lr: float) -> None:
        self._graph, self._key = None, None  # the old graph goes first (see the module docstring)
        graph, _ = capture_graph(lambda: self._chunk_updates(x, y, lr), self.step.params, device=self.net.device,
                                 stream=self._stream)
        self._graph, self._key = graph, self._bind_key(x, y, lr)
        self.captures += 1

    def _bind_key(self, x: Tensor, y: Tensor, lr: float) -> tuple:
        """What a graph is bound to: the data's addresses and shapes, the parameters' addresses, layouts and dtypes
        (the graph reads them as captured; ``p.data = p.t()`` or ``p.data = p.view(torch.int32)`` keeps the address),
        and lr."""
        return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, y.data_ptr(), tuple(y.shape), y.stride(), y.dtype,
                tuple((p.data_ptr(), tuple(p.shape), p.stride(), p.dtype) for p in self.step.params), float(lr))

    def run(self, x: Tensor, y: Tensor, order: Tensor, offsets: list, lr: float, losses: Tensor) -> Tensor:
        """Make the updates order[offsets[u]:offsets[u+1]] (order on the device, offsets a Python list)."""
        n_updates = len(offsets) - 1
        B, K = self.batch, self.chunk
        full = 0
        while full < n_updates and offsets[full + 1] - offsets[full] == B:
            full += 1
        n_chunks = full // K
        with torch.cuda.device(self.net.device):
            if n_chunks and self._key != self._bind_key(x, y, lr):
                self._capture(x, y, lr)
            for c in range(n_chunks):
                self._idx.copy_(order[c * K * B:(c + 1) * K * B])
                self._graph.replay()
                losses[c * K:(c + 1) * K].copy_(self._losses)
            if n_chunks:  # a replay's in-place updates bump no version counter (only the capture did)
                mark_written(list(self.step.params))
            for u in range(n_chunks * K, n_updates):
                self.step.update(x, y, order[offsets[u]:offsets[u + 1]], lr, losses[u])
        return losses

    def close(self) -> None:
        """Drop the captured graph and its memory pool now, rather than when the runner is collected."""
        self._graph, self._key = None, None
