"""Reading a run folder's event files back: ``load_run`` (everything, unsampled) and ``read_scalars``."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import PathLike


def load_run(run_path: PathLike):
    """The event files of one run folder, fully loaded (size_guidance 0: every event, no sampling)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    run_path = Path(run_path)
    if not run_path.is_dir():
        raise FileNotFoundError(f"run_path must be a folder of event files, but {str(run_path)!r} is not a folder")
    guidance = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 0}
    return ea.EventAccumulator(str(run_path), size_guidance=guidance).Reload()


def read_scalars(run_path: PathLike) -> dict:
    """Every scalar series in a run folder: {tag: [(step, value), ...]} sorted by step (values as stored, float32)."""
    acc = load_run(run_path)
    return {
        tag: sorted(((e.step, e.value) for e in acc.Scalars(tag)), key=lambda sv: sv[0])
        for tag in acc.Tags()["scalars"]
    }
