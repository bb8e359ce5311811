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

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from manual_backprop import distributed
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.network import MLP
from manual_backprop.tblog import RunLogger, tensorboard_command
from manual_backprop.training import MODES, Trainer, load_checkpoint, write_json

EXPERIMENT = "learning_modes"


@dataclass
class Config:
    dataset: str = "digits"  # a name from manual_backprop.datasets.DATASETS, or a .csv / .npz file
    n_samples: Optional[int] = None  # for the generated datasets (None: the dataset's default)
    noise: Optional[float] = None  # for the generated datasets (None: the dataset's default)
    sizes: Optional[list] = None  # layer widths; None: [n_features, 32, n_classes]
    activation: str = "tanh"  # hidden activation f
    output_activation: str = "softmax"
    loss: str = "cross_entropy"  # mean over samples, so lr means the same thing in every mode
    lr_batch: float = 2.0  # one update per epoch: a large step is stable on the full-batch gradient
    lr_online: float = 0.02  # N updates per epoch, each from one sample: small, noisy steps
    lr_minibatch: float = 0.3
    batch_size: int = 32  # b for minibatch mode
    epochs: int = 20
    modes: list = field(default_factory=lambda: list(MODES))
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (CUDA when present)
    dtype: str = "float32"
    seed: int = 0  # weights, data split and sample order
    logdir: str = "runs"
    run: Optional[str] = None  # run folder name; None: <dataset>-seed<seed>
    resume: bool = False  # continue the run's checkpoints instead of starting over
    quiet: bool = False  # no progress bars, no table
    distributed: bool = False  # data-parallel over the processes torchrun starts (batch and minibatch modes only)
    dist_timeout: float = 300.0  # seconds a rank waits for the others in a collective before the job fails

    def lr(self, mode: str) -> float:
        return {"batch": self.lr_batch, "online": self.lr_online, "minibatch": self.lr_minibatch}[mode]


def parse_args(argv=None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m experiments.learning_modes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, help=f"one of {list(DATASETS)}, or a .csv/.npz file")
    p.add_argument("--n-samples", type=int, default=None, help="samples for generated datasets")
    p.add_argument("--noise", type=float, default=None, help="noise for generated datasets")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="layer widths (default: n_in 32 n_classes)")
    p.add_argument("--activation", default=d.activation)
    p.add_argument("--output-activation", default=d.output_activation)
    p.add_argument("--loss", default=d.loss)
    p.add_argument("--lr-batch", type=float, default=d.lr_batch)
    p.add_argument("--lr-online", type=float, default=d.lr_online)
    p.add_argument("--lr-minibatch", type=float, default=d.lr_minibatch)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size b")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--modes", nargs="+", default=d.modes, choices=MODES)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--logdir", default=d.logdir)
    p.add_argument("--run", "--run-name", dest="run", default=None,
                   help="run name (default: <dataset>-seed<seed>); --run-name also passes through torchrun")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table")
    p.add_argument("--distributed", action="store_true",
                   help="split every batch over the processes started by torchrun (nccl on GPUs, gloo on CPUs)")
    p.add_argument("--dist-timeout", type=float, default=d.dist_timeout,
                   help="seconds a rank waits for the others before the job fails (default %(default)s)")
    args = p.parse_args(argv)
    return Config(**{k: v for k, v in vars(args).items()})


def validate(cfg: Config, n_train: int) -> None:
    """Refuse bad settings before any training starts."""
    for mode in cfg.modes:
        lr = cfg.lr(mode)
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise ValueError(f"--lr-{mode} must be a finite number > 0, but got {lr}")
    if "minibatch" in cfg.modes and not 1 <= cfg.batch_size <= n_train:
        raise ValueError(f"--batch-size must be in [1, {n_train}] (the training split of {cfg.dataset!r} has "
                         f"{n_train} samples), but got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, but got {cfg.epochs}")


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


def table(histories: dict, cfg: Config) -> str:
    head = (f"{'mode':<10} {'lr':>6} {'batch':>5} {'epochs':>6} {'updates':>8} {'train loss':>10} {'test loss':>9} "
            f"{'train acc':>9} {'test acc':>8} {'seconds':>8}")
    lines = [head, "-" * len(head)]
    for mode, h in histories.items():
        f = h.final
        acc = (f"{f['train_accuracy']:>9.3f} {f['test_accuracy']:>8.3f}" if f["train_accuracy"] is not None
               else f"{'-':>9} {'-':>8}")
        batch = {"batch": "N", "online": "1"}.get(mode, str(cfg.batch_size))
        lines.append(f"{mode:<10} {cfg.lr(mode):>6g} {batch:>5} {f['epoch']:>6} {f['updates']:>8} "
                     f"{f['train_loss']:>10.4f} {f['test_loss']:>9.4f} {acc} {f['seconds']:>8.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"learning_modes: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run_name = cfg.run or f"{Path(cfg.dataset).stem}-seed{cfg.seed}"
        print(f"\ninterrupted; the checkpoints are saved. Continue with:\n  python -m experiments.learning_modes "
              f"--run {run_name} --resume (and the same flags)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
