"""TensorBoard logging: event files read back exactly, update losses thinned (and against the samples seen), hparams
without stray runs or extra scalars, an experiment's dashboard (layout, HPARAMS table, link), a real tensorboard server
serving the runs, the decision-boundary image, and writers closed on errors."""

import math
import shlex
import subprocess

import numpy as np
import pytest
import torch

from manual_backprop.network import MLP
from manual_backprop.tblog import (
    PALETTE, RunLogger, decision_boundary_image, load_run, read_scalars,
    tensorboard_command,
)
from manual_backprop.tblog.dashboard import whole_text
from tbserver import get_json, scalars, tensorboard_server

EXPERIMENT, RUN = "learning_modes", "xor_seed0"
EPOCHS = 3  # epochs are numbered 1..EPOCHS, updates 1..EPOCHS * updates_per_epoch
MAX_POINTS = 50  # max_update_points_per_epoch
# mode -> (updates per epoch, read-back stride, values per read-back, whether the logger is told updates_per_epoch)
MODES = {
    "batch": (1, 1, 1, True),
    "online": (2000, 1, 64, False),  # learned from the first epoch: the updates wait until log_epoch
    "minibatch": (32, 4, 3, True),  # only every 4th loss read back, in read-backs that straddle the epochs
}
HPARAM_TAGS = {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


def f32(v: float) -> float:
    """The value as TensorBoard stores it (float32 simple_value)."""
    return float(np.float32(v))


def update_loss(mode: str, update: int) -> float:
    return 1.0 / (1.0 + 0.003 * update) + 0.05 * math.sin(update) + len(mode) * 1e-3


def epoch_metrics(mode: str, epoch: int) -> dict:
    metrics = {"loss/train": 0.5 / epoch + len(mode) * 0.01, "loss/test": 0.6 / epoch + len(mode) * 0.01}
    if mode != "online":  # accuracy only when given; a None value is skipped
        metrics["accuracy/train"] = 0.5 + 0.1 * epoch
        metrics["accuracy/test"] = torch.tensor(0.45 + 0.1 * epoch)  # 0-dim tensors are accepted
    else:
        metrics["accuracy/test"] = None
    return metrics


def hparams_of(mode: str) -> dict:
    batch_size = {"batch": 4, "online": 1, "minibatch": 2}[mode]
    return {"mode": mode, "lr": 0.5, "batch_size": batch_size, "sizes": [2, 3, 1], "activation": "sigmoid",
            "loss": "squared_error", "seed": 0}


def write_mode(root, mode: str) -> None:
    """What a trainer does: read back update losses every few updates, log each epoch, hparams at the end."""
    upe, stride, chunk, tell = MODES[mode]
    with RunLogger(root, EXPERIMENT, RUN, mode, max_update_points_per_epoch=MAX_POINTS,
                   updates_per_epoch=upe if tell else None) as log:
        read_back = [u for u in range(stride, EPOCHS * upe + 1, stride)]  # updates whose loss is read back
        for epoch in range(1, EPOCHS + 1):
            mine = [u for u in read_back if (epoch - 1) * upe < u <= epoch * upe]
            for i in range(0, len(mine), chunk):
                updates = mine[i:i + chunk]
                losses = torch.tensor([update_loss(mode, u) for u in updates], dtype=torch.float64)
                log.log_update_losses(updates[0], losses, stride)
            log.log_epoch(epoch, epoch_metrics(mode, epoch))
        final = epoch_metrics(mode, EPOCHS)
        log.log_hparams(hparams_of(mode), {"loss/test": final["loss/test"], "accuracy/test": final["accuracy/test"]})
        assert log.path == root / EXPERIMENT / RUN / mode


@pytest.fixture(scope="module")
def three_modes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    for mode in MODES:
        write_mode(root, mode)
    return root


def all_update_losses(mode: str) -> dict:
    upe, stride, _, _ = MODES[mode]
    return {u: update_loss(mode, u) for u in range(stride, EPOCHS * upe + 1, stride)}


# ---------------------------------------------------------------------- event files read back
@pytest.mark.parametrize("mode", list(MODES))
def test_epoch_scalars_read_back_exactly(three_modes, mode):
    scalars = read_scalars(three_modes / EXPERIMENT / RUN / mode)
    expected_tags = {"loss/train", "loss/test", "loss/update"}  # hparams add no scalars
    if mode != "online":
        expected_tags |= {"accuracy/train", "accuracy/test"}
    assert set(scalars) == expected_tags
    for tag in ("loss/train", "loss/test", "accuracy/train", "accuracy/test"):
        if tag not in expected_tags:
            continue
        expected = [(e, f32(float(epoch_metrics(mode, e)[tag]))) for e in range(1, EPOCHS + 1)]
        assert scalars[tag] == expected, f"{mode} {tag}"


@pytest.mark.parametrize("mode", list(MODES))
def test_update_losses_are_thinned_and_exact(three_modes, mode):
    upe, stride, _, _ = MODES[mode]
    points = read_scalars(three_modes / EXPERIMENT / RUN / mode)["loss/update"]
    truth = all_update_losses(mode)
    steps = [s for s, _ in points]
    assert steps == sorted(set(steps)), f"{mode}: steps repeat or go back"
    for step, value in points:
        assert value == f32(truth[step]), f"{mode}: loss/update at update {step}"
    assert steps[0] == min(truth) and steps[-1] == max(truth), f"{mode}: first or last update lost"
    for epoch in range(1, EPOCHS + 1):
        in_epoch = [s for s in steps if (epoch - 1) * upe < s <= epoch * upe]
        last_read = max(u for u in truth if u <= epoch * upe)
        assert last_read in in_epoch, f"{mode}: epoch {epoch} lost its last update"
        assert len(in_epoch) <= MAX_POINTS, f"{mode}: {len(in_epoch)} points in epoch {epoch} > {MAX_POINTS}"
        readable = len([u for u in truth if (epoch - 1) * upe < u <= epoch * upe])
        assert len(in_epoch) >= min(readable, MAX_POINTS // 2), f"{mode}: epoch {epoch} thinned too much"
    if upe // stride <= MAX_POINTS:  # few enough updates: nothing is dropped
        assert steps == sorted(truth)


@pytest.mark.parametrize("upe, stride, chunk", [(1, 1, 1), (7, 1, 5), (1000, 1, 64), (1000, 3, 17), (999, 10, 1)])
@pytest.mark.parametrize("tell", [True, False])
def test_update_thinning_bound_holds_for_any_read_back(tmp_path, upe, stride, chunk, tell):
    n_max, epochs = 10, 3
    read_back = list(range(stride, epochs * upe + 1, stride))
    with RunLogger(tmp_path, "e", "r", "m", max_update_points_per_epoch=n_max,
                   updates_per_epoch=upe if tell else None) as log:
        for epoch in range(1, epochs + 1):
            mine = [u for u in read_back if (epoch - 1) * upe < u <= epoch * upe]
            for i in range(0, len(mine), chunk):
                losses = torch.tensor([float(u) for u in mine[i:i + chunk]], dtype=torch.float32)
                log.log_update_losses(mine[i], losses, stride)
            log.log_epoch(epoch, {"loss/train": 1.0})
    points = read_scalars(log.path).get("loss/update", [])
    assert all(s == v for s, v in points)
    steps = [s for s, _ in points]
    if read_back:
        assert steps[0] == read_back[0] and steps[-1] == read_back[-1]
    for epoch in range(1, epochs + 1):
        count = len([s for s in steps if (epoch - 1) * upe < s <= epoch * upe])
        assert count <= n_max, f"epoch {epoch}: {count} points > {n_max}"


@pytest.mark.parametrize("upe, n, tell", [(1, 12, True), (12, 12, False), (3, 12, True), (4, 10, True)])
def test_update_losses_against_the_samples_seen(tmp_path, upe, n, tell):
    """loss/by_samples_seen holds the loss/update points at step = samples seen: every mode reaches epoch * N at the
    end of an epoch, whatever its updates per epoch (batch 1, online N, minibatch ceil(N / b))."""
    epochs, b = 3, -(-n // upe)
    with RunLogger(tmp_path, "e", "r", "m", samples_per_epoch=n, updates_per_epoch=upe if tell else None) as log:
        for epoch in range(1, epochs + 1):
            first = (epoch - 1) * upe + 1
            log.log_update_losses(first, torch.arange(first, first + upe, dtype=torch.float64))
            log.log_epoch(epoch, {"loss/train": 1.0})
    scalars = read_scalars(log.path)
    by_update = dict(scalars["loss/update"])
    assert len(scalars["loss/by_samples_seen"]) == len(by_update)
    for (samples, value), update in zip(scalars["loss/by_samples_seen"], sorted(by_update)):
        assert value == by_update[update] == update
        epoch, into = divmod(update, upe)
        assert samples == epoch * n + min(into * b, n), f"update {update}"
    assert scalars["loss/by_samples_seen"][-1][0] == epochs * n
    with RunLogger(tmp_path, "e", "r", "plain", updates_per_epoch=upe) as log:
        log.log_update_losses(1, torch.ones(upe))
    assert "loss/by_samples_seen" not in read_scalars(log.path)


def test_hparams_make_no_extra_folders_and_carry_plugin_data(three_modes):
    from tensorboard.plugins.hparams import metadata

    tree = sorted(p.relative_to(three_modes).as_posix() for p in three_modes.rglob("*"))
    folders = [p for p in tree if (three_modes / p).is_dir()]
    assert folders == sorted([EXPERIMENT, f"{EXPERIMENT}/{RUN}"] + [f"{EXPERIMENT}/{RUN}/{m}" for m in MODES])
    files = [p for p in tree if (three_modes / p).is_file()]
    assert len(files) == len(MODES) and all("events.out.tfevents" in p for p in files), files
    for mode in MODES:
        content = load_run(three_modes / EXPERIMENT / RUN / mode).PluginTagToContent(metadata.PLUGIN_NAME)
        assert set(content) == HPARAM_TAGS, mode
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        got = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        expected = dict(hparams_of(mode), sizes="[2, 3, 1]")
        expected = {k: whole_text(v) if isinstance(v, int) else v for k, v in expected.items()}  # reads "4"
        assert got == expected, mode
        experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        metric_tags = [m.name.tag for m in experiment.metric_infos]
        # The metric columns point at tags the run wrote; online never logged accuracy/test, so it has no column.
        assert metric_tags == (["loss/test"] if mode == "online" else ["loss/test", "accuracy/test"]), mode


def test_hparam_values_are_made_plugin_friendly(tmp_path):
    from tensorboard.plugins.hparams import metadata

    with RunLogger(tmp_path, "e", "r", "m") as log:
        log.log_epoch(1, {"loss/train": 0.5, "errors/train": 1})
        log.log_hparams({"flag": True, "none": None, "dtype": torch.float64, "sizes": (2, 3, 1),
                         "np": np.float32(0.25), "t": torch.tensor(3), "acts": ["tanh", "sigmoid"]},
                        {"final/loss_train": torch.tensor(0.5), "final/errors": 1.0, "final/updates": 3.0})
    content = load_run(log.path).PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    got = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert got == {"flag": "True", "none": "None", "dtype": "float64", "sizes": "[2, 3, 1]", "np": 0.25, "t": whole_text(3),
                   "acts": "[tanh, sigmoid]"}
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    # A trainer's "final/..." names point at the tags they summarise; one that names no tag is left out.
    assert [m.name.tag for m in experiment.metric_infos] == ["loss/train", "errors/train"]
    assert read_scalars(log.path) == {"loss/train": [(1, 0.5)], "errors/train": [(1, 1.0)]}


# ---------------------------------------------------------------------- a real tensorboard server
def test_tensorboard_server_serves_every_mode(three_modes, tmp_path):
    run_dir = three_modes / EXPERIMENT / RUN

    def ready(runs, tags):
        return set(runs) == set(MODES) and all("loss/update" in tags.get(m, {}) for m in MODES)

    with tensorboard_server(run_dir, tmp_path, ready) as base:
        assert sorted(get_json(f"{base}/data/runs")) == sorted(MODES)
        for mode in MODES:
            expected = read_scalars(run_dir / mode)
            for tag in ("loss/train", "loss/update"):
                assert scalars(base, mode, tag) == expected[tag], f"{mode} {tag}"
        # The HPARAMS dashboard: exactly one session group per mode folder, with that mode's hparams.
        groups = get_json(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        })["sessionGroups"]
        assert sorted(g["name"] for g in groups) == sorted(MODES)
        for group in groups:
            assert group["hparams"]["mode"] == group["name"] and group["hparams"]["sizes"] == "[2, 3, 1]"
            # The metric column loss/test holds the last loss/test the run wrote.
            values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert values["loss/test"] == pytest.approx(f32(epoch_metrics(group["name"], EPOCHS)["loss/test"]))


def test_tensorboard_command_is_runnable(tmp_path):
    command = tensorboard_command(tmp_path / "learning modes" / "run1")
    args = shlex.split(command)
    assert args[-2:] == ["--logdir", str(tmp_path / "learning modes" / "run1")]
    assert args[0] == "tensorboard" or args[1:3] == ["-m", "tensorboard.main"]
    done = subprocess.run(args[:-2] + ["--version_tb"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip()[:1].isdigit(), done.stdout + done.stderr
    assert "--port 6007" in tensorboard_command("runs", port=6007)


# ---------------------------------------------------------------------- histograms
def test_histograms_per_layer_every_few_epochs(tmp_path):
    net = MLP([2, 3, 1], dtype=torch.float64, seed=0)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    _, grads = net.loss_and_grads(x, y, "squared_error")
    with RunLogger(tmp_path, "e", "r", "batch", histogram_every=2) as log:
        written = [log.log_histograms(epoch, net, grads) for epoch in range(5)]
        assert log.log_histograms(5, net, force=True)
    assert written == [True, False, True, False, True]
    acc = load_run(log.path)
    layers = ("layer1", "layer2")
    expected_tags = {f"{kind}/{layer}" for kind in ("weights", "biases", "grads/weights", "grads/biases")
                     for layer in layers}
    assert set(acc.Tags()["histograms"]) == expected_tags
    assert [h.step for h in acc.Histograms("weights/layer1")] == [0, 2, 4, 5]
    assert [h.step for h in acc.Histograms("grads/weights/layer1")] == [0, 2, 4]
    for k, layer in enumerate(layers):
        for tag, t in ((f"weights/{layer}", net.weights[k]), (f"grads/weights/{layer}", grads.weights[k]),
                       (f"grads/biases/{layer}", grads.biases[k])):
            h = acc.Histograms(tag)[0].histogram_value
            assert h.num == t.numel(), tag
            assert (h.min, h.max) == (pytest.approx(t.min().item()), pytest.approx(t.max().item())), tag


# ---------------------------------------------------------------------- decision boundary
SQUARE = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])  # range [-1, 1]: grid [-1.2, 1.2]


def pixel(x0: float, x1: float, res: int):
    """(row, col) of the data point (x0, x1) when the data span [-1, 1]^2 and margin is 0.1."""
    lo, hi = -1.2, 1.2
    return int((hi - x1) / (hi - lo) * res), int((x0 - lo) / (hi - lo) * res)


def hue_is(colour: torch.Tensor, c: int) -> bool:
    """colour is a blend of white and PALETTE[c]: (1 - colour) points the way (1 - PALETTE[c]) does."""
    a, b = 1 - colour, 1 - PALETTE[c]
    return bool(torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999)


def test_decision_boundary_image_of_a_linear_classifier():
    res = 64
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])  # class 1 right of x0 = 0
    image = decision_boundary_image(lambda g: torch.sigmoid(10 * g[:, 0]), SQUARE, y, resolution=res)
    assert image.shape == (3, res, res) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    mid = res // 2
    far_left, far_right = image[:, mid, 1], image[:, mid, res - 2]
    assert hue_is(far_left, 0) and hue_is(far_right, 1)
    near_boundary = image[:, mid, mid]
    assert near_boundary.mean() > far_left.mean() + 0.2, "confidence must fade the colour near the boundary"
    for (x0, x1), label in zip(SQUARE.tolist(), y.long().tolist()):
        r, c = pixel(x0, x1, res)
        torch.testing.assert_close(image[:, r, c], PALETTE[label], msg=f"fill of point ({x0}, {x1})")
    r, c = pixel(-1.0, -1.0, res)
    ring = [image[:, r + dr, c + 2] for dr in (-2, 0, 2)]  # point_size 3: fill radius 1, border radius 2
    assert all(float(p.max()) < 0.2 for p in ring), "points must have a dark border"


def test_decision_boundary_argmax_for_several_outputs():
    res = 48
    y = torch.tensor([0, 2, 1, 2])  # class indices
    outputs = lambda g: torch.stack([-g[:, 0] - g[:, 1], g[:, 0] - g[:, 1], g[:, 1] * 1.5], dim=1)  # noqa: E731
    image = decision_boundary_image(outputs, SQUARE, y, resolution=res)
    for (x0, x1), c in (((-0.9, -0.1), 0), ((0.9, -0.1), 1), ((0.0, 1.1), 2)):
        assert hue_is(image[:, pixel(x0, x1, res)[0], pixel(x0, x1, res)[1]], c), (x0, x1, c)
    one_hot = decision_boundary_image(outputs, SQUARE, torch.eye(3)[y], resolution=res)
    torch.testing.assert_close(one_hot, image)


def test_logger_draws_the_mlp_boundary_for_2d_inputs_only(tmp_path):
    net = MLP([2, 3, 1], dtype=torch.float64, seed=0)
    x = SQUARE  # float32: the logger evaluates the grid in the network's dtype
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    with RunLogger(tmp_path, "e", "r", "batch") as log:
        image = log.log_decision_boundary(4, net, x, y)
        assert log.log_decision_boundary(5, net, torch.zeros(4, 3), y) is None
    expected = decision_boundary_image(lambda g: net.forward(g.double()), x, y, resolution=128)
    torch.testing.assert_close(image, expected)
    events = load_run(log.path).Images("decision_boundary")
    assert [(e.step, e.width, e.height) for e in events] == [(4, 128, 128)]


def test_decision_boundary_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        decision_boundary_image(lambda g: g[:, 0], torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="one label per sample"):
        decision_boundary_image(lambda g: g[:, 0], SQUARE, torch.zeros(3))


# ---------------------------------------------------------------------- lifetime
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_logger_closes_on_error_and_keeps_what_was_written(tmp_path, error):
    with pytest.raises(error):
        with RunLogger(tmp_path, "e", "r", "online") as log:
            log.log_epoch(1, {"loss/train": 0.25})
            log.log_update_losses(1, torch.tensor([0.5, 0.4, 0.3]))  # held: no epoch ended after them
            raise error()
    assert log.closed
    expected = {"loss/train": [(1, 0.25)], "loss/update": [(1, 0.5), (2, f32(0.4)), (3, f32(0.3))]}
    assert read_scalars(log.path) == expected
    log.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        log.log_epoch(2, {"loss/train": 0.2})


def test_disabled_logger_writes_nothing(tmp_path):
    net = MLP([2, 3, 1], dtype=torch.float64, seed=0)
    with RunLogger(tmp_path / "logs", "e", "r", "batch", enabled=False) as log:
        log.log_epoch(1, {"loss/train": 0.1})
        log.log_update_losses(1, torch.ones(5))
        assert not log.log_histograms(0, net)
        assert log.log_decision_boundary(0, net, SQUARE, torch.zeros(4)) is None
        log.log_hparams({"mode": "batch"}, {"loss": 0.1})
        log.add_text("config", "x")
    assert not (tmp_path / "logs").exists()
    assert log.path == tmp_path / "logs" / "e" / "r" / "batch"


def test_bad_arguments_name_what_must_hold(tmp_path):
    with pytest.raises(ValueError, match="mode must be one folder name"):
        RunLogger(tmp_path, "e", "r", "a/b")
    with pytest.raises(ValueError, match="max_update_points_per_epoch must be an int >= 2"):
        RunLogger(tmp_path, "e", "r", "m", max_update_points_per_epoch=1)
    with pytest.raises(TypeError, match="histogram_every must be an int"):
        RunLogger(tmp_path, "e", "r", "m", histogram_every=2.5)
    with RunLogger(tmp_path, "e", "r", "m") as log:
        with pytest.raises(ValueError, match="1-D floating-point"):
            log.log_update_losses(0, torch.zeros(2, 2))
        with pytest.raises(TypeError, match=r"metrics\['loss/train'\] must be a number"):
            log.log_epoch(1, {"loss/train": "low"})
