"""What each experiment's TensorBoard opens on: the key chart first, the HPARAMS table that compares its runs.

One function per experiment returns its ``tblog.Dashboard``: the CUSTOM SCALARS layout (key chart first), the
HPARAMS keys with the values the experiment's runs take (only the ones that vary become columns), the metric
columns (existing tags), and the TIME SERIES link (key charts pinned, tag filter, runs coloured by what they compare).
Each takes ``settings``, the run's full settings (seed, epochs, ...), which every run writes as HPARAMS columns after
the compared ones. The scripts hand it to every RunLogger and print ``dashboard.instructions(run_dir)``;
``scripts/screenshot_dashboards.py`` opens each link in headless Chromium to check what a user sees.
"""

from __future__ import annotations

from manual_backprop.tblog import Band, Category, Chart, Dashboard

MODE_COLOURS = "^(batch|online|minibatch)"  # a sweep's mode_lr runs: one colour per mode


def learning_modes(modes, lrs, batch_sizes, settings=None) -> Dashboard:
    """Loss per mode against the samples seen: the axis on which batch, minibatch and online compare fairly."""
    return Dashboard(
        settings=settings or {},
        point="the loss per mode, against the samples each mode has seen",
        layout=[
            Category("loss per mode (x = samples seen: every mode sees N samples an epoch)",
                     Chart("loss of each update, by samples seen", "loss/by_samples_seen"),
                     Chart("training loss e(w) per epoch", "loss/train"),
                     Chart("test loss per epoch", "loss/test")),
            Category("accuracy per mode (per epoch)",
                     Chart("test accuracy", "accuracy/test"), Chart("training accuracy", "accuracy/train")),
            Category("loss per update (x = update count: 1, N / b or N updates an epoch)",
                     Chart("loss of each update, by update", "loss/update"), closed=True),
        ],
        hparams={"mode": list(modes), "lr": list(lrs), "batch_size": list(batch_sizes)},
        metrics=["loss/test", "accuracy/test", "loss/train", "accuracy/train"],
        pinned=["loss/by_samples_seen", "loss/train", "loss/test", "accuracy/test"],
        tag_filter="^(loss|accuracy)/",
    )


def sweep(modes, lrs, settings=None) -> Dashboard:
    """The fraction of seeds that reached the target loss, per mode and learning rate."""
    return Dashboard(
        settings=settings or {},
        point="the success rate per mode and learning rate",
        layout=[
            Category("success rate per mode and learning rate (fraction of seeds at the target loss)",
                     Chart("success rate", "success/fraction")),
            Category("training loss over the seeds: median, 10% to 90% band",
                     Band("training loss: median and 10-90% band", "loss/train/median", "loss/train/q10",
                          "loss/train/q90")),
            Category("diverged (fraction of seeds)", Chart("diverged", "diverged/fraction"), closed=True),
        ],
        hparams={"mode": [m for m in modes for _ in lrs], "lr": [lr for _ in modes for lr in lrs]},
        metrics=["success/fraction", "loss/train/median", "diverged/fraction", "accuracy/train/mean"],
        pinned=["success/fraction", "loss/train/median"],
        tag_filter="^success/|^loss/train/median",
        run_colors=MODE_COLOURS if len(modes) > 1 else "",
    )


def softmax_outputs(variants: dict, lrs: list, settings=None) -> Dashboard:
    """The row sums of the outputs: at 1 for the softmax, wandering for the sigmoids."""
    return Dashboard(
        settings=settings or {},
        point="the row sums of the outputs (1 for a softmax, anything for sigmoids)",
        layout=[
            Category("row sums of the outputs on the test split: mean, min to max band (1 = a distribution)",
                     Band("row sum of the outputs", "outputs/row_sum_mean", "outputs/row_sum_min",
                          "outputs/row_sum_max")),
            Category("accuracy and loss", Chart("test accuracy", "accuracy/test"),
                     Chart("training loss (each its own loss)", "loss/train")),
        ],
        hparams={"output_activation": [o for o, _ in variants.values()], "loss": [lo for _, lo in variants.values()],
                 "lr": list(lrs)},
        metrics=["outputs/row_sum_min", "outputs/row_sum_max", "accuracy/test", "loss/test"],
        pinned=["outputs/row_sum_max", "outputs/row_sum_mean", "outputs/row_sum_min"],
        tag_filter="^outputs/",
        tab="custom_scalars",  # the band says it in one chart
    )


def xor(problems, methods, seeds: int, lrs: dict, settings=None) -> Dashboard:
    """XOR: every seed of each method, one colour per method."""
    return Dashboard(
        settings=settings or {},
        point="XOR: the perceptron keeps erring, the delta rule stops at e(w) = 0.25, the MLP solves it",
        layout=[
            Category("XOR, every seed: misclassified points and e(w) per method",
                     Chart("misclassified points (perceptron and delta rule)", "errors/train"),
                     Chart("e(w), the mean squared error", "loss/train"),
                     Chart("accuracy", "accuracy/train")),
        ],
        hparams={"problem": list(problems), "method": list(methods), "seed": list(range(seeds)),
                 "lr": [lrs[m] for m in methods]},
        metrics=["accuracy/train", "loss/train", "errors/train"],
        pinned=["errors/train", "loss/train", "accuracy/train"],
        tag_filter="^(errors|loss|accuracy)/train$",
        run_filter="^xor-" if "xor" in problems else "",
        run_colors=r"-(perceptron|delta|mlp)-",
        smoothing=0,
    )


def linear_collapse(activations, seeds: int, settings=None) -> Dashboard:
    """e(w) on XOR: the linear network stays at 0.25 or above, the non-linear one goes to 0."""
    return Dashboard(
        settings=settings or {},
        point="e(w) on XOR: the linear network never goes below 0.25",
        layout=[
            Category("e(w) on XOR: identity (one layer in disguise) against a non-linear hidden activation",
                     Chart("e(w), the mean squared error", "loss/train"), Chart("accuracy", "accuracy/train")),
        ],
        hparams={"hidden_activation": list(activations), "seed": list(range(seeds))},
        metrics=["loss/train", "accuracy/train"],
        pinned=["loss/train", "accuracy/train"],
        tag_filter="^(loss|accuracy)/train$",
        run_colors=r"(\w+)-seed\d",
        smoothing=0,
    )


def hidden_layers(nets: dict, settings=None) -> Dashboard:
    """The four XOR inputs in hidden space and the output layer's line: separable for a non-linear hidden layer."""
    return Dashboard(
        settings=settings or {},
        point="the XOR inputs in hidden space, and the output layer's line through it",
        layout=[
            Category("are the hidden states linearly separable by the output layer? (> 0: yes)",
                     Chart("worst point's signed distance to the output layer's line", "hidden/margin"),
                     Chart("e(w), the mean squared error", "loss/train")),
        ],
        hparams={"net": list(nets), "hidden_activation": [n["activation"] for n in nets.values()],
                 "hidden": [n["hidden"] for n in nets.values()]},
        metrics=["hidden/margin", "loss/train", "accuracy/train"],
        pinned=["hidden/margin"],
        pinned_images=[(name, "hidden/space") for name in nets],
        tag_filter="^hidden/",
        smoothing=0,
    )


def gradient_noise(modes, settings=None) -> Dashboard:
    """The fraction of the K networks that escaped XOR's local minimum, per mode, and the noise of each mode."""
    return Dashboard(
        settings=settings or {},
        point="the fraction of networks that escaped the local minimum, per mode, and each mode's gradient noise",
        layout=[
            Category("escaped: the fraction of the K networks at e(w) <= target, per mode",
                     Chart("escaped fraction", "escaped/fraction"), Chart("mean e(w)", "loss/train_mean")),
            Category("the noise of each mode's update directions u around the full-batch gradient G",
                     Chart("mean cos(u, G) (1: no noise)", "directions/mean_cosine"),
                     Chart("E|u - G|^2", "directions/variance"),
                     Chart("B_simple, median over the networks", "noise/b_simple_median")),
        ],
        hparams={"mode": list(modes)},
        metrics=["escaped/fraction", "directions/mean_cosine", "loss/train_mean", "noise/b_simple_median"],
        pinned=["escaped/fraction", "directions/mean_cosine", "loss/train_mean"],
        tag_filter="^(escaped|directions|noise)/|^loss/train_mean$",
        run_colors=r"^(batch|online|minibatch)$",
        smoothing=0,
    )
