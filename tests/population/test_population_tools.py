"""The population's tools: its TensorBoard runs (aggregates per group, a run per member with its hparams, only
aggregates for a large population), the sweep script, whose statistics are those of single Trainer runs, and the
population benchmark's quick run."""

import json
import statistics

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationLogger, PopulationTrainer
from manual_backprop.tblog import load_run, read_scalars
from manual_backprop.tblog.dashboard import whole_text
from manual_backprop.training import Trainer

F64 = torch.float64
SINGLE = 1e-12  # population vs the single manual network (test_population.py)


# ---------------------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_aggregates_member_runs_and_hparams(tmp_path):
    from tensorboard.plugins.hparams import metadata

    data = load_dataset("xor", dtype=F64)
    K = 4
    pop = Population([2, 3, 1], seeds=list(range(K)), dtype=F64)
    logger = PopulationLogger(tmp_path, "pop", "r", groups={"lr1": [0, 1], "lr8": [2, 3]}, member_runs=4)
    history = PopulationTrainer(pop, data, mode="online", lr=[1.0, 1.0, 8.0, 8.0], epochs=40, target_loss=0.05,
                                logger=logger).run()
    run_dir = tmp_path / "pop" / "r"
    assert sorted(p.name for p in run_dir.iterdir()) == ["online_lr1", "online_lr8", "online_m0", "online_m1",
                                                         "online_m2", "online_m3"]
    agg = read_scalars(run_dir / "online_lr8")
    for tag in ("loss/train/mean", "loss/train/median", "loss/train/q10", "loss/train/q90", "loss/test/median",
                "accuracy/train/mean", "success/fraction", "diverged/fraction"):
        assert len(agg[tag]) == len(history.epoch), tag
    last = history.epoch[-1]
    rows = history.table("train_loss")[:, 2:]  # (epochs + 1, 2): the lr8 members
    for step, value in agg["loss/train/median"]:
        assert value == pytest.approx(rows[step].quantile(0.5).item(), rel=1e-6)
    reached = [history.epochs_to_target[i] for i in (2, 3)]
    for step, value in agg["success/fraction"]:
        assert value == sum(e is not None and e <= step for e in reached) / 2
    assert agg["success/fraction"][-1] == (last, history.success_rate([2, 3]))
    for i in range(K):  # a member's curve ends where its own run ended
        curve = read_scalars(run_dir / f"online_m{i}")["loss/train"]
        assert [s for s, _ in curve] == history.member(i).epoch
        assert [v for _, v in curve] == pytest.approx(history.member(i).train_loss, rel=1e-6)
        content = load_run(run_dir / f"online_m{i}").PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert (hp["lr"], hp["seed"], hp["order_seed"], hp["mode"], hp["member"]) == \
            (history.lr[i], whole_text(i), whole_text(i), "online", whole_text(i))  # shows "4", sorts as 4


def test_large_population_writes_only_aggregates(tmp_path):
    data = load_dataset("xor", dtype=F64)
    pop = Population([2, 2, 1], seeds=list(range(20)), dtype=F64)
    logger = PopulationLogger(tmp_path, "pop", "r", member_runs=16)
    PopulationTrainer(pop, data, mode="batch", lr=1.0, epochs=3, logger=logger).run()
    assert [p.name for p in (tmp_path / "pop" / "r").iterdir()] == ["batch"]


# ---------------------------------------------------------------------------------------------------- scripts
def test_sweep_statistics_are_those_of_single_runs(tmp_path, capsys):
    from experiments import sweep

    argv = ["--lrs", "1", "6", "--seeds", "3", "--epochs", "60", "--modes", "online", "minibatch",
            "--logdir", str(tmp_path), "--run", "t"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "success" in out and "tensorboard" in out
    results = json.loads((tmp_path / "sweep" / "t" / "results.json").read_text())
    cfg = sweep.parse_args(argv)
    data = load_dataset(cfg.dataset, dtype=F64)
    for row in results["rows"]:
        reached = []
        for seed in range(3):
            net = MLP(cfg.sizes, activation=cfg.activation, output_activation=cfg.output_activation, seed=seed,
                      dtype=F64)
            h = Trainer(net, data, mode=row["mode"], lr=row["lr"], epochs=cfg.epochs, loss_fn=cfg.loss,
                        batch_size=cfg.batch_size if row["mode"] == "minibatch" else None,
                        target_loss=cfg.target_loss, seed=seed).run()
            reached.append(h.epoch[-1] if h.stop_reason == "target_loss" else None)
        hits = [e for e in reached if e is not None]
        assert row["success_rate"] == len(hits) / 3, row
        assert row["median_epochs"] == (statistics.median(hits) if hits else None), row
    assert (tmp_path / "sweep" / "t" / "online_lr1").is_dir()


def test_bench_population_quick_writes_figures(tmp_path, capsys):
    from benchmarks import population as bench_population

    out = tmp_path / "bench.json"
    assert bench_population.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for case in result["cases"]:
        assert case["ns_per_member_update"] > 0
    assert result["sequential"]["ns_per_update"] > 0
    assert result["check"]["max_norm_relative_error"] <= SINGLE  # the timed members equal the timed single runs
    assert "ns per member-update" in capsys.readouterr().out
