"""How often do the learning modes solve XOR, and how fast? A grid of learning rates x seeds, trained as populations.

For each mode (batch, online, minibatch) one Population holds every (learning rate, seed) pair of the grid as a
member: weight seed s and sample-order seed s, exactly the run ``Trainer(MLP(..., seed=s), mode, lr, seed=s)``
would make alone. All members train in lockstep (manual_backprop.population); a member that reaches the target
loss is frozen there, one that diverges is frozen and counted, the others go on.

    python -m experiments.sweep                                   # XOR 2-2-1 sigmoid, 6 lrs x 32 seeds, 3 modes
    python -m experiments.sweep --lrs 0.5 2 8 --seeds 100 --epochs 3000
    python -m experiments.sweep --dataset moons --sizes 2 8 1 --target-loss 0.05
    python -m experiments.sweep --plots plots/sweep               # also the heatmap of success rate, and report.html
    torchrun --standalone --nproc_per_node=2 -m experiments.sweep --distributed   # members sharded over 2 processes

Printed and logged per mode and learning rate: the success rate (members that reached the target loss) and the
median epochs to success over the members that succeeded. The default target 0.04 on the mean squared error
guarantees that all four XOR points are classified right: the loss is (1/4) sum_i e_i^2, so loss <= 0.04 gives
every e_i^2 <= 0.16, |e_i| <= 0.4 < 0.5. TensorBoard gets one aggregate run per mode and learning rate
(<logdir>/sweep/<run>/<mode>_lr<lr>): loss quantiles over the seeds and the fraction that has succeeded, by epoch.

Ctrl-C saves the population in training (<run>/checkpoints/<mode>.pt, back to its last finished epoch; under
--distributed each process saves its block of members, <mode>.members<first>-<last>.pt) and prints the command that
continues it: ``--run R --resume`` keeps the finished modes and continues that one from the epoch it saved, to the
results an unbroken run gives. Every checkpoint is read and checked before anything is said or written; a resume of
a run whose every mode finished says so and writes nothing.

With --distributed (launched by torchrun; gloo on CPUs, nccl with one GPU per process) each population's members
are split into one contiguous block per process; members never mix, so no collective runs while they train. Rank 0
gathers the blocks' histories (manual_backprop.population.sharding), logs, writes and prints, and its results equal
the single-process sweep's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments import dashboards
from experiments.plotting import finish_run, require_matplotlib
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, TRAINER_GROUP, USER_ERRORS, Column, TrainerFlags,
                                apply_threads, at_least, check_config, check_trainer_flags, distinct, format_table,
                                option, parse_config, progress_bars, run_main, seed_range, trainer_settings)
from experiments.run_folder import check_run_name
from experiments.session import RunSession, start_run
from experiments.sweep_checkpoints import CheckpointPlan, refusal
from manual_backprop import distributed
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import check_memory, resolve_device
from manual_backprop.population import ENGINES, Population, PopulationLogger, PopulationTrainer
from manual_backprop.population.sharding import gather_population_history, member_shard
from manual_backprop.training import MODES
from manual_backprop.checkpoint import write_json

EXPERIMENT = "sweep"


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --replacement, --threads, as every script has
    dataset: str = option("xor", help=f"one of {list(DATASETS)}, or a .csv / .npz file")
    sizes: Optional[list[int]] = option(None, help="layer widths (default: 2 2 1 for xor, else n_features 8 n_out)")
    activation: str = option("sigmoid", help="hidden activation f")
    output_activation: str = option("sigmoid", help="activation of the output layer")
    loss: str = option("squared_error", help="mean over samples: lr means the same in every mode")
    lrs: list[float] = option([0.25, 0.5, 1.0, 2.0, 4.0, 8.0], help="the learning-rate axis of the grid")
    seeds: int = option(32, help="seeds seed .. seed + N - 1 (weights and sample order) for every learning rate",
                        check=at_least(1))
    seed: int = option(0, help="the first seed (an offset: another block of seeds)", check=seed_range)
    modes: list[str] = option(list(MODES), help="one population per mode", choices=MODES, check=distinct)
    batch_size: int = option(2, help="b, the samples per update of minibatch mode")
    epochs: int = option(1000, help="the epoch limit; a member that has not reached the target by then failed",
                         check=at_least(1))
    target_loss: float = option(0.04, help="success: the training loss at the end of an epoch is at most this",
                                check=at_least(0), group=TRAINER_GROUP)
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float64", help="of the weights and the data", choices=DTYPES)
    engine: str = option("eager", help="eager, compiled (torch.compile) or cuda_graph", choices=ENGINES)
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/sweep/<run>/<mode>_lr<lr>")
    run: Optional[str] = option(None, flags=("--run", "--run-name"),
                                help="run folder name (default: <dataset>-seeds<N>, then -2, -3, ...); --run-name "
                                     "also passes through torchrun")
    resume: bool = option(False, help=RESUME_HELP + "; the modes finished before the stop are kept, the one in "
                                                    "progress continues from its checkpoint")
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")
    distributed: bool = option(False, help="shard each population's members over the processes torchrun starts")
    dist_timeout: float = option(300.0, help="seconds a rank waits for the others in a collective")


def parse_args(argv=None) -> Config:
    cfg = parse_config(Config, argv, prog="python -m experiments.sweep", description=__doc__)
    if cfg.sizes is None and cfg.dataset == "xor":
        cfg.sizes = [2, 2, 1]
    return cfg


def validate(cfg: Config) -> None:
    check_config(cfg)
    check_trainer_flags(cfg, "sweep", modes=cfg.modes)
    if cfg.target_loss is None:
        raise ValueError("--target-loss is the sweep's success criterion: give one (default 0.04)")
    if not cfg.lrs or any(not (lr > 0 and lr != float("inf")) for lr in cfg.lrs):
        raise ValueError(f"--lrs must be finite numbers > 0, but got {cfg.lrs}")
    if len(set(cfg.lrs)) != len(cfg.lrs):
        raise ValueError(f"--lrs must not repeat a learning rate, but got {cfg.lrs}")


def grid(cfg: Config):
    """Member m = a * seeds + s has learning rate lrs[a] and seed s: returns (lrs, seeds, {lr name: members})."""
    lrs, seeds, groups = [], [], {}
    for a, lr in enumerate(cfg.lrs):
        groups[f"lr{lr:g}"] = list(range(a * cfg.seeds, (a + 1) * cfg.seeds))
        lrs += [lr] * cfg.seeds
        seeds += list(range(cfg.seed, cfg.seed + cfg.seeds))
    return lrs, seeds, groups


def run(cfg: Config) -> dict:
    """Train one population per mode; returns the results written to results.json."""
    check_run_name(cfg.run)
    validate(cfg)
    if cfg.plots:
        require_matplotlib(cfg.plots)
    default = f"{Path(cfg.dataset).stem}-seeds{cfg.seeds}" + (f"-from{cfg.seed}" if cfg.seed else "")
    data = load_dataset(cfg.dataset, dtype=getattr(torch, cfg.dtype))
    check_population_memory(len(cfg.lrs) * cfg.seeds, network_sizes(cfg, data), data, cfg)  # before any write
    apply_threads(cfg)
    for mode in cfg.modes if not cfg.distributed else ():  # what a trainer refuses (an optimizer on the C engine)
        make_trainer(cfg, mode, data, network_sizes(cfg, data), [cfg.seed], [cfg.lrs[0]], resolve_device(cfg.device))
    if not cfg.distributed:
        device = resolve_device(cfg.device)
        with start_run(EXPERIMENT, cfg, default, announce=False) as session:  # it says what it resumes once the
            return _run(cfg, session, device, None)                               # checkpoints are accepted
    with distributed.init_distributed(device=cfg.device, timeout=cfg.dist_timeout) as info:
        session, error = None, None
        if info.is_main:
            try:  # only rank 0 writes; the others hear of a refused folder instead of waiting for a timeout
                session = start_run(EXPERIMENT, cfg, default, announce=False)
            except USER_ERRORS as err:
                error = str(err)
        error = distributed.from_rank0(error)
        if error:
            raise refusal(error, info.is_main)
        if session is None:
            return _run(cfg, None, info.device, info)
        with session:
            return _run(cfg, session, info.device, info)


def _run(cfg: Config, session: Optional[RunSession], device: torch.device, info) -> dict:
    """One population per mode; with ``info`` (a DistInfo) this rank trains its block of members, and rank 0 gets
    the gathered histories and does the writing (the other ranks return {}). A mode the session finished before
    (a resumed run) is read back, not trained again; one interrupted continues from its checkpoint (under
    --distributed, one per process)."""
    main_rank = info is None or info.is_main
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset(cfg.dataset, dtype=dtype)
    sizes = network_sizes(cfg, data)
    lrs, seeds, groups = grid(cfg)
    start, stop = member_shard(len(lrs), info.rank, info.world_size) if info else (0, len(lrs))
    run_name, run_dir = (session.name, session.path) if main_rank else (None, None)
    done = [m for m in cfg.modes if main_rank and session.is_done(m)]
    resumed = main_rank and session.resumed
    complete = resumed and len(done) == len(cfg.modes) and (run_dir / "results.json").is_file()
    if info:  # every rank reads and writes its own checkpoints in rank 0's run folder
        run_name, run_dir, done, resumed, complete = distributed.from_rank0((run_name, run_dir, done, resumed,
                                                                             complete))
    plan = CheckpointPlan(run_dir, len(lrs), info)
    saved = plan.check([m for m in cfg.modes if m not in done] if resumed else [],
                       lambda mode: make_trainer(cfg, mode, data, sizes, seeds[start:stop], lrs[start:stop], device))
    if complete:
        return _already_complete(cfg, session, sizes) if main_rank else {}
    if main_rank and not cfg.quiet:
        session.announce()
        print(f"{data}\n{len(lrs)} members per mode: lrs {cfg.lrs} x seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}, "
              f"sizes {sizes}, {cfg.activation}/{cfg.output_activation}, {cfg.loss}, target loss "
              f"{cfg.target_loss:g}\nlogging to {run_dir}")
    dashboard = dashboards.sweep(cfg.modes, cfg.lrs, settings={**asdict(cfg), "sizes": sizes})
    rows, members = [], {}
    for mode in cfg.modes:
        if mode in done:
            if main_rank:
                kept = session.result(mode)
                rows += kept["rows"]
                members[mode] = kept["members"]
            continue
        state, checkpoint = saved.get(mode), plan.own(mode)
        # A mode continued from its checkpoint keeps its curves; one started over loses its folders, and so does one
        # under --distributed, whose curves rank 0 logs whole from the gathered histories once the mode ends.
        continued = state is not None and info is None
        if main_rank:
            session.begin(mode, *([] if continued else [f"{mode}_{name}" for name in groups]))
        logger = PopulationLogger(cfg.logdir, EXPERIMENT, run_name, groups=groups, member_runs=0,
                                  log_every=max(1, cfg.epochs // 200),  # about 200 points a curve
                                  dashboard=dashboard, resume=continued) if main_rank else None
        began = time.perf_counter()
        trainer = make_trainer(cfg, mode, data, sizes, seeds[start:stop], lrs[start:stop], device,
                               logger=None if info else logger, checkpoint=checkpoint,
                               progress=f"{mode:>9}" if main_rank and progress_bars(cfg.quiet) else False)
        if state is not None:
            trainer.load_state_dict(state)
        if main_rank and not cfg.quiet and resumed:
            print(plan.resuming(mode, cfg.epochs))
        try:
            history = trainer.run()
        except KeyboardInterrupt:
            if main_rank and checkpoint.is_file():
                session.partial = plan.interrupted(mode, trainer.epoch, cfg.epochs)
            raise
        if info:  # the whole population's record on rank 0, logged there as one process would have logged it
            history = gather_population_history(_compact(history))
            if main_rank:
                _log_gathered(logger, history, trainer)
        if main_rank:
            seconds = time.perf_counter() - began
            members[mode], mode_rows = _mode_results(mode, history, groups, seconds)
            rows += mode_rows
            session.finish(mode, {"rows": mode_rows, "members": members[mode]})
        if info:
            distributed.from_rank0(None)  # no rank removes its checkpoint before rank 0 has kept the mode's results
        checkpoint.unlink(missing_ok=True)  # the mode's results are kept: its checkpoint is no longer needed
    if not main_rank:
        return {}
    results = {"config": {**asdict(cfg), "sizes": sizes}, "rows": rows,
               "members": {m: members[m] for m in cfg.modes}}
    write_json(results, run_dir / "results.json")
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=table(rows, cfg), config=results["config"], dashboard=dashboard,
               show=not cfg.quiet)
    return results


def _mode_results(mode: str, h, groups: dict, seconds: float) -> tuple:
    """(one entry per member, one row per learning rate) of a mode's finished population."""
    rows = [{"mode": mode, "lr": h.lr[ms[0]], "runs": len(ms),
             "successes": sum(h.epochs_to_target[i] is not None for i in ms),
             "success_rate": h.success_rate(ms), "median_epochs": h.median_epochs_to_target(ms),
             "diverged": sum(h.stop_reason[i] == "diverged" for i in ms), "seconds_for_mode": seconds}
            for ms in groups.values()]
    members = [{"lr": h.lr[i], "seed": h.seeds[i], "stop_reason": h.stop_reason[i],
                "epochs_to_target": h.epochs_to_target[i], "diverged_update": h.diverged_update[i],
                "final_train_loss": h.train_loss[-1][i].item()} for i in range(h.size)]
    return members, rows


def _already_complete(cfg: Config, session: RunSession, sizes: list) -> dict:
    """A resume of a run whose every mode finished: it says so, shows the table and writes nothing."""
    rows = [row for mode in cfg.modes for row in session.result(mode)["rows"]]
    results = {"config": {**asdict(cfg), "sizes": sizes}, "rows": rows,
               "members": {m: session.result(m)["members"] for m in cfg.modes}}
    if not cfg.quiet:
        print(f"sweep: run {session.name!r} ({session.path}) is already complete: {', '.join(cfg.modes)} finished; "
              f"nothing was trained or written")
    finish_run(EXPERIMENT, session.path, cfg.plots, text=table(rows, cfg), config=results["config"],
               dashboard=dashboards.sweep(cfg.modes, cfg.lrs, settings=results["config"]), show=not cfg.quiet)
    return results


def _compact(history):
    """The history with each epoch's row in its own storage: a row the trainer keeps as a view of the epoch's
    read-back (update losses and all) would be pickled whole by the gather, update losses included."""
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        setattr(history, name, [None if row is None else row.clone() for row in getattr(history, name)])
    return history


def make_trainer(cfg: Config, mode: str, data, sizes: list, seeds: list, lrs: list, device, *, logger=None,
                 checkpoint=None, progress=False) -> PopulationTrainer:
    """One mode's population (member m: lrs[m], weight and sample-order seed seeds[m]) and its trainer."""
    pop = Population(sizes, activation=cfg.activation, output_activation=cfg.output_activation, init=cfg.init,
                     seeds=seeds, dtype=getattr(torch, cfg.dtype), device=device)
    return PopulationTrainer(pop, data, mode=mode, epochs=cfg.epochs, loss_fn=cfg.loss,
                             batch_size=cfg.batch_size if mode == "minibatch" else None, order_seeds=seeds,
                             logger=logger, engine=cfg.engine, progress=progress, checkpoint_path=checkpoint,
                             checkpoint_every=max(1, cfg.epochs // 10), **trainer_settings(cfg, pop, lrs))


def network_sizes(cfg: Config, data) -> list:
    """--sizes, or n_features 8 n_out (one sigmoid output for two classes)."""
    n_out = (1 if data.num_classes == 2 and cfg.output_activation == "sigmoid"
             else data.num_classes or data.y_train.shape[1])
    return cfg.sizes or [data.n_features, 8, n_out]


def check_population_memory(members: int, sizes: list, data, cfg: Config) -> None:
    """Refuse, in one line, a grid whose populations would not fit in memory (before any of it is drawn)."""
    itemsize = torch.finfo(getattr(torch, cfg.dtype)).bits // 8
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    n, width = data.x_train.shape[0], data.x_train.shape[1] + sizes[-1]
    # weights, their last good copy and the gradients; the activations of one update; an epoch's gathered samples
    per_member = itemsize * (3 * params + n * (sum(sizes) + width) * 2)
    check_memory(f"--seeds {cfg.seeds} x --lrs ({len(cfg.lrs)}): {members} members of {sizes} per population",
                 members * per_member)


def _log_gathered(logger: PopulationLogger, history, trainer: PopulationTrainer) -> None:
    """What PopulationTrainer.run logs, from the gathered history: every epoch row, then the hparams."""
    logger.start(history.mode, history.size, len(trainer.chunks))
    for row, epoch in enumerate(history.epoch):
        logger.log_epoch(epoch, history, row, force=row in (0, len(history.epoch) - 1))
    logger.log_hparams(history, trainer.hparams())
    logger.close()


COLUMNS = [Column("mode", 10, "<"), Column("lr", 6, spec="g"), Column("success", 9), Column("rate", 6, spec=".2f"),
           Column("median epochs", 13, spec=".1f"), Column("diverged", 8)]


def table(rows: list, cfg: Config) -> str:
    cells = [[r["mode"], r["lr"], f"{r['successes']:>4}/{r['runs']:<4}", r["success_rate"], r["median_epochs"],
              r["diverged"]] for r in rows]
    return (f"success: train loss <= {cfg.target_loss:g} within {cfg.epochs} epochs, over {cfg.seeds} seeds\n"
            + format_table(COLUMNS, cells))


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
