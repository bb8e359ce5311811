"""Are the network's outputs probabilities? Sigmoid outputs against a softmax output layer.

The lecture asks it of the movie's digit network: its output layer is not a softmax, so each activation lies
between 0 and 1 but they "do not add up to 1"; with a softmax, [.5 .8 .2 1 .4 .6 1 0 .2 .1] becomes
[.1 .13 .07 .16 .09 .11 .16 .06 .07 .06], a probability distribution. Part 1 computes exactly that with the
library's Softmax. Part 2 trains the same classifier (same sizes, same initial weights, same data and sample order)
two ways and compares them:

    sigmoid_squared_error   sigmoid outputs, squared error against one-hot targets (the movie's network)
    softmax_cross_entropy   softmax outputs, cross-entropy (the negative log-probability of the right class)

Besides loss and accuracy, both runs log the row sums of their outputs on the test split every epoch
(outputs/row_sum_mean, _min, _max): the softmax line stays at 1, the sigmoid lines wander.

    python -m experiments.softmax_outputs                      # 3 Gaussian blobs, [2, 16, 3], a few seconds
    python -m experiments.softmax_outputs --dataset digits --hidden 32 --epochs 30   # needs the datasets extra

Runs go to <logdir>/softmax_outputs/<run>/<output>_<loss>, so TensorBoard overlays the two.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from manual_backprop import MLP, Softmax
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.tblog import RunLogger, tensorboard_command
from manual_backprop.training import Trainer, write_json

EXPERIMENT = "softmax_outputs"
# The movie's ten output activations, as the lecture lists them, and the softmax it gives (rounded to 2 places).
LECTURE_OUTPUTS = [0.5, 0.8, 0.2, 1.0, 0.4, 0.6, 1.0, 0.0, 0.2, 0.1]
LECTURE_SOFTMAX = [0.10, 0.13, 0.07, 0.16, 0.09, 0.11, 0.16, 0.06, 0.07, 0.06]
VARIANTS = {"sigmoid_squared_error": ("sigmoid", "squared_error"),
            "softmax_cross_entropy": ("softmax", "cross_entropy")}


@dataclass
class Config:
    dataset: str = "blobs"  # a name from manual_backprop.datasets.DATASETS with 3 or more classes
    num_classes: int = 3  # for blobs only
    noise: Optional[float] = None  # for the generated datasets (None: the dataset's default)
    hidden: int = 16  # one hidden layer of this width: [n_features, hidden, n_classes]
    activation: str = "tanh"  # hidden activation, the same in both networks
    mode: str = "minibatch"  # learning mode of both runs
    batch_size: int = 16
    # Squared error on sigmoids has a small gradient (2 (x - y) f', f' <= 1/4); cross-entropy on a softmax has
    # (p - y). Each gets a learning rate that suits it; compare the curves, not the learning rates.
    lr_sigmoid: float = 1.0
    lr_softmax: float = 0.2
    epochs: int = 30
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (CUDA when present)
    dtype: str = "float32"
    seed: int = 0  # weights, data and sample order
    logdir: str = "runs"
    run: Optional[str] = None  # run folder name; None: <dataset>-seed<seed>
    quiet: bool = False  # no progress bars and no tables

    def lr(self, variant: str) -> float:
        return self.lr_sigmoid if variant.startswith("sigmoid") else self.lr_softmax


def parse_args(argv=None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m experiments.softmax_outputs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, help=f"one of {list(DATASETS)} with 3 or more classes")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="classes of blobs")
    p.add_argument("--noise", type=float, default=None)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--activation", default=d.activation)
    p.add_argument("--mode", default=d.mode, choices=["batch", "online", "minibatch"])
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr-sigmoid", type=float, default=d.lr_sigmoid)
    p.add_argument("--lr-softmax", type=float, default=d.lr_softmax)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--logdir", default=d.logdir)
    p.add_argument("--run", default=None)
    p.add_argument("--quiet", action="store_true")
    return Config(**vars(p.parse_args(argv)))


def lecture_example() -> dict:
    """The lecture's output vector, its sum, and its softmax (computed by the library's Softmax)."""
    outputs = torch.tensor([LECTURE_OUTPUTS], dtype=torch.float64)  # (1, 10)
    probabilities = Softmax().forward(outputs)  # (1, 10)
    return {"outputs": outputs[0].tolist(), "outputs_sum": outputs.sum().item(),
            "softmax": probabilities[0].tolist(), "softmax_sum": probabilities.sum().item()}


class RowSumLogger:
    """A RunLogger that adds the row sums of the network's outputs on x to every epoch's scalars, and keeps them.

    The Trainer calls ``log_epoch`` once an epoch (epoch 0 included); everything else goes to the RunLogger.
    """

    def __init__(self, logger: RunLogger, net: MLP, x: torch.Tensor):
        self.logger, self.net, self.x = logger, net, x
        self.sums = []  # (epoch, mean, min, max)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        sums = self.net(self.x).sum(dim=1)  # (N,): one row sum per sample
        mean, low, high = torch.stack([sums.mean(), sums.min(), sums.max()]).tolist()
        self.sums.append((epoch, mean, low, high))
        self.logger.log_epoch(epoch, {**metrics, "outputs/row_sum_mean": mean, "outputs/row_sum_min": low,
                                      "outputs/row_sum_max": high})

    def __getattr__(self, name):
        return getattr(self.logger, name)


def run(cfg: Config) -> dict:
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    options = {"num_classes": cfg.num_classes} if cfg.dataset == "blobs" else {}
    data = load_dataset(cfg.dataset, noise=cfg.noise, seed=cfg.seed, dtype=dtype, **options)
    if data.num_classes is None or data.num_classes < 3:
        raise ValueError(f"--dataset must have 3 or more classes (a softmax over 2 outputs is one sigmoid), but "
                         f"{cfg.dataset!r} has {data.num_classes}")
    for name in ("epochs", "hidden", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, but got {getattr(cfg, name)}")
    sizes = [data.n_features, cfg.hidden, data.num_classes]
    run_name = cfg.run or f"{cfg.dataset}-seed{cfg.seed}"
    run_dir = Path(cfg.logdir) / EXPERIMENT / run_name
    lecture = lecture_example()
    if not cfg.quiet:
        print(example_text(lecture))
        print(f"\n{data}\nlogging to {run_dir}")
    x_test = data.x_test.to(device=device, dtype=dtype)
    onehot_test = data.targets("test", "onehot").to(device=device, dtype=dtype)
    results = {}
    start = time.perf_counter()
    for variant, (output, loss) in VARIANTS.items():
        # Same seed, same sizes: both networks start from the same weights (the output activation draws none).
        net = MLP(sizes, activation=cfg.activation, output_activation=output, dtype=dtype, device=device,
                  seed=cfg.seed)
        write_json({**asdict(cfg), "run": run_name, "variant": variant, "sizes": sizes, "lr": cfg.lr(variant),
                    "device": str(device), "net": net.spec(), "data": repr(data)}, run_dir / variant / "config.json")
        with RunLogger(cfg.logdir, EXPERIMENT, run_name, variant) as base:
            logger = RowSumLogger(base, net, x_test)
            trainer = Trainer(net, data, mode=cfg.mode, lr=cfg.lr(variant), epochs=cfg.epochs,
                              batch_size=cfg.batch_size if cfg.mode == "minibatch" else None, loss_fn=loss,
                              seed=cfg.seed, logger=logger, progress=False if cfg.quiet else f"{variant:>22}")
            history = trainer.run()
        out = net(x_test)  # (N, C)
        _, mean, low, high = logger.sums[-1]
        results[variant] = {
            "history": history.to_dict(), "final": history.final, "lr": cfg.lr(variant),
            "test_squared_error": ((out - onehot_test) ** 2).sum(dim=1).mean().item(),
            "row_sum_mean": mean, "row_sum_min": low, "row_sum_max": high,
            "row_sum_max_deviation": (out.sum(dim=1) - 1).abs().max().item(),
            "row_sums_per_epoch": logger.sums,
        }
        if history.stop_reason == "diverged":
            print(f"{variant}: {history.message}", file=sys.stderr)
    write_json({"lecture_example": lecture, "runs": results}, run_dir / "results.json")
    if not cfg.quiet:
        print(table(results))
        print(f"\n{time.perf_counter() - start:.1f} s. Open the two runs overlaid (accuracy/test, outputs/row_sum_*, "
              f"decision_boundary):\n"
              f"  {tensorboard_command(run_dir)}")
    return {"lecture_example": lecture, "runs": results}


def example_text(lecture: dict) -> str:
    def row(values):
        return "[" + " ".join(f"{v:.2f}" for v in values) + "]"

    return (f"The lecture's example (the movie's ten output activations):\n"
            f"  outputs          {row(lecture['outputs'])}  sum {lecture['outputs_sum']:.2f}  (each in [0, 1], "
            f"not a distribution)\n"
            f"  softmax(outputs) {row(lecture['softmax'])}  sum {lecture['softmax_sum']:.2f}  (a probability "
            f"distribution)")


def table(results: dict) -> str:
    head = (f"{'output + loss':<22} {'lr':>5} {'epochs':>6} {'train acc':>9} {'test acc':>8} {'test e(w)':>9} "
            f"{'row sum: mean':>13} {'min':>6} {'max':>6} {'max |sum-1|':>11}")
    lines = [head, "-" * len(head)]
    for variant, r in results.items():
        f = r["final"]
        lines.append(f"{variant:<22} {r['lr']:>5g} {f['epoch']:>6} {f['train_accuracy']:>9.3f} "
                     f"{f['test_accuracy']:>8.3f} {r['test_squared_error']:>9.4f} {r['row_sum_mean']:>13.3f} "
                     f"{r['row_sum_min']:>6.3f} {r['row_sum_max']:>6.3f} {r['row_sum_max_deviation']:>11.1e}")
    lines.append("test e(w): mean over test samples of sum_j (out_j - onehot_j)^2, a yardstick both share. "
                 "row sum: of the outputs of each test sample.")
    return "\n".join(lines)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        run(cfg)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"softmax_outputs: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
