"""Each experiment's TensorBoard opens on its point: the custom-scalars layout with the key chart first, an HPARAMS
table with the same keys in every run and only the varying ones as columns, metric columns that are existing tags,
and the printed command with its tag filter and link. Read back from the event files and from a real tensorboard."""

import json
import re
import urllib.parse

import pytest

from experiments import dashboards, xor
from manual_backprop.tblog import Band, Category, Chart, Dashboard, RunLogger, load_run, read_scalars
from manual_backprop.tblog.dashboard import MISSING, WHOLE_WIDTH, whole_text
from tbserver import get_json, tensorboard_server

LAYOUT = [Category("the point", Chart("loss per mode", "loss/train"), Band("row sums", "s/mean", "s/min", "s/max")),
          Category("more", Chart("accuracy", "accuracy/test", "accuracy/train"), closed=True)]


def plugin_content(path, plugin: str) -> dict:
    return load_run(path).PluginTagToContent(plugin)


def experiment_of(path):
    from tensorboard.plugins.hparams import metadata

    content = plugin_content(path, metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    columns = [(h.name, h.differs) for h in experiment.hparam_infos]
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return columns, [m.name.tag for m in experiment.metric_infos], values


def layout_of(path):
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = load_run(path)
    tensor = acc.Tensors("custom_scalars__config__")[0].tensor_proto
    return layout_pb2.Layout.FromString(tensor.string_val[0])


# ---------------------------------------------------------------------------------------------------- the Dashboard
def test_only_the_hparams_that_vary_become_columns_and_every_run_has_every_key():
    board = Dashboard("x", hparams={"mode": ["batch", "online"], "lr": [0.5, 0.5], "sizes": [[2, 3, 1]],
                                    "seed": [0, 1]}, metrics=["loss/test"])
    assert board.columns() == ["mode", "seed"]
    assert board.numeric("lr") and not board.numeric("sizes")
    assert board.session_hparams({"mode": "online", "lr": 0.5, "seed": 1, "extra": 3}) == \
        {"mode": "online", "lr": 0.5, "sizes": MISSING, "seed": whole_text(1)}  # reads "1", sorts as a number
    assert not board.numeric("seed") and board.numeric("lr")
    # A text column holds text in every run: a number there is written as text.
    mixed = Dashboard("x", hparams={"method": ["mlp", "delta"], "hidden": [4, MISSING]})
    assert mixed.session_hparams({"method": "mlp", "hidden": 4}) == {"method": "mlp", "hidden": whole_text(4)}
    assert whole_text(4) == " " * (WHOLE_WIDTH - 1) + "4" and whole_text(2 ** 63 - 1).strip() == str(2 ** 63 - 1)
    negative = Dashboard("x", hparams={"offset": [-1, 2]})  # text would sort -1 after 2: numbers, which sort right
    assert negative.numeric("offset") and negative.session_hparams({"offset": -1}) == {"offset": -1}
    assert Dashboard("x", hparams={"a": [1], "b": ["z"]}).columns() == ["a", "b"]  # nothing varies: all of them


def test_the_link_pins_the_key_charts_and_the_command_shows_the_tag_filter(tmp_path):
    board = Dashboard("the loss per mode", layout=LAYOUT, pinned=["loss/by_samples_seen", "loss/test"],
                      tag_filter="^loss/", run_filter="^xor-", run_colors=r"-(\w+)-seed", smoothing=0)
    url = board.url(port=6123)
    assert url.startswith("http://localhost:6123/?") and url.endswith("#timeseries")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert json.loads(query["pinnedCards"]) == [{"plugin": "scalars", "tag": "loss/by_samples_seen"},
                                                {"plugin": "scalars", "tag": "loss/test"}]
    assert query["runFilter"] == "^xor-" and query["runColorGroup"] == r"regex:-(\w+)-seed"
    assert query["smoothing"] == "0" and "tagFilter" not in query  # a tag filter would hide the pinned cards
    assert "+" not in url and "\\" not in url
    text = board.instructions(tmp_path / "runs" / "e" / "r")
    command = next(line for line in text.splitlines() if "--logdir" in line)
    assert str(tmp_path / "runs" / "e" / "r") in command and "(tag filter: ^loss/)" in command
    assert "then http://localhost:6006/?pinnedCards=" in text and "ssh -L 6006:localhost:6006" in text
    assert Dashboard("x", tab="custom_scalars").url().endswith("/#custom_scalars")
    with pytest.raises(ValueError, match="tag_filter must be a regular expression"):
        Dashboard("x", tag_filter="(")


def test_a_logger_writes_the_layout_and_the_table_and_no_extra_scalars(tmp_path):
    board = Dashboard("x", layout=LAYOUT, hparams={"mode": ["batch", "online"], "lr": [2.0, 0.1]},
                      metrics=["loss/test", "accuracy/test"])
    for mode, lr in (("batch", 2.0), ("online", 0.1)):
        with RunLogger(tmp_path, "e", "r", mode, dashboard=board, run_hparams={"mode": mode}) as log:
            log.log_epoch(1, {"loss/test": 0.5, "accuracy/test": 0.75})
            log.log_hparams({"lr": lr, "sizes": [2, 3, 1]}, {"final/loss_test": 0.5})
    tables = [experiment_of(tmp_path / "e" / "r" / m) for m in ("batch", "online")]
    assert tables[0][:2] == tables[1][:2] == ([("mode", True), ("lr", True)], ["loss/test", "accuracy/test"])
    assert tables[1][2] == {"mode": "online", "lr": 0.1}
    assert set(read_scalars(tmp_path / "e" / "r" / "batch")) == {"loss/test", "accuracy/test"}
    layout = layout_of(tmp_path / "e" / "r" / "batch")
    assert [(c.title, c.closed) for c in layout.category] == [("the point", False), ("more", True)]
    first, band = layout.category[0].chart
    assert first.title == "loss per mode" and list(first.multiline.tag) == ["^loss/train$"]
    series = band.margin.series[0]
    assert (series.value, series.lower, series.upper) == ("s/mean", "s/min", "s/max")


# ---------------------------------------------------------------------------------------------------- the experiments
def test_xor_runs_share_one_table_whatever_the_method(tmp_path):
    """The perceptron, the delta rule and the MLP log different hparams; every run carries the same keys, so the
    HPARAMS columns no longer depend on which run TensorBoard reads first."""
    argv = ["--problems", "xor", "--seeds", "2", "--epochs-perceptron", "3", "--epochs-delta", "3", "--epochs-mlp",
            "3", "--logdir", str(tmp_path), "--run", "t", "--quiet"]
    assert xor.main(argv) == 0
    run_dir = tmp_path / "xor" / "t"
    tables = {p.name: experiment_of(p) for p in run_dir.iterdir() if re.fullmatch(r"xor-\w+-seed\d", p.name)}
    assert len(tables) == 6
    assert len({json.dumps(t[:2]) for t in tables.values()}) == 1
    columns, metrics, _ = next(iter(tables.values()))
    # the compared keys first (one problem: not a column), then every setting of the run, as constant columns
    assert columns[:3] == [("method", True), ("seed", True), ("lr", True)]
    assert {"seeds": False, "epochs_mlp": False, "hidden": False} == \
        {k: d for k, d in columns[3:] if k in ("seeds", "epochs_mlp", "hidden")}
    assert metrics == ["accuracy/train", "loss/train", "errors/train"]
    values = tables["xor-mlp-seed1"][2]
    assert {k: values[k] for k in ("problem", "method", "seed", "lr", "seeds", "epochs_mlp")} == \
        {"problem": "xor", "method": "mlp", "seed": whole_text(1), "lr": 5.0, "seeds": whole_text(2),
         "epochs_mlp": whole_text(3)}  # whole numbers as text of one width: they read "1" and sort as numbers


@pytest.mark.parametrize("make, key_tag", [
    (lambda: dashboards.learning_modes(["batch", "online"], [2.0, 0.02], [60, 1]), "loss/by_samples_seen"),
    (lambda: dashboards.sweep(["batch", "online"], [0.5, 2.0]), "success/fraction"),
    (lambda: dashboards.softmax_outputs({"a": ("sigmoid", "squared_error"), "b": ("softmax", "cross_entropy")},
                                        [1.0, 0.2]), "outputs/row_sum_mean"),
    (lambda: dashboards.xor(["xor"], ["perceptron", "mlp"], 3, {"perceptron": 1.0, "mlp": 5.0}), "errors/train"),
    (lambda: dashboards.linear_collapse(["identity", "tanh"], 2), "loss/train"),
    (lambda: dashboards.hidden_layers({"s": {"activation": "sigmoid", "hidden": 2},
                                       "i": {"activation": "identity", "hidden": 2}}), "hidden/margin"),
])
def test_every_experiment_puts_its_key_chart_first(make, key_tag):
    board = make()
    first = board.layout[0].charts[0]
    assert key_tag in (first.tags if isinstance(first, Chart) else (first.value, first.lower, first.upper))
    assert not board.layout[0].closed
    assert board.pinned[0] == key_tag or key_tag in board.pinned
    assert board.columns() and all(board.differs(k) for k in board.columns())


def test_real_tensorboard_serves_the_layout_and_the_columns(tmp_path):
    board = Dashboard("x", layout=LAYOUT, hparams={"mode": ["batch", "online"], "lr": [2.0, 0.1], "seed": [0, 0]},
                      metrics=["loss/train"])
    for mode, lr in (("batch", 2.0), ("online", 0.1)):
        with RunLogger(tmp_path, "e", "r", mode, dashboard=board) as log:
            log.log_epoch(1, {"loss/train": lr})
            log.log_hparams({"mode": mode, "lr": lr, "seed": 0})
    run_dir = tmp_path / "e" / "r"

    def ready(runs, tags):
        return set(runs) == {"batch", "online"} and all("loss/train" in tags.get(m, {}) for m in runs)

    with tensorboard_server(run_dir, tmp_path, ready) as base:
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
        assert [c["title"] for c in layout["category"]] == ["the point", "more"]
        assert layout["category"][0]["chart"][0]["title"] == "loss per mode"
        experiment = get_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        assert [(h["name"], h.get("differs", False)) for h in experiment["hparamInfos"]] == \
            [("lr", True), ("mode", True)]  # seed is the same in both runs: not a column
        assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["loss/train"]


def test_real_tensorboard_sorts_seeds_and_epochs_as_numbers_and_serves_them_as_whole_numbers(tmp_path):
    """HPARAMS formats every number with toPrecision(5) (seed 4 would read 4.0000) and sorts text as text ("10"
    before "2"; the server sorts, the table shows its order): a whole-number column is text of one width, spaces
    before the digits, which the table shows as "4" (HTML collapses them) and the server sorts as the numbers."""
    board = Dashboard("x", hparams={"seed": [4, 10, 2], "lr": [0.5, 2.0, 1.0]}, settings={"epochs": 1000})
    for seed, lr in ((4, 0.5), (10, 2.0), (2, 1.0)):
        with RunLogger(tmp_path, "e", "r", f"seed{seed}", dashboard=board) as log:
            log.log_epoch(1, {"loss/train": lr})
            log.log_hparams({"seed": seed, "lr": lr})
    with RunLogger(tmp_path, "e", "r", "plain") as log:  # no dashboard: the run's own keys, by their types
        log.log_epoch(1, {"loss/train": 1.0})
        log.log_hparams({"seed": 7, "lr": 0.25})
    runs = {"seed4", "seed10", "seed2", "plain"}

    def ready(served, tags):
        return set(served) == runs and all("loss/train" in tags.get(m, {}) for m in served)

    with tensorboard_server(tmp_path / "e" / "r", tmp_path, ready) as base:
        experiment = get_json(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        types = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
        assert types["seed"] == "DATA_TYPE_STRING" and types["lr"] == "DATA_TYPE_FLOAT64", types

        def sorted_by(key: str, order: str) -> list:  # what the HPARAMS pane's "Sort by" asks the server
            columns = [{"hparam": k, "includeInResult": True, **({"order": order} if k == key else {})}
                       for k in ("seed", "lr", "epochs")]
            groups = get_json(f"{base}/data/plugin/hparams/session_groups",
                              {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                               "colParams": columns, "startIndex": 0, "sliceSize": 100})["sessionGroups"]
            assert {g["name"] for g in groups} == runs
            return groups

        ascending = sorted_by("seed", "ORDER_ASC")
        assert [g["name"] for g in ascending] == ["seed2", "seed4", "plain", "seed10"], ascending  # 2 4 7 10
        assert [g["name"] for g in sorted_by("seed", "ORDER_DESC")] == ["seed10", "plain", "seed4", "seed2"]
        for group in ascending:  # the table shows the text with its leading spaces collapsed: "4", never 4.0000
            seed = group["hparams"]["seed"]
            assert seed == whole_text(int(seed)) and seed.strip() == group["name"].removeprefix("seed").replace(
                "plain", "7"), group
        assert all(g["hparams"]["epochs"] == whole_text(1000) for g in ascending if "epochs" in g["hparams"])
        assert [g["hparams"]["lr"] for g in sorted_by("lr", "ORDER_ASC")] == [0.25, 0.5, 1.0, 2.0]
