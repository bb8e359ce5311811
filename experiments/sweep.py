"""How often do the learning modes solve XOR, and how fast? A grid of learning rates x seeds, trained as populations.

For each mode (batch, online, minibatch) one Population holds every (learning rate, seed) pair of the grid as a
member: weight seed s and sample-order seed s, exactly the run ``Trainer(MLP(..., seed=s), mode, lr, seed=s)``
would make alone. All members train in lockstep (manual_backprop.population); a member that reaches the target
loss is frozen there, one that diverges is frozen and counted, the others go on.

    python -m experiments.sweep                                   # XOR 2-2-1 sigmoid, 6 lrs x 32 seeds, 3 modes
    python -m experiments.sweep --lrs 0.5 2 8 --seeds 100 --epochs 3000
    python -m experiments.sweep --dataset moons --sizes 2 8 1 --target-loss 0.05

Printed and logged per mode and learning rate: the success rate (members that reached the target loss) and the
median epochs to success over the members that succeeded. The default target 0.04 on the mean squared error
guarantees that all four XOR points are classified right: the loss is (1/4) sum_i e_i^2, so loss <= 0.04 gives
every e_i^2 <= 0.16, |e_i| <= 0.4 < 0.5. TensorBoard gets one aggregate run per mode and learning rate
(<logdir>/sweep/<run>/<mode>_lr<lr>): loss quantiles over the seeds and the fraction that has succeeded, by epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.population import ENGINES, Population, PopulationLogger, PopulationTrainer
from manual_backprop.tblog import tensorboard_command
from manual_backprop.training import MODES, write_json

EXPERIMENT = "sweep"


@dataclass
class Config:
    dataset: str = "xor"  # a name from manual_backprop.datasets.DATASETS, or a .csv / .npz file
    sizes: Optional[list] = None  # layer widths; None: [2, 2, 1] for xor, else [n_features, 8, n_out]
    activation: str = "sigmoid"  # hidden activation f
    output_activation: str = "sigmoid"
    loss: str = "squared_error"  # mean over samples: lr means the same in every mode
    lrs: list = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0, 8.0])  # the learning-rate axis
    seeds: int = 32  # seeds 0 .. seeds-1 (weights and sample order) for every learning rate
    modes: list = field(default_factory=lambda: list(MODES))
    batch_size: int = 2  # b for minibatch mode
    epochs: int = 1000  # the epoch limit; a member that has not reached the target by then failed
    target_loss: float = 0.04  # success: the training loss at the end of an epoch is at most this
    device: str = "cpu"  # cpu, cuda, cuda:N, or auto
    dtype: str = "float64"
    engine: str = "eager"  # eager, compiled (torch.compile) or cuda_graph
    logdir: str = "runs"
    run: Optional[str] = None  # run folder name; None: <dataset>-<time stamp>
    quiet: bool = False  # no progress bars


def parse_args(argv=None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, help=f"one of {list(DATASETS)}, or a .csv/.npz file")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="layer widths (default: 2 2 1 for xor)")
    p.add_argument("--activation", default=d.activation)
    p.add_argument("--output-activation", default=d.output_activation)
    p.add_argument("--loss", default=d.loss)
    p.add_argument("--lrs", type=float, nargs="+", default=d.lrs, help="learning rates of the grid")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per learning rate (0 .. N-1)")
    p.add_argument("--modes", nargs="+", default=d.modes, choices=MODES)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size b")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--target-loss", type=float, default=d.target_loss)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--engine", default=d.engine, choices=ENGINES)
    p.add_argument("--logdir", default=d.logdir)
    p.add_argument("--run", default=None, help="run name (default: <dataset>-<time stamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    cfg = Config(**vars(args))
    if cfg.sizes is None and cfg.dataset == "xor":
        cfg.sizes = [2, 2, 1]
    return cfg


def validate(cfg: Config) -> None:
    if cfg.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, but got {cfg.seeds}")
    if not cfg.lrs or any(not (lr > 0 and lr != float("inf")) for lr in cfg.lrs):
        raise ValueError(f"--lrs must be finite numbers > 0, but got {cfg.lrs}")
    if len(set(cfg.lrs)) != len(cfg.lrs):
        raise ValueError(f"--lrs must not repeat a learning rate, but got {cfg.lrs}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, but got {cfg.epochs}")


def grid(cfg: Config):
    """Member m = a * seeds + s has learning rate lrs[a] and seed s: returns (lrs, seeds, {lr name: members})."""
    lrs, seeds, groups = [], [], {}
    for a, lr in enumerate(cfg.lrs):
        groups[f"lr{lr:g}"] = list(range(a * cfg.seeds, (a + 1) * cfg.seeds))
        lrs += [lr] * cfg.seeds
        seeds += list(range(cfg.seeds))
    return lrs, seeds, groups


def run(cfg: Config) -> dict:
    """Train one population per mode; returns the results written to results.json."""
    validate(cfg)
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset(cfg.dataset, dtype=dtype)
    n_out = 1 if data.num_classes == 2 and cfg.output_activation == "sigmoid" else (data.num_classes or
                                                                                     data.y_train.shape[1])
    sizes = cfg.sizes or [data.n_features, 8, n_out]
    lrs, seeds, groups = grid(cfg)
    run_name = cfg.run or f"{Path(cfg.dataset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.logdir) / EXPERIMENT / run_name
    if not cfg.quiet:
        print(f"{data}\n{len(lrs)} members per mode: lrs {cfg.lrs} x seeds 0..{cfg.seeds - 1}, sizes {sizes}, "
              f"{cfg.activation}/{cfg.output_activation}, {cfg.loss}, target loss {cfg.target_loss:g}\n"
              f"logging to {run_dir}")
    rows, histories = [], {}
    for mode in cfg.modes:
        pop = Population(sizes, activation=cfg.activation, output_activation=cfg.output_activation, seeds=seeds,
                         dtype=dtype, device=device)
        logger = PopulationLogger(cfg.logdir, EXPERIMENT, run_name, groups=groups, member_runs=0,
                                  log_every=max(1, cfg.epochs // 200))  # about 200 points a curve
        start = time.perf_counter()
        trainer = PopulationTrainer(pop, data, mode=mode, lr=lrs, epochs=cfg.epochs, loss_fn=cfg.loss,
                                    batch_size=cfg.batch_size if mode == "minibatch" else None,
                                    target_loss=cfg.target_loss, order_seeds=seeds, logger=logger,
                                    engine=cfg.engine, progress=False if cfg.quiet else f"{mode:>9}")
        history = trainer.run()
        seconds = time.perf_counter() - start
        histories[mode] = history
        for name, members in groups.items():
            rows.append({"mode": mode, "lr": lrs[members[0]], "runs": len(members),
                         "successes": sum(history.epochs_to_target[i] is not None for i in members),
                         "success_rate": history.success_rate(members),
                         "median_epochs": history.median_epochs_to_target(members),
                         "diverged": sum(history.stop_reason[i] == "diverged" for i in members),
                         "seconds_for_mode": seconds})
    members = {mode: [{"lr": h.lr[i], "seed": h.seeds[i], "stop_reason": h.stop_reason[i],
                       "epochs_to_target": h.epochs_to_target[i], "diverged_update": h.diverged_update[i],
                       "final_train_loss": h.train_loss[-1][i].item()} for i in range(h.size)]
               for mode, h in histories.items()}
    results = {"config": {**asdict(cfg), "sizes": sizes}, "rows": rows, "members": members}
    write_json(results, run_dir / "results.json")
    print(table(rows, cfg))
    print(f"\nOpen the curves (loss quantiles and success fraction per mode and learning rate):\n"
          f"  {tensorboard_command(run_dir)}")
    return results


def table(rows: list, cfg: Config) -> str:
    head = f"{'mode':<10} {'lr':>6} {'success':>9} {'rate':>6} {'median epochs':>13} {'diverged':>8}"
    lines = [f"success: train loss <= {cfg.target_loss:g} within {cfg.epochs} epochs, over {cfg.seeds} seeds",
             head, "-" * len(head)]
    for r in rows:
        median = f"{r['median_epochs']:.1f}" if r["median_epochs"] is not None else "-"
        lines.append(f"{r['mode']:<10} {r['lr']:>6g} {r['successes']:>4}/{r['runs']:<4} {r['success_rate']:>6.2f} "
                     f"{median:>13} {r['diverged']:>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
