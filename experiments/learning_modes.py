"""The lecture's three modes of learning, compared on real data: batch, online (stochastic) and minibatch.

One initial network is copied and trained each way on the same data (by default scikit-learn's 8x8 handwritten
digits, which ship inside the package). Every mode logs to its own TensorBoard run folder under
<logdir>/learning_modes/<run>/<mode>, so TensorBoard overlays the three loss curves in one chart.

    python -m experiments.learning_modes                      # defaults: digits, 64-32-10 tanh/softmax, 20 epochs
    python -m experiments.learning_modes --dataset moons --sizes 2 16 2 --epochs 50
    python -m experiments.learning_modes --run my_run --resume   # continue a stopped run to the same numbers
    torchrun --standalone --nproc_per_node=2 -m experiments.learning_modes --distributed --modes batch minibatch

What it shows: batch learning makes one update per epoch, so per epoch it learns slowest but each update is one
big matrix product; online learning makes N noisy updates per epoch; minibatch sits between (the "minibatch
compromise"). Per-mode learning rates differ because the number and noise of the updates differ.

With --distributed (launched by torchrun) every batch is split over the processes, which reduce their gradient
sums with all_reduce, so each update equals the single-process one (manual_backprop/distributed.py). Online mode
is sequential and is refused. Only rank 0 writes logs, checkpoints, config.json, results.json and the table.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments.common import (DTYPES, Column, at_least, check_config, format_table, option, parse_config,
                                run_main)
from manual_backprop import distributed
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.network import MLP
from manual_backprop.tblog import RunLogger, tensorboard_command
from manual_backprop.training import MODES, Trainer, load_checkpoint, write_json

EXPERIMENT = "learning_modes"


@dataclass
class Config:
    dataset: str = option("digits", help=f"one of {list(DATASETS)}, or a .csv / .npz file")
    n_samples: Optional[int] = option(None, help="samples of a generated dataset (default: the dataset's own)")
    noise: Optional[float] = option(None, help="noise of a generated dataset (default: the dataset's own)")
    sizes: Optional[list[int]] = option(None, help="layer widths (default: n_features 32 n_classes)")
    activation: str = option("tanh", help="hidden activation f")
    output_activation: str = option("softmax", help="activation of the output layer")
    loss: str = option("cross_entropy", help="mean over samples, so lr means the same thing in every mode")
    lr_batch: float = option(2.0, help="one update per epoch: a large step is stable on the full-batch gradient")
    lr_online: float = option(0.02, help="N updates per epoch, each from one sample: small, noisy steps")
    lr_minibatch: float = option(0.3, help="learning rate of minibatch mode")
    batch_size: int = option(32, help="b, the samples per update of minibatch mode")
    epochs: int = option(20, help="passes over the training split", check=at_least(1))
    modes: list[str] = option(list(MODES), help="the learning modes to train, in this order", choices=MODES)
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float32", help="of the weights and the data", choices=DTYPES)
    seed: int = option(0, help="weights, data split and sample order")
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/learning_modes/<run>/<mode>")
    run: Optional[str] = option(None, flags=("--run", "--run-name"),
                                help="run folder name (default: <dataset>-seed<seed>); --run-name also passes "
                                     "through torchrun")
    resume: bool = option(False, help="continue the run's checkpoints instead of starting over")
    quiet: bool = option(False, help="no progress bars and no table")
    distributed: bool = option(False, help="split every batch over the processes torchrun starts (nccl on GPUs, "
                                           "gloo on CPUs; batch and minibatch modes only)")
    dist_timeout: float = option(300.0, help="seconds a rank waits for the others in a collective before the job "
                                             "fails")

    def lr(self, mode: str) -> float:
        return {"batch": self.lr_batch, "online": self.lr_online, "minibatch": self.lr_minibatch}[mode]


# What each mode's config.json holds beside the settings (for --config, which reads it back).
CONFIG_EXTRAS = ("mode", "lr", "net", "data", "world_size")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.learning_modes", description=__doc__,
                        extra_keys=CONFIG_EXTRAS)


def validate(cfg: Config, n_train: int) -> None:
    """Refuse bad settings before any training starts."""
    check_config(cfg)
    for mode in cfg.modes:
        lr = cfg.lr(mode)
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise ValueError(f"--lr-{mode} must be a finite number > 0, but got {lr}")
    if "minibatch" in cfg.modes and not 1 <= cfg.batch_size <= n_train:
        raise ValueError(f"--batch-size must be in [1, {n_train}] (the training split of {cfg.dataset!r} has "
                         f"{n_train} samples), but got {cfg.batch_size}")


def validate_distributed(cfg: Config) -> None:
    """Refuse what cannot run data-parallel, before any process group is joined."""
    if "online" in cfg.modes:
        raise ValueError(f"--distributed cannot run online mode: {distributed.ONLINE_IS_SEQUENTIAL}. "
                         f"Pass --modes batch minibatch (or one of them) with --distributed, and run --modes online "
                         f"without it")
    if not cfg.dist_timeout > 0 or cfg.dist_timeout == float("inf"):
        raise ValueError(f"--dist-timeout must be a finite number of seconds > 0, but got {cfg.dist_timeout}")


def run(cfg: Config) -> dict:
    """Train every mode from one initial network; returns {mode: History}. With cfg.distributed, on every rank."""
    if not cfg.distributed:
        return _run(cfg, None)
    validate_distributed(cfg)
    with distributed.init_distributed(cfg.device, timeout=cfg.dist_timeout) as info:
        return _run(cfg, info)


def _run(cfg: Config, info: Optional[distributed.DistInfo]) -> dict:
    main = info is None or info.is_main  # only rank 0 writes files and prints
    quiet = cfg.quiet or not main
    device = resolve_device(cfg.device) if info is None else info.device
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset(cfg.dataset, n_samples=cfg.n_samples, noise=cfg.noise, seed=cfg.seed, dtype=dtype)
    validate(cfg, data.x_train.shape[0])
    sizes = cfg.sizes or [data.n_features, 32, data.num_classes or data.y_train.shape[1]]
    initial = MLP(sizes, activation=cfg.activation, output_activation=cfg.output_activation, dtype=dtype,
                  device=device, seed=cfg.seed)
    run_name = cfg.run or f"{Path(cfg.dataset).stem}-seed{cfg.seed}"
    run_dir = Path(cfg.logdir) / EXPERIMENT / run_name
    if not quiet:
        ranks = "" if info is None else f"\n{info.world_size} processes ({info.backend}), each batch split over them"
        print(f"{data}\n{initial}{ranks}\nlogging to {run_dir}")
    histories = {}
    for mode in cfg.modes:
        net = initial.copy()  # every mode starts from the same weights
        mode_dir = run_dir / mode
        checkpoint = mode_dir / "checkpoint.pt"
        # Only rank 0 sees its disk: every rank takes rank 0's answer, so all raise (or resume) together.
        exists = distributed.from_rank0(checkpoint.exists() if main else None)
        if not cfg.resume and exists:
            raise ValueError(f"run {run_name!r} already has a checkpoint for {mode} in {mode_dir}; pass --resume to "
                             f"continue it, or --run NAME for a new run")
        if main:
            write_json({**asdict(cfg), "run": run_name, "mode": mode, "lr": cfg.lr(mode), "sizes": sizes,
                        "device": str(device), "net": initial.spec(), "data": repr(data),
                        "world_size": 1 if info is None else info.world_size}, mode_dir / "config.json")
        n_train = data.x_train.shape[0]
        updates_per_epoch = {"batch": 1, "online": n_train}.get(mode, -(-n_train // cfg.batch_size))
        with RunLogger(cfg.logdir, EXPERIMENT, run_name, mode, updates_per_epoch=updates_per_epoch,
                       enabled=main) as logger:
            trainer_class = Trainer if info is None else distributed.DistributedTrainer
            trainer = trainer_class(net, data, mode=mode, lr=cfg.lr(mode), epochs=cfg.epochs,
                                    batch_size=cfg.batch_size, loss_fn=cfg.loss, seed=cfg.seed,
                                    logger=logger if main else None, checkpoint_path=checkpoint if main else None,
                                    progress=False if quiet else f"{mode:>9}")
            if cfg.resume and exists:
                trainer.load_state_dict(distributed.from_rank0(load_checkpoint(checkpoint) if main else None))
            history = trainer.run()
        if history.stop_reason == "diverged" and main:
            print(f"{mode}: {history.message}", file=sys.stderr)
        histories[mode] = history
    if main:
        write_json({mode: h.to_dict() for mode, h in histories.items()}, run_dir / "results.json")
    if not quiet:
        print(table(histories, cfg))
        print(f"\nOpen the overlaid loss curves:\n  {tensorboard_command(run_dir)}")
    return histories


COLUMNS = [Column("mode", 10, "<"), Column("lr", 6, spec="g"), Column("batch", 5), Column("epochs", 6),
           Column("updates", 8), Column("train loss", 10, spec=".4f"), Column("test loss", 9, spec=".4f"),
           Column("train acc", 9, spec=".3f"), Column("test acc", 8, spec=".3f"), Column("seconds", 8, spec=".2f")]


def table(histories: dict, cfg: Config) -> str:
    rows = []
    for mode, h in histories.items():
        f = h.final
        batch = {"batch": "N", "online": "1"}.get(mode, str(cfg.batch_size))
        rows.append([mode, cfg.lr(mode), batch, f["epoch"], f["updates"], f["train_loss"], f["test_loss"],
                     f["train_accuracy"], f["test_accuracy"], f["seconds"]])
    return format_table(COLUMNS, rows)


def interrupted(cfg: Config) -> str:
    run_name = cfg.run or f"{Path(cfg.dataset).stem}-seed{cfg.seed}"
    return (f"\ninterrupted; the checkpoints are saved. Continue with:\n  python -m experiments.learning_modes "
            f"--run {run_name} --resume (and the same flags)")


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv, interrupted=interrupted)


if __name__ == "__main__":
    sys.exit(main())
