"""Who needs multilayer networks? The perceptron rule, the delta rule and a small MLP on AND, OR and XOR.

The lecture's opening argument, run over many seeds (seeds 0 .. N-1: initial weights and sample order):

- AND and OR are linearly separable: the perceptron rule converges (the perceptron convergence theorem bounds its
  number of corrections), and the delta rule's least-squares line classifies them too.
- XOR is not linearly separable: no line gets all four points right, so every single-layer unit misclassifies at
  least one (accuracy <= 75%). The perceptron "would never converge, forever striving to find a line": it runs into
  its epoch limit, still misclassifying. The delta rule "would converge to some local minimum, resulting in a line
  that would separate the classes, to some extent and with errors": it settles at e(w) = 0.25, the least-squares
  minimum over all lines (every output 0.5).
- A 2-4-1 sigmoid MLP trained by backprop (batch gradient descent on the squared error) solves XOR for almost
  every seed (199 of seeds 0-199; ``--hidden 2`` gives the classic 2-2-1 net, which gets stuck in a local minimum
  for roughly one seed in six: 34 of 40 solved).

    python -m experiments.xor                          # 20 seeds, about 30 s on 2 busy CPU cores
    python -m experiments.xor --seeds 100 --mode batch --hidden 2
    python -m experiments.xor --plots plots/xor        # also PNG and SVG figures and report.html, no server needed

Every problem, method and seed gets its own TensorBoard run folder (``--log-seeds N`` keeps the first N),
<logdir>/xor/<run>/<problem>-<method>-seed<k>, holding accuracy/train and loss/train (e(w)) per epoch, the
perceptron's and delta rule's errors/train and weights, and decision-boundary images; point TensorBoard at
<logdir>/xor/<run> to overlay them. The printed link opens on XOR's runs, one colour per method. (CUSTOM SCALARS
ticks no run when a folder holds more than 40, TensorBoard's rule: press TOGGLE ALL RUNS there, or pass
``--log-seeds 4``.)
"""

from __future__ import annotations

import math

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
                                at_least, check_config, check_trainer_flags, distinct, finite_positive, format_table,
                                option, parse_config, progress_bars, run_main, trainer_settings)
from experiments.session import RunSession, start_run
from manual_backprop.datasets import load_dataset
from manual_backprop.checks import resolve_device
from manual_backprop.network import MLP
from manual_backprop.single_layer import SINGLE_LAYER_MODES, delta_rule_train, perceptron_train
from manual_backprop.tblog import RunLogger
from manual_backprop.training import train
from manual_backprop.checkpoint import write_json

EXPERIMENT = "xor"
PROBLEMS = ("and", "or", "xor")
METHODS = ("perceptron", "delta", "mlp")
METHOD_NAMES = {"perceptron": "perceptron rule", "delta": "delta rule", "mlp": "MLP + backprop"}


@dataclass
class Config(TrainerFlags):  # the MLP's Trainer: --init, --optimizer, --momentum, ..., --threads, as every script has
    problems: list[str] = option(list(PROBLEMS), help="logic gates from manual_backprop.datasets", choices=PROBLEMS,
                                 check=distinct)
    methods: list[str] = option(list(METHODS), help="perceptron (rule), delta (rule), mlp (backprop)",
                                choices=METHODS, check=distinct)
    seeds: int = option(20, help="seeds 0 .. N-1; success rates are over these, not one lucky run", check=at_least(1))
    mode: str = option("online", help="learning mode of the two single-layer rules: online (the classic rules) or "
                                      "batch", choices=SINGLE_LAYER_MODES)
    lr_perceptron: float = option(1.0, help="eta of the error-correction rule (Rosenblatt's fixed increment)",
                                  check=finite_positive)
    epochs_perceptron: int = option(100, help="the epoch limit the perceptron runs into on XOR", check=at_least(1))
    lr_delta: float = option(0.05, help="eta of the delta rule; batch mode diverges above 0.63 on these four points",
                             check=finite_positive)
    epochs_delta: int = option(100, help="enough to settle within 1e-3 of the least-squares line from the default "
                                         "init", check=at_least(1))
    hidden: int = option(4, help="hidden sigmoid units of the MLP [2, hidden, 1]; 2 is the classic, "
                                 "local-minimum-prone net", check=at_least(1))
    activation: str = option("sigmoid", help="hidden activation of the MLP (its output is a sigmoid)")
    lr_mlp: float = option(5.0, help="eta of the MLP: batch gradient descent on the mean squared error",
                           check=finite_positive)
    epochs_mlp: int = option(3000, help="epoch limit of the MLP; a seed still wrong by then counts as a failure",
                             check=at_least(1))
    # e(w) = 1/4 sum (y - out)^2 <= 0.06 < 1/16 gives every |y - out| < 1/2: every point is on the right side of
    # 0.5 and the net has solved the problem; going on would only sharpen the outputs.
    target_loss: Optional[float] = option(0.06, help="stop the MLP once e(w) <= this; below 1/16 every point is on "
                                                     "its side of 0.5", check=at_least(0), group=TRAINER_GROUP)
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float64", help="four points: float64 shows e(w) = 0.25 to the last digit", choices=DTYPES)
    log_seeds: Optional[int] = option(None, help="seeds (from 0) whose runs are written to TensorBoard (default: "
                                                 "every seed); 0 writes none", check=at_least(0))
    image_seeds: int = option(1, help="seeds (from 0) whose runs also get decision-boundary images and histograms",
                              check=at_least(0))
    image_every: int = option(20, help="epochs between decision-boundary images (and MLP histograms); the last is "
                                       "always drawn", check=at_least(1))
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/xor/<run>")
    run: Optional[str] = option(None, help="run folder name (default: <mode>-seeds<N>)")
    resume: bool = option(False, help=RESUME_HELP)
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.xor", description=__doc__)


def run_one(cfg: Config, problem: str, method: str, seed: int, data, device, dtype, logger) -> dict:
    """One method on one problem from one seed; the figures the table needs."""
    x, labels = data.x_train.to(device, dtype), data.y_train.to(device)
    if method in ("perceptron", "delta"):
        if method == "perceptron":
            h = perceptron_train(x, labels, mode=cfg.mode, lr=cfg.lr_perceptron, epochs=cfg.epochs_perceptron,
                                 seed=seed, dtype=dtype, device=device, logger=logger, image_every=cfg.image_every)
        else:
            h = delta_rule_train(x, labels, mode=cfg.mode, lr=cfg.lr_delta, epochs=cfg.epochs_delta, seed=seed,
                                 dtype=dtype, device=device, logger=logger, image_every=cfg.image_every)
        return {"seed": seed, "epochs_to_solve": h.epochs_to_solve, "best_accuracy": h.best_accuracy,
                "final_accuracy": h.final["accuracy"], "final_loss": h.final["squared_error"],
                "fewest_errors": min(h.errors), "epochs": h.final["epoch"], "stop_reason": h.stop_reason,
                "message": h.message}
    net = MLP([2, cfg.hidden, 1], activation=cfg.activation, output_activation="sigmoid", init=cfg.init, dtype=dtype,
              device=device, seed=seed)
    h = train(net, data, mode="batch", epochs=cfg.epochs_mlp, loss_fn="squared_error", seed=seed, logger=logger,
              histogram_every=cfg.image_every, **trainer_settings(cfg, net, cfg.lr_mlp))
    last = h.final["epoch"]
    if logger is not None and last % cfg.image_every != 0 and last != cfg.epochs_mlp:
        logger.log_decision_boundary(last, net, x, labels)  # the Trainer draws none where target_loss stops it
    solved_at = next((e for e, a in zip(h.epoch, h.train_accuracy) if a == 1.0), None)
    errors = [round((1.0 - a) * x.shape[0]) for a in h.train_accuracy]
    return {"seed": seed, "epochs_to_solve": solved_at, "best_accuracy": max(h.train_accuracy),
            "final_accuracy": h.final["train_accuracy"], "final_loss": h.final["train_loss"],
            "fewest_errors": min(errors), "epochs": h.final["epoch"], "stop_reason": h.stop_reason,
            "message": h.message}


class ScalarsOnly:
    """A RunLogger that draws no images and histograms: twenty seeds' curves overlay well, their pictures not."""

    def __init__(self, logger: RunLogger):
        self.logger = logger

    def log_decision_boundary(self, *args, **kwargs):
        return None

    def log_histograms(self, *args, **kwargs) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self.logger, name)


def least_squares_loss(data) -> float:
    """min over all lines (W, b) of e(w) = 1/N sum (y - W x - b)^2: where the delta rule settles.

    The normal equations A^T A w = A^T y (A = [x, 1], N x 3) solved by Gaussian elimination in Python floats with
    exactly rounded sums (math.fsum): the same bits in every process. LAPACK's lstsq through torch gave 0.0625 in
    one run and 0.06249999999999999 in the next of the same command (its blocking follows the thread settings)."""
    rows = [[*map(float, r), 1.0] for r in data.x_train.double().tolist()]  # A, (N, 3)
    y = [float(v) for v in data.y_train.double().flatten().tolist()]
    n = len(rows[0])
    system = [[math.fsum(r[i] * r[j] for r in rows) for j in range(n)] + [math.fsum(r[i] * t for r, t in zip(rows, y))]
              for i in range(n)]  # [A^T A | A^T y]
    for col in range(n):  # partial pivoting; a singular column (no spread in a feature) keeps its weight at 0
        pivot = max(range(col, n), key=lambda r: abs(system[r][col]))
        system[col], system[pivot] = system[pivot], system[col]
        if abs(system[col][col]) < 1e-12:
            continue
        for r in range(n):
            if r != col:
                factor = system[r][col] / system[col][col]
                system[r] = [a - factor * b for a, b in zip(system[r], system[col])]
    w = [system[i][n] / system[i][i] if abs(system[i][i]) >= 1e-12 else 0.0 for i in range(n)]
    return math.fsum((math.fsum(a * b for a, b in zip(r, w)) - t) ** 2 for r, t in zip(rows, y)) / len(rows)


def summarize(records: list) -> dict:
    solved = [r["epochs_to_solve"] for r in records if r["epochs_to_solve"] is not None]
    stops = Counter(r["stop_reason"] for r in records).most_common(1)[0]
    return {
        "seeds": len(records), "solved": len(solved), "success_rate": len(solved) / len(records),
        "epochs_to_solve_median": statistics.median(solved) if solved else None,
        "epochs_to_solve_max": max(solved) if solved else None,
        "best_accuracy": max(r["best_accuracy"] for r in records),
        "final_accuracy_mean": statistics.fmean(r["final_accuracy"] for r in records),
        "final_loss_mean": statistics.fmean(r["final_loss"] for r in records),
        "fewest_errors": min(r["fewest_errors"] for r in records),
        "stop_reason": f"{stops[0]} {stops[1]}/{len(records)}",
    }


def run(cfg: Config) -> dict:
    """Every method on every problem for every seed; returns {problem: {method: summary}} (also in results.json)."""
    check_config(cfg)
    check_trainer_flags(cfg, "xor's MLP", modes=["batch"])
    if cfg.plots:
        require_matplotlib(cfg.plots)
    device = resolve_device(cfg.device)
    apply_threads(cfg)
    with start_run(EXPERIMENT, cfg, f"{cfg.mode}-seeds{cfg.seeds}") as session:
        return _run(cfg, session, device)


def run_folder_name(problem: str, method: str, seed: int, seeds: int) -> str:
    """``xor-mlp-seed07``: seeds zero-padded to the width of the largest, so the runs sort in numeric order."""
    return f"{problem}-{method}-seed{seed:0{len(str(seeds - 1))}d}"


def _run(cfg: Config, session: RunSession, device) -> dict:
    dtype = getattr(torch, cfg.dtype)
    run_name, run_dir = session.name, session.path
    log_seeds = cfg.seeds if cfg.log_seeds is None else min(cfg.log_seeds, cfg.seeds)
    lrs = {"perceptron": cfg.lr_perceptron, "delta": cfg.lr_delta, "mlp": cfg.lr_mlp}
    dashboard = dashboards.xor(cfg.problems, cfg.methods, log_seeds, lrs, settings=asdict(cfg))
    if not cfg.quiet and not session.complete:
        print(f"{len(cfg.problems)} problems x {len(cfg.methods)} methods x {cfg.seeds} seeds on {device}; "
              f"logging to {run_dir}")
    bar = None
    if progress_bars(cfg.quiet):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cfg.problems) * len(cfg.methods) * cfg.seeds, desc="xor", unit="run",
                   dynamic_ncols=True)
    start = time.perf_counter()
    records, summaries, least_squares = {}, {}, {}
    try:
        for problem in cfg.problems:
            data = load_dataset(problem, dtype=dtype)
            least_squares[problem] = least_squares_loss(data)
            for method in cfg.methods:
                rows = []
                for seed in range(cfg.seeds):
                    name = run_folder_name(problem, method, seed, cfg.seeds)
                    if session.is_done(name):
                        rows.append(session.result(name))
                    else:
                        session.begin(name, name)
                        logger = RunLogger(cfg.logdir, EXPERIMENT, run_name, name, updates_per_epoch=1,
                                           histogram_every=50, dashboard=dashboard,
                                           run_hparams={"problem": problem, "method": method, "seed": seed},
                                           enabled=seed < log_seeds)
                        with logger:
                            shown = logger if seed < cfg.image_seeds else ScalarsOnly(logger)
                            rows.append(run_one(cfg, problem, method, seed, data, device, dtype,
                                                shown if logger.enabled else None))
                        session.finish(name, rows[-1])
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"{problem} {method}")
                records[(problem, method)] = rows
                summaries.setdefault(problem, {})[method] = summarize(rows)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    text = table(summaries, least_squares, cfg)
    if not session.complete:  # a resume of a run that had ended whole writes nothing
        write_json({"summary": summaries, "least_squares_loss": least_squares, "seconds": seconds,
                    "runs": {f"{p}-{m}": rows for (p, m), rows in records.items()}}, run_dir / "results.json")
        if log_seeds > 0:
            session.begin("summary", "summary")
            with RunLogger(cfg.logdir, EXPERIMENT, run_name, "summary") as logger:
                logger.add_text("summary", "```\n" + text + "\n```")
        session.mark_complete()
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=text, config=asdict(cfg), dashboard=dashboard,
               show=not cfg.quiet, printed=text + "\n" + notes(records, summaries, least_squares, cfg),
               seconds=None if session.complete else seconds)
    return summaries


COLUMNS = [Column("problem", 7, "<"), Column("method", 15, "<"), Column("solved", 7), Column("success", 7, spec=".0%"),
           Column("epochs to solve", 16), Column("best acc", 8, spec=".0%"), Column("final acc", 9, spec=".0%"),
           Column("final e(w)", 10), Column("line min e", 10, spec=".4f"), Column("stopped", align="<", gap=2)]


def table(summaries: dict, least_squares: dict, cfg: Config) -> str:
    rows = []
    for problem, by_method in summaries.items():
        for method, s in by_method.items():
            epochs = (f"{s['epochs_to_solve_median']:g} (max {s['epochs_to_solve_max']})" if s["solved"] else "-")
            rows.append([problem, METHOD_NAMES[method], f"{s['solved']:>3}/{s['seeds']:<3}", s["success_rate"],
                         epochs, s["best_accuracy"], s["final_accuracy_mean"], _e(s["final_loss_mean"]),
                         least_squares[problem], s["stop_reason"]])
    return (format_table(COLUMNS, rows) + "\n"
            f"epochs to solve: median (max) over the solved seeds of the first epoch with every point right. "
            f"best acc: the best any seed reached in any epoch.\nfinal e(w): mean over seeds of 1/N sum "
            f"(y - out)^2 (the perceptron's out is 0/1). line min e: the least-squares minimum over all lines. "
            f"Single-layer rules: {cfg.mode} mode; MLP: [2, {cfg.hidden}, 1] {cfg.activation}, batch.")


def notes(records: dict, summaries: dict, least_squares: dict, cfg: Config) -> str:
    """What the table shows, in the lecture's words, from the numbers of this run."""
    out = []
    xor = summaries.get("xor", {})
    if "perceptron" in xor:
        first = records[("xor", "perceptron")][0]
        out.append(f"- perceptron on XOR, seed 0: {first['message']}. Across {cfg.seeds} seeds it never had zero "
                   f"errors (fewest in any epoch: {xor['perceptron']['fewest_errors']}).")
    if "delta" in xor:
        s = xor["delta"]
        out.append(f"- delta rule on XOR: mean final e(w) {_e(s['final_loss_mean'])} against the least-squares "
                   f"minimum {least_squares['xor']:.4f} of any line; best accuracy {s['best_accuracy']:.0%} "
                   f"(a line can get at most 3 of the 4 points right).")
    if "mlp" in xor:
        s = xor["mlp"]
        out.append(f"- MLP [2, {cfg.hidden}, 1] + backprop on XOR: solved {s['solved']} of {s['seeds']} seeds.")
    return "\n".join(out)


def _e(value: float) -> str:
    """An e(w) for the table: 4 decimals, or scientific once a diverged run made it huge."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.2e}"


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
