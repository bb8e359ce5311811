"""Distributed training's refusals and device choices that need no process group: online mode and the one-process
fast paths refused with the reason, the launch without torchrun explained, the shards of a batch, one GPU per
rank (the device count simulated, no CUDA needed)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from distributed_job import CASES, HAS_GLOO, build
from manual_backprop.distributed import ONLINE_IS_SEQUENTIAL, DistributedTrainer, init_distributed, shard_bounds
from manual_backprop.distributed.group import _check_one_gpu_per_rank, _rank_device

needs_gloo = pytest.mark.skipif(not HAS_GLOO, reason="torch.distributed with gloo is not available")


def test_online_mode_is_refused_with_the_reason(monkeypatch, capsys):
    from experiments import learning_modes

    net, data, kwargs = build(CASES["batch_cross_entropy"])
    with pytest.raises(ValueError, match="online learning is sequential by nature"):
        DistributedTrainer(net, data, **dict(kwargs, mode="online"))
    # The experiment refuses an explicit online mode before it joins a process group (none exists here), naming the
    # modes to pass; by default --distributed trains the modes that can run (here it then asks for torchrun).
    assert learning_modes.main(["--distributed", "--epochs", "1", "--modes", "online", "batch"]) == 2
    err = capsys.readouterr().err
    assert ONLINE_IS_SEQUENTIAL in err and "--modes batch minibatch" in err
    monkeypatch.delenv("RANK", raising=False)
    assert learning_modes.main(["--distributed", "--epochs", "1", "--device", "cpu"]) == 2
    assert "online" not in capsys.readouterr().err
    assert not dist.is_initialized()


def test_one_process_fast_paths_are_refused():
    net, data, kwargs = build(CASES["batch_cross_entropy"])
    with pytest.raises(ValueError, match="fast must be False for distributed training"):
        DistributedTrainer(net, data, **dict(kwargs, fast=True))  # it would run whole epochs past the all_reduce


@needs_gloo
def test_distributed_without_torchrun_says_how_to_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.*torchrun --standalone"):
        init_distributed("cpu")
    with pytest.raises(RuntimeError, match="init_distributed"):
        DistributedTrainer(*build(CASES["batch_cross_entropy"])[:2], **build(CASES["batch_cross_entropy"])[2])


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shards_are_contiguous_nearly_equal_and_cover_the_batch(world_size):
    for n in range(0, 20):
        bounds = [shard_bounds(n, r, world_size) for r in range(world_size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:])), bounds
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True), (n, sizes)


def test_rank_device_takes_the_one_visible_gpu_and_refuses_a_missing_one(monkeypatch):
    """Launchers that give each task one visible GPU: LOCAL_RANK 3 with one GPU visible is cuda:0; with two
    visible, LOCAL_RANK 3 names a GPU that is not there and is refused with a message (no CUDA needed: the device
    count is what is decided on)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _rank_device("cuda", 3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _rank_device("cuda", 1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="LOCAL_RANK 3 needs GPU cuda:3, but this process sees 2 GPUs"):
        _rank_device("cuda", 3)


# ---------------------------------------------------------------------------------------------- one GPU per rank
def _gpus(monkeypatch, count, local_world, visible=None):
    """Simulate a node: ``count`` GPUs seen by this process, ``local_world`` ranks on it (as torchrun sets)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    monkeypatch.setenv("LOCAL_RANK", "1" if local_world > 1 else "0")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def test_two_nccl_ranks_on_one_visible_gpu_are_refused_in_one_line(monkeypatch, tmp_path):
    """torchrun --nproc_per_node=2 on a one-GPU machine: both ranks would take cuda:0, which NCCL refuses or hangs
    on (issue 22); it is refused before any process group or device is touched."""
    _gpus(monkeypatch, count=1, local_world=2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("the device was set before the refusal"))
    with pytest.raises(ValueError, match=r"^nccl needs one GPU per rank, but this node starts 2 ranks "
                                         r"\(LOCAL_WORLD_SIZE\) and they all see 1 GPU; start at most 1 per node "
                                         r"\(torchrun --nproc_per_node=1\), or use --device cpu \(gloo\)$"):
        init_distributed("cuda", init_method=f"file://{tmp_path}/rendezvous", rank=1, world_size=2)
    assert not dist.is_initialized()


@pytest.mark.parametrize("count,local_world,visible,refused", [
    (1, 1, None, False),  # one rank, one GPU
    (1, 2, "3", False),  # a launcher shows each rank its own GPU: cuda:0 is that rank's
    (2, 2, None, False),  # one GPU per rank
    (2, 3, None, True),  # three ranks, two GPUs
    (2, 3, "0,1", True),  # the GPUs shown are still shared
])
def test_nccl_ranks_need_a_gpu_each(monkeypatch, count, local_world, visible, refused):
    _gpus(monkeypatch, count, local_world, visible)
    if refused:
        with pytest.raises(ValueError, match="nccl needs one GPU per rank"):
            _check_one_gpu_per_rank()
    else:
        _check_one_gpu_per_rank()
