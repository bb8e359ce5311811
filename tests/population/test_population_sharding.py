"""A population sharded over 2 and 3 gloo processes (file rendezvous, 127.0.0.1 only) records what one process
records: the same stops, the same epochs to target, the same figures (float64, to summation-order rounding)."""

import os
import sys

import pytest
import torch

from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.population.sharding import gather_population_history, member_shard, merge_histories

pytestmark = pytest.mark.distributed
K, LRS = 7, [0.05, 3.0, 0.1, 10.0, 0.2, 0.3, 0.15]  # lr 3 and 10 diverge; others reach the target at their epochs


def _train(seeds, lrs):
    pop = Population([2, 3, 1], activation="tanh", output_activation="identity", seeds=seeds, dtype=torch.float64)
    return PopulationTrainer(pop, load_dataset("xor", dtype=torch.float64), mode="online", lr=lrs, epochs=150,
                             target_loss=0.05).run()


def _worker(rank, world, folder):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    start, stop = member_shard(K, rank, world)
    whole = gather_population_history(_train(list(range(start, stop)), LRS[start:stop]))
    if rank == 0:
        torch.save(whole.to_dict(), f"{folder}/merged.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_population_equals_one_process(world, tmp_path):
    torch.multiprocessing.start_processes(_worker, args=(world, str(tmp_path)), nprocs=world, join=True,
                                          start_method="spawn")
    got = torch.load(tmp_path / "merged.pt", weights_only=False)
    want = _train(list(range(K)), LRS).to_dict()
    assert {"diverged", "target_loss"} <= set(want["stop_reason"]), "the case must cover stopped members"
    for key in ("stop_reason", "epochs_to_target", "last_epoch", "diverged_update", "message", "epoch", "updates",
                "seeds", "lr"):
        assert got[key] == want[key], key
    for key in ("train_loss", "test_loss", "train_accuracy"):
        a, b = torch.tensor(got[key]), torch.tensor(want[key])
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=lambda m: f"{key}: {m}")


def test_merging_pads_a_rank_that_stopped_early_with_its_frozen_rows():
    early = _train([1], [10.0])  # diverges in the first epochs
    late = _train([0, 2], [0.05, 0.1])
    assert len(early.epoch) < len(late.epoch)
    merged = merge_histories([early, late])
    assert merged.epoch == late.epoch and merged.size == 3
    assert torch.equal(merged.train_loss[-1][:1], early.train_loss[-1][:1])
    assert member_shard(7, 0, 3) == (0, 3) and member_shard(7, 2, 3) == (5, 7)
    with pytest.raises(ValueError, match="K=2 members cannot be sharded over 3 ranks"):
        member_shard(2, 0, 3)


def test_sweep_under_torchrun_equals_the_single_process_sweep(tmp_path):
    """`torchrun ... -m experiments.sweep --distributed`: rank 0 writes the single-process sweep's results (the same
    successes, stops and epochs to target, exactly; final losses to rounding, 1e-10 relative after 120 epochs: with K
    members split into blocks the batched kernels round some entries differently, and a whole run amplifies that)
    and nobody else writes."""
    import json
    import subprocess

    args = ["--seeds", "3", "--epochs", "120", "--lrs", "2", "8", "--quiet", "--logdir", str(tmp_path)]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "experiments.sweep", "--distributed", "--run-name", "dist", *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert dist.returncode == 0, dist.stdout[-2000:] + dist.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "experiments.sweep", "--run", "single", *args],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    a = json.loads((tmp_path / "sweep" / "dist" / "results.json").read_text())
    b = json.loads((tmp_path / "sweep" / "single" / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds_for_mode"} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"])
    for mode in b["members"]:
        for x, y in zip(a["members"][mode], b["members"][mode]):
            assert {k: v for k, v in x.items() if k != "final_train_loss"} == \
                {k: v for k, v in y.items() if k != "final_train_loss"}
            assert abs(x["final_train_loss"] - y["final_train_loss"]) <= 1e-10 * abs(y["final_train_loss"])
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["dist", "single"]
