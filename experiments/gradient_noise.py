"""Does online learning's noise get a network out of local minima? Gradient noise and escapes, measured per mode.

The lecture: stochastic (online) learning "induces noise due to local gradient computation, so reduces chances of
getting stuck in local minima"; minibatch learning is "the compromise". This script measures both halves of the
claim on the classic trap, the 2-2-1 sigmoid network on XOR, over a population of initialisations (seeds 0 .. K-1,
the same K starting networks in every mode, trained in lockstep by manual_backprop.population):

- the noise, per epoch and per mode, from the per-sample gradients of manual_backprop.quantities at the members'
  current weights: the simple gradient noise scale B_simple = tr(Sigma) / |G|^2 over the four training points
  (McCandlish et al. 2018), and the spread of the mode's update directions u around the full-batch gradient G
  (online: one sample's gradient; minibatch: the mean over b samples, every b-subset; batch: G itself), as the
  mean of cos(u, G) and the variance E|u - G|^2, averaged over the members still training;
- the escapes: how many of the K networks reach e(w) <= target_loss (every point on its side of 0.5) within the
  epoch limit, per mode, with a 95% Wilson confidence interval.

    python -m experiments.gradient_noise                     # 200 networks x 3 modes, about 40 s on 2 CPU cores
    python -m experiments.gradient_noise --members 1000 --epochs 4000 --lr 2
    python -m experiments.gradient_noise --plots plots/noise     # also PNG and SVG figures and report.html
    python -m experiments.gradient_noise --run noise1 --resume    # continue a run stopped by Ctrl-C

Every mode writes its own TensorBoard run folder, <logdir>/gradient_noise/<run>/<mode>, so TensorBoard overlays the
modes: noise/b_simple_median, directions/mean_cosine, directions/variance, loss/train_mean, escaped/fraction.
The same learning rate means the same step per update in every mode (the loss is the mean over samples), so online
learning makes N times as many steps of that size per epoch as batch learning.

The run folder follows the rules of every experiment (session.py): a new folder for the default name, a lock,
--run checked before any write, Ctrl-C keeps the finished modes and prints the command that resumes the run.
"""

from __future__ import annotations

import itertools
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from experiments import dashboards
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, TRAINER_GROUP, Column, TrainerFlags, apply_threads,
                                at_least, check_config, check_trainer_flags, distinct, finite_positive, format_table,
                                option, parse_config, progress_bars, run_main, seed_range, trainer_settings)
from experiments.plotting import finish_run, require_matplotlib
from experiments.session import RunSession, start_run
from manual_backprop.checks import resolve_device
from manual_backprop.datasets import load_dataset
from manual_backprop.modes import MODES
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.quantities import gradient_noise, per_sample_gradients
from manual_backprop.tblog import RunLogger
from manual_backprop.checkpoint import write_json

EXPERIMENT = "gradient_noise"


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --replacement, --threads, as every script has
    members: int = option(200, help="networks per mode (seeds 0 .. K-1, the same starts in every mode)",
                          check=at_least(2))
    modes: list[str] = option(list(MODES), help="learning modes, in this order", choices=MODES, check=distinct)
    seed: int = option(0, help="the first of the K networks' seeds: they are seed .. seed + K - 1",
                       check=seed_range)
    hidden: int = option(2, help="hidden sigmoid units: 2 is the classic net with a local minimum on XOR",
                         check=at_least(1))
    lr: float = option(5.0, help="eta of every mode (mean squared error: the same step size per update)",
                       check=finite_positive)
    batch_size: int = option(2, help="b of minibatch mode (of XOR's 4 points)", check=at_least(1))
    epochs: int = option(2000, help="epoch limit; a network not at the target by then counts as stuck",
                         check=at_least(1))
    target_loss: float = option(0.06, help="escaped once e(w) <= this (below 1/16 every point is on its side of 0.5)",
                                check=finite_positive, group=TRAINER_GROUP)
    measure_every: int = option(5, help="epochs between noise measurements (each one is one backward phase)",
                                check=at_least(1))
    max_directions: int = option(256, help="minibatch directions per measurement: every b-subset when there are at "
                                           "most this many, else this many drawn at random", check=at_least(1))
    confidence: float = option(0.95, help="level of the Wilson intervals of the escape rates", check=finite_positive)
    device: str = option("cpu", help="cpu, cuda, cuda:N, or auto (tiny networks: the CPU is faster)")
    dtype: str = option("float64", help="of weights and data", choices=DTYPES)
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/gradient_noise/<run>/<mode>")
    run: Optional[str] = option(None, help="run folder name (default: xor-h<hidden>-lr<lr>-k<members>-seed<seed>)")
    resume: bool = option(False, help=RESUME_HELP)
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.gradient_noise", description=__doc__)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple:
    """The Wilson score interval of a binomial proportion (Wilson 1927): good at small n and near 0 or 1."""
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends where rounding would leave 1e-17
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def direction_weights(mode: str, n: int, b: int, max_directions: int, generator: torch.Generator) -> torch.Tensor:
    """(S, n): row s turns the n per-sample contributions into update direction s of the mode, the gradient of the
    mean loss over that mode's samples: batch one row of ones; online n/1 on one sample; minibatch n/b on a b-subset
    (the marginal law of one minibatch of a shuffled epoch), all C(n, b) of them or ``max_directions`` drawn."""
    if mode == "batch":
        return torch.ones(1, n, dtype=torch.float64)
    b = 1 if mode == "online" else min(b, n)
    if math.comb(n, b) <= max_directions:
        subsets = [list(s) for s in itertools.combinations(range(n), b)]
    else:
        subsets = [torch.randperm(n, generator=generator)[:b].tolist() for _ in range(max_directions)]
    weights = torch.zeros(len(subsets), n, dtype=torch.float64)
    for row, s in enumerate(subsets):
        weights[row, s] = n / b
    return weights


def measure(pop: Population, x, y, loss_fn, weights: torch.Tensor) -> dict:
    """(K,) tensors: B_simple, tr(Sigma), and the mean cosine and variance of the mode's directions around G."""
    noise = gradient_noise(pop, x, y, loss_fn, correction=0)  # the four points are the whole distribution
    ps = per_sample_gradients(pop, x, y, loss_fn)
    parts = [t.flatten(start_dim=2) for t in ps.weights + ps.biases]  # (K, n, P_k)
    contributions = torch.cat(parts, dim=2)  # (K, n, P): sample i's share of G
    full = contributions.sum(dim=1, keepdim=True)  # G: (K, 1, P)
    directions = weights.to(contributions) @ contributions  # u_s: (K, S, P)
    cosine = torch.nn.functional.cosine_similarity(directions, full.expand_as(directions), dim=2)  # (K, S)
    spread = ((directions - full) ** 2).sum(dim=2)  # |u_s - G|^2: (K, S)
    return {"b_simple": noise.b_simple, "trace_sigma": noise.trace, "mean_cosine": cosine.mean(dim=1),
            "variance": spread.mean(dim=1)}


def run_mode(cfg: Config, mode: str, data, device, dtype, run_name: str, bar, dashboard=None) -> dict:
    """Train K networks in one mode, measuring the noise every ``measure_every`` epochs; returns the mode's figures."""
    K = cfg.members
    pop = Population([2, cfg.hidden, 1], activation="sigmoid", output_activation="sigmoid", init=cfg.init,
                     seeds=list(range(cfg.seed, cfg.seed + K)), dtype=dtype, device=device)
    trainer = PopulationTrainer(pop, data, mode=mode, epochs=1, loss_fn="squared_error",
                                batch_size=cfg.batch_size if mode == "minibatch" else None,
                                **trainer_settings(cfg, pop, cfg.lr))
    x, y = trainer.x_train, trainer.y_train  # (4, 2), (4, 1): checked and encoded where they entered
    weights = direction_weights(mode, x.shape[0], cfg.batch_size, cfg.max_directions,
                                torch.Generator().manual_seed(cfg.seed))
    h = trainer.history
    series = {"epoch": [], "b_simple_median": [], "mean_cosine": [], "variance": [], "active": []}
    with RunLogger(cfg.logdir, EXPERIMENT, run_name, mode, updates_per_epoch=len(trainer.chunks),
                   dashboard=dashboard) as logger:
        epoch = 0
        while True:
            active = torch.tensor([e is None for e in h.epochs_to_target]) if h.epochs_to_target else \
                torch.ones(K, dtype=torch.bool)
            if epoch % cfg.measure_every == 0 or epoch == cfg.epochs:
                stats = {k: v.cpu() for k, v in measure(pop, x, y, trainer.loss_fn, weights).items()}
                keep = active if bool(active.any()) else torch.ones(K, dtype=torch.bool)
                row = {"b_simple_median": float(stats["b_simple"][keep].median()),
                       "mean_cosine": float(stats["mean_cosine"][keep].mean()),
                       "variance": float(stats["variance"][keep].mean())}
                series["epoch"].append(epoch)
                series["active"].append(int(active.sum()))
                for key, value in row.items():
                    series[key].append(value)
                losses = h.train_loss[-1] if h.train_loss else None
                logger.log_epoch(epoch, {"noise/b_simple_median": row["b_simple_median"],
                                         "directions/mean_cosine": row["mean_cosine"],
                                         "directions/variance": row["variance"],
                                         "escaped/fraction": 1.0 - int(active.sum()) / K,
                                         "loss/train_mean": None if losses is None else float(losses.mean())})
            if epoch == cfg.epochs or not bool(active.any()):
                break
            epoch += 1
            trainer.epochs = epoch
            trainer.run()
            if bar is not None:
                bar.update(1)
        escaped = sum(e is not None for e in h.epochs_to_target)
        low, high = wilson_interval(escaped, K, cfg.confidence)
        reached = [e for e in h.epochs_to_target if e is not None]
        result = {"mode": mode, "batch_size": trainer.batch_size, "updates_per_epoch": len(trainer.chunks),
                  "escaped": escaped, "members": K, "rate": escaped / K, "ci_low": low, "ci_high": high,
                  "median_epochs": statistics.median(reached) if reached else None,
                  "epochs_run": epoch, "initial": {k: series[k][0] for k in ("b_simple_median", "mean_cosine",
                                                                               "variance")},
                  "average": {k: statistics.fmean(series[k]) for k in ("b_simple_median", "mean_cosine", "variance")},
                  "series": series}
        logger.log_hparams({**asdict(cfg), "mode": mode, "batch_size": trainer.batch_size})
    return result


def run(cfg: Config) -> dict:
    """Every mode on the same K starting networks; returns {mode: figures} (also in results.json)."""
    check_config(cfg)
    check_trainer_flags(cfg, "gradient_noise", modes=cfg.modes)
    if "minibatch" in cfg.modes and cfg.batch_size > 4:
        raise ValueError(f"--batch-size must be at most 4 (XOR's points), but got {cfg.batch_size}")
    if not 0 < cfg.confidence < 1:
        raise ValueError(f"--confidence must lie in (0, 1), but got {cfg.confidence}")
    if cfg.plots:
        require_matplotlib(cfg.plots)
    device = resolve_device(cfg.device)
    apply_threads(cfg)
    default = f"xor-h{cfg.hidden}-lr{cfg.lr:g}-k{cfg.members}-seed{cfg.seed}"
    with start_run(EXPERIMENT, cfg, default) as session:
        return _run(cfg, session, device)


def _run(cfg: Config, session: RunSession, device) -> dict:
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset("xor", dtype=dtype)
    run_name, run_dir = session.name, session.path
    dashboard = dashboards.gradient_noise(cfg.modes, asdict(cfg))
    bar = None
    if not cfg.quiet and not session.complete:
        print(f"{cfg.members} XOR networks [2, {cfg.hidden}, 1] x {len(cfg.modes)} modes, lr {cfg.lr:g}, "
              f"up to {cfg.epochs} epochs, on {device}; logging to {run_dir}")
    if progress_bars(cfg.quiet):
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * len(cfg.modes), desc=EXPERIMENT, unit="epoch", dynamic_ncols=True)
    start = time.perf_counter()
    results = {}
    try:
        for mode in cfg.modes:
            if session.is_done(mode):
                results[mode] = session.result(mode)
                if bar is not None:
                    bar.update(cfg.epochs)
                continue
            session.begin(mode, mode)
            if bar is not None:
                bar.set_postfix_str(mode)
            results[mode] = run_mode(cfg, mode, data, device, dtype, run_name, bar, dashboard)
            session.finish(mode, results[mode])
            if bar is not None:
                bar.update(cfg.epochs - results[mode]["epochs_run"])
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    text = table(results, cfg)
    if not session.complete:  # a resume of a run that had ended whole writes nothing
        write_json({"results": results, "seconds": seconds, "config": asdict(cfg)}, run_dir / "results.json")
        session.begin("summary", "summary")
        with RunLogger(cfg.logdir, EXPERIMENT, run_name, "summary") as logger:
            logger.add_text("summary", "```\n" + text + "\n```")
        session.mark_complete()
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=text, config=asdict(cfg), dashboard=dashboard,
               show=not cfg.quiet, printed=text + "\n" + notes(results, cfg),
               seconds=None if session.complete else seconds)
    return results


COLUMNS = [Column("mode", 9, "<"), Column("b", 2), Column("updates/epoch", 13), Column("escaped", 9),
           Column("rate", 5, spec=".0%"), Column("95% CI", 11), Column("median epochs", 13),
           Column("cos(u,G) init", 13, spec=".3f"), Column("E|u-G|^2 init", 13, spec=".2e"),
           Column("cos(u,G) avg", 12, spec=".3f"), Column("B_simple avg", 12, spec=".3g")]


def table(results: dict, cfg: Config) -> str:
    rows = []
    for mode, r in results.items():
        ci = f"{r['ci_low']:.0%}-{r['ci_high']:.0%}"
        rows.append([mode, r["batch_size"], r["updates_per_epoch"], f"{r['escaped']}/{r['members']}", r["rate"], ci,
                     r["median_epochs"], r["initial"]["mean_cosine"], r["initial"]["variance"],
                     r["average"]["mean_cosine"], r["average"]["b_simple_median"]])
    level = f"{cfg.confidence:.0%}"
    return (format_table(COLUMNS, rows).replace("95% CI", f"{level} CI") + "\n"
            f"escaped: networks at e(w) <= {cfg.target_loss:g} within {cfg.epochs} epochs, Wilson {level} interval. "
            f"u: the mode's update direction, G: the full-batch gradient;\ninit: at the K starting networks (the same "
            f"in every mode); avg: over the measurements, each a mean over the networks still training (B_simple: "
            f"their median).")


def notes(results: dict, cfg: Config) -> str:
    """What the numbers say about the lecture's claim, whichever way they come out."""
    if len(results) < 2:
        return ""
    ordered = sorted(results.values(), key=lambda r: r["rate"], reverse=True)
    best, worst = ordered[0], ordered[-1]
    overlap = best["ci_low"] <= worst["ci_high"]
    noisiest = min(results.values(), key=lambda r: r["initial"]["mean_cosine"])
    verdict = ("their intervals overlap: this run cannot tell those two modes apart" if overlap else
               "their intervals do not overlap")
    return (f"- noisiest directions: {noisiest['mode']} (mean cos(u, G) {noisiest['initial']['mean_cosine']:.3f} at "
            f"the start; batch is 1 by definition).\n"
            f"- most escapes: {best['mode']} {best['escaped']}/{best['members']}; fewest: {worst['mode']} "
            f"{worst['escaped']}/{worst['members']}; {verdict}.")


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
