"""Data-parallel batch and minibatch learning over several processes (torch.distributed), gradients by hand.

The lecture says of batch learning: "Computation of weights can be carried out in parallel, saving computation
time." A batch's gradient is a sum over its samples, so it splits over processes ("ranks") with no approximation:

    every rank       holds the same weights (broadcast from rank 0 at the start) and draws the same sample order
                     (the Trainer's generator, seeded with the same seed on every rank);
    per update       the batch's sorted index list is cut into world_size contiguous shards (unequal when the batch
                     does not divide; a rank may even get 0 samples and then contributes zeros);
                     rank r runs the forward and backward phase on shard r for the SUM over its samples,
                     sum_{i in shard r} dE_i/dW, and the sum of its losses;
                     one all_reduce(SUM) adds the shards' gradient sums, loss sums and sample counts;
                     every rank divides by the global count exactly as the single-process mean does and takes the
                     same step W <- W - lr * dE/dW.

So the update is the single-process update on the whole batch, up to the rounding of adding the samples in a
different order (float64 tests agree to 1e-12 relative after several epochs). Averaging the ranks' averaged
gradients instead would be wrong whenever the shards are unequal: a sample on a smaller shard would weigh more.

Why one flat buffer and one all_reduce per update: every collective costs a fixed latency (a network round trip
between machines, a kernel launch and a synchronisation between GPUs). The layers of a small MLP are tiny, so
reducing 2L + 2 tensors one by one would cost 2L + 2 latencies; one buffer costs one (DDP's gradient buckets do the
same). The loss sum and the sample count ride in that buffer for free, and because a NaN or inf on any rank makes
the reduced loss non-finite on every rank, all ranks see the same update losses and take the divergence path at
the same update, with the same message.

Online learning (one update per sample) is sequential by nature: update t+1 needs the weights after update t, and
one sample cannot be split over ranks. ``DistributedTrainer`` refuses it (``ONLINE_IS_SEQUENTIAL``).

Evaluation is sharded the same way (loss sums, correct counts and sample counts reduced), so every rank records
the same History and makes the same decision to stop (epoch limit, target loss, divergence); a check after every
epoch turns any disagreement into an error on every rank instead of a hang.

Launch with torchrun (env:// rendezvous, one process per GPU or per CPU slot)::

    torchrun --standalone --nproc_per_node=2 -m experiments.learning_modes --distributed --modes batch minibatch

Backends: nccl when the device is CUDA (rank r uses cuda:LOCAL_RANK), gloo on the CPU. Every collective is bounded
by the process group's timeout: a rank that dies or hangs makes the others fail with an error instead of waiting
forever (torchrun then ends the whole job). Only rank 0 writes TensorBoard logs and checkpoints.

Left out: model parallelism (the network is small and replicated on every rank), overlapping communication with the
backward phase, and torch.nn.parallel (there is no autograd graph for it to hook into). Every rank holds the whole
dataset (they are generated or shipped, and small); each rank computes on its shard only.
"""

from .group import DEFAULT_TIMEOUT, DistInfo, broadcast_parameters, from_rank0, init_distributed, shard_bounds
from .trainer import ONLINE_IS_SEQUENTIAL, DistributedTrainer

__all__ = ["DistributedTrainer", "DistInfo", "init_distributed", "shard_bounds", "broadcast_parameters",
           "from_rank0", "ONLINE_IS_SEQUENTIAL", "DEFAULT_TIMEOUT"]
