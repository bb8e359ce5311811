"""TensorBoard logging for training runs: one run folder per learning mode, so TensorBoard overlays the modes.

Layout (``RunLogger.path``)::

    <logdir>/<experiment>/<run>/<mode>/events.out.tfevents...

Point TensorBoard at ``<logdir>/<experiment>/<run>`` (``tensorboard_command``) and the batch, online and minibatch
curves of one run share a chart, one colour per mode; point it at ``<logdir>/<experiment>`` to compare runs too.

What a run folder holds:
- per epoch (step = epoch): ``loss/train``, ``loss/test``, ``accuracy/train``, ``accuracy/test``, whatever
  ``log_epoch`` is given;
- ``loss/update`` (step = update count), thinned to about ``max_update_points_per_epoch`` points per epoch, so that
  online mode (one update per sample) does not write one event per sample. The first point, and the last point
  handed in before each epoch ends and before the logger closes, are always kept;
- ``weights/layer{k}``, ``biases/layer{k}``, ``grads/weights/layer{k}``, ``grads/biases/layer{k}`` histograms every
  ``histogram_every`` epochs. Layer k is the lecture's layer: ``weights[k-1]`` is W^{k-1 -> k}, input is layer 0;
- ``decision_boundary``, an image for 2-D inputs, drawn without matplotlib (``decision_boundary_image``);
- with ``samples_per_epoch``, the same points as ``loss/by_samples_seen`` (step = samples seen), the axis on which
  the modes compare fairly: every mode sees N samples an epoch, in 1, N / b or N updates;
- the hparams of the run (HPARAMS dashboard), written into the run's own event file, so the dashboard shows exactly
  one row per mode folder (``SummaryWriter.add_hparams`` would add a timestamped sub-folder, i.e. a second, stray
  run); its metric columns point at the scalar tags the run wrote (no extra ``hparam/...`` scalars);
- with a ``Dashboard`` (dashboard.py), the experiment's custom-scalars layout (key chart first) and its HPARAMS table,
  the same keys in every run, the keys that vary as columns. ``Dashboard.instructions`` prints the
  ``tensorboard --logdir`` line with the tag filter beside it and a TIME SERIES link with the key charts pinned.

The package holds the RunLogger, the Dashboard (layout and HPARAMS table), the decision-boundary image, the
command that opens TensorBoard, and the reading of event files back.

Left out: anything that needs TensorFlow, and images for inputs that are not 2-D (a no-op there).
"""

from .command import tensorboard_command
from .dashboard import Band, Category, Chart, Dashboard
from .decision_boundary import PALETTE, decision_boundary_image
from .reading import load_run, read_scalars
from .run_logger import RunLogger

__all__ = [
    "RunLogger",
    "Dashboard",
    "Category",
    "Chart",
    "Band",
    "decision_boundary_image",
    "tensorboard_command",
    "read_scalars",
    "load_run",
    "PALETTE",
]
