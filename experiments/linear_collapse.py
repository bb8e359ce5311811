"""A linear network is a single layer in disguise: the collapse, shown numerically, and what it costs on XOR.

"If the network contains only linear neurons, it practically reduces to a single layer ... all those matrix
multiplications would end up as a single resulting matrix." With identity activations,

    x^L = W_L (... (W_2 (W_1 x + b_1) + b_2) ...) + b_L = W x + b,   W = W_L ... W_2 W_1,
                                                                      b = W_L (... (W_2 b_1 + b_2) ...) + b_L

Part 1 builds a random linear MLP, collapses it (``single_layer.collapse_linear_mlp``) and prints the largest
difference between the network and its one matrix over many inputs: float64 rounding, about 1e-16.
Part 2 trains the same architecture on XOR by backprop twice from the same seeds: with identity activations it is
a single linear unit, so its squared error e(w) can never go below 0.25 (the least-squares minimum over all
lines) and no seed classifies all four points; with a non-linear hidden activation (tanh) every seed solves XOR.

    python -m experiments.linear_collapse                      # [2, 4, 4, 1], 10 seeds, a few seconds
    python -m experiments.linear_collapse --hidden 8 8 --activation relu --seeds 20
    python -m experiments.linear_collapse --plots plots/linear   # also PNG and SVG figures and report.html

Runs go to <logdir>/linear_collapse/<run>/<activation>-seed<k> (loss/train, accuracy/train, weight histograms and
decision-boundary images, written by the Trainer), plus a "summary" folder with the printed report as text.

On the accuracy of a linear network: its outputs converge to 0.5 on every point, and a plain "output >= 0.5" test
then decides each point by rounding (a few units in the last place), which can look like 100% accuracy. This
script counts a point as right only when its output clears 0.5 by more than sqrt(machine epsilon) (1.5e-8 in
float64), and reports the worst point's margin: for any affine map the four signed margins of XOR sum to exactly 0,
so the worst one is never positive, up to rounding. (The Trainer's accuracy/train curve in TensorBoard uses the
plain test, so for the linear net it can show rounding's verdict.)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from experiments import dashboards
from experiments.plotting import finish_run, require_matplotlib
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, TRAINER_GROUP, Column, TrainerFlags, apply_threads,
                                at_least, check_config, check_trainer_flags, finite_positive, format_table, option,
                                parse_config, progress_bars, run_main, trainer_settings)
from experiments.session import RunSession, start_run
from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.single_layer import collapse_linear_mlp
from manual_backprop.tblog import RunLogger
from manual_backprop.training import train
from manual_backprop.checkpoint import write_json

EXPERIMENT = "linear_collapse"


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --threads, as every script has
    hidden: list[int] = option([4, 4], help="hidden widths; the net is [2, *hidden, 1]")
    activation: str = option("tanh", help="the non-linear hidden activation compared with identity")
    seeds: int = option(10, help="seeds 0 .. N-1, the same initial weights for both activations", check=at_least(1))
    lr: float = option(0.1, help="batch gradient descent on the mean squared error, the same for both networks",
                       check=finite_positive)
    epochs: int = option(500, help="the linear net runs them all: it never reaches the target loss",
                         check=at_least(1))
    # e(w) <= 0.06 < 1/16 gives every |y - out| < 1/2: every XOR point is on its side of 0.5.
    target_loss: Optional[float] = option(0.06, help="stop once e(w) <= this; below 1/16 every XOR point is on its "
                                                     "side of 0.5", check=at_least(0), group=TRAINER_GROUP)
    demo_inputs: int = option(1000, help="random inputs (plus the four XOR points) on which the collapse is checked",
                              check=at_least(1))
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float64", help="float64 shows the collapse to ~1e-16; float32 to ~1e-7", choices=DTYPES)
    log_seeds: int = option(1, help="seeds (from 0) whose runs are written to TensorBoard; 0 writes none",
                            check=at_least(0))
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/linear_collapse/<run>")
    run: Optional[str] = option(None, help="run folder name (default: <sizes>-seeds<N>)")
    resume: bool = option(False, help=RESUME_HELP)
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")


# What config.json holds beside the settings (for --config, which reads it back).
CONFIG_EXTRAS = ("sizes",)


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.linear_collapse", description=__doc__,
                        extra_keys=CONFIG_EXTRAS)


def validate(cfg: Config) -> None:
    """Refuse bad settings before any training starts."""
    check_config(cfg)
    check_trainer_flags(cfg, "linear_collapse", modes=["batch"])
    if any(h < 1 for h in cfg.hidden):
        raise ValueError(f"--hidden widths must be >= 1, but got {cfg.hidden}")
    if cfg.activation.strip().lower() in ("identity", "linear"):
        raise ValueError("--activation must be non-linear (sigmoid, tanh, relu, ...), but got "
                         f"{cfg.activation!r}; the identity network is always trained alongside it")


def collapse_report(net: MLP, x: torch.Tensor) -> dict:
    """The one matrix of a linear net and how far the net's outputs are from it on x."""
    unit = collapse_linear_mlp(net)
    out = net(x)  # (N, n_L)
    diff = (out - unit(x)).abs().max().item()
    return {"weight": unit.weight.tolist(), "bias": unit.bias.tolist(), "max_abs_diff": diff,
            "max_abs_output": out.abs().max().item(), "eps": torch.finfo(net.dtype).eps}


def margins(net: MLP, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Signed distance of each output from 0.5, positive on the correct side: (2y - 1)(out - 0.5), shape (N,)."""
    out = net(x)[:, 0]
    return (2.0 * labels.to(out.dtype) - 1.0) * (out - 0.5)


def run(cfg: Config) -> dict:
    validate(cfg)
    if cfg.plots:
        require_matplotlib(cfg.plots)
    sizes = [2, *cfg.hidden, 1]
    device = resolve_device(cfg.device)
    apply_threads(cfg)
    default = f"{'-'.join(map(str, sizes))}-seeds{cfg.seeds}"
    with start_run(EXPERIMENT, cfg, default, extra={"sizes": sizes}) as session:
        return _run(cfg, session, device)


def _run(cfg: Config, session: RunSession, device) -> dict:
    dtype = getattr(torch, cfg.dtype)
    sizes = [2, *cfg.hidden, 1]
    tie = torch.finfo(dtype).eps ** 0.5  # a margin below this is decided by rounding, not by the weights
    run_name, run_dir = session.name, session.path
    start = time.perf_counter()

    # Part 1: the collapse of a random linear net, with non-zero biases so the composed bias is exercised.
    demo = MLP(sizes, activation="identity", output_activation="identity", init="normal", init_scale=0.7,
               bias_init="normal", dtype=dtype, device=device, seed=0)
    g = torch.Generator().manual_seed(0)
    data = load_dataset("xor", dtype=dtype)
    x_demo = torch.cat([data.x_train, torch.randn(cfg.demo_inputs, 2, generator=g, dtype=torch.float64).to(dtype)])
    collapse = collapse_report(demo, x_demo.to(device))

    # Part 2: the same architecture trained on XOR, linear and non-linear, from the same seeds.
    x, labels = data.x_train.to(device), data.y_train.to(device)
    activations = ["identity", cfg.activation]
    dashboard = dashboards.linear_collapse(activations, min(cfg.log_seeds, cfg.seeds), settings=asdict(cfg))
    width = len(str(cfg.seeds - 1))  # seed folders zero-padded: they sort in numeric order
    records = {a: [] for a in activations}
    for seed in range(cfg.seeds):
        for act in activations:
            name = f"{act}-seed{seed:0{width}d}"
            if session.is_done(name):
                records[act].append(session.result(name))
                continue
            session.begin(name, name)
            net = MLP(sizes, activation=act, output_activation="identity", init=cfg.init, dtype=dtype, device=device,
                      seed=seed)
            with RunLogger(cfg.logdir, EXPERIMENT, run_name, name, updates_per_epoch=1, histogram_every=50,
                           dashboard=dashboard, run_hparams={"hidden_activation": act, "seed": seed},
                           enabled=seed < cfg.log_seeds) as logger:
                h = train(net, data, mode="batch", epochs=cfg.epochs, loss_fn="squared_error", seed=seed,
                          logger=logger if logger.enabled else None, histogram_every=50,
                          **trainer_settings(cfg, net, cfg.lr))
                last = h.final["epoch"]
                if logger.enabled and last % 50 != 0 and last != cfg.epochs:
                    logger.log_decision_boundary(last, net, x, labels)  # the Trainer draws none at target_loss
            if h.stop_reason == "diverged" and not cfg.quiet:
                print(f"\n{act} seed {seed}: {h.message}", file=sys.stderr)
            m = margins(net, x, labels)
            record = {"seed": seed, "final_loss": h.final["train_loss"], "lowest_loss": min(h.train_loss),
                      "epochs": h.final["epoch"], "stop_reason": h.stop_reason,
                      "worst_margin": m.min().item(), "right": int((m > tie).sum()),
                      "undecided": int((m.abs() <= tie).sum())}
            if act == "identity":
                record["collapse"] = collapse_report(net, x_demo.to(device))
            records[act].append(record)
            session.finish(name, record)
        if progress_bars(cfg.quiet):
            print(f"\rseed {seed + 1}/{cfg.seeds} trained", end="", flush=True, file=sys.stderr)
    if progress_bars(cfg.quiet):
        print(file=sys.stderr)
    seconds = time.perf_counter() - start
    summary = {act: summarize(rows, tie) for act, rows in records.items()}
    text = report(collapse, summary, sizes, cfg, tie)
    if not session.complete:  # a resume of a run that had ended whole writes nothing
        write_json({"collapse": collapse, "summary": summary, "runs": records, "seconds": seconds},
                   run_dir / "results.json")
        if cfg.log_seeds > 0:
            session.begin("summary", "summary")
            with RunLogger(cfg.logdir, EXPERIMENT, run_name, "summary") as logger:
                logger.add_text("summary", "```\n" + text + "\n```")
        session.mark_complete()
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=text, config=asdict(cfg), dashboard=dashboard,
               show=not cfg.quiet, seconds=None if session.complete else seconds)
    return {"collapse": collapse, "summary": summary}


def summarize(rows: list, tie: float) -> dict:
    stops = Counter(r["stop_reason"] for r in rows).most_common(1)[0]
    return {
        "stop_reason": f"{stops[0]} {stops[1]}/{len(rows)}",
        "diverged": sum(r["stop_reason"] == "diverged" for r in rows),
        "seeds": len(rows),
        "solved": sum(r["worst_margin"] > tie for r in rows),
        "right_mean": statistics.fmean(r["right"] for r in rows),
        "undecided_mean": statistics.fmean(r["undecided"] for r in rows),
        "final_loss_mean": statistics.fmean(r["final_loss"] for r in rows),
        "lowest_loss": min(r["lowest_loss"] for r in rows),
        "best_worst_margin": max(r["worst_margin"] for r in rows),
        "epochs_median": statistics.median(r["epochs"] for r in rows),
        "collapse_max_abs_diff": max((r["collapse"]["max_abs_diff"] for r in rows if "collapse" in r), default=None),
    }


COLUMNS = [Column("hidden activation", 18, "<"), Column("solved", 7), Column("right", 5, spec=".2f"),
           Column("undecided", 9, spec=".2f"), Column("final e(w)", 10), Column("lowest e(w)", 11),
           Column("best worst-margin", 17, spec=".2e"), Column("epochs", 6, spec="g"),
           Column("|MLP - W x + b|", 15, spec=".1e"), Column("stopped", align="<", gap=2)]


def report(collapse: dict, summary: dict, sizes: list, cfg: Config, tie: float) -> str:
    L = len(sizes) - 1
    product = " ".join(f"W{k}" for k in range(L, 0, -1))
    w = ", ".join(f"{v:+.4f}" for v in collapse["weight"][0])
    lines = [
        f"Part 1. A linear MLP {sizes} (identity activations, random weights and biases) is one matrix:",
        f"  W = {product} = [[{w}]]   b = [{collapse['bias'][0]:+.4f}]",
        f"  max |MLP(x) - (W x + b)| over {cfg.demo_inputs + 4} inputs: {collapse['max_abs_diff']:.2e} "
        f"({cfg.dtype}, eps {collapse['eps']:.1e}; outputs up to {collapse['max_abs_output']:.2f})",
        "",
        f"Part 2. {sizes} trained on XOR by backprop (batch, lr {cfg.lr:g}, squared error, identity output), "
        f"{cfg.seeds} seeds:",
    ]
    rows = []
    for act, s in summary.items():
        rows.append([act, f"{s['solved']:>3}/{s['seeds']:<3}", s["right_mean"], s["undecided_mean"],
                     _e(s["final_loss_mean"]), _e(s["lowest_loss"]), s["best_worst_margin"], s["epochs_median"],
                     s["collapse_max_abs_diff"], s["stop_reason"]])
    lines.append(format_table(COLUMNS, rows))
    lines.append(
        f"lowest e(w): over every epoch of every seed; a linear map cannot go below 0.25 on XOR (all outputs 0.5).\n"
        f"right / undecided: of the 4 points at the end, mean over seeds; a point is right when its output is on "
        f"its side of 0.5 by more than {tie:.1e},\n  undecided when it is closer to 0.5 than that (there rounding, "
        f"not the weights, picks the side). solved: all 4 right.\n"
        f"worst-margin: min over the four points of (2y - 1)(out - 0.5), best seed; never positive for a linear map.\n"
        f"|MLP - W x + b|: the trained linear nets against their collapsed single layer, max over seeds."
    )
    return "\n".join(lines)


def _e(value: float) -> str:
    """An e(w) for the table: 4 decimals, or scientific once a diverged run made it huge."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.2e}"


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
