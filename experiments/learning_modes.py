"""The lecture's three modes of learning, compared on real data: batch, online (stochastic) and minibatch.

One initial network is copied and trained each way on the same data (by default scikit-learn's 8x8 handwritten
digits, which ship inside the package). Every mode logs to its own TensorBoard run folder under
<logdir>/learning_modes/<run>/<mode>, so TensorBoard overlays the three loss curves in one chart.

    python -m experiments.learning_modes                      # defaults: digits, 64-32-10 tanh/softmax, 20 epochs
    python -m experiments.learning_modes --dataset moons --sizes 2 16 2 --epochs 50
    python -m experiments.learning_modes --plots plots/modes  # also PNG and SVG figures and report.html
    python -m experiments.learning_modes --run my_run --resume   # continue a stopped run to the same numbers
    torchrun --standalone --nproc_per_node=2 -m experiments.learning_modes --distributed

What it shows: batch learning makes one update per epoch, so per epoch it learns slowest but each update is one
big matrix product; online learning makes N noisy updates per epoch; minibatch sits between (the "minibatch
compromise"). Per-mode learning rates differ because the number and noise of the updates differ.

With --distributed (launched by torchrun) every batch is split over the processes, which reduce their gradient
sums with all_reduce, so each update equals the single-process one (manual_backprop/distributed.py). Online mode
is sequential: --distributed trains batch and minibatch by default, and refuses --modes online. Only rank 0 writes
logs, checkpoints, config.json, results.json and the table.

What a run keeps safe (run_folder.py): without --run every run gets a new folder (<dataset>-seed<seed>, then -2,
-3, ...); a folder is locked while a run uses it; a mode added to an existing run must share its settings, and its
results join the others in results.json. --resume continues each mode's checkpoint and refuses any setting that
differs from the mode's config.json, naming each one; --allow-changes lr epochs lets a new learning rate or
epoch limit through, recorded as a new segment in config.json. Nothing is written until every checkpoint has been
read and accepted; a mode that had finished is kept as it is (nothing of it is written again), and a resume of a run
whose every mode finished says so and writes nothing. Exit status: 0 done, 2 a bad flag, file or folder (one line), 3 a mode diverged, 130 Ctrl-C.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from experiments import dashboards
from experiments.plotting import finish_run, require_matplotlib
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, USER_ERRORS, Column, TrainerFlags, apply_threads,
                                at_least, check_config, check_trainer_flags, distinct, format_table,
                                option, parse_config, progress_bars, run_main, seed_range, trainer_settings)
from experiments.learning_modes_resume import check_checkpoints_fit, check_run_folder, finished_modes
from experiments.run_folder import check_run_name, merge_results, open_run_folder, read_json
from manual_backprop import distributed
from manual_backprop.datasets import DATASETS, load_dataset
from manual_backprop.checks import check_memory, network_bytes, resolve_device
from manual_backprop.network import MLP
from manual_backprop.modes import samples_per_update
from manual_backprop.tblog import RunLogger
from manual_backprop.training import MODES, Trainer
from manual_backprop.checkpoint import write_json

EXPERIMENT = "learning_modes"


CHANGEABLE = ("lr", "epochs")  # what --allow-changes can let through on --resume
DISTRIBUTED_MODES = ["batch", "minibatch"]  # online is sequential


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --target-loss, --replacement, --threads
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
    modes: Optional[list[str]] = option(None, help="the learning modes to train, in this order (default: batch "
                                                   "online minibatch; with --distributed: batch minibatch)",
                                        choices=MODES, check=distinct)
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float32", help="of the weights and the data", choices=DTYPES)
    seed: int = option(0, help="weights, data split and sample order", check=seed_range)
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/learning_modes/<run>/<mode>")
    run: Optional[str] = option(None, flags=("--run", "--run-name"),
                                help="run folder name (default: <dataset>-seed<seed>); --run-name also passes "
                                     "through torchrun")
    resume: bool = option(False, help=RESUME_HELP)
    allow_changes: list[str] = option([], choices=CHANGEABLE,
                                      help="settings --resume may change: lr (of each mode), epochs; each resume is "
                                           "a segment in the mode's config.json (default: none)")
    quiet: bool = option(False, help=QUIET_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")
    distributed: bool = option(False, help="split every batch over the processes torchrun starts (nccl on GPUs, "
                                           "gloo on CPUs; batch and minibatch modes only)")
    dist_timeout: float = option(300.0, help="seconds a rank waits for the others in a collective before the job "
                                             "fails")

    def lr(self, mode: str) -> float:
        return {"batch": self.lr_batch, "online": self.lr_online, "minibatch": self.lr_minibatch}[mode]


# What each mode's config.json holds beside the settings (for --config, which reads it back).
CONFIG_EXTRAS = ("mode", "lr", "net", "data", "world_size", "segments")


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.learning_modes", description=__doc__,
                        extra_keys=CONFIG_EXTRAS)


def resolved_modes(cfg: Config) -> list:
    """--modes as given, else all three (batch and minibatch with --distributed)."""
    if cfg.modes:
        return list(cfg.modes)
    return list(DISTRIBUTED_MODES) if cfg.distributed else list(MODES)


def default_run_name(cfg: Config) -> str:
    return f"{Path(cfg.dataset).stem}-seed{cfg.seed}"


def validate(cfg: Config, n_train: int) -> None:
    """Refuse bad settings before any training starts."""
    check_config(cfg)
    modes = resolved_modes(cfg)
    check_trainer_flags(cfg, "learning_modes", modes=modes)
    for mode in modes:
        lr = cfg.lr(mode)
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise ValueError(f"--lr-{mode} must be a finite number > 0, but got {lr}")
    if "minibatch" in modes and not 1 <= cfg.batch_size <= n_train:
        raise ValueError(f"--batch-size must be in [1, {n_train}] (the training split of {cfg.dataset!r} has "
                         f"{n_train} samples), but got {cfg.batch_size}")


def validate_distributed(cfg: Config) -> None:
    """Refuse what cannot run data-parallel, before any process group is joined."""
    if cfg.modes and "online" in cfg.modes:
        raise ValueError(f"--distributed cannot run online mode: {distributed.ONLINE_IS_SEQUENTIAL}. "
                         f"Pass --modes batch minibatch (or one of them) with --distributed, and run --modes online "
                         f"without it")
    if not cfg.dist_timeout > 0 or cfg.dist_timeout == float("inf"):
        raise ValueError(f"--dist-timeout must be a finite number of seconds > 0, but got {cfg.dist_timeout}")


def run(cfg: Config) -> dict:
    """Train every mode from one initial network; returns {mode: History}. With cfg.distributed, on every rank."""
    check_run_name(cfg.run)  # before anything is written
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
    modes = resolved_modes(cfg)
    data = load_dataset(cfg.dataset, n_samples=cfg.n_samples, noise=cfg.noise, seed=cfg.seed, dtype=dtype)
    validate(cfg, data.x_train.shape[0])
    if cfg.plots and main:
        require_matplotlib(cfg.plots)  # before any training: a missing matplotlib is one line, not a lost run
    sizes = cfg.sizes or [data.n_features, 32, data.num_classes or data.y_train.shape[1]]
    apply_threads(cfg)
    # the initial network, a probe and a trainer's copy per mode, each with its gradients and optimizer state
    copies = 3 + 4 * len(modes)
    check_memory(f"--sizes {' '.join(map(str, sizes))} in {cfg.dtype} ({network_bytes(sizes, dtype):,} bytes a "
                 f"network, {copies} of them)", copies * network_bytes(sizes, dtype))
    initial = MLP(sizes, activation=cfg.activation, output_activation=cfg.output_activation, init=cfg.init,
                  dtype=dtype, device=device, seed=cfg.seed)
    probes = _probe_trainers(cfg, modes, data, initial)
    folder = None

    def open_folder():  # rank 0 alone sees its disk and holds the lock; every rank learns the folder's name
        nonlocal folder
        folder = open_run_folder(cfg.logdir, EXPERIMENT, cfg.run, default_run_name(cfg), resume=cfg.resume)
        if folder.chosen and not quiet:
            print(folder.chosen)
        return folder.name

    run_name = _on_rank0(main, open_folder)
    cfg._run_name = run_name  # for the Ctrl-C message (common.run_main)
    cfg._saved = "each mode's checkpoint holds its last finished epoch"
    run_dir = Path(cfg.logdir) / EXPERIMENT / run_name
    try:
        plan = _on_rank0(main, lambda: check_run_folder(cfg, run_dir, modes, sizes))
        check_checkpoints_fit(probes, run_dir, plan)  # the same states on every rank: the same outcome
        finished = finished_modes(cfg, modes, probes, plan)
        complete = finished if len(finished) == len(modes) else None
        if complete is not None:  # a resume with nothing left to train writes nothing
            if not quiet:
                print(f"learning_modes: run {run_name!r} ({run_dir}) is already complete: "
                      + ", ".join(f"{m} at epoch {h.epoch[-1]} of {cfg.epochs} ({h.stop_reason})"
                                  for m, h in complete.items())
                      + "; nothing was trained or written")
            finish_run(EXPERIMENT, run_dir, cfg.plots if main else None, text=table(complete, cfg), config=asdict(cfg),
                       dashboard=_dashboard(cfg, modes, data, sizes), show=not quiet)
            return complete
        del probes
        return _train_modes(cfg, info, modes, data, initial, sizes, run_dir, plan, main, quiet, finished)
    finally:
        if folder is not None:
            folder.release()


def _on_rank0(main: bool, fn):
    """``fn()`` on rank 0 only (the disk is rank 0's); its result, or its one-line error, on every rank."""
    outcome = None
    if main:
        try:
            outcome = ("ok", fn())
        except USER_ERRORS as err:
            outcome = ("error", str(err))
    outcome = distributed.from_rank0(outcome)
    if outcome[0] == "error":
        error = ValueError(outcome[1])
        error.reported_by_rank0 = not main  # rank 0 prints the line; the other ranks exit with the same status
        raise error
    return outcome[1]


def _probe_trainers(cfg: Config, modes: list, data, initial: MLP) -> dict:
    """Each mode's Trainer on the plain path, with no logger and no files: a setting the Trainer refuses ends the
    run before a folder is made."""
    probes = {}
    for mode in modes:
        net = initial.copy()
        probes[mode] = Trainer(net, data, mode=mode, epochs=cfg.epochs, batch_size=cfg.batch_size, loss_fn=cfg.loss,
                               seed=cfg.seed, fast=False, **trainer_settings(cfg, net, cfg.lr(mode)))
    return probes


def _dashboard(cfg: Config, modes: list, data, sizes: list):
    n_train = data.x_train.shape[0]
    return dashboards.learning_modes(modes, [cfg.lr(m) for m in modes],
                                     [samples_per_update(m, cfg.batch_size, n_train) for m in modes],
                                     settings={**asdict(cfg), "sizes": sizes})


def _train_modes(cfg: Config, info, modes: list, data, initial: MLP, sizes: list, run_dir: Path, plan: dict,
                 main: bool, quiet: bool, finished: dict) -> dict:
    if not quiet:
        ranks = "" if info is None else f"\n{info.world_size} processes ({info.backend}), each batch split over them"
        print(f"{data}\n{initial}{ranks}\nlogging to {run_dir}")
    n_train = data.x_train.shape[0]
    dashboard = _dashboard(cfg, modes, data, sizes)
    histories = {}
    for mode in modes:
        if mode in finished:  # kept as it is: no logger, no checkpoint, no config.json written again
            histories[mode] = finished[mode]
            if main and mode not in (read_json(run_dir / "results.json", "the results file") or {}):
                merge_results(run_dir / "results.json", {mode: finished[mode].to_dict()})  # stopped before it
            if not quiet:
                print(f"keeping {mode}: it finished at epoch {finished[mode].epoch[-1]} of {cfg.epochs} "
                      f"({finished[mode].stop_reason})")
            continue
        mode_dir, (state, segments) = run_dir / mode, plan[mode]
        if state is None and main and cfg.resume and mode_dir.is_dir():
            shutil.rmtree(mode_dir)  # a mode stopped before its first checkpoint: it starts over, alone in its folder
        if main:
            write_json({**asdict(cfg), "run": run_dir.name, "mode": mode, "lr": cfg.lr(mode), "sizes": sizes,
                        "device": str(initial.device), "net": initial.spec(), "data": repr(data),
                        "world_size": 1 if info is None else info.world_size, "segments": segments},
                       mode_dir / "config.json")
        updates_per_epoch = {"batch": 1, "online": n_train}.get(mode, -(-n_train // cfg.batch_size))
        with RunLogger(cfg.logdir, EXPERIMENT, run_dir.name, mode, updates_per_epoch=updates_per_epoch,
                       samples_per_epoch=n_train, dashboard=dashboard, enabled=main,
                       resume=state is not None) as logger:
            trainer_class = Trainer if info is None else distributed.DistributedTrainer
            net = initial.copy()
            trainer = trainer_class(net, data, mode=mode, epochs=cfg.epochs, **trainer_settings(cfg, net, cfg.lr(mode)),
                                    batch_size=cfg.batch_size, loss_fn=cfg.loss, seed=cfg.seed,
                                    logger=logger if main else None,
                                    checkpoint_path=mode_dir / "checkpoint.pt" if main else None,
                                    progress=f"{mode:>9}" if progress_bars(quiet) else False)
            if state is None and cfg.resume and not quiet:
                print(f"resuming {mode}: it saved no checkpoint, so it starts from epoch 0 of {cfg.epochs}")
            if state is not None:
                trainer.load_state_dict(state, source=str(mode_dir / "checkpoint.pt"))
                if not quiet:
                    print(f"resuming {mode} from epoch {state.get('epoch')} of {cfg.epochs} "
                          f"({mode_dir / 'checkpoint.pt'})")
            history = trainer.run()
        if history.stop_reason == "diverged" and main:
            print(f"{mode}: {history.message}", file=sys.stderr)
        histories[mode] = history
        if main:  # after every mode, so a later failure loses nothing; earlier runs' modes are kept
            merge_results(run_dir / "results.json", {mode: history.to_dict()})
    finish_run(EXPERIMENT, run_dir, cfg.plots if main else None, text=table(histories, cfg), config=asdict(cfg),
               dashboard=dashboard, show=not quiet)
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


def exit_status(histories: dict) -> int:
    """3 when a mode diverged (its message is printed, its results written), else 0."""
    return 3 if any(h.stop_reason == "diverged" for h in histories.values()) else 0


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv, status=exit_status)


if __name__ == "__main__":
    sys.exit(main())
