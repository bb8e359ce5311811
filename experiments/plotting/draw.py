"""The matplotlib pieces the figures share: reading a run folder back, curves, image grids, a heatmap.

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so nothing depends on a display or a global
backend, and a script can draw them on a headless GPU machine.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from manual_backprop.tblog import PALETTE, load_run

COLOURS = ["#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgb) for rgb in PALETTE.tolist()]  # tab10
MODE_COLOURS = {"batch": COLOURS[0], "online": COLOURS[1], "minibatch": COLOURS[2]}


def colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def new_figure(rows: int, cols: int, *, width: float = 4.2, height: float = 3.2, squeeze: bool = False):
    """(figure, axes as a rows x cols array) without pyplot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=squeeze)
    return figure, axes


# ---------------------------------------------------------------------------------------------------- reading
def run_folders(run_dir: Path) -> dict:
    """{folder name: path} of the run's sub-folders that hold event files, sorted by name."""
    return {p.name: p for p in sorted(Path(run_dir).iterdir())
            if p.is_dir() and any(f.name.startswith("events.out.tfevents") for f in p.iterdir())}


@lru_cache(maxsize=256)
def _accumulator(path: str):
    return load_run(path)


def scalars(path: Path, tag: str) -> tuple:
    """(steps, values) of one scalar series, as numpy arrays (empty when the run has no such tag)."""
    acc = _accumulator(str(path))
    if tag not in acc.Tags()["scalars"]:
        return np.array([]), np.array([])
    events = sorted(acc.Scalars(tag), key=lambda e: e.step)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def images(path: Path, tag: str = "decision_boundary") -> list:
    """[(step, RGB array)] of an image series, sorted by step."""
    from PIL import Image

    acc = _accumulator(str(path))
    if tag not in acc.Tags()["images"]:
        return []
    return [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
            for e in sorted(acc.Images(tag), key=lambda e: e.step)]


def pick(items: list, k: int) -> list:
    """k items spread evenly over the list, the first and the last among them."""
    if len(items) <= k:
        return list(items)
    index = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in index]


def forget() -> None:
    """Drop the cached event files (a run folder read again after it changed)."""
    _accumulator.cache_clear()


# ---------------------------------------------------------------------------------------------------- drawing
def curves(ax, series: dict, *, title: str, xlabel: str, ylabel: str, colours: dict = None, log_y: bool = False,
           linewidth: float = 1.6, alpha: float = 1.0, legend: bool = True) -> None:
    """One line per entry of ``series`` {label: (steps, values)}."""
    for i, (label, (steps, values)) in enumerate(series.items()):
        if len(steps):
            ax.plot(steps, values, label=label, color=(colours or {}).get(label, colour(i)), linewidth=linewidth,
                    alpha=alpha)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if legend and series:
        ax.legend(fontsize=8)


def image_grid(rows: dict, *, columns: int = 6, title: str = "", cell: float = 1.9):
    """A figure of images: one row per entry of ``rows`` {label: [(step, image)]}, ``columns`` steps spread over
    each row's series, each titled with its epoch."""
    rows = {label: pick(frames, columns) for label, frames in rows.items() if frames}
    width = max((len(frames) for frames in rows.values()), default=1)
    figure, axes = new_figure(max(len(rows), 1), width, width=cell, height=cell + 0.25)
    for r, (label, frames) in enumerate(rows.items()):
        for c in range(width):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(frames):
                ax.axis("off")
                continue
            step, image = frames[c]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"epoch {step}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


def heatmap(ax, values: np.ndarray, rows: list, cols: list, *, title: str, xlabel: str, ylabel: str,
            fmt: str = "{:.0%}", vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis") -> None:
    """A table of numbers as colours, each cell labelled with its value (NaN: "-")."""
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "-" if np.isnan(v) else fmt.format(v)
            dark = not np.isnan(v) and (v - vmin) / ((vmax - vmin) or 1) < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
