"""RunLogger: one learning mode's run written for TensorBoard, to ``<logdir>/<experiment>/<run>/<mode>``.

Per-epoch scalars, ``loss/update`` thinned to about ``max_update_points_per_epoch`` points per epoch (and the same
points against the samples seen, ``loss/by_samples_seen``; update_points.py), weight, bias and gradient histograms, the
decision-boundary image (decision_boundary.py), the run's hparams and its experiment's dashboard (dashboard.py),
plus the checks that turn what a caller logs into what TensorBoard stores.
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path
from typing import Optional

from torch import Tensor

from ..checks import check_bool, check_int
from .dashboard import Dashboard, column_text, hparam_value, layout_summary, numeric_column
from ..checkpoint import PathLike
from .decision_boundary import decision_boundary_image, grid_predict_fn
from .event_files import NamedWriter as _NamedWriter
from .event_files import check_no_other_run as _check_no_other_run
from .update_points import UpdateLossPoints


class RunLogger(UpdateLossPoints):
    """Writes one learning mode's run to ``<logdir>/<experiment>/<run>/<mode>`` for TensorBoard.

    Args:
        logdir: root of all logs, e.g. "runs".
        experiment: experiment name, e.g. "learning_modes".
        run: name of one run of the experiment, e.g. "xor_seed0"; the modes of a run share this folder.
        mode: learning mode, e.g. "batch", "online", "minibatch"; the folder TensorBoard shows as a run.
        histogram_every: ``log_histograms`` writes at epochs that are multiples of this (or when forced).
        max_update_points_per_epoch: upper bound (>= 2) on ``loss/update`` points per epoch.
        updates_per_epoch: updates in one epoch (1 for batch mode, n_samples for online mode). If None, it is
            learned at the first ``log_epoch`` that follows update losses (they are held back until then).
        samples_per_epoch: N, the samples one epoch sees. When given, every ``loss/update`` point is also written
            as ``loss/by_samples_seen`` with step = the samples seen by the end of that update: the axis on which
            batch (N per update), minibatch (b) and online (1) mode cover the same range, epoch by epoch. Within an
            epoch an update is counted as ceil(N / updates_per_epoch) samples, the last one of an epoch as the rest.
        dashboard: the experiment's Dashboard: its custom-scalars layout is written when the logger opens, and
            ``log_hparams`` writes its HPARAMS table with exactly its keys and metric tags.
        run_hparams: hparams of this run that ``log_hparams`` adds to what it is given (the problem and method of
            one xor run, say, when a trainer logs its own hparams).
        enabled: False makes every method a no-op that creates no folder (quiet tests, non-zero ranks).
        resume: the folder may already hold this run's events (a run continued from its checkpoint writes on after
            them). Without it, a folder that holds event files is refused (ValueError naming it): TensorBoard would
            show two runs' curves as one. One run per folder.

    The logger is a context manager: on leaving the ``with`` block, also by an exception or Ctrl-C, everything
    written so far is flushed and the writer closed. ``close`` may be called any number of times.

    Example:
        >>> with RunLogger("runs", "learning_modes", "xor_seed0", "online", updates_per_epoch=4) as log:
        ...     log.log_update_losses(1, losses)               # losses[i] is the loss after update 1 + i
        ...     log.log_epoch(1, {"loss/train": 0.25, "accuracy/train": 0.75})
        ...     log.log_histograms(1, net, grads)
        ...     log.log_hparams({"mode": "online", "lr": 0.5, "sizes": [2, 2, 1]}, {"loss/train": 0.25})
        >>> print(tensorboard_command(log.run_dir))
    """

    def __init__(
        self,
        logdir: PathLike,
        experiment: str,
        run: str,
        mode: str,
        *,
        histogram_every: int = 5,
        max_update_points_per_epoch: int = 100,
        updates_per_epoch: Optional[int] = None,
        samples_per_epoch: Optional[int] = None,
        dashboard: Optional[Dashboard] = None,
        run_hparams: Optional[dict] = None,
        enabled: bool = True,
        resume: bool = False,
    ):
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a str or os.PathLike, but got {type(logdir).__name__}: {logdir!r}")
        for name, value in (("experiment", experiment), ("run", run), ("mode", mode)):
            _check_folder_name(name, value)
        self.histogram_every = check_int("histogram_every", histogram_every, minimum=1)
        self.max_update_points_per_epoch = check_int(
            "max_update_points_per_epoch", max_update_points_per_epoch, minimum=2
        )
        if updates_per_epoch is not None:
            updates_per_epoch = check_int("updates_per_epoch", updates_per_epoch, minimum=1)
        if samples_per_epoch is not None:
            samples_per_epoch = check_int("samples_per_epoch", samples_per_epoch, minimum=1)
        if dashboard is not None and not isinstance(dashboard, Dashboard):
            raise TypeError(f"dashboard must be a tblog.Dashboard or None, but got {type(dashboard).__name__}")
        if run_hparams is not None and not isinstance(run_hparams, dict):
            raise TypeError(f"run_hparams must be a dict or None, but got {type(run_hparams).__name__}")
        self.enabled = check_bool("enabled", enabled)
        self.resume = check_bool("resume", resume)
        self.samples_per_epoch = samples_per_epoch
        self.dashboard = dashboard
        self.run_hparams = dict(run_hparams or {})
        self._scalar_tags: set = set()  # every scalar tag written, for log_hparams' metric columns
        self.experiment, self.run, self.mode = experiment, run, mode
        self.path = Path(logdir) / experiment / run / mode
        self.closed = False
        self._writer = None
        self._last_epoch: Optional[int] = None
        # loss/update thinning: points are kept at least _every updates apart, starting with the first one.
        self._updates_per_epoch = updates_per_epoch
        self._every: Optional[int] = None if updates_per_epoch is None else self._interval(updates_per_epoch)
        self._next_update: Optional[int] = None  # the next update index that may be kept
        self._held: list = []  # (first_update, losses, stride) handed in while _every is unknown
        self._held_span: Optional[tuple] = None  # (lowest, highest) update index held
        self._pending: Optional[tuple] = None  # (update, loss) last point handed in, when it was not kept
        if enabled:
            _check_no_other_run(self.path, self.resume)
            from torch.utils.tensorboard import SummaryWriter  # imported here: `enabled=False` stays light

            try:
                self._writer = _NamedWriter(SummaryWriter(log_dir=str(self.path), flush_secs=10), self.path)
            except OSError as err:
                raise OSError(err.errno, f"cannot create the TensorBoard folder {self.path}: "
                                         f"{err.strerror or err}") from None
            if dashboard is not None and dashboard.layout:
                self._writer.file_writer.add_summary(layout_summary(dashboard.layout), 0)

    @property
    def run_dir(self) -> Path:
        """``<logdir>/<experiment>/<run>``, the folder to point TensorBoard at to overlay the modes of this run."""
        return self.path.parent

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self.enabled else "disabled")
        return f"RunLogger(path={str(self.path)!r}, {state})"

    # ------------------------------------------------------------------ scalars
    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Per-epoch scalars with step = epoch, e.g. {"loss/train": 0.1, "accuracy/test": 0.9}; None values are
        skipped. Also writes the last ``loss/update`` point handed in so far (the end of the epoch's curve)."""
        if not self._active():
            return
        epoch = check_int("epoch", epoch, minimum=0)
        if not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict like {{'loss/train': 0.1}}, but got {type(metrics).__name__}")
        for tag, value in metrics.items():
            if value is None:
                continue
            self._add_scalar(_check_tag("metrics key", tag), _scalar("metrics", tag, value), epoch)
        self._last_epoch = epoch if self._last_epoch is None else max(self._last_epoch, epoch)
        if self._every is None and self._held:
            self._learn_interval()
        self._write_pending()

    def _add_scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, value, step)
        self._scalar_tags.add(tag)

    # ------------------------------------------------------------------ histograms and images
    def log_histograms(self, epoch: int, net, grads=None, *, force: bool = False) -> bool:
        """Weight and bias histograms per layer (and of ``grads``, a Gradients, when given) at epochs that are
        multiples of ``histogram_every``, or always with ``force=True``. Returns whether anything was written."""
        if not self._active():
            return False
        epoch = check_int("epoch", epoch, minimum=0)
        if not force and epoch % self.histogram_every != 0:
            return False
        for k, w in enumerate(net.weights):
            self._writer.add_histogram(f"weights/layer{k + 1}", w.detach().cpu(), epoch)
        for k, b in enumerate(getattr(net, "biases", [])):
            self._writer.add_histogram(f"biases/layer{k + 1}", b.detach().cpu(), epoch)
        if grads is not None:
            for k, g in enumerate(grads.weights):
                self._writer.add_histogram(f"grads/weights/layer{k + 1}", g.detach().cpu(), epoch)
            for k, g in enumerate(getattr(grads, "biases", None) or []):
                self._writer.add_histogram(f"grads/biases/layer{k + 1}", g.detach().cpu(), epoch)
        return True

    def log_decision_boundary(
        self, epoch: int, net, x: Tensor, y: Tensor, *, resolution: int = 128
    ) -> Optional[Tensor]:
        """The ``decision_boundary`` image of ``net`` over the data (x, y) at step = epoch, for 2-D inputs only
        (otherwise a no-op that returns None). Returns the (3, H, W) image written."""
        if not self._active():
            return None
        epoch = check_int("epoch", epoch, minimum=0)
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 2:
            return None
        image = decision_boundary_image(grid_predict_fn(net), x, y, resolution=resolution)
        self._writer.add_image("decision_boundary", image, epoch, dataformats="CHW")
        return image

    def log_image(self, tag: str, image: Tensor, step: int) -> None:
        """An RGB image (3, H, W) with values in [0, 1] at ``step``, e.g. one drawn by decision_boundary_image."""
        if not self._active():
            return
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a (3, H, W) tensor, but got {got}")
        self._writer.add_image(_check_tag("tag", tag), image.detach().cpu(), check_int("step", step, minimum=0),
                               dataformats="CHW")

    # ------------------------------------------------------------------ hparams and text
    def log_hparams(self, hparams: dict, metrics=None) -> None:
        """The run's hyperparameters, for TensorBoard's HPARAMS dashboard (one row per run), with metric columns
        that point at scalar tags this run already wrote: HPARAMS shows their last values, no scalar is added.

        ``hparams`` (with ``run_hparams`` added) values become int, float or str: lists and tuples (sizes) are
        written as "[2, 3, 1]", bools and None as "True"/"False"/"None", dtypes as "float64".
        With a ``dashboard``, the run writes exactly the dashboard's keys and metric tags (its HPARAMS table, the same
        in every run of the experiment). Without one, it writes its own keys, and ``metrics`` names the metric
        columns: tags (``["loss/test"]``), or a dict whose keys are tags or the "final/<what>_<split>" names trainers
        use for the last value of "<what>/<split>" (``final/loss_test`` -> ``loss/test``; ``final/loss`` ->
        ``loss/train``); its values are the figures of the last epoch, which the tags already hold. A name that
        matches no tag this run wrote is left out (the plugin reads metric values from scalar tags). None: every
        per-epoch tag written.
        Call it once per run, at the end.
        """
        if not self._active():
            return
        if not isinstance(hparams, dict) or not (metrics is None or isinstance(metrics, (dict, list, tuple))):
            raise TypeError(f"hparams must be a dict and metrics a dict, list of tags or None, but got "
                            f"{type(hparams).__name__} and {type(metrics).__name__}")
        merged = {**{_check_tag("hparams key", k): v for k, v in hparams.items()}, **self.run_hparams}
        if self.dashboard is not None:
            summaries = self.dashboard.summaries(merged)
        else:
            from .dashboard import hparams_summaries

            values = {k: hparam_value(v) for k, v in merged.items()}
            values = {k: v if numeric_column([v]) else column_text(v) for k, v in values.items()}  # ints: "   4"
            columns = [(k, not isinstance(v, str), False) for k, v in values.items()]
            summaries = hparams_summaries(values, columns, self._metric_tags(metrics))
        step = 0 if self._last_epoch is None else self._last_epoch
        for summary in summaries:
            self._writer.file_writer.add_summary(summary, step)

    def _metric_tags(self, metrics) -> list:
        """The scalar tags ``metrics`` names (see log_hparams), in order, each once."""
        if metrics is None:
            return sorted(t for t in self._scalar_tags if t not in ("loss/update", "loss/by_samples_seen"))
        tags = []
        for name in metrics:
            name = _check_tag("metrics key", name)
            short = name[len("final/"):] if name.startswith("final/") else name
            what, _, split = short.rpartition("_")
            candidates = [name, short, f"{what}/{split}", f"{short}/train"]
            tag = next((t for t in candidates if t in self._scalar_tags), None)
            if tag is not None and tag not in tags:
                tags.append(tag)
        return tags

    def add_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry (Markdown), e.g. the config or a summary of the run."""
        if not self._active():
            return
        self._writer.add_text(_check_tag("tag", tag), str(text), check_int("step", step, minimum=0))

    # ------------------------------------------------------------------ lifetime
    def flush(self) -> None:
        """Write everything logged so far to disk (held update losses wait for the epoch length)."""
        if self._writer is not None and not self.closed:
            self._writer.flush()

    def close(self) -> None:
        """Write the held and pending update losses, flush and close. Safe to call again."""
        if self.closed:
            return
        self.closed = True
        if self._writer is None:
            return
        try:
            if self._every is None and self._held:
                self._learn_interval()  # no epoch ended: all the updates seen count as one epoch
            self._write_pending()
        finally:
            self._writer.close()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.close()
        except Exception as error:  # never hide the exception that ended the block behind a logging error
            if exc_type is None:
                raise
            if isinstance(error, OSError) and isinstance(exc, OSError):
                return False  # the same failing disk, already named by the error that ended the block
            warnings.warn(f"RunLogger({str(self.path)!r}) failed to close cleanly: {error!r}", RuntimeWarning)
        return False

    def _active(self) -> bool:
        if self.closed and self.enabled:
            raise RuntimeError(f"RunLogger for {str(self.path)!r} is closed; log before leaving the `with` block")
        return self.enabled


# ---------------------------------------------------------------------- checks
def _check_folder_name(name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty folder name, but got {value!r}")
    if value in (".", "..") or "/" in value or "\\" in value or os.sep in value:
        raise ValueError(f"{name} must be one folder name without path separators, but got {value!r}")


def _check_tag(name: str, tag) -> str:
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{name} must be a non-empty str, but got {tag!r}")
    return tag


def _scalar(name: str, key, value) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name}[{key!r}] must be a number or a one-element tensor, but got shape {tuple(value.shape)}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}[{key!r}] must be a number, but got {type(value).__name__}: {value!r}")
    return float(value)
