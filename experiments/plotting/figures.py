"""The figures of each experiment, drawn from its run folder: ``FIGURES[name](run_dir)`` yields
(file name, caption, matplotlib Figure) in the order the report shows them, the key figure first."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .draw import MODE_COLOURS, colour, curves, heatmap, image_grid, images, new_figure, run_folders, scalars


def _results(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _boundaries(folders: dict, title: str):
    rows = {name: images(path) for name, path in folders.items()}
    if any(rows.values()):
        yield ("decision_boundaries", "Decision boundaries over the epochs: the regions the network gives each "
               "class (paler near the boundary), the training points on top.", image_grid(rows, title=title))


# ---------------------------------------------------------------------------------------------------- learning modes
def learning_modes(run_dir: Path):
    folders = run_folders(run_dir)
    colours = {m: MODE_COLOURS.get(m, colour(i)) for i, m in enumerate(folders)}
    figure, axes = new_figure(1, 3)
    curves(axes[0][0], {m: scalars(p, "loss/by_samples_seen") for m, p in folders.items()}, colours=colours,
           title="loss of each update, by samples seen", xlabel="samples seen", ylabel="loss", log_y=True,
           linewidth=0.8)
    curves(axes[0][1], {m: scalars(p, "loss/train") for m, p in folders.items()}, colours=colours,
           title="training loss per epoch", xlabel="epoch", ylabel="loss", log_y=True)
    curves(axes[0][2], {m: scalars(p, "accuracy/test") for m, p in folders.items()}, colours=colours,
           title="test accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    yield ("loss_per_mode", "Loss per mode. Left: the loss of each update against the samples seen, the axis on "
           "which the modes compare fairly (each sees N samples an epoch: batch in 1 update, minibatch in N / b, "
           "online in N). Middle and right: per epoch.", figure)
    yield from _boundaries(folders, "decision boundary per mode")


# ---------------------------------------------------------------------------------------------------- sweep
def sweep(run_dir: Path):
    rows = _results(run_dir).get("rows", [])
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lrs = sorted({r["lr"] for r in rows})
    cell = {(r["mode"], r["lr"]): r for r in rows}
    rate = np.array([[cell[(m, lr)]["success_rate"] if (m, lr) in cell else np.nan for lr in lrs] for m in modes])
    epochs = np.array([[cell.get((m, lr), {}).get("median_epochs") or np.nan for lr in lrs] for m in modes], float)
    figure, axes = new_figure(1, 2, width=5.2, height=3.4)
    heatmap(axes[0][0], rate, modes, [f"{lr:g}" for lr in lrs], title="success rate (train loss reached the target)",
            xlabel="learning rate", ylabel="mode")
    top = np.nanmax(epochs) if np.isfinite(epochs).any() else 1.0
    heatmap(axes[0][1], epochs, modes, [f"{lr:g}" for lr in lrs], title="median epochs to success",
            xlabel="learning rate", ylabel="mode", fmt="{:.0f}", vmax=top, cmap="viridis_r")
    yield ("success_heatmap", "Success rate by mode and learning rate over the seeds (left), and the median "
           "epochs the successful seeds took (right; '-': none succeeded).", figure)
    folders = run_folders(run_dir)
    if folders:
        figure, axes = new_figure(1, len(modes), width=4.0)
        for i, mode in enumerate(modes):
            mine = {name.split("_", 1)[1]: path for name, path in folders.items() if name.startswith(f"{mode}_")}
            curves(axes[0][i], {name: scalars(path, "success/fraction") for name, path in mine.items()},
                   title=f"{mode}: fraction of seeds at the target", xlabel="epoch", ylabel="success rate")
        yield ("success_curves", "The fraction of seeds that have reached the target loss, epoch by epoch, one "
               "line per learning rate.", figure)


# ---------------------------------------------------------------------------------------------------- xor
def _xor_runs(run_dir: Path) -> dict:
    """{(problem, method): {seed: path}} of the xor experiment's run folders."""
    runs = {}
    for name, path in run_folders(run_dir).items():
        match = re.fullmatch(r"(\w+)-(perceptron|delta|mlp)-seed(\d+)", name)
        if match:
            runs.setdefault((match.group(1), match.group(2)), {})[int(match.group(3))] = path
    return runs


def xor(run_dir: Path):
    runs = _xor_runs(run_dir)
    problems = list(dict.fromkeys(p for p, _ in runs))
    methods = [m for m in ("perceptron", "delta", "mlp") if any(m == mm for _, mm in runs)]
    names = {"perceptron": "perceptron rule", "delta": "delta rule", "mlp": "MLP + backprop"}
    if not runs:
        return
    figure, axes = new_figure(2, len(problems), width=4.0)
    for c, problem in enumerate(problems):
        for row, (tag, label) in enumerate((("loss/train", "e(w), mean squared error"), ("accuracy/train",
                                                                                         "accuracy"))):
            ax = axes[row][c]
            for i, method in enumerate(methods):
                for k, (seed, path) in enumerate(sorted(runs.get((problem, method), {}).items())):
                    steps, values = scalars(path, tag)
                    ax.plot(steps, values, color=colour(i), linewidth=0.8, alpha=0.5,
                            label=names[method] if k == 0 else None)
            if tag == "loss/train":
                ax.axhline(0.25 if problem == "xor" else 0.0625, color="black", linestyle=":", linewidth=1,
                           label="best line (least squares)")
            ax.set_xscale("symlog", linthresh=10)
            ax.set_title(f"{problem.upper()}: {label}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            if c == 0:
                ax.legend(fontsize=7)
    seeds = max(len(v) for v in runs.values())
    yield ("curves_per_method", f"e(w) and accuracy per epoch, every logged seed ({seeds}) of every method; the "
           "dotted line is the least-squares minimum over all lines. On XOR the perceptron never settles, the delta "
           "rule stops at 0.25 with at most 3 of 4 points right, the MLP goes on to 100%.", figure)
    rows = {f"{p} {names[m]}": images(runs[(p, m)][min(runs[(p, m)])]) for p in problems for m in methods
            if (p, m) in runs}
    last = {label: frames[-1:] for label, frames in rows.items() if frames}
    if last:
        figure, axes = new_figure(len(problems), len(methods), width=2.4, height=2.6)
        for r, problem in enumerate(problems):
            for c, method in enumerate(methods):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                frames = last.get(f"{problem} {names[method]}")
                if frames:
                    ax.imshow(frames[0][1], interpolation="nearest")
                    ax.set_title(f"{problem.upper()}, {names[method]} (epoch {frames[0][0]})", fontsize=8)
        yield ("final_boundaries", "The decision boundary each method ends with (first logged seed): a line for the "
               "single-layer rules, a curve for the MLP.", figure)


# ---------------------------------------------------------------------------------------------------- softmax
def softmax_outputs(run_dir: Path):
    results = _results(run_dir).get("runs", {})
    figure, axes = new_figure(1, 3, width=4.3)
    for i, (variant, r) in enumerate(results.items()):
        sums = np.array(r["row_sums_per_epoch"])  # (epochs + 1, 4): epoch, mean, min, max
        ax = axes[0][0]
        ax.fill_between(sums[:, 0], sums[:, 2], sums[:, 3], color=colour(i), alpha=0.25)
        ax.plot(sums[:, 0], sums[:, 1], color=colour(i), label=variant)
        history = r["history"]
        axes[0][1].plot(history["epoch"], history["test_accuracy"], color=colour(i), label=variant)
        axes[0][2].plot(history["epoch"], history["train_loss"], color=colour(i), label=variant)
    axes[0][0].axhline(1.0, color="black", linestyle=":", linewidth=1)
    for ax, title, ylabel in ((axes[0][0], "row sum of the outputs: mean, min to max", "sum of the outputs"),
                              (axes[0][1], "test accuracy", "accuracy"), (axes[0][2], "training loss (each its own)",
                                                                          "loss")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    yield ("row_sums", "Left: the row sums of the outputs on the test split (mean, and the band from the smallest to "
           "the largest): a softmax row is a probability distribution and sums to 1, sigmoid outputs do not. "
           "Middle and right: both classify about equally well.", figure)
    yield from _boundaries(run_folders(run_dir), "decision boundary: sigmoid + squared error, softmax + "
                                                 "cross-entropy")


# ---------------------------------------------------------------------------------------------------- linear collapse
def linear_collapse(run_dir: Path):
    folders = {n: p for n, p in run_folders(run_dir).items() if re.fullmatch(r"\w+-seed\d+", n)}
    activations = list(dict.fromkeys(n.rsplit("-seed", 1)[0] for n in folders))
    figure, axes = new_figure(1, 2, width=4.8)
    for i, act in enumerate(activations):
        for k, (name, path) in enumerate(p for p in folders.items() if p[0].startswith(f"{act}-seed")):
            for ax, tag in ((axes[0][0], "loss/train"), (axes[0][1], "accuracy/train")):
                steps, values = scalars(path, tag)
                ax.plot(steps, values, color=colour(i), alpha=0.7, label=act if k == 0 else None)
    axes[0][0].axhline(0.25, color="black", linestyle=":", linewidth=1, label="0.25: the best line")
    for ax, title in ((axes[0][0], "e(w) on XOR"), (axes[0][1], "accuracy (output >= 0.5)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    yield ("loss_linear_vs_nonlinear", "The same architecture on XOR, linear (identity) against non-linear hidden "
           "units: the linear network is one affine map and never goes below e(w) = 0.25.", figure)
    rows = {name: images(path) for name, path in folders.items()}
    if any(rows.values()):
        yield ("decision_boundaries", "Decision boundaries over the epochs: a line for the linear network.",
               image_grid(rows, title="decision boundary"))


# ---------------------------------------------------------------------------------------------------- hidden layers
def hidden_layers(run_dir: Path):
    runs = _results(run_dir).get("runs", {})
    labels = np.array([0, 1, 1, 0])  # XOR, in the dataset's order (0,0), (0,1), (1,0), (1,1)
    names = ["(0,0)", "(0,1)", "(1,0)", "(1,1)"]
    columns = 6
    figure, axes = new_figure(len(runs), columns, width=2.3, height=2.35)
    for r, (net, run) in enumerate(runs.items()):
        shots = _snapshots(run["snapshots"], run.get("first_separable_epoch"), columns)
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(shots):
                ax.axis("off")
                continue
            _hidden_panel(ax, shots[c], labels, names, run["sigmoid_plane"], run["hidden"])
            if c == 0:
                ax.set_ylabel(f"{net}\n" + ("h2" if run["hidden"] == 2 else "across"), fontsize=9)
    yield ("hidden_space", "The four XOR inputs mapped into the hidden layer's space (blue: class 0, orange: class "
           "1), epoch by epoch, with the output layer's own line W2 h + b2 = 0 (shaded: the side it calls 1). "
           "With non-linear hidden units the states become linearly separable; with a linear hidden layer they keep "
           "XOR's crossing diagonals and never do. For H > 2 the axes are the output layer's normal and the main "
           "direction across it.", figure)
    figure, axes = new_figure(1, 2, width=4.8)
    curves(axes[0][0], {net: tuple(np.array(run["margins"]).T) for net, run in runs.items()},
           title="worst point's signed distance to the output line", xlabel="epoch", ylabel="distance (> 0: separable)")
    axes[0][0].axhline(0.0, color="black", linestyle=":", linewidth=1)
    curves(axes[0][1], {net: (np.array(run["history"]["epoch"]), np.array(run["history"]["train_loss"]))
                        for net, run in runs.items()}, title="e(w)", xlabel="epoch", ylabel="mean squared error",
           log_y=True)
    yield ("margin", "Left: min over the four points of (2y - 1)(W2 h + b2) / |W2|; it crosses 0 when the output "
           "layer's line starts to separate the hidden states. Right: the loss.", figure)


def _snapshots(snapshots: list, separable, k: int) -> list:
    """k snapshots: the first, the last, the one where the states become separable, the rest spread over the
    epochs on a log scale (the states move most at the start)."""
    n = len(snapshots)
    if n <= k:
        return snapshots
    chosen = {0, n - 1}
    if separable is not None:
        chosen.add(min(range(n), key=lambda i: abs(snapshots[i]["epoch"] - separable)))
    spread = [int(i) for i in np.unique(np.round(np.geomspace(1, n - 1, 4 * k)).astype(int)) if i not in chosen]
    for i in np.round(np.linspace(0, len(spread) - 1, max(k - len(chosen), 0))).astype(int) if spread else []:
        chosen.add(spread[i])
    return [snapshots[i] for i in sorted(chosen)][:k]


def _hidden_panel(ax, shot: dict, labels, names, sigmoid_plane: bool, hidden: int) -> None:
    coords = np.array(shot["coords"])  # (4, 2)
    w0, w1, b = shot["line"]
    if sigmoid_plane:
        lo, hi = np.array([-0.05, -0.05]), np.array([1.05, 1.05])
    else:
        lo, hi = coords.min(0), coords.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        lo, hi = lo - 0.5 * span, hi + 0.5 * span
    from matplotlib.colors import ListedColormap

    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    side = (w0 * gx + w1 * gy + b) >= 0  # the output layer calls this side 1
    ax.imshow(side, extent=(lo[0], hi[0], lo[1], hi[1]), origin="lower", aspect="auto", interpolation="nearest",
              cmap=ListedColormap(["#dbe9f6", "#fde3cb"]), vmin=0, vmax=1)
    if abs(w1) >= abs(w0):  # the line w0 h1 + w1 h2 + b = 0, across the panel
        xs = np.array([lo[0], hi[0]])
        ax.plot(xs, -(w0 * xs + b) / w1, color="black", linewidth=1.2)
    elif w0 != 0:
        ys = np.array([lo[1], hi[1]])
        ax.plot(-(w1 * ys + b) / w0, ys, color="black", linewidth=1.2)
    for point, label, name in zip(coords, labels, names):
        ax.scatter(*point, s=40, color=colour(int(label)), edgecolor="black", zorder=3)
        ax.annotate(name, point, textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    margin = shot.get("margin")
    ax.set_title(f"epoch {shot['epoch']}" + (f", worst {margin:+.2f}" if margin is not None else ""), fontsize=8)
    ax.set_xlabel("h1" if hidden == 2 else "along W2", fontsize=7)
    ax.locator_params(nbins=3)
    ax.tick_params(labelsize=6)


# ---------------------------------------------------------------------------------------------------- gradient noise
def gradient_noise(run_dir: Path):
    results = _results(run_dir).get("results", {})
    colours = {m: MODE_COLOURS.get(m, colour(i)) for i, m in enumerate(results)}
    series = {m: r.get("series", {}) for m, r in results.items() if isinstance(r, dict)}
    figure, axes = new_figure(1, 3)
    folders = run_folders(run_dir)
    curves(axes[0][0], {m: scalars(p, "escaped/fraction") for m, p in folders.items() if m in results},
           colours=colours, title="escaped fraction of the networks", xlabel="epoch", ylabel="fraction")
    for ax, key, title in ((axes[0][1], "mean_cosine", "mean cos(u, G)"), (axes[0][2], "variance", "E|u - G|^2")):
        curves(ax, {m: (np.array(s.get("epoch", [])), np.array(s.get(key, []))) for m, s in series.items()},
               colours=colours, title=title, xlabel="epoch", ylabel=key.replace("_", " "))
    yield ("escapes_and_noise", "Left: the fraction of the K networks that reached the target loss (escaped the "
           "local minimum), per mode. Middle and right: how far each mode's update directions u stray from the "
           "full-batch gradient G, over the networks still training.", figure)


FIGURES = {"gradient_noise": gradient_noise, "learning_modes": learning_modes, "sweep": sweep, "xor": xor, "softmax_outputs": softmax_outputs,
           "linear_collapse": linear_collapse, "hidden_layers": hidden_layers}
