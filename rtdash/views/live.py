"""The Live tab: latest prices with their change, and streaming price and weather charts.

Each chart is declared with hvPlot on the sources' tidy rows (``rows.hvplot.line(by=...)``: one line per asset or
city) and drawn by HoloViews once per process; every session gets its own copy of the Bokeh models it made
(:func:`copy_models`).  Rows come from the shared pollers (one subscription per session) and go straight into each
line's ``ColumnDataSource.stream(..., rollover=backlog)``, so only the new points travel to the browser.  The
browser's ``DataRange1d`` follows the data and keeps a user's zoom or pan, while points keep arriving, until the
plot's reset tool is used.

The providers' own history (rtdash.stream.history: one-minute candles, 15-minute weather) is drawn apart from the
live points: a dashed line of the same colour per series (one ``MultiLine`` for all the series of a chart), and a
dotted rule where that history ends and live polling begins.
"""

from __future__ import annotations

import bisect
import functools
import html
import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, ClassVar, NamedTuple

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh plotting options used below
import hvplot.pandas  # noqa: F401  (adds .hvplot to DataFrames)
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.core.property.validation import validate
from bokeh.document import Document
from bokeh.document.json import DocJson
from bokeh.model import Model
from bokeh.models import (
    ColumnDataSource,
    DataRange1d,
    DatetimeTickFormatter,
    GlyphRenderer,
    Line,
    NumeralTickFormatter,
    Scatter,
    Span,
)
from bokeh.palettes import Category10_10
from bokeh.util.serialization import make_id
from panel.custom import JSComponent
from tornado.ioloop import IOLoop

from ..sources import SERIES, UNITS, empty_frame
from ..sources.base import is_history
from ..stream import Runtime
from ..stream.poller import current_dispatch
from . import OutputGuard, OutputLifetime, one_message
from .alerts import chart_rules, draw_levels

log = logging.getLogger("rtdash.views")

REATTACH_EVERY = 5.0  # seconds between two checks for a chart that left its notebook output's document
LISTEN_WAIT = 10.0  # seconds a notebook view holds its rows for an output whose comm is not open yet
GAP_INTERVALS = 3  # a jump in time longer than this many poll intervals breaks the line
MARKER_POINTS = 50  # a line with at most this many points also shows them as markers (one reading draws no line)
SPAN_INTERVALS = 10  # the time axis of a line with a single point spans this many poll intervals around it
CHART_HEIGHT = 300
SPARES = 3  # copies of each chart kept ready for the next sessions (FigureTemplate.copy)
SPARE_DELAY = 5.0  # seconds after a session took a copy before the spares are made again: after its page loaded
CHARTS_CSS = ".bk-Figure {flex: 1 1 360px !important; width: auto !important; min-width: 0 !important}"
WEATHER_METRICS = {"temperature": "Temperature", "humidity": "Humidity", "wind_speed": "Wind speed"}
PALETTE = Category10_10

PAST_NOTE = (
    '<span class="past-note"><span class="swatch dashed"></span>the provider\'s recorded history '
    "(dashed; a dotted rule where live polling begins)</span>"
)
LEGEND_CSS = """
.legend {display: flex; flex-wrap: wrap; gap: 4px 18px; font: 13px system-ui, sans-serif; color: #374151}
.legend .item {display: inline-flex; align-items: center; gap: 6px; white-space: pre}
.legend .swatch {display: inline-block; width: 18px; height: 3px; border-radius: 2px}
.legend .swatch.dashed {height: 0; border-top: 2px dashed #6b7280; border-radius: 0}
.legend .past-note {display: inline-flex; align-items: center; gap: 6px; color: #6b7280}
"""

CARD_CSS = """
.card {font-family: system-ui, sans-serif; padding: 4px 18px 8px 4px; line-height: 1.25}
.card .name {font-size: 14px; color: #4b5563; letter-spacing: .04em}
.card .price {font-size: 36px; font-weight: 600; font-variant-numeric: tabular-nums}
.card .change {font-size: 16px; font-weight: 600; font-variant-numeric: tabular-nums}
.card .time {font-size: 12px; color: #6b7280}
"""


class Series(NamedTuple):
    """One series' points: times in ms since the epoch (naive UTC, Bokeh's own unit), oldest first, and values."""

    times: list[float]
    values: list[float]


class Split(NamedTuple):
    simulated: bool
    series: dict[str, Series]


_PER_FRAME: dict[tuple, tuple[pd.DataFrame, Any]] = {}  # what was made of the last fetches' frames (once_per_frame)
_PER_FRAME_LOCK = threading.Lock()
_PER_FRAME_KEPT = 64


def once_per_frame(df: pd.DataFrame, key: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, made once per frame ``df`` and ``key``: every session is handed the same frame of a fetch, and the
    same history (``Poller.history``), so the work is done once per frame, not once per session."""
    token = (id(df), *key)
    with _PER_FRAME_LOCK:
        hit = _PER_FRAME.get(token)
    if hit is not None and hit[0] is df:
        return hit[1]
    result = make()
    with _PER_FRAME_LOCK:
        _PER_FRAME[token] = (df, result)  # the frame is kept with its result, so that its id is not reused meanwhile
        while len(_PER_FRAME) > _PER_FRAME_KEPT:
            del _PER_FRAME[next(iter(_PER_FRAME))]
    return result


def split_rows(df: pd.DataFrame, key: str, value: str, gap_ms: float) -> Split:
    """The rows of ``df`` per series (``key``) as plain lists of ``value``, with a NaN point wherever time jumps by
    more than ``gap_ms`` so that a line breaks instead of bridging the gap (once per frame: ``once_per_frame``)."""

    def split() -> Split:
        values = df[value].to_numpy(float)
        series = {name: with_gaps(times, values[rows], gap_ms) for name, (rows, times) in by_series(df, key).items()}
        return Split(_simulated(df), series)

    return once_per_frame(df, ("rows", key, value, gap_ms), split)


def by_series(df: pd.DataFrame, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per series of ``df`` (``key``), in order of first appearance: its rows' positions in time order (ties in
    their order in ``df``) and their times (ms since the epoch), once per frame (shared by the weather metrics)."""

    def make() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        times = _epoch_ms(df["time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]"))
        codes, names = pd.factorize(df[key], sort=False)
        order = np.lexsort((times, codes))  # stable: by series, then time
        order = order[codes[order] >= 0]  # a row without a series (none expected) is in no line
        parts = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []
        return {names[codes[rows[0]]]: (rows, times[rows]) for rows in parts}

    return once_per_frame(df, ("series", key), make)


def past_points(df: pd.DataFrame, key: str, value: str) -> dict[str, pd.Series]:
    """Per series of ``df`` (``key``), its ``value`` by time (ms since the epoch), in time order, one point per time
    (the last row's), once per frame: every session starts from the same provider history (``Poller.history``)."""

    def make() -> dict[str, pd.Series]:
        values = df[value].to_numpy(float)
        points = {name: pd.Series(values[rows], index=times) for name, (rows, times) in by_series(df, key).items()}
        return {name: p[~p.index.duplicated(keep="last")] for name, p in points.items()}

    return once_per_frame(df, ("points", key, value), make)


def with_gaps(times: np.ndarray, values: np.ndarray, gap_ms: float) -> Series:
    """``times`` and ``values`` with a NaN point halfway through every jump in time longer than ``gap_ms``."""
    jumps = np.flatnonzero(np.diff(times) > gap_ms) + 1
    if len(jumps):
        times = np.insert(times, jumps, (times[jumps - 1] + times[jumps]) / 2)
        values = np.insert(values, jumps, np.nan)
    return Series(times.tolist(), values.tolist())


def copy_models(doc_json: DocJson, ids: Collection[str]) -> tuple[Document, dict[str, str]]:
    """A new document made from ``doc_json`` (``Document.to_json(deferred=False)``) in which each model whose id is in
    ``ids`` gets a new one (``make_id``: ``p123`` in a server, a UUID in a notebook), and the map from old ids to new.

    A Bokeh model belongs to one document, and neither Bokeh nor Panel copies a whole model graph: ``Model.clone``
    is shallow (child models are shared; a deep variant was proposed in bokeh/bokeh#12823 and not made), and
    ``Document.from_json`` keeps the ids it is given.  So the ids are renamed in Bokeh's serialized form, where a model
    is ``{"type": "object", "name": ..., "id": ...}`` and a reference to it ``{"id": ...}``: only ``id`` entries of
    such objects are touched, never a string value.
    """
    new: dict[str, str] = {}

    def renamed(rep):
        if isinstance(rep, dict):
            out = {key: renamed(value) for key, value in rep.items()}
            old = rep.get("id")
            if isinstance(old, str) and old in ids:
                if old not in new:
                    new[old] = make_id()
                out["id"] = new[old]
            return out
        if isinstance(rep, list):
            return [renamed(value) for value in rep]
        return rep

    doc_json = renamed(doc_json)
    if threading.current_thread() is not threading.main_thread():
        return Document.from_json(doc_json), new
    # Bokeh's validation of every property read back doubles the time of a copy of values it validated when they
    # were set.  ``validate`` switches it off process-wide (Property._should_validate), and restores it on exit: on
    # the main thread only, where every other user of the switch (HoloViews, Panel) runs, so that no two of them
    # interleave and leave it off.
    with validate(False):
        return Document.from_json(doc_json), new


class FigureTemplate:
    """A chart drawn once by HoloViews, copied for every session (a Bokeh model belongs to one document).

    ``chart`` is the chart's declaration (an hvPlot ``NdOverlay``, one line per series), ``value`` the column its
    lines draw.  Drawing with HoloViews takes about 0.3 s per chart; a copy of the models it made, without the
    template's points (:func:`copy_models`), 34 ms for a weather chart of seven cities on an idle machine (0.1 s
    and more on a busy one), nearly all of it in Bokeh's ``Document.from_json``: so a server's sessions get copies
    made ahead (``spares``, set by :func:`warm_up`), between sessions (:meth:`copy`).  A copy comes with its lines'
    markers or without them (:meth:`StreamingChart._mark`); the spares are made the way the last session asked.
    """

    def __init__(self, chart: hv.NdOverlay, value: str, spares: int = 0):
        # The browser keeps the ranges (setup_figure); the server never sets them.
        plot = hv.renderer("bokeh").get_plot(chart.opts(apply_ranges=False, hooks=[setup_figure], clone=True))
        sources = {_series(key): line.handles["source"] for key, line in plot.subplots.items()}
        for source in sources.values():
            source.data = {"time": [], value: []}  # hvPlot's copy of the series column is not streamed
        # Canvas, not the WebGL HoloViews picks: a browser without a GPU (a VM, a remote desktop, headless Chromium)
        # renders WebGL in software, and 20 such pages on 2 cores fell seconds behind; a line of 10k points is
        # cheap on a canvas (BENCHMARKS.md: fetch-to-pixel).
        plot.state.output_backend = "canvas"
        # The look of a selected, unselected or muted line as BokehJS derives it from the line's own ("auto"),
        # instead of three more glyph models per line that HoloViews and figure.line() make: the charts have no
        # selection tool and no Bokeh legend to mute with: three models fewer per renderer (a weather chart of seven
        # cities has 95 models without its markers: StreamingChart._mark), which every session copies, serializes and
        # sends, and every page builds.
        for renderer in plot.state.select(GlyphRenderer):
            renderer.update(selection_glyph="auto", nonselection_glyph="auto", muted_glyph="auto")
        past = next(r for r in plot.state.renderers if r.tags == ["past"])
        colours = {r.name: r.glyph.line_color for r in plot.state.renderers if isinstance(r.glyph, Line)}
        boundary = next(a for a in plot.state.center if isinstance(a, Span) and a.tags == ["boundary"])
        doc = Document()
        doc.add_root(plot.state)
        self._json = doc.to_json(deferred=False)
        self._ids = frozenset(model.id for model in doc.models)
        self._figure = plot.state.id
        self._sources = {name: source.id for name, source in sources.items()}
        self._past = past.data_source.id
        self.colours = {name: colours[name] for name in sources}  # each series' line colour
        self._boundary = boundary.id
        self.value = value

        self.spares = spares
        self._spares: list[Copy] = []  # copies made ahead, all with markers or all without (``_markers``)
        self._markers = True  # whether the last session asked for markers (a new server's lines have few points)
        self._spares_lock = threading.Lock()
        self._refilling = False

    def copy(self, markers: bool = True) -> Copy:
        """A new figure, its lines' data sources (by series), their markers' renderers (by series, visible; none
        unless ``markers``), the data source of its provider-history lines (one ``MultiLine``), and the rule between
        provider history and live points.

        A spare copy made ahead is handed out when there is one of the kind asked for, and the spares are made again
        (of that kind) ``SPARE_DELAY`` seconds later on the running event loop, one per loop turn, so that the loop
        serves what waits in between.
        """
        with self._spares_lock:
            if markers != self._markers:
                self._markers, self._spares = markers, []
            spare = self._spares.pop() if self._spares else None
            loop = IOLoop.current(instance=False)
            if loop is not None and not self._refilling and len(self._spares) < self.spares:
                self._refilling = True
                loop.call_later(SPARE_DELAY, self._add_spare, loop)
        return spare if spare is not None else self._copy(markers)

    def fill_spares(self) -> None:
        """Make copies, here and now, until ``spares`` are ready."""
        while len(self._spares) < self.spares:
            markers = self._markers
            spare = self._copy(markers)
            with self._spares_lock:
                if markers == self._markers:
                    self._spares.append(spare)

    def _add_spare(self, loop: IOLoop) -> None:
        with self._spares_lock:
            if len(self._spares) >= self.spares:  # filled meanwhile (fill_spares)
                self._refilling = False
                return
            markers = self._markers
        try:
            spare = self._copy(markers)
        except Exception:  # pragma: no cover - a session then makes its own copy
            log.warning("could not make a spare copy of a chart", exc_info=True)
            spare = None
        with self._spares_lock:
            if spare is not None and markers == self._markers:
                self._spares.append(spare)
            self._refilling = spare is not None and len(self._spares) < self.spares
        if self._refilling:
            loop.add_callback(self._add_spare, loop)

    def _copy(self, markers: bool) -> Copy:
        doc, ids = copy_models(self._json, self._ids)
        figure = doc.get_model_by_id(ids[self._figure])
        sources = {name: doc.get_model_by_id(ids[id_]) for name, id_ in self._sources.items()}
        past = doc.get_model_by_id(ids[self._past])
        boundary = doc.get_model_by_id(ids[self._boundary])
        doc.remove_root(figure)
        marks = add_markers(figure, sources, self.colours, self.value) if markers else {}
        return Copy(figure, sources, marks, past, boundary)


class Copy(NamedTuple):
    """A session's copy of a chart (:meth:`FigureTemplate.copy`)."""

    figure: Model
    sources: dict[str, ColumnDataSource]  # by series
    markers: dict[str, GlyphRenderer]  # by series: those made so far
    past: ColumnDataSource  # the provider history's dashed lines
    boundary: Span  # the rule where provider history ends and live polling begins


def add_markers(
    figure: Model, sources: dict[str, ColumnDataSource], colours: dict[str, str], value: str
) -> dict[str, GlyphRenderer]:
    """Draw the points of the lines ``sources`` (by series) as markers too, on the lines' own data, in their colours,
    over the lines, and not under the hover tool (the line is); their renderers by series."""
    markers = {}
    for name, source in sources.items():
        glyph = Scatter(x="time", y=value, size=7, line_color=colours[name], fill_color=colours[name])
        markers[name] = GlyphRenderer(
            data_source=source,
            glyph=glyph,
            name=name,
            selection_glyph="auto",
            nonselection_glyph="auto",
            muted_glyph="auto",
        )
    figure.renderers = [*figure.renderers, *markers.values()]
    return markers


def _series(key) -> str:
    """The series an ``NdOverlay`` key names (hvPlot's ``by=`` one column: a 1-tuple)."""
    return str(key[0] if isinstance(key, tuple) and len(key) == 1 else key)


_TEMPLATES: dict[tuple, FigureTemplate] = {}
_TEMPLATES_LOCK = threading.Lock()


def figure_template(
    kind: str, names: list[str], value: str, chart: Callable[[pd.DataFrame], hv.NdOverlay], template: tuple | None
) -> FigureTemplate:
    """The :class:`FigureTemplate` of a chart (see :class:`StreamingChart`): drawn once per process for each
    ``template``, or drawn anew when ``template`` is None.  It keeps no spare copies unless :func:`warm_up` (a
    server's) asks for them: a notebook shows a chart once per output."""
    key = (kind, tuple(names), value, template)
    with _TEMPLATES_LOCK:
        built = _TEMPLATES.get(key) if template is not None else None
        if built is None:
            built = FigureTemplate(chart(placeholder_rows(kind, names)), value)
            if template is not None:
                _TEMPLATES[key] = built
    return built


class StreamingChart:
    """One chart's lines, one per series (asset or city), fed with a poller's tidy rows.

    ``chart`` declares the chart's look from tidy rows of ``kind`` (``rows.hvplot.line(by=...)``, one line per
    series); HoloViews draws it once per process and sessions get copies (:class:`FigureTemplate`).  The lines start
    with the rows collected so far; after that the new rows of each fetch go straight into the lines'
    ``ColumnDataSource``s (``stream`` with ``rollover``), so an update costs the server a small message per session,
    not a re-render.  Only rows newer than a series' last one are taken, so the same rows may be offered twice
    (catching up after a pause).  When the rows switch between simulated and live, the old rows are dropped, not
    joined.

    A line holds a time window: the ``length`` poll intervals up to its newest point, and at most ``length`` points.
    Points from before a restart stay only while they are in that window (the gap between shows as a break), so they
    never squeeze the new ones into the chart's edge.  A line of at most ``MARKER_POINTS`` points also shows them as
    markers (a single reading draws no line), and a single point gets a time axis of ``SPAN_INTERVALS`` intervals.

    ``template`` names the chart's look (everything ``chart`` depends on besides ``kind``, ``names`` and ``value``)
    among the charts of the process.
    """

    def __init__(
        self,
        kind: str,
        names: list[str],
        value: str,
        interval: float,
        length: int,
        history: pd.DataFrame,
        chart: Callable[[pd.DataFrame], hv.NdOverlay],
        template: tuple | None = None,
        resolution: float = 0.0,
    ):
        self.key = SERIES[kind]
        self.value = value
        self.gap_ms = GAP_INTERVALS * interval * 1000
        self.past_gap_ms = GAP_INTERVALS * max(interval, resolution) * 1000
        self.window_ms = length * interval * 1000
        self.length = length
        self.last: dict[str, float] = {}  # per series, the time of its last point (ms)
        self._past: dict[str, pd.Series] = {}  # per series, the provider's history points held (value by time in ms)
        self._past_lines: dict[str, Series] = {}  # per series, those points as drawn (with the breaks at gaps)
        self._live_seen = False  # whether the rule was placed with live points in the chart

        history, past = split_past(history)
        split = split_rows(history, self.key, value, self.gap_ms)
        self.simulated = split.simulated
        lines = {}
        for name in names:
            # Times as Bokeh keeps them (ms since the epoch), so that new points can be sent as plain numbers.
            times, values = split.series.get(name, Series([], []))
            first = bisect.bisect_left(times, times[-1] - self.window_ms) if times else 0
            first = max(first, len(times) - length)
            lines[name] = Series(times[first:], values[first:])
        built = figure_template(kind, names, value, chart, template)
        few = any(len(line.times) <= MARKER_POINTS for line in lines.values())
        self.figure, self.sources, self.markers, self.past, self.boundary = built.copy(markers=few)
        self._colours = built.colours
        self.figure.x_range.default_span = SPAN_INTERVALS * interval * 1000
        for name, source in self.sources.items():
            times, values = lines[name]
            if times:
                self.last[name] = times[-1]
            source.data = {"time": np.asarray(times, float), value: np.asarray(values, float)}
        self._mark(self.sources)
        self._add_past(past)

    def send(self, df: pd.DataFrame) -> None:
        """Append the rows of ``df`` that are new; the provider's history rows join the dashed lines."""
        if df.empty:
            return
        df, past = split_past(df)
        if len(past):
            self._add_past(past)
        if df.empty:
            return
        split = split_rows(df, self.key, self.value, self.gap_ms)
        if split.simulated != self.simulated:
            self.last.clear()
            for source in self.sources.values():
                source.data = {"time": np.array([], float), self.value: np.array([], float)}
            self._mark(self.sources)
        self.simulated = split.simulated
        streamed = []
        for name, (times, values) in split.series.items():
            source = self.sources.get(name)
            if source is None:
                continue
            last = self.last.get(name)
            if last is not None:
                first = bisect.bisect_right(times, last)
                times, values = times[first:], values[first:]
                if not times:
                    continue
                if times[0] - last > self.gap_ms:
                    times, values = [(last + times[0]) / 2, *times], [math.nan, *values]
            self.last[name] = times[-1]
            # The points that stay: those in the window up to the newest (the line's times are in order).
            start = times[-1] - self.window_ms
            first = bisect.bisect_left(times, start)
            times, values = times[first:], values[first:]
            held = np.asarray(source.data["time"])
            kept = len(held) - int(np.searchsorted(held, start))
            rollover = self.length if kept == len(held) else min(self.length, kept + len(times))
            # Plain lists of numbers: the smallest message for a few points.
            source.stream({"time": times, self.value: values}, rollover=rollover)
            streamed.append(name)
        self._mark(streamed)
        self._trim_past()

    def _newest(self) -> float | None:
        """The time of the newest point, live or provider history (ms)."""
        times = [*self.last.values(), *(float(p.index[-1]) for p in self._past.values() if len(p))]
        return max(times) if times else None

    def _add_past(self, df: pd.DataFrame) -> None:
        """Merge the provider's history rows of ``df`` into the dashed lines (each redrawn whole: it happens at
        start and after a hole, not at every poll)."""
        if df.empty:
            return
        for name, new in past_points(df, self.key, self.value).items():
            if name not in self.sources:
                continue
            held = self._past.get(name)
            if held is None or not len(held):
                self._past[name] = new  # shared by the sessions (past_points): replaced, never changed in place
                continue
            merged = pd.concat([held, new])
            self._past[name] = merged[~merged.index.duplicated(keep="last")].sort_index()
        self._trim_past(force=True)

    def _trim_past(self, force: bool = False) -> None:
        """Keep the dashed lines to the chart's window (the newest point's ``length`` intervals), and put the rule
        where the provider's history ends and live points begin (worked out again only when the dashed lines
        changed, or the first live point came)."""
        if not self._past:
            return
        newest = self._newest()
        start = newest - self.window_ms
        changed = force
        for name, points in self._past.items():
            if not len(points) or (not force and points.index[0] >= start):
                continue
            points = self._past[name] = points[points.index >= start]
            self._past_lines[name] = with_gaps(points.index.to_numpy(float), points.to_numpy(float), self.past_gap_ms)
            changed = True
        if changed:
            names = [name for name in self.sources if self._past_lines.get(name, Series([], [])).times]
            lines = [self._past_lines[name] for name in names]
            self.past.data = {
                "xs": [np.asarray(line.times, float) for line in lines],
                "ys": [np.asarray(line.values, float) for line in lines],
                "name": names,
                "colour": [self._colours[name] for name in names],
            }
        live = bool(self.last)
        if changed or live != self._live_seen:
            self._live_seen = live
            location = self._boundary_time()
            if self.boundary.location != location:
                self.boundary.location = location

    def _boundary_time(self) -> float | None:
        """Where the provider's history ends and live polling begins: the newest history point before the first
        live point (or the newest one, before any live point); None without history."""
        firsts = [float(np.nanmin(source.data["time"])) for source in self.sources.values() if len(source.data["time"])]
        first_live = min(firsts) if firsts else math.inf
        ends = [
            float(p.index[p.index <= first_live].max()) for p in self._past.values() if (p.index <= first_live).any()
        ]
        return max(ends) if ends else None

    def _mark(self, names: Collection[str]) -> None:
        """Show the points of the series ``names`` as markers while a series has few (a no-op unless that changes).

        A chart whose lines all start with more points comes without markers (:meth:`FigureTemplate.copy`), and a
        series gets its markers' renderer the first time its line has few points: four models per series (renderer,
        glyph, view and filter) are a fifth of a weather chart's, which every session copies, serializes and sends,
        and every page builds (a copy of a weather chart without them: 34 ms instead of 47 on an idle machine)."""
        needed = {}
        for name in names:
            few = len(self.sources[name].data["time"]) <= MARKER_POINTS
            marker = self.markers.get(name)
            if marker is None and few:
                needed[name] = self.sources[name]
            elif marker is not None and marker.visible != few:
                marker.visible = few
        if needed:
            self.markers.update(add_markers(self.figure, needed, self._colours, self.value))

    def data(self, name: str) -> pd.DataFrame:
        """The points one series' line holds now, with naive UTC times."""
        data = self.sources[name].data
        return pd.DataFrame({"time": pd.to_datetime(data["time"], unit="ms"), self.value: data[self.value]})


def placeholder_rows(kind: str, names: list[str]) -> pd.DataFrame:
    """Tidy rows of ``kind`` (the sources' schema), one per series in ``names`` and in that order, without values:
    what a chart is declared on, so that it has a line for every series, whether its rows have come yet or not."""
    rows = empty_frame(kind).reindex(range(len(names)))
    rows[SERIES[kind]] = names
    rows["time"] = pd.Timestamp(0, tz="UTC")
    return rows


def split_past(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The live rows of ``df`` and its rows of a provider's history (a ``source`` such as ``coinbase/1min``), once
    per frame (``once_per_frame``: the same two frames for every session, whose splits are then made once too)."""
    if df.empty:
        return df, df

    def split() -> tuple[pd.DataFrame, pd.DataFrame]:
        past = df["source"].map(is_history).astype(bool).to_numpy()
        if not past.any():
            return df, df.iloc[:0]
        return df[~past], df[past]

    return once_per_frame(df, ("past",), split)


def _simulated(df: pd.DataFrame) -> bool:
    return bool(len(df)) and bool((df["source"] == "simulated").all())


def setup_figure(plot, element) -> None:
    """A HoloViews hook, run once per figure: follow the data in the browser, name each line after its series, and
    add one renderer for the provider history of every series and the rule where live polling begins.

    The browser's ``DataRange1d`` follows the data and keeps a user's zoom or pan until reset, while new points are
    still streamed into the lines.  (HoloViews' own ``following``, with ranges set by the server, stops drawing new
    points while a user is zoomed in, and loses a zoom made while an update is on its way.)  So the server leaves
    the ranges alone (``apply_ranges=False``) and its handler that stops following is taken off.

    A line's renderer is named after its series for the tooltips' ``$name``: a string column in the data would be
    sent whole at every update, and a name written into the tooltip template would be read as HTML.
    """
    figure = plot.state
    if isinstance(figure.x_range, DataRange1d):
        return
    # Not synced back (``syncable``): the browser recomputes both ranges at every update, and each change came back
    # to the server (or the kernel) as a message of its own, several a second per page, that nothing here reads.
    figure.x_range = DataRange1d(range_padding=0.02, only_visible=True, syncable=False)
    figure.y_range = DataRange1d(range_padding=0.1, only_visible=True, syncable=False)
    figure.xaxis[0].formatter = TIME_FORMATTER.clone()
    handlers = figure._event_callbacks.get("rangesupdate", [])
    handlers[:] = [handler for handler in handlers if getattr(handler, "__name__", "") != "_disable_follow"]
    for key, line in plot.subplots.items():
        renderer = line.handles.get("glyph_renderer")
        if renderer is None:
            continue
        renderer.name = _series(key)
    # The provider's history of every series: one line each in its series' colour, dashed and lighter, all drawn by
    # one renderer (StreamingChart fills it): a renderer, glyph and data source per series made up a third of the
    # chart's models, which every session copies and every page builds.
    past = figure.multi_line(
        xs="xs",
        ys="ys",
        source=ColumnDataSource({"xs": [], "ys": [], "name": [], "colour": []}),
        line_color="colour",
        line_width=2,
        line_dash="dashed",
        line_alpha=0.6,
        name="provider history",
    )
    past.tags = ["past"]  # set on the renderer (figure.multi_line would give them to the glyph)
    figure.add_layout(
        Span(dimension="height", line_color="#6b7280", line_dash="dotted", line_width=1.5, tags=["boundary"])
    )


# Times as times at every zoom: Bokeh's defaults read "929500us" or "250ms" when a range is under a second wide.
TIME_FORMATTER = DatetimeTickFormatter(
    microseconds="%H:%M:%S.%6N",
    milliseconds="%H:%M:%S.%3N",
    seconds="%H:%M:%S",
    minsec="%H:%M:%S",
    minutes="%H:%M",
    hourmin="%H:%M",
    hours="%H:%M",
    days="%b %d",
    months="%b %Y",
    years="%Y",
)
# Spelt out, not "{%F %T}": HoloViews files an overlay's hover tool under its tooltips but looks it up with
# "{%F %T}" taken out, so with it the tool would hover only the first line (holoviz/holoviews#6912).
HOVER_TIME = ("Time (UTC)", "@{time}{%Y-%m-%d %H:%M:%S}")
# What the live charts share, as hvPlot keywords: one line per series (by=), drawn over time.
LINE_OPTS = dict(
    x="time",
    responsive=True,
    height=CHART_HEIGHT,
    min_width=300,
    grid=True,
    legend=False,  # one legend of the cities above the weather charts, as HTML
    xlabel="Time (UTC)",
    line_width=2,
    tools=["hover"],
)


def _epoch_ms(times) -> np.ndarray:
    """Naive UTC times as float milliseconds since the epoch, Bokeh's own representation of a datetime."""
    return np.asarray(times, dtype="datetime64[ns]").astype("int64") / 1e6


class PriceCard(JSComponent):
    """One asset's big number: latest price, change since the window's first point, time of the last update.

    The browser works it out from the price chart's own data (``source_id``) whenever new points arrive, so a new
    price costs no bytes beyond the chart's.
    """

    asset = param.String(doc="BTC, ETH ...")
    quote = param.String(doc="The currency the price is in.")
    provider = param.String(doc="Named while the first price is awaited.")
    source_id = param.String(doc="The id of the price chart's ColumnDataSource.")
    column = param.String(default="price")

    _stylesheets: ClassVar[list[str]] = [CARD_CSS]
    _esm = """
const SYMBOLS = {USD: "$", EUR: "\u20ac", GBP: "\u00a3", JPY: "\u00a5"}
const UP = "#15803d", DOWN = "#b91c1c", FLAT = "#4b5563"

// $65,000.12, $0.16123, 1,234.50 CHF: cents, or six significant digits below 1 (of scale)
export function formatPrice(value, quote, scale = value) {
  const number = Math.abs(scale) >= 1
    ? value.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2})
    : String(Number(value.toPrecision(6)))
  return quote in SYMBOLS ? SYMBOLS[quote] + number : `${number} ${quote}`
}

const stamp = (ms) => new Date(ms).toISOString().slice(0, 19).replace("T", " ")

export function render({ model, el, view }) {
  const part = (name) => Object.assign(document.createElement("div"), {className: name})
  const card = part("card"), name = part("name"), price = part("price"), change = part("change"), time = part("time")
  card.append(name, price, change, time)
  let source = null

  function draw() {
    name.textContent = `${model.asset}-${model.quote}`
    const times = source ? source.data.time : [], values = source ? source.data[model.column] : []
    let first = 0, last = values.length - 1
    while (first < values.length && !Number.isFinite(values[first])) first++
    while (last >= 0 && !Number.isFinite(values[last])) last--
    card.dataset.rows = String(values.length)
    if (last < 0) {
      price.textContent = change.textContent = change.title = ""
      time.textContent = `waiting for the first price from ${model.provider}\u2026`
      return
    }
    const diff = values[last] - values[first]
    const percent = values[first] ? diff / values[first] * 100 : 0
    const [colour, arrow] = diff > 0 ? [UP, "\u25b2"] : diff < 0 ? [DOWN, "\u25bc"] : [FLAT, "\u25a0"]
    const sign = diff >= 0 ? "+" : "\u2212"
    const tiny = Math.abs(percent) > 0 && Math.abs(percent) < 0.005
    const pct = tiny ? "<0.01%" : `${sign}${Math.abs(percent).toFixed(2)}%`
    const since = stamp(times[first]).slice(11)
    price.textContent = formatPrice(values[last], model.quote)
    change.textContent = `${arrow} ${sign}${formatPrice(Math.abs(diff), model.quote, values[last])} (${pct})`
    change.style.color = colour
    change.title = `since ${since} UTC`
    time.textContent = `updated ${stamp(times[last])} UTC \u00b7 change since ${since} UTC`
  }

  function attach() {
    source = view.model.document?.get_model_by_id(model.source_id) ?? null
    if (source !== null) {
      view.connect(source.streaming, draw)
      view.connect(source.patching, draw)
      view.connect(source.change, draw)
    }
    draw()
  }

  model.on("provider", draw)
  model.on("source_id", attach)
  attach()
  return card
}
"""


def city_colours(settings) -> dict[str, str]:
    """Each city's line colour, in the order of ``RTDASH_CITIES``."""
    return {city: PALETTE[i % len(PALETTE)] for i, city in enumerate(settings.cities)}


def price_lines(settings, asset: str) -> tuple[Callable[[pd.DataFrame], hv.NdOverlay], tuple]:
    """The declaration of ``asset``'s price chart (tidy rows to an hvPlot chart), and what its look depends on."""
    quote = settings.quote

    def chart(rows: pd.DataFrame) -> hv.NdOverlay:
        return rows.hvplot.line(
            y="price",
            by="asset",
            color=[PALETTE[0]],
            title=f"{asset}-{quote}",
            ylabel=f"Price ({quote})",
            yformatter=NumeralTickFormatter(format="0,0.[000000]"),
            hover_tooltips=[HOVER_TIME, ("Price", f"@{{price}}{{0,0.00[0000]}} {quote}")],
            **LINE_OPTS,
        )

    return chart, (quote,)


def weather_lines(settings, metric: str) -> tuple[Callable[[pd.DataFrame], hv.NdOverlay], tuple]:
    """The declaration of the chart of weather ``metric`` (a key of ``WEATHER_METRICS``), one line per city, and
    what its look depends on."""
    title, unit, colours = WEATHER_METRICS[metric], UNITS[settings.units][metric], city_colours(settings)

    def chart(rows: pd.DataFrame) -> hv.NdOverlay:
        return rows.hvplot.line(
            y=metric,
            by="city",
            color=[colours[city] for city in settings.cities],
            title=title,
            ylabel=f"{title} ({unit})",
            # The city is the line's name (see setup_figure), not a column sent with every point.
            hover_tooltips=[("City", "$name"), HOVER_TIME, (title, f"@{{{metric}}}{{0.0}} {unit}")],
            **LINE_OPTS,
        )

    return chart, (unit, tuple(colours.values()))


def price_chart(settings, asset: str, history: pd.DataFrame, resolution: float = 0.0) -> StreamingChart:
    """The streaming price chart of ``asset``, starting with ``history`` (tidy price rows)."""
    chart, look = price_lines(settings, asset)
    args = (settings.price_interval, settings.backlog, history, chart)
    return StreamingChart("price", [asset], "price", *args, template=look, resolution=resolution)


def weather_chart(settings, metric: str, history: pd.DataFrame, resolution: float = 0.0) -> StreamingChart:
    """The streaming chart of weather ``metric``, one line per city, starting with ``history`` (tidy weather rows)."""
    chart, look = weather_lines(settings, metric)
    args = (settings.weather_interval, settings.backlog, history, chart)
    return StreamingChart("weather", settings.cities, metric, *args, template=look, resolution=resolution)


def warm_up(settings, spares_now: bool = True) -> None:
    """Draw the Live tab's charts for ``settings``, here and now (what the first session of a process would
    otherwise wait for: about a second), and have each keep ``SPARES`` copies ready for the sessions of a server.

    The copies are made here too when ``spares_now``; else (the warm-up runs inside the first session, which waits
    for it) on the event loop, once the first session has taken its copies (:meth:`FigureTemplate.copy`).
    """
    templates = [figure_template("price", [asset], "price", *price_lines(settings, asset)) for asset in settings.assets]
    templates += [
        figure_template("weather", settings.cities, metric, *weather_lines(settings, metric))
        for metric in WEATHER_METRICS
    ]
    for template in templates:
        template.spares = SPARES
        if spares_now:
            template.fill_spares()


class LiveView(pn.viewable.Viewer):
    """Latest prices and streaming charts for one browser session."""

    runtime = param.ClassSelector(class_=Runtime, precedence=-1, doc="The shared pollers to follow.")
    paused = param.Boolean(default=False, doc="Hold new points in this session; resuming catches up.")
    on_update = param.Callable(
        default=None, precedence=-1, doc="Called with each update, whose message it may add to (the status badges)."
    )

    def __init__(self, deferred: bool = False, **params):
        """``deferred``: the weather charts are left out of the layout until ``show()`` (the app calls it once the
        page has drawn the rest, or when the tab is shown), so that the price chart comes first; they take the rows
        meanwhile."""
        super().__init__(**params)
        settings = self.runtime.settings
        self._quote = settings.quote
        colours = city_colours(settings)
        history = {kind: poller.history() for kind, poller in self.runtime.pollers.items()}
        resolution = {kind: poller.source.history_provider.resolution for kind, poller in self.runtime.pollers.items()}
        self._prices = {
            asset: price_chart(settings, asset, history["price"], resolution["price"]) for asset in settings.assets
        }
        self._weather = {
            metric: weather_chart(settings, metric, history["weather"], resolution["weather"])
            for metric in WEATHER_METRICS
        }
        provider = self.runtime.price.status.provider
        for asset, chart in self._prices.items():
            chart.figure.css_classes = ["price-chart"]
            draw_levels(chart.figure, chart_rules(settings.rules, "price", "price", [asset]))  # alert levels
        for metric, chart in self._weather.items():
            chart.figure.css_classes = ["weather-chart"]
            draw_levels(chart.figure, chart_rules(settings.rules, "weather", metric, settings.cities))
        self._cards = {
            asset: PriceCard(
                asset=asset,
                quote=self._quote,
                provider=provider,
                source_id=chart.sources[asset].id,
                margin=(0, 10),
                css_classes=["price-card"],
            )
            for asset, chart in self._prices.items()
        }
        self._toggle = pn.widgets.Toggle.from_param(self.param.paused, name="Pause", width=110, align="center")
        self._paused_note = pn.pane.HTML(
            "Paused: new points are held; resume to catch up.", visible=False, styles={"color": "#92400e"}
        )
        self._price_panes = [
            pn.pane.Bokeh(chart.figure, sizing_mode="stretch_width") for chart in self._prices.values()
        ]
        self._weather_panes = [
            pn.pane.Bokeh(chart.figure, sizing_mode="stretch_width") for chart in self._weather.values()
        ]
        # Charts side by side while each gets 360 px; narrower (a notebook, a phone) they wrap, never cut off.
        self._weather_box = pn.FlexBox(
            *([] if deferred else self._weather_panes),
            flex_wrap="wrap",
            sizing_mode="stretch_width",
            min_height=CHART_HEIGHT,  # the place they take, while deferred
            stylesheets=[CHARTS_CSS],
        )
        items = "".join(
            f'<span class="item"><span class="swatch" style="background: {colour}"></span>{html.escape(city)}</span>'
            for city, colour in colours.items()
        )
        self._legend = pn.pane.HTML(
            f'<div class="legend">{items}{PAST_NOTE}</div>', stylesheets=[LEGEND_CSS], margin=(0, 10)
        )
        # Outside a server session (a notebook) Bokeh model changes reach the page only when pushed, and the view's
        # subscriptions last as long as the outputs showing it (a server session ends them with the session).
        self._push = current_dispatch()[1] is None
        self._guard = OutputGuard() if self._push else None
        self._outputs = OutputLifetime([*self._price_panes, *self._weather_panes], self._end) if self._push else None
        self._behind = False  # rows were held back while an output was not listening yet
        self._held_since: float | None = None  # monotonic time of the first update held back
        self._reattach_after = 0.0  # monotonic; see _reattach
        self._frozen: set[str] = set()  # outputs whose document was frozen at the last check (see _reattach)
        self._subscriptions = []
        for kind, poller in self.runtime.pollers.items():
            # Rows that came between the history above and the subscription are in its history; the rest are skipped.
            # Nearly always none came: then the charts hold it all already (the check is cheaper than the merge).
            subscription = poller.subscribe(functools.partial(self._receive, kind))
            self._subscriptions.append(subscription)
            if subscription.history is not history[kind] and not subscription.history.equals(history[kind]):
                self._receive(kind, subscription.history)

    def _receive(self, kind: str, df: pd.DataFrame) -> None:
        """New rows of ``kind`` from the poller (on this session's document), or a backlog to catch up from."""
        if self.paused or df.empty:
            return
        if self._outputs is not None:
            if not self._outputs.check():
                return  # every output showing this view is gone (its subscriptions just ended)
            if not self._outputs.listening():
                # Shown, but the page has not opened the output's comm yet.  The rows wait in the poller's history,
                # taken in one go by the first update after the page listens -- for ``LISTEN_WAIT`` seconds at most,
                # so that an output whose comm never opens does not freeze the view: after that the charts take the
                # rows, the outputs listening get them, and the others keep them held (OutputLifetime.push).
                self._held_since = self._held_since or time.monotonic()
                if time.monotonic() - self._held_since < LISTEN_WAIT:
                    self._behind = True
                    return
            self._held_since = None
            self._reattach()
            if self._behind:
                self._behind = False
                for other, poller in self.runtime.pollers.items():
                    if other != kind:
                        self._receive(other, poller.history())
                df = self.runtime.pollers[kind].history()
        with one_message():  # all the charts' new points
            if kind == "price":
                for chart in self._prices.values():
                    chart.send(df)  # each takes its own asset's rows
                provider = self.runtime.price.status.provider
                for card in self._cards.values():
                    card.provider = provider
            else:
                for chart in self._weather.values():
                    chart.send(df)
            if self.on_update is not None:
                self.on_update()
        if self._push:
            self._outputs.push()

    def _reattach(self) -> None:
        """In a notebook: give a chart whose data source has left its output's document while the chart is still in
        that document's tree its document back, with all its points (at most every ``REATTACH_EVERY`` seconds).

        Seen in JupyterLab on a loaded machine, rarely: the page went on showing a chart whose ``ColumnDataSource``
        the kernel's document no longer held, so its points were streamed to no one and the chart froze.  A chart in
        a hidden (dynamic) tab has left the tree too; it is left alone.  A document whose model bookkeeping stays
        frozen (Bokeh's ``freeze`` has no ``finally``) is unfrozen first.
        """
        now = time.monotonic()
        if now < self._reattach_after:
            return
        charts = [*self._prices.values(), *self._weather.values()]
        lost = [chart for chart in charts if any(s.document is None for s in chart.sources.values())]
        if not lost:
            self._frozen.clear()
            return
        self._reattach_after = now + REATTACH_EVERY
        views = pn.state._views
        for ref in self._outputs.outputs():
            models = views[ref][2].models
            # Bokeh's ``models.freeze()`` (and Panel's ``freeze_doc``) skip the bookkeeping until they end, and do
            # not end on an exception (no ``finally``): a freeze still there at two checks is one that never ends.
            if models._freeze_count > 0 and ref in self._frozen:
                log.warning("a notebook output's document stayed frozen (%d); unfrozen", models._freeze_count)
                models._freeze_count = 0
            if models._freeze_count > 0:
                self._frozen.add(ref)
                continue
            self._frozen.discard(ref)
            models.recompute()  # attaches every model its roots reach
        for chart in lost:
            for source in chart.sources.values():
                if source.document is not None:
                    log.warning("a Live chart had left its notebook output's document; it is back, redrawn whole")
                    source.data = dict(source.data)

    def show(self) -> None:
        """Add the weather charts to the page, if they are not there yet."""
        if not self._weather_box.objects:
            self._weather_box.objects = self._weather_panes

    def _end(self) -> None:
        """No output shows this view any more: stop taking the pollers' rows."""
        for subscription in self._subscriptions:
            subscription.cancel()

    @param.depends("paused", watch=True)
    def _on_pause(self) -> None:
        self._toggle.param.update(
            name="Resume" if self.paused else "Pause", button_type="warning" if self.paused else "default"
        )
        self._paused_note.visible = self.paused
        if not self.paused:
            for kind, poller in self.runtime.pollers.items():
                self._receive(kind, poller.history())

    def __panel__(self) -> pn.viewable.Viewable:
        # Pushed to the right end of the cards' row (or of the line it wraps to).
        controls = pn.Column(self._toggle, self._paused_note, align="center", stylesheets=[":host {margin-left: auto}"])
        return pn.Column(
            # The cards left, Pause right; on a narrow page (a notebook's output, a phone) Pause wraps under them.
            pn.FlexBox(
                *self._cards.values(), controls, flex_wrap="wrap", align_items="center", sizing_mode="stretch_width"
            ),
            pn.FlexBox(*self._price_panes, flex_wrap="wrap", sizing_mode="stretch_width", stylesheets=[CHARTS_CSS]),
            self._legend,
            self._weather_box,
            *([self._guard] if self._guard is not None else []),
            sizing_mode="stretch_width",
        )
