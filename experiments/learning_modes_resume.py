"""What a learning_modes run folder holds and what ``--resume`` may continue (experiments/learning_modes.py): each
mode's checkpoint resumed or refused, its settings against the mode's config.json (a changed setting is refused,
named, unless --allow-changes lets it through), a mode added to a run only with the run's settings, every
checkpoint loaded into its probe before anything is written, and the modes a resume finds finished. ``cfg`` is the
script's Config."""

from __future__ import annotations

import warnings
from pathlib import Path

from experiments.common import flag_name
from experiments.run_folder import changed_settings, read_json
from manual_backprop.checkpoint import load_checkpoint
from manual_backprop.training import MODES

# The settings every mode of a run shares, and what a resume compares with the mode's config.json (plus its lr).
SHARED_SETTINGS = ("dataset", "n_samples", "noise", "sizes", "activation", "output_activation", "loss", "dtype", "seed",
                   "epochs", "init", "optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay", "target_loss",
                   "replacement")


def settings(cfg, mode: str, sizes: list) -> dict:
    """What a mode's config.json records and a resume compares: the shared settings, its lr and batch size."""
    return {**{k: getattr(cfg, k) for k in SHARED_SETTINGS}, "sizes": sizes, "lr": cfg.lr(mode),
            "batch_size": cfg.batch_size}


def _flag(key: str, mode: str) -> str:
    return f"--lr-{mode}" if key == "lr" else flag_name(key)


def check_run_folder(cfg, run_dir: Path, modes: list, sizes: list) -> dict:
    """Before anything is written: each mode's checkpoint (resumed or refused), its settings against the run's
    config.json, results.json readable. Returns {mode: (checkpoint state or None, segments for config.json)}."""
    read_json(run_dir / "results.json", "the results file")
    saved = {m: read_json(run_dir / m / "config.json", f"the {m} settings file") for m in MODES}
    plan = {}
    for mode in modes:
        mode_dir, now = run_dir / mode, settings(cfg, mode, sizes)
        checkpoint = mode_dir / "checkpoint.pt"
        first = {"from_epoch": 0, "epochs": cfg.epochs, "lr": cfg.lr(mode)}
        if not checkpoint.exists():
            others = next((c for m, c in saved.items() if c is not None and m != mode), None)
            changes = changed_settings(others, now, SHARED_SETTINGS) if others is not None else {}
            _refuse(changes, cfg, f"run {run_dir.name!r} in {run_dir} holds modes trained with other settings",
                    "pass the run's settings to add a mode to it", mode, resume=False)
            plan[mode] = (None, [first])
            continue
        if not cfg.resume:
            raise ValueError(f"run {run_dir.name!r} already has a checkpoint for {mode} in {mode_dir}; pass --resume "
                             f"to continue it, or --run NAME for a new run")
        old = saved[mode]
        if old is None:
            raise ValueError(f"--resume: {checkpoint} has no config.json beside it, so its settings cannot be "
                             f"checked; start a new run with --run NAME")
        keys = SHARED_SETTINGS + ("lr",) + (("batch_size",) if mode == "minibatch" else ())
        changes = changed_settings(old, now, keys)
        _refuse(changes, cfg, f"--resume: the {mode} run in {mode_dir} was started with other settings",
                f"resume with the run's own settings (--config {mode_dir / 'config.json'} replays them)", mode,
                resume=True)
        state = load_checkpoint(checkpoint)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or isinstance(state["epoch"], bool):
            raise ValueError(f"--resume: {checkpoint} is not a checkpoint of this script (it must hold a dict with an "
                             f"int 'epoch'); start a new run with --run NAME")
        history = state.get("history")
        if isinstance(history, dict) and history.get("stop_reason") == "diverged" and "lr" not in changes:
            raise ValueError(f"--resume: the {mode} run in {mode_dir} diverged after epoch {state.get('epoch')}, and "
                             f"with the same --lr-{mode} {cfg.lr(mode):g} it would diverge again; pass a smaller "
                             f"--lr-{mode} with --allow-changes lr to continue from its last good state, or start a "
                             f"new run with --run NAME")
        segment = {"from_epoch": state.get("epoch"), "epochs": cfg.epochs, "lr": cfg.lr(mode)}
        if changes:
            segment["changed"] = {k: list(v) for k, v in sorted(changes.items())}
        segments = old.get("segments") or [{"from_epoch": 0, "epochs": old.get("epochs"), "lr": old.get("lr")}]
        plan[mode] = (state, [*segments, segment])
    return plan


def _refuse(changes: dict, cfg, what: str, how: str, mode: str, *, resume: bool) -> None:
    """Raise one line naming every changed setting that --allow-changes does not let through."""
    refused = {k: v for k, v in changes.items() if k not in cfg.allow_changes}
    if not refused:
        return
    listed = ", ".join(f"{_flag(k, mode)} {a} (now {b})" for k, (a, b) in refused.items())
    allow = ", pass --allow-changes lr epochs to let a new lr or epoch limit through" if resume else ""
    raise ValueError(f"{what}: {listed}; {how}{allow}, or start a new run with --run NAME")


def check_checkpoints_fit(probes: dict, run_dir: Path, plan: dict) -> None:
    """Load every checkpoint into its probe before anything is written: one that does not fit this run (another
    architecture, loss or batch size) is refused now, naming it."""
    for mode, probe in probes.items():
        state = plan[mode][0]
        if state is not None:
            try:
                with warnings.catch_warnings():  # the real load below says what an older checkpoint lacks
                    warnings.simplefilter("ignore")
                    probe.load_state_dict(state)
            except (ValueError, TypeError, RuntimeError, KeyError, IndexError, AttributeError) as err:
                raise ValueError(f"--resume: {run_dir / mode / 'checkpoint.pt'} does not fit this run: {err}") \
                    from None


def finished_modes(cfg, modes: list, probes: dict, plan: dict) -> dict:
    """{mode: History} of the modes whose checkpoint a --resume finds finished (the epoch limit or the target loss
    reached): they are kept as they are, nothing of theirs is written again. The probes hold the checkpoints."""
    histories = {}
    for mode in modes if cfg.resume else ():  # the Trainer saves its last checkpoint before it records the stop
        probe, h = probes[mode], probes[mode].history
        if plan[mode][0] is not None and (h.stop_reason == "target_loss" or (
                h.stop_reason in ("", "max_epochs") and probe.epoch >= cfg.epochs)):
            h.stop_reason = h.stop_reason or "max_epochs"
            histories[mode] = h
    return histories
