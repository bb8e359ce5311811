"""What an experiment's TensorBoard opens on: its custom-scalars layout, its HPARAMS table and the link to its point.

TensorBoard left alone shows every tag of every run, grouped by the first part of the tag and sorted by name, and
folds all groups after the first two; its HPARAMS table takes its columns from whichever run it reads first and ticks
the first five. A ``Dashboard`` says instead what one experiment is about:

- ``layout``: the CUSTOM SCALARS tab, categories in the order given, the key chart first. A ``Chart`` overlays tags
  (one line per run and tag); a ``Band`` draws one min / mean / max band per run (TensorBoard's margin chart).
- ``hparams``: every HPARAMS key of the experiment with the values its runs take. Every run writes exactly these keys
  (a key a run does not have reads "-"), and every run writes the same table, so whichever run TensorBoard reads
  first, the columns are the same. Only the keys whose values differ become columns (all keys when none differs):
  those are the ones the table compares, and TensorBoard ticks the first five columns it is given.
- ``metrics``: the metric columns, each an existing scalar tag (HPARAMS shows its last value); no extra scalars.
- ``pinned``, ``run_filter``, ``run_colors``: the TIME SERIES tab, through the link ``url`` builds: the key charts
  pinned on top, the run filter filled in, runs coloured by a regex group.
- ``tag_filter``: the regex to type into TIME SERIES' tag filter to see the experiment's tags alone, printed beside
  the command (not in the link: a tag filter hides the pinned cards).

``instructions(run_dir)`` is what a script prints: the ``tensorboard --logdir`` line with the tag filter beside it,
and the link. A RunLogger given a dashboard writes the layout when it opens and the HPARAMS table in log_hparams.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .command import tensorboard_command

# Left as they are in the link, so that it stays readable; "+" (a space in a query) and "\\" (a "/" to some
# browsers) are encoded.
_URL_SAFE = "/:,[]{}()|^$*?"
MISSING = "-"
TABS = {"timeseries": "TIME SERIES", "custom_scalars": "CUSTOM SCALARS"}
# Settings that say where a run goes or how it prints, not what it computes: no HPARAMS column.
UNSHOWN = ("logdir", "run", "resume", "quiet", "plots", "config", "threads")
FIRST_SETTINGS = ("seed", "seeds", "epochs", "lr")  # the settings columns that come (and are ticked) first
LOCAL_EXPERIMENT = "defaultExperimentId"  # TensorBoard's name of the experiment of a --logdir (run ids are <it>/<run>)  # the value of an HPARAMS key that a run does not have (a perceptron has no hidden layer)


@dataclass(frozen=True)
class Chart:
    """A custom-scalars chart that overlays the given tags (exact names) of every selected run."""
    title: str
    tags: tuple

    def __init__(self, title: str, *tags: str):
        if not tags or not all(isinstance(t, str) and t for t in tags):
            raise ValueError(f"Chart {title!r} needs one or more tag names, but got {tags!r}")
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "tags", tuple(tags))

    def proto(self):
        from tensorboard.plugins.custom_scalar import layout_pb2

        regexes = [f"^{re.escape(t)}$" for t in self.tags]
        return layout_pb2.Chart(title=self.title, multiline=layout_pb2.MultilineChartContent(tag=regexes))


@dataclass(frozen=True)
class Band:
    """A custom-scalars margin chart: per run, the ``value`` tag as a line inside the ``lower`` .. ``upper`` band."""
    title: str
    value: str
    lower: str
    upper: str

    def proto(self):
        from tensorboard.plugins.custom_scalar import layout_pb2

        series = layout_pb2.MarginChartContent.Series(value=self.value, lower=self.lower, upper=self.upper)
        return layout_pb2.Chart(title=self.title, margin=layout_pb2.MarginChartContent(series=[series]))


@dataclass(frozen=True)
class Category:
    """A folding section of the CUSTOM SCALARS tab; ``closed`` ones start folded."""
    title: str
    charts: tuple
    closed: bool = False

    def __init__(self, title: str, *charts: Union[Chart, Band], closed: bool = False):
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "charts", tuple(charts))
        object.__setattr__(self, "closed", closed)


@dataclass(frozen=True)
class Dashboard:
    """How one experiment's runs are shown in TensorBoard; see the module docstring.

    Args:
        point: what the dashboard shows, in a few words ("loss per mode, against the samples seen").
        layout: the CUSTOM SCALARS categories, key chart first.
        hparams: {key: the values the experiment's runs take}; the order is the column order.
        metrics: scalar tags shown as HPARAMS metric columns (their last value), key metric first.
        pinned: scalar tags pinned at the top of TIME SERIES by the link.
        pinned_images: (run, tag) pairs of image cards pinned after them (an image card belongs to one run).
        tag_filter: regex for TIME SERIES' tag filter (printed beside the command).
        run_filter: regex for the run filter (in the link), "" for all runs.
        run_colors: regex whose match (its capture groups) gives runs that share it one colour, "" for one colour
            per run; e.g. ``-(\\w+)-seed`` colours the seeds of a method alike.
        smoothing: TIME SERIES smoothing in the link (None: TensorBoard's 0.6).
        tab: the tab the link opens: "timeseries" (key charts pinned) or "custom_scalars" (the layout); the other
            settings of the link hold for TIME SERIES either way.
        settings: the run's full settings {key: value} (seed, epochs, ...): every run writes them as columns after
            the compared ones, so runs of one logdir started with other settings (seeds, epoch limits) can be told
            apart in HPARAMS, whichever run TensorBoard reads first. A key of ``hparams`` is not repeated.
    """
    point: str
    layout: tuple = ()
    hparams: Mapping[str, Sequence] = field(default_factory=dict)
    metrics: tuple = ()
    pinned: tuple = ()
    pinned_images: tuple = ()
    tag_filter: str = ""
    run_filter: str = ""
    run_colors: str = ""
    smoothing: Optional[float] = None
    tab: str = "timeseries"
    settings: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.tab not in TABS:
            raise ValueError(f"Dashboard tab must be one of {list(TABS)}, but got {self.tab!r}")
        for name in ("layout", "metrics", "pinned", "pinned_images"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "hparams", {k: [hparam_value(v) for v in vs] for k, vs in self.hparams.items()})
        shown = {k: hparam_value(v) for k, v in self.settings.items() if k not in self.hparams and k not in UNSHOWN}
        first = [k for k in FIRST_SETTINGS if k in shown]  # TensorBoard ticks the first columns it is given
        object.__setattr__(self, "settings", {k: shown[k] for k in [*first, *(k for k in shown if k not in first)]})
        for name in ("tag_filter", "run_filter", "run_colors"):
            try:
                re.compile(getattr(self, name))
            except re.error as err:
                raise ValueError(f"Dashboard {name} must be a regular expression, but {getattr(self, name)!r} "
                                 f"is not ({err})") from None

    # ------------------------------------------------------------------ HPARAMS
    def columns(self) -> list:
        """The HPARAMS keys that become columns: those whose values differ (all of them when none does)."""
        varying = [k for k in self.hparams if self.differs(k)]
        return (varying or list(self.hparams)) + list(self.settings)

    def differs(self, key: str) -> bool:
        return key in self.hparams and len(set(map(_key, self.hparams[key]))) > 1

    def numeric(self, key: str) -> bool:
        """Whether a key's column holds numbers rather than text: every value the runs take is a number, and not
        every one a whole number >= 0 (``numeric_column``: seeds and epochs are written as text that reads "4", not
        4.0000, and sorts as the numbers do)."""
        return numeric_column(self.hparams.get(key, [self.settings.get(key)]))

    def session_hparams(self, hparams: Mapping) -> dict:
        """A run's values for exactly this dashboard's keys, as its columns hold them (MISSING where it has none)."""
        values = {}
        for key in (*self.hparams, *self.settings):
            value = hparam_value(hparams[key]) if key in hparams else self.settings.get(key, MISSING)
            values[key] = value if self.numeric(key) and not isinstance(value, str) else column_text(value)
        return values

    def summaries(self, hparams: Mapping) -> list:
        """The HPARAMS summaries of one run of this dashboard's experiment."""
        columns = [(k, self.numeric(k), self.differs(k)) for k in self.columns()]
        return hparams_summaries(self.session_hparams(hparams), columns, self.metrics)

    # ------------------------------------------------------------------ the link and the printed lines
    def url(self, host: str = "localhost", port: int = 6006) -> str:
        """The TIME SERIES link that opens on the point: pinned cards, run filter, run colours, smoothing."""
        query = []
        if self.pinned or self.pinned_images:
            cards = [{"plugin": "scalars", "tag": t} for t in self.pinned]
            cards += [{"plugin": "images", "tag": tag, "runId": f"{LOCAL_EXPERIMENT}/{run}", "sample": 0}
                      for run, tag in self.pinned_images]
            query.append(("pinnedCards", json.dumps(cards, separators=(",", ":"))))
        if self.run_filter:
            query.append(("runFilter", self.run_filter))
        if self.run_colors:
            query.append(("runColorGroup", "regex:" + self.run_colors))
        if self.smoothing is not None:
            query.append(("smoothing", f"{self.smoothing:g}"))
        text = urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe=_URL_SAFE)
        return f"http://{host}:{port}/" + (f"?{text}" if text else "") + f"#{self.tab}"

    def instructions(self, logdir, port: Optional[int] = None) -> str:
        """The lines a script prints: the command with the tag filter beside it, the link, and what it opens on."""
        port = port or 6006
        filters = f"   (tag filter: {self.tag_filter})" if self.tag_filter else ""
        if self.tab == "custom_scalars":
            opens = "CUSTOM SCALARS, key chart first; TIME SERIES has the key charts pinned"
        else:
            opens = "TIME SERIES, key charts pinned" + ("; CUSTOM SCALARS holds the layout" if self.layout else "")
        return (f"Open TensorBoard on {self.point}:\n"
                f"  {tensorboard_command(logdir, port=None if port == 6006 else port)}{filters}\n"
                f"  then {self.url(port=port)}\n"
                f"  ({opens}; HPARAMS compares the runs. On a remote machine: run "
                f"`ssh -L {port}:localhost:{port} USER@MACHINE` on your own computer, then open the link there.)")


# ---------------------------------------------------------------------- summaries
def layout_summary(categories: Sequence[Category]):
    """The custom_scalars summary of the categories (what SummaryWriter.add_custom_scalars writes, with ``closed``)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout(category=[
        layout_pb2.Category(title=c.title, chart=[chart.proto() for chart in c.charts], closed=c.closed)
        for c in categories
    ])
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()], tensor_shape=TensorShapeProto())
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=metadata)])


def hparams_summaries(hparams: Mapping, columns: Sequence[tuple], metrics: Sequence[str]) -> list:
    """The three summaries of the HPARAMS plugin: the table (``columns``: (key, numeric, differs) each, and
    ``metrics``, scalar tags), this run's values (numbers and strings) and the run's end."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    def summary(tag, **content):
        data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                      content=data.SerializeToString()))
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])

    start = plugin_data_pb2.SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, str):
            start.hparams[key].string_value = value
        else:
            start.hparams[key].number_value = value
    infos = [api_pb2.HParamInfo(name=key, differs=differs,
                                type=api_pb2.DATA_TYPE_FLOAT64 if numeric else api_pb2.DATA_TYPE_STRING)
             for key, numeric, differs in columns]
    experiment = api_pb2.Experiment(hparam_infos=infos,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    return [summary(metadata.EXPERIMENT_TAG, experiment=experiment),
            summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
            summary(metadata.SESSION_END_INFO_TAG, session_end_info=end)]


WHOLE_WIDTH = 20  # characters of a whole number's text in HPARAMS: 2**63 - 1, the largest seed, has 19 digits


def numeric_column(values) -> bool:
    """Whether an HPARAMS column of these values is written as numbers (DATA_TYPE_FLOAT64).

    The HPARAMS table shows every number with five significant digits (its frontend formats them with
    ``toPrecision(5)``, whatever the column's domain), so the seed 4 would read 4.0000 and 1000 epochs 1000.0; and
    it sorts a text column as text ("10" before "2"; the server sorts, by the value's kind). A column whose values
    are all whole numbers >= 0 (seeds, epochs, batch sizes) is written as text right-aligned with spaces
    (``whole_text``): the table collapses the leading spaces, so it reads "4", and text of one width sorts as the
    numbers do. A column with any fraction (learning rates) or a negative whole number stays numeric, with the
    plugin's min/max filter (a negative number would sort before the spaces' text wrongly: sorting right matters
    more than the digits shown).
    """
    values = list(values)
    return all(not isinstance(v, str) for v in values) and \
        not all(isinstance(v, int) and v >= 0 for v in values)


def whole_text(value: int) -> str:
    """A whole number >= 0 as the text of an HPARAMS column: right-aligned with spaces to WHOLE_WIDTH characters,
    so that it reads as the number (HTML collapses the spaces) and sorts by its value ("   4" < "  10")."""
    return str(value).rjust(WHOLE_WIDTH)


def column_text(value) -> str:
    """A value of a text column: whole numbers >= 0 as ``whole_text``, other numbers as %g prints them (0.5),
    text as it is."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return whole_text(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def hparam_value(value):
    """int, float or str for the hparams plugin (which stores a bool as the number 1.0, so bools become str)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, Tensor):
        value = value.tolist()
    if hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (bool, type(None))):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(hparam_value(v)) for v in value) + "]"
    return str(value)


def _key(value):
    """Values that HPARAMS shows alike compare equal (1 and 1.0; NaN with NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
