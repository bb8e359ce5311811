"""Figures and a report without a server: what ``--plots DIR`` writes for every experiment.

``write_plots(experiment, run_dir, folder)`` reads a finished run folder (its TensorBoard event files and
results.json) and writes, with matplotlib:

    DIR/<figure>.png, DIR/<figure>.svg   each figure of the experiment (loss curves per mode, decision boundaries
                                         over epochs, the sweep's heatmap of success rate by mode and learning rate,
                                         the hidden layer's states, ...)
    DIR/report.html                      one self-contained page: the printed table, every figure (PNG inlined as
                                         base64), the settings; for slides, course pages, and remote machines where
                                         forwarding TensorBoard's port is a hurdle

The figures are drawn from what the run wrote, so the same call works on any earlier run folder too:

    python -m experiments.plotting runs/sweep/xor-20260101-120000 plots/sweep

matplotlib comes with the ``datasets`` extra
(``pip install -e '.[datasets]'``); the experiments check for it before they train.
"""

from __future__ import annotations

from .report import finish_run, require_matplotlib, write_plots

__all__ = ["finish_run", "write_plots", "require_matplotlib"]
