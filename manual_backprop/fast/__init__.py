"""Fast paths for the same network and trainer: network.py's update, with less overhead per update.

The plain path (network.py, the Trainer) reads like the lecture: every update builds a ForwardCache and a
Gradients of fresh tensors and then steps. That costs about 30 eager torch calls per update, a few microseconds
each, which dominates small networks, and temporary tensors in the element-wise work, which cost memory traffic in
large ones. Each fast path is a declared derivative of network.py's functions, built from the kernel code that the
Activation and Loss classes carry beside their reference formulas, and proven update by update against the
reference in tests/proof/test_update_proof.py:

    "c"           c_loop.py: the C loop (_csrc/), compiled at first use; one call runs an epoch of updates on the
                  CPU. Within C_ULPS units in the last place of the reference update (summation order differs).
    "fused"       fused.py: torch on any device, buffers preallocated, element-wise work in place; bit-equal to the
                  reference when it keeps the gradients, within FUSED_ULPS when the step is fused into the
                  weight-gradient product (W.addmm_(delta^T, x, alpha=-lr)).
    "cuda_graph"  cuda_graph.py: the fused step captured as a CUDA graph of ``chunk`` updates and replayed.
    True/"auto"   "c" for small networks on the CPU when a compiler works, "cuda_graph" on CUDA, else "fused".

A fast path that cannot apply (no C compiler, no CUDA device, an activation without C code) falls back to the next
one with a ``FastPathWarning`` that says why; the plain path stays the reference. Per-update losses stay on the
device and are read back by the Trainer once an epoch. runner.py holds the switch (``resolve_fast``) and
``EpochRunner``, what ``Trainer(fast=...)`` runs.
"""

from .c_loop import C_ULPS, CKernel, c_unsupported, load_kernel
from .common import C_WORK_LIMIT, FAST_PATHS, FastPathUnavailable, FastPathWarning, work_per_update
from .cuda_graph import CudaGraphRunner
from .fused import FUSED_ULPS, FusedStep
from .runner import EpochRunner, resolve_fast

__all__ = ["FAST_PATHS", "FastPathWarning", "FastPathUnavailable", "CKernel", "FusedStep", "CudaGraphRunner",
           "EpochRunner", "load_kernel", "resolve_fast", "C_WORK_LIMIT", "work_per_update",
           "c_unsupported", "C_ULPS", "FUSED_ULPS"]
