"""The function of hidden layers, shown: the hidden layer maps XOR's four inputs to states its output layer can
separate with a line, and a linear hidden layer never can.

The lecture: "the network strives to transform the states of its input layer into states of its output layer that
would match its classification goals". On XOR no line separates the inputs. A 2-2-1 network's output unit is itself
a single layer: it draws one line, W2 h + b2 = 0 (output 0.5 for a sigmoid), through the space of the hidden states
h = f(W1 x + b1). Training moves the four hidden states until that line separates them. The script trains, from the
same seed and with the same batch gradient descent on the squared error:

    sigmoid-2-2-1   two sigmoid hidden units: the hidden space is the plane, drawn as it is
    sigmoid-2-H-1   H hidden units (--hidden, default 4): drawn along the output layer's normal (where its line is
                    a vertical line) and across it (the principal direction of the states in the other directions)
    identity-2-2-1  a linear hidden layer: h is an affine map of x, so the four states keep XOR's shape (the two
                    classes on the two diagonals of a parallelogram) and no line ever separates them

and draws, every --image-every epochs, the four states in hidden space with the output layer's line through it (the
colour change; the colour is the output the output layer would give each point of the hidden space). It logs, every
epoch, ``hidden/margin``: the worst point's signed distance to that line, (2y - 1)(W2 h + b2) / |W2|, positive
exactly when the line separates the states. For a linear hidden layer the four signed distances are an affine
function of x summed with the signs of XOR, which is 0: the worst is never positive.

    python -m experiments.hidden_layers                  # the three nets, 1000 epochs, about 15 s
    python -m experiments.hidden_layers --hidden 8 --activation tanh --plots plots/hidden_layers

Runs go to <logdir>/hidden_layers/<run>/<net>: loss/train, accuracy/train, hidden/margin per epoch, the
``hidden/space`` image (and the input-space ``decision_boundary``) every --image-every epochs.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor

from experiments import dashboards
from experiments.plotting import finish_run, require_matplotlib
from experiments.session import RunSession, start_run
from experiments.common import (DTYPES, QUIET_HELP, RESUME_HELP, Column, TrainerFlags, apply_threads, at_least,
                                check_config, check_trainer_flags, finite_positive, format_table, option,
                                parse_config, progress_bars, run_main, seed_range, trainer_settings)
from manual_backprop import MLP
from manual_backprop.checks import resolve_device
from manual_backprop.datasets import load_dataset
from manual_backprop.tblog import RunLogger, decision_boundary_image
from manual_backprop.training import Trainer
from manual_backprop.checkpoint import write_json

EXPERIMENT = "hidden_layers"
SIGMOID_VIEW = (-0.05, 1.05, -0.05, 1.05)  # a sigmoid's hidden space, (0, 1)^2: one fixed view for every frame


@dataclass
class Config(TrainerFlags):  # --init, --optimizer, --momentum, ..., --target-loss, --threads, as every script has
    hidden: int = option(4, help="H of the second net, 2-H-1 (the first is 2-2-1)", check=at_least(3))
    activation: str = option("sigmoid", help="the non-linear hidden activation (the output is a sigmoid)")
    # Above about 2.5 the linear net's weights oscillate around its least-squares line (the loss stays 0.25).
    lr: float = option(2.0, help="batch gradient descent on the mean squared error, the same for every net",
                       check=finite_positive)
    epochs: int = option(1000, help="epochs of every net (no early stop: the states keep moving apart)",
                         check=at_least(1))
    image_every: int = option(20, help="epochs between hidden-space images (and the input-space boundary)",
                              check=at_least(1))
    seed: int = option(0, help="initial weights of every net", check=seed_range)
    device: str = option("auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    dtype: str = option("float64", help="of the weights and the data", choices=DTYPES)
    logdir: str = option("runs", help="TensorBoard runs go to <logdir>/hidden_layers/<run>/<net>")
    run: Optional[str] = option(None, help="run folder name (default: seed<seed>)")
    resume: bool = option(False, help=RESUME_HELP)
    plots: Optional[str] = option(None, help="also write PNG and SVG figures and report.html to this folder "
                                             "(needs matplotlib)")
    quiet: bool = option(False, help=QUIET_HELP)

    def nets(self) -> dict:
        """{name: {"activation", "hidden"}} of the three networks."""
        return {f"{self.activation}-2-2-1": {"activation": self.activation, "hidden": 2},
                f"{self.activation}-2-{self.hidden}-1": {"activation": self.activation, "hidden": self.hidden},
                "identity-2-2-1": {"activation": "identity", "hidden": 2}}


def parse_args(argv=None) -> Config:
    return parse_config(Config, argv, prog="python -m experiments.hidden_layers", description=__doc__,
                        extra_keys=("nets",))


# ---------------------------------------------------------------------------------------------------- geometry
def hidden_states(net: MLP, x: Tensor) -> Tensor:
    """h = f(W1 x + b1), the hidden layer's states for the inputs x: (N, H)."""
    with torch.no_grad():
        return net.forward_cache(x).activations[1]


def output_line(net: MLP) -> tuple:
    """(w, b): the output layer's weights (H,) and bias; its line (hyperplane) in hidden space is w h + b = 0."""
    return net.weights[-1][0], net.biases[-1][0]


def signed_distances(hidden: Tensor, w: Tensor, b: Tensor, y: Tensor) -> Tensor:
    """(2y - 1)(w h + b) / |w| per state: its distance to the output layer's line, positive on its class's side."""
    return (2.0 * y.to(hidden.dtype) - 1.0) * (hidden @ w + b) / w.norm()  # (N,)


def plane(hidden: Tensor, w: Tensor, b: Tensor) -> tuple:
    """2-D coordinates of the hidden states and the output layer's line in them: (coords (N, 2), w2 (2,), b).

    H = 2: the hidden space itself, the line w h + b = 0. H > 2: u = w h / |w| (along the line's normal) and v, the
    states' principal direction orthogonal to w; the line is |w| u + b = 0, a vertical line.
    """
    if hidden.shape[1] == 2:
        return hidden, w, b
    normal = w / w.norm()  # (H,)
    u = hidden @ normal  # (N,)
    rest = hidden - u[:, None] * normal  # (N, H): what the output layer does not see
    centred = rest - rest.mean(dim=0)
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]  # (H,)
    direction = direction * torch.sign(direction[direction.abs().argmax()])  # one sign, frame after frame
    v = rest @ direction  # (N,)
    return torch.stack([u, v], dim=1), torch.stack([w.norm(), torch.zeros_like(b)]), b


def hidden_space_image(coords: Tensor, w2: Tensor, b: Tensor, labels: Tensor, sigmoid_plane: bool) -> Tensor:
    """The states on the output layer's regions of the hidden space (the colour change is its line): (3, R, R)."""
    def predict(grid):  # the output unit's sigmoid over 2-D hidden coordinates
        return torch.sigmoid(grid.to(coords.dtype) @ w2 + b)

    extent = SIGMOID_VIEW if sigmoid_plane else None
    return decision_boundary_image(predict, coords, labels, resolution=96, margin=0.5, extent=extent)


class HiddenSpaceLogger:
    """A RunLogger that adds ``hidden/margin`` to every epoch's scalars and, whenever the Trainer draws the input-space
    decision boundary, the ``hidden/space`` image; it keeps the snapshots for the figures and results.json."""

    def __init__(self, logger: RunLogger, net: MLP, x: Tensor, labels: Tensor, sigmoid_plane: bool):
        self.logger, self.net, self.x, self.labels, self.sigmoid_plane = logger, net, x, labels, sigmoid_plane
        self.margins = []  # (epoch, worst signed distance)
        self.snapshots = []  # {"epoch", "coords", "line": [w0, w1, b], "margin"}

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        w, b = output_line(self.net)
        margin = signed_distances(hidden_states(self.net, self.x), w, b, self.labels).min().item()
        self.margins.append((epoch, margin))
        self.logger.log_epoch(epoch, {**metrics, "hidden/margin": margin})

    def log_decision_boundary(self, epoch: int, net, x, y, **kwargs):
        image = self.logger.log_decision_boundary(epoch, net, x, y, **kwargs)
        w, b = output_line(self.net)
        coords, w2, b2 = plane(hidden_states(self.net, self.x), w, b)
        self.logger.log_image("hidden/space", hidden_space_image(coords, w2, b2, self.labels, self.sigmoid_plane),
                              epoch)
        self.snapshots.append({"epoch": epoch, "coords": coords.tolist(), "line": [*w2.tolist(), b2.item()],
                               "margin": self.margins[-1][1] if self.margins else None})
        return image

    def __getattr__(self, name):
        return getattr(self.logger, name)


# ---------------------------------------------------------------------------------------------------- running
def run(cfg: Config) -> dict:
    """Train the three nets; returns {net: results} (also in results.json)."""
    check_config(cfg)
    if cfg.activation.strip().lower() in ("identity", "linear"):
        raise ValueError(f"--activation must be non-linear (sigmoid, tanh, relu, ...), but got {cfg.activation!r}; "
                         f"the identity hidden layer is always trained alongside it")
    check_trainer_flags(cfg, "hidden_layers", modes=["batch"])
    if cfg.plots:
        require_matplotlib(cfg.plots)
    device = resolve_device(cfg.device)
    apply_threads(cfg)
    with start_run(EXPERIMENT, cfg, f"seed{cfg.seed}", extra={"nets": cfg.nets()}) as session:
        return _run(cfg, session, device)


def _run(cfg: Config, session: RunSession, device) -> dict:
    dtype = getattr(torch, cfg.dtype)
    data = load_dataset("xor", dtype=dtype)
    x, labels = data.x_train.to(device), data.y_train.to(device)
    run_name, run_dir = session.name, session.path
    nets = cfg.nets()
    dashboard = dashboards.hidden_layers(nets, settings=asdict(cfg))
    start = time.perf_counter()
    results = {}
    for name, spec in nets.items():
        if session.is_done(name):
            results[name] = session.result(name)
            continue
        session.begin(name, name)
        net = MLP([2, spec["hidden"], 1], activation=spec["activation"], output_activation="sigmoid", init=cfg.init,
                  dtype=dtype, device=device, seed=cfg.seed)
        sigmoid_plane = spec["hidden"] == 2 and spec["activation"] == "sigmoid"
        run_hparams = {"net": name, "hidden_activation": spec["activation"], "hidden": spec["hidden"]}
        with RunLogger(cfg.logdir, EXPERIMENT, run_name, name, updates_per_epoch=1, dashboard=dashboard,
                       run_hparams=run_hparams) as base:
            logger = HiddenSpaceLogger(base, net, x, labels, sigmoid_plane)
            history = Trainer(net, data, mode="batch", epochs=cfg.epochs, loss_fn="squared_error", seed=cfg.seed,
                              logger=logger, histogram_every=cfg.image_every, **trainer_settings(cfg, net, cfg.lr),
                              progress=f"{name:>16}" if progress_bars(cfg.quiet) else False).run()
        separable = next((e for e, m in logger.margins if m > 0), None)
        results[name] = {**spec, "history": history.to_dict(), "final": history.final, "margins": logger.margins,
                         "first_separable_epoch": separable, "final_margin": logger.margins[-1][1],
                         "best_margin": max(m for _, m in logger.margins), "snapshots": logger.snapshots,
                         "sigmoid_plane": sigmoid_plane, "stop_reason": history.stop_reason}
        session.finish(name, results[name])
        if history.stop_reason == "diverged":
            print(f"{name}: {history.message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    if not session.complete:  # a resume of a run that had ended whole writes nothing
        write_json({"runs": results, "seconds": seconds}, run_dir / "results.json")
        session.mark_complete()
    text = table(results, cfg)
    finish_run(EXPERIMENT, run_dir, cfg.plots, text=text, config=asdict(cfg), dashboard=dashboard,
               show=not cfg.quiet, seconds=None if session.complete else seconds)
    return results


COLUMNS = [Column("net", 16, "<"), Column("separable from epoch", 20), Column("worst distance: final", 21,
                                                                               spec="+.4f"),
           Column("best", 8, spec="+.4f"), Column("final e(w)", 10, spec=".4f"), Column("accuracy", 8, spec=".0%")]


def table(results: dict, cfg: Config) -> str:
    rows = [[name, r["first_separable_epoch"] if r["first_separable_epoch"] is not None else "never",
             r["final_margin"], r["best_margin"], r["final"]["train_loss"], r["final"]["train_accuracy"]]
            for name, r in results.items()]
    return (format_table(COLUMNS, rows) + "\n"
            f"worst distance: min over the four XOR points of (2y - 1)(W2 h + b2) / |W2|, the signed distance of its "
            f"hidden state to the output layer's line;\n> 0 exactly when that line separates the hidden states. "
            f"Batch gradient descent, lr {cfg.lr:g}, squared error, sigmoid output, seed {cfg.seed}.")


def main(argv=None) -> int:
    return run_main(EXPERIMENT, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
