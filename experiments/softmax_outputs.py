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
    python -m experiments.softmax_outputs --plots plots/softmax  # also PNG and SVG figures and report.html

Runs go to <logdir>/softmax_outputs/<run>/<output>_<loss>, so TensorBoard overlays the two.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from experiments import dashboards
from experiments.plotting import finish_run, require_matplotlib
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, Column, TrainerFlags, apply_threads, at_least,
                                check_config, check_trainer_flags, format_table, option, parse_config, progress_bars,
                                run_main, seed_range, trainer_settings)
from experiments.run_folder import check_run_name
from experiments.session import RunSession, start_run
from manual_backprop import MLP, Softmax
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.tblog import RunLogger
from manual_backprop.training import MODES, Trainer
from manual_backprop.checkpoint import write_json

EXPERIMENT = "softmax_outputs"
# The movie's ten output activations, as the lecture lists them, and the softmax it gives (rounded to 2 places).
LECTURE_OUTPUTS = [0.5, 0.8, 0.2, 1.0, 0.4, 0.6, 1.0, 0.0, 0.2, 0.1]
LECTURE_SOFTMAX = [0.10, 0.13, 0.07, 0.16, 0.09, 0.11, 0.16, 0.06, 0.07, 0.06]
VARIANTS = {"sigmoid_squared_error": ("sigmoid", "squared_error"),
            "softmax_cross_entropy": ("softmax", "cross_entropy")}


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --target-loss, --threads, as every script has
    dataset: str = option("blobs", help=f"one of {list(DATASETS)} with 3 or more classes")
    num_classes: int = option(3, help="classes of blobs (other datasets have their own)")
    noise: Optional[float] = option(None, help="noise of a generated dataset (default: the dataset's own)")
    hidden: int = option(16, help="one hidden layer of this width: [n_features, hidden, n_classes]",
                         check=at_least(1))
    activation: str = option("tanh", help="hidden activation, the same in both networks")
    mode: str = option("minibatch", help="learning mode of both runs", choices=MODES)
    batch_size: int = option(16, help="b, the samples per update in minibatch mode", check=at_least(1))
    # Squared error on sigmoids has a small gradient (2 (x - y) f', f' <= 1/4); cross-entropy on a softmax has
    # (p - y). Each gets a learning rate that suits it; compare the curves, not the learning rates.
    lr_sigmoid: float = option(1.0, help="learning rate of sigmoid outputs + squared error (a small gradient: "
                                         "2 (x - y) f', f' <= 1/4)")
    lr_softmax: float = option(0.2, help="learning rate of softmax outputs + cross-entropy (gradient p - y)")
    epochs: int = option(30, help="passes over the training split", check=at_least(1))
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float32", help="of the weights and the data", choices=DTYPES)
    seed: int = option(0, help="weights, data and sample order", check=seed_range)
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/softmax_outputs/<run>/<output>_<loss>")
    run: Optional[str] = option(None, help="run folder name (default: <dataset>-seed<seed>)")
    resume: bool = option(False, help=RESUME_HELP)
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")

    def lr(self, variant: str) -> float:
        return self.lr_sigmoid if variant.startswith("sigmoid") else self.lr_softmax


# What each variant's config.json holds beside the settings (for --config, which reads it back).
CONFIG_EXTRAS = ("variant", "sizes", "lr", "net", "data")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.softmax_outputs", description=__doc__,
                        extra_keys=CONFIG_EXTRAS)


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
    check_run_name(cfg.run)  # before anything is read or written
    device = resolve_device(cfg.device)
    dtype = getattr(torch, cfg.dtype)
    options = {"num_classes": cfg.num_classes} if cfg.dataset == "blobs" else {}
    data = load_dataset(cfg.dataset, noise=cfg.noise, seed=cfg.seed, dtype=dtype, **options)
    if data.num_classes is None or data.num_classes < 3:
        raise ValueError(f"--dataset must have 3 or more classes (a softmax over 2 outputs is one sigmoid), but "
                         f"{cfg.dataset!r} has {data.num_classes}")
    check_config(cfg)
    check_trainer_flags(cfg, "softmax_outputs", modes=[cfg.mode])
    if cfg.plots:
        require_matplotlib(cfg.plots)
    apply_threads(cfg)
    with start_run(EXPERIMENT, cfg, f"{cfg.dataset}-seed{cfg.seed}") as session:
        return _run(cfg, session, device, dtype, data)


def _run(cfg: Config, session: RunSession, device, dtype, data) -> dict:
    sizes = [data.n_features, cfg.hidden, data.num_classes]
    run_name, run_dir = session.name, session.path
    lecture = lecture_example()
    if not cfg.quiet:
        print(example_text(lecture))
        print(f"\n{data}" + ("" if session.complete else f"\nlogging to {run_dir}"))
    x_test = data.x_test.to(device=device, dtype=dtype)
    onehot_test = data.targets("test", "onehot").to(device=device, dtype=dtype)
    dashboard = dashboards.softmax_outputs(VARIANTS, [cfg.lr(v) for v in VARIANTS], settings=asdict(cfg))
    results = {}
    start = time.perf_counter()
    for variant, (output, loss) in VARIANTS.items():
        if session.is_done(variant):
            results[variant] = session.result(variant)
            continue
        session.begin(variant, variant)
        # Same seed, same sizes: both networks start from the same weights (the output activation draws none).
        net = MLP(sizes, activation=cfg.activation, output_activation=output, init=cfg.init, dtype=dtype,
                  device=device, seed=cfg.seed)
        write_json({**asdict(cfg), "run": run_name, "variant": variant, "sizes": sizes, "lr": cfg.lr(variant),
                    "device": str(device), "net": net.spec(), "data": repr(data)}, run_dir / variant / "config.json")
        with RunLogger(cfg.logdir, EXPERIMENT, run_name, variant, dashboard=dashboard) as base:
            logger = RowSumLogger(base, net, x_test)
            trainer = Trainer(net, data, mode=cfg.mode, epochs=cfg.epochs,
                              **trainer_settings(cfg, net, cfg.lr(variant)),
                              batch_size=cfg.batch_size if cfg.mode == "minibatch" else None, loss_fn=loss,
                              seed=cfg.seed, logger=logger,
                              progress=f"{variant:>22}" if progress_bars(cfg.quiet) else False)
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
        session.finish(variant, results[variant])
        if history.stop_reason == "diverged":
            print(f"{variant}: {history.message}", file=sys.stderr)
    if not session.complete:  # a resume of a run that had ended whole writes nothing
        write_json({"lecture_example": lecture, "runs": results}, run_dir / "results.json")
        session.mark_complete()
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=example_text(lecture) + "\n\n" + table(results),
               config=asdict(cfg), dashboard=dashboard, show=not cfg.quiet, printed=table(results),
               seconds=None if session.complete else time.perf_counter() - start)
    return {"lecture_example": lecture, "runs": results}


def example_text(lecture: dict) -> str:
    def row(values):
        return "[" + " ".join(f"{v:.2f}" for v in values) + "]"

    return (f"The lecture's example (the movie's ten output activations):\n"
            f"  outputs          {row(lecture['outputs'])}  sum {lecture['outputs_sum']:.2f}  (each in [0, 1], "
            f"not a distribution)\n"
            f"  softmax(outputs) {row(lecture['softmax'])}  sum {lecture['softmax_sum']:.2f}  (a probability "
            f"distribution)")


COLUMNS = [Column("output + loss", 22, "<"), Column("lr", 5, spec="g"), Column("epochs", 6),
           Column("train acc", 9, spec=".3f"), Column("test acc", 8, spec=".3f"), Column("test e(w)", 9, spec=".4f"),
           Column("row sum: mean", 13, spec=".3f"), Column("min", 6, spec=".3f"), Column("max", 6, spec=".3f"),
           Column("max |sum-1|", 11, spec=".1e")]


def table(results: dict) -> str:
    rows = [[variant, r["lr"], r["final"]["epoch"], r["final"]["train_accuracy"], r["final"]["test_accuracy"],
             r["test_squared_error"], r["row_sum_mean"], r["row_sum_min"], r["row_sum_max"],
             r["row_sum_max_deviation"]] for variant, r in results.items()]
    return (format_table(COLUMNS, rows) + "\ntest e(w): mean over test samples of sum_j (out_j - onehot_j)^2, a "
            "yardstick both share. row sum: of the outputs of each test sample.")


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
