"""The History tab: any stored range of one metric, for an asset or several cities, and its export.

Each library does the reduction it is built for, always on the server:

- the database reduces the selected range to at most ``POINTS`` buckets per series (mean, min, max, count per
  bucket; :meth:`Store.aggregate`), so a month of one-second rows arrives as a few ten thousand points; zooming in
  further than the loaded buckets resolve asks it for finer buckets of the visible window;
- a few series (up to ``DENSE_SERIES``) are lines declared with hvPlot (``.hvplot.line``: colours, legend, hover of
  time, mean, min, max and count; gaps break the lines), thinned to about one point per pixel by HoloViews'
  ``downsample1d`` (LTTB) at every zoom;
- more series than that would be a tangle of lines: datashader rasterizes them into one line-density image (how many
  series cross each pixel; hover gives the count), re-aggregated at every zoom, with the ``highlight`` series drawn
  as an hvPlot line on top; a click on the chart highlights the series nearest to it and names it;
- "every point" mode (``every_point``) rasterizes the raw rows of the visible range with datashader at the plot's
  pixel resolution (no bucket means): the database reads only the visible window (:meth:`Store.window`); the rows
  are held in time order, so that a zoom re-aggregates a slice of them at once; a zoom or pan outside them, or
  (when they are more than ``HOLD_ROWS``) onto less than a ``SHRINK``-th of them, reads the new visible window (off
  the event loop) to replace them.

Queries run on a worker thread, never on the server's event loop.  An export is a download that streams the rows
from the store (:mod:`rtdash.export`): the view counts them, refuses more than ``RTDASH_EXPORT_MAX_ROWS``, asks for
a ticket and has the page download it, one at a time per session, and shows the progress the download reports.

City names come from data: they reach the page only as widget options, legend labels and hover values, which Bokeh
renders as text; every message is escaped.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import math
import threading
from functools import partial
from pathlib import Path

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend used by the options below
import hvplot.pandas  # noqa: F401  registers DataFrame.hvplot
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import DatetimeTicker, DatetimeTickFormatter
from bokeh.palettes import Blues256
from holoviews.operation.downsample import downsample1d
from holoviews.streams import Params, Pipe, PlotSize, RangeX, RangeXY, Tap
from panel.custom import JSComponent

from .. import export as exports
from ..sources import SERIES, UNITS
from ..store import Store
from ..store.base import utc
from . import Text
from .alerts import chart_rules, history_overlay

RANGES = {"Last hour": pd.Timedelta("1h"), "Last day": pd.Timedelta("1D"), "Last week": pd.Timedelta("7D")}
SPANS = [*RANGES, "All", "Custom"]
METRICS = {"price": "Price", "temperature": "Temperature", "humidity": "Humidity", "wind_speed": "Wind speed"}
POINTS = 20_000  # database buckets per series per query
DENSE_SERIES = 10  # more series than this are drawn as a datashaded line density, not as lines
DENSE_POINTS = 2_000  # buckets per series per query for a density: datashader needs about one per pixel
SCREEN_POINTS = 1_500  # points per series sent to the browser; fewer loaded buckets in view → ask for finer ones
MAX_RAW_ROWS = 20_000_000  # rows "every point" holds at most (16 bytes each); more in view → zoom in first
SHRINK = 4  # "every point" reads the visible window again when the rows held span more than this many views ...
HOLD_ROWS = 10_000_000  # ... unless they are at most this many (16 bytes each: 160 MB), kept for zooms without reads
MIN_STEP = pd.Timedelta("1ms")
GAP_STEPS = 3  # a jump of more than this many buckets (or typical spacings) breaks the line
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"
HEIGHT = 440
DENSITY_CMAP = list(reversed(Blues256))[48:]  # light to dark blue: more lines or rows in a pixel
HIGHLIGHT_COLOR = "#dc2626"
MESSAGE_CSS = """
.message {font: 14px/1.4 system-ui, sans-serif; border-radius: 6px; padding: 10px 14px; border: 1px solid;
          overflow-wrap: anywhere}
.message.info {color: #1e3a8a; background: #eff6ff; border-color: #bfdbfe}
.message.warning {color: #78350f; background: #fef3c7; border-color: #fcd34d}
.message.error {color: #7f1d1d; background: #fee2e2; border-color: #fca5a5}
"""


def kind_of(metric: str) -> str:
    return "price" if metric == "price" else "weather"


def break_gaps(df: pd.DataFrame, key: str, values: list[str], step: pd.Timedelta) -> pd.DataFrame:
    """``df`` (sorted by ``key`` then time) with a NaN row inside every jump in time longer than ``GAP_STEPS``
    buckets or typical spacings of its series, so that a line breaks at a gap instead of bridging it."""
    if df.empty:
        return df
    delta = df.groupby(key, sort=False)["time"].diff()
    typical = delta.groupby(df[key], sort=False).transform("median")
    limit = typical.fillna(step).clip(lower=step) * GAP_STEPS
    jumps = delta > limit
    if not jumps.any():
        return df
    breaks = df[jumps].copy()
    breaks["time"] = breaks["time"] - delta[jumps] / 2
    breaks[values] = math.nan
    return pd.concat([df, breaks]).sort_values([key, "time"], kind="stable", ignore_index=True)


def separate_series(df: pd.DataFrame, key: str, values: list[str]) -> pd.DataFrame:
    """``df`` (sorted by ``key`` then time) with a NaN row before the first row of every series but the first, so
    that one line through all rows (a datashader line aggregation) never joins the end of a series to the next."""
    starts = np.flatnonzero(df[key].to_numpy()[1:] != df[key].to_numpy()[:-1]) + 1
    if not len(starts):
        return df
    breaks = df.iloc[starts].copy()
    breaks[values] = math.nan
    order = np.concatenate([np.arange(len(df)), starts - 0.5])  # each break just before its series' first row
    return pd.concat([df, breaks], ignore_index=True).iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def nearest_series(frame: pd.DataFrame, key: str, value: str, x: pd.Timestamp, y: float) -> str | None:
    """The series of ``frame`` (buckets: time, ``key``, ``value``) whose value at the time nearest to ``x`` is
    nearest to ``y``: what a click on a density of many lines points at."""
    rows = frame.dropna(subset=[value])
    if rows.empty:
        return None
    closest = (rows["time"] - x).abs().groupby(rows[key], sort=False, observed=True).idxmin()
    at_x = rows.loc[closest.to_numpy()]
    return str(at_x.loc[(at_x[value] - y).abs().idxmin(), key])


def _epoch_ms(value) -> float:
    """A plot's x value (epoch milliseconds, or a time: naive is UTC) as epoch milliseconds."""
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return _naive_utc(value).value / 1e6


def _naive_utc(value) -> pd.Timestamp:
    """A plot's x value (naive UTC, a datetime64 or epoch milliseconds) as a UTC timestamp; ``NaT`` for anything
    else (a browser's range or click is outside input: a value no time can have is ignored, never raised)."""
    try:
        if isinstance(value, int | float | np.integer | np.floating):
            return pd.Timestamp(float(value), unit="ms", tz="UTC")
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (TypeError, ValueError, OverflowError):  # OutOfBoundsDatetime is a ValueError
        return pd.NaT


def _datashader():
    """datashader and HoloViews' ``rasterize``, imported on first use: with numba, xarray and dask they add about
    80 MB to a server process, which most processes never need (a dense view is opt-in)."""
    import datashader
    from holoviews.operation.datashader import rasterize

    return datashader, rasterize


_warming = threading.Lock()
_warmed = False


def warm_datashader() -> None:
    """Compile datashader's kernels for the two aggregations the tab uses (points and lines of a time series, counted)
    on a few rows, so that a server's first dense view does not wait for numba (2-4 s each, once per process).  Run on
    a thread when a session first changes the History selection; safe to call many times."""
    global _warmed
    with _warming:
        if _warmed:
            return
        ds, rasterize = _datashader()
        rows = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=3, freq="1s", unit="us"), "v": [1.0, 2, 3]})
        points = rows.assign(time=[0.0, 1000.0, 2000.0])  # "every point" holds epoch milliseconds
        rasterize(hv.Points(points, ["time", "v"]), aggregator=ds.count(), dynamic=False, width=4, height=4)
        line = ds.count(self_intersect=False)
        rasterize(hv.Curve(rows, "time", "v"), aggregator=line, dynamic=False, width=4, height=4)
        _warmed = True


class HistoryView(pn.viewable.Viewer):
    """The History tab for the store of ``runtime`` (``runtime.store``; ``None`` means history is off)."""

    runtime = param.Parameter(precedence=-1, doc="The process's Runtime: its store and settings.")
    settings = param.Parameter(default=None, precedence=-1, doc="Defaults to the runtime's settings.")
    span = param.Selector(default="Last day", objects=SPANS, doc="The time range shown and exported.")
    custom = param.Tuple(default=None, allow_None=True, length=2, doc="(start, end) of the Custom range, UTC.")
    metric = param.Selector(default="price", objects=list(METRICS))
    asset = param.Selector(default=None, objects=[], allow_None=True, doc="The asset whose price is shown.")
    cities = param.ListSelector(default=[], objects=[], doc="The cities whose weather is shown.")
    every_point = param.Boolean(
        default=False, doc="Rasterize every stored row of the visible range (datashader) instead of bucket means."
    )
    highlight = param.Selector(
        default=None, objects=[], allow_None=True, doc="The series drawn as a line over a density of many series."
    )

    def __init__(self, deferred: bool = False, **params):
        """``deferred``: read nothing from the store until ``show()`` (its tab shown), so that a session whose
        History tab is never opened costs no query (the app's tabs); in a server's session the widgets are made then
        too."""
        super().__init__(**params)
        self._wanted = not deferred  # whether the selection is loaded (and reloaded on every change)
        if self.settings is None and self.runtime is not None:
            self.settings = self.runtime.settings
        self.store: Store | None = getattr(self.runtime, "store", None)
        self._requests = itertools.count()
        self._latest = -1
        self._windows = itertools.count()  # "every point" reads of a zoomed window; only the newest is shown
        self._latest_window = -1
        self._known = {"price": list(self.settings.assets), "weather": list(self.settings.cities)}
        with param.parameterized.discard_events(self):  # no widgets yet, and nothing to load before __init__ ends
            self._set_series_options()
        self._mode = "lines"  # what is shown: "lines", "density" (many series) or "points" (every point)
        self._frame: pd.DataFrame | None = None  # the coarse buckets of the whole range, or the raw rows held
        self._fine: tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta] | None = None  # window of finer buckets
        self._held: tuple[pd.Timestamp, pd.Timestamp] | None = None  # the window whose raw rows are held
        self._pipe: Pipe | None = None
        self._zoom: RangeX | RangeXY | None = None
        self._tap: Tap | None = None
        self._bounds: tuple[pd.Timestamp, pd.Timestamp] | None = None
        self._step = MIN_STEP
        self._firings: pd.DataFrame | None = None  # the alert firings of the range shown (marks on the chart)

        self._exporting: str | None = None  # "counting", or the ticket of the export under way
        self._export_name = ""
        self._export_started = False  # the download of the current ticket has begun
        self._doc = pn.state.curdoc if _in_session() else None  # where the download's progress is shown
        self._closed = False
        if self._doc is not None:
            pn.state.on_session_destroyed(self._session_ended)
        self._message = Text("", visible=False, sizing_mode="stretch_width", stylesheets=[MESSAGE_CSS])
        self._layout = pn.Column(sizing_mode="stretch_width")
        self._built = False  # the widgets and the chart's pane (_build): in a server, when the tab is first shown
        if self.store is None:
            reason = getattr(self.runtime, "store_error", None) or "RTDASH_STORE is none"
            self._say(f"History is off: {reason}.", "warning")
            self._layout[:] = [self._message]
        elif not self._wanted:
            if not _in_session():
                # A notebook: a component made after its output was shown would take its stylesheets from
                # cdn.holoviz.org, which an offline JupyterLab cannot reach (the Refresh tab's reason too).
                self._build()
        else:
            self._build()
            if _in_session():
                # Not pn.state.onload: a page whose map tiles cannot load (offline) never reports itself ready.
                pn.state.execute(self._load_async)
            else:
                self.load()  # a notebook or a script: at once

    def _build(self) -> None:
        """Make the tab's widgets and the chart's pane (a server's session whose History tab is never shown makes
        none)."""
        self._built = True
        span = pn.widgets.RadioButtonGroup.from_param(self.param.span)
        self._custom = pn.widgets.DatetimeRangePicker(label="Custom range (UTC)", visible=False, width=340)
        self._custom.param.watch(self._custom_picked, "value")
        metric = pn.widgets.Select.from_param(self.param.metric, options={v: k for k, v in METRICS.items()}, width=180)
        self._asset = pn.widgets.Select.from_param(self.param.asset, label="Asset", description=None, width=160)
        self._cities = pn.widgets.MultiSelect.from_param(
            self.param.cities, label="Cities", description=None, size=5, width=240
        )
        every = pn.widgets.Checkbox.from_param(
            self.param.every_point, name="Every point (datashader)", margin=(28, 10, 10, 10)
        )
        self._highlight = pn.widgets.Select.from_param(
            self.param.highlight, label="Highlight", description=None, width=200, visible=False
        )
        self._summary = Text("", styles={"color": "#4b5563", "font-size": "13px"})
        self._plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=HEIGHT + 20, visible=False)
        self._body = pn.Column(self._message, self._summary, self._plot, min_height=120, sizing_mode="stretch_width")
        self._csv = pn.widgets.Button(label="Export CSV", width=150)
        self._parquet = pn.widgets.Button(label="Export Parquet", width=150)
        self._csv.on_click(lambda event: self._export_clicked("csv"))
        self._parquet.on_click(lambda event: self._export_clicked("parquet"))
        self._progress = pn.indicators.Progress(value=0, max=100, width=200, visible=False, margin=(18, 10))
        self._export_note = Text("", visible=False, sizing_mode="stretch_width", stylesheets=[MESSAGE_CSS])
        self._link = DownloadLink()
        self._layout[:] = [
            pn.Row(span, self._custom),
            pn.Row(metric, self._asset, self._cities, every, self._highlight),
            self._body,
            pn.Row(
                self._csv, self._parquet, self._progress, self._export_note, self._link, sizing_mode="stretch_width"
            ),
        ]
        self._sync_visibility()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def show(self) -> None:
        """Its tab is shown: its widgets are made, and from now on the selection is loaded, at once and after every
        change."""
        if not self._wanted:
            self._wanted = True
            if self.store is not None and not self._built:
                self._build()
            self._changed()

    # -- selection ---------------------------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return kind_of(self.metric)

    @property
    def series(self) -> list[str]:
        return ([self.asset] if self.asset else []) if self.kind == "price" else list(self.cities)

    @property
    def dense(self) -> bool:
        """Whether the selection holds too many series to draw as lines."""
        return len(self.series) > DENSE_SERIES

    def _set_series_options(self) -> None:
        assets = sorted(set(self._known["price"]))
        self.param.asset.objects = assets
        if self.asset not in assets:
            self.asset = self.settings.assets[0] if self.settings.assets[0] in assets else assets[0]
        cities = sorted(set(self._known["weather"]))
        self.param.cities.objects = cities
        chosen = [c for c in self.cities if c in cities] or [c for c in self.settings.cities if c in cities]
        if chosen != self.cities:
            self.cities = chosen

    def _set_highlight_options(self) -> None:
        series = self.series
        self.param.highlight.objects = series
        if self.highlight not in series:
            with param.parameterized.discard_events(self):  # chosen with the selection: nothing to redraw yet
                self.highlight = series[0] if series else None

    def _custom_picked(self, event) -> None:
        if event.new and all(event.new):
            self.custom = tuple(utc(v) for v in event.new)  # the picker's times are read as UTC

    @param.depends("span", "metric", "cities", "every_point", watch=True)
    def _sync_visibility(self) -> None:
        if not self._built:
            return
        self._custom.visible = self.span == "Custom"
        self._asset.visible = self.kind == "price"
        self._cities.visible = self.kind == "weather"
        self._set_highlight_options()
        self._highlight.visible = self.dense and not self.every_point

    @param.depends("span", "custom", "metric", "asset", "cities", "every_point", watch=True)
    def _changed(self) -> None:
        if self.store is None or not self._wanted:
            return
        if _in_session() and not _warmed:  # someone uses the tab: its dense views may follow
            threading.Thread(target=warm_datashader, name="rtdash-warm-datashader", daemon=True).start()
        if self.span == "Custom" and not self.custom:
            self._say("Pick the start and the end of the custom range (UTC) above.")
            return
        if _in_session():
            pn.state.execute(self._load_async)
        else:
            self.load()

    def time_range(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The selected range as UTC ``(start, end)``; ``None`` when nothing is stored (for ``All``)."""
        if self.span == "Custom":
            if not self.custom:
                return None
            start, end = sorted(utc(v) for v in self.custom)
            return start, end
        if self.span == "All":
            first, last = self.store.bounds(self.kind, self.series)
            return None if first is None else (first, last + pd.Timedelta("1us"))
        end = pd.Timestamp.now(tz="UTC")
        return end - RANGES[self.span], end

    # -- loading ------------------------------------------------------------------------------------------------------

    def _query(self) -> tuple:
        """Runs on a worker thread: the series the store knows, the range, what to draw and its data."""
        known = {kind: self.store.series(kind) for kind in ("price", "weather")}
        mode = "points" if self.every_point else "density" if self.dense else "lines"
        bounds = self.time_range()
        if bounds is None:
            return known, None, mode, None, None
        start, end = bounds
        self._firings = self._read_firings(bounds)
        if mode == "points":
            return known, bounds, mode, None, self._read_window(bounds)
        step = max((end - start) / (DENSE_POINTS if mode == "density" else POINTS), MIN_STEP)
        frame = self.store.aggregate(self.kind, start, end, step, self.series, self.metric)
        return known, bounds, mode, step, frame

    def _alert_rules(self) -> list:
        """The alert rules whose level belongs on the chart of the selection."""
        return chart_rules(self.settings.rules, self.kind, self.metric, self.series)

    def _read_firings(self, bounds: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame | None:
        """The stored firings of those rules in ``bounds``: marks on the chart."""
        rules = self._alert_rules()
        return self.store.alerts(*bounds, rules=[rule.name for rule in rules]) if rules else None

    def _read_window(self, window: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
        """Every row of ``window`` (at most one more than ``MAX_RAW_ROWS``), times as epoch milliseconds."""
        rows = self.store.window(self.kind, self.metric, *window, self.series, limit=MAX_RAW_ROWS + 1)
        times = rows["time"].dt.tz_convert(None).to_numpy().view("int64") / 1000.0  # UTC as naive: no copy
        values = rows[self.metric].to_numpy()
        if not (times[1:] >= times[:-1]).all():
            # Rows come as the database stores them: mostly a few runs in time order, which timsort merges fast.
            order = np.argsort(times, kind="stable")
            times, values = times[order], values[order]
        return pd.DataFrame({"time": times, self.metric: values}, copy=False)  # in time order: a view is a slice

    def load(self) -> None:
        """Query and show the selection now, on this thread (scripts, notebooks, tests, benchmarks)."""
        self._show(self._query())

    async def _load_async(self) -> None:
        request = self._latest = next(self._requests)
        self._body.loading = True
        try:
            result = await asyncio.to_thread(self._query)
        except Exception as exc:
            if request == self._latest:
                self._error(exc)
            return
        finally:
            if request == self._latest:
                self._body.loading = False
        if request == self._latest:  # a newer selection is on its way: this one is out of date
            self._show(result)

    def _say(self, text: str, level: str = "info") -> None:
        """Show ``text`` (plain text, escaped here) above the chart."""
        self._message.param.update(
            object=f'<div class="message {level}" role="status">{html.escape(text)}</div>', visible=True
        )

    def _error(self, exc: Exception) -> None:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._say(f"The history store did not answer: {text}", "error")

    def _show(self, result: tuple) -> None:
        known, bounds, mode, step, frame = result
        for kind, names in known.items():
            self._known[kind] = list(dict.fromkeys([*self._known[kind], *names]))
        self._set_series_options()
        self._set_highlight_options()
        if not self.series:
            return self._empty("Pick at least one city.")
        what = f"{METRICS[self.metric].lower()} of {_names(self.series)}"
        if bounds is None:
            return self._empty(f"No {what} is stored yet.")
        start, end = bounds
        between = f"between {start.strftime(TIME_FORMAT)} and {end.strftime(TIME_FORMAT)}"
        if frame.empty:
            return self._empty(f"No {what} stored {between}.")
        if mode == "points" and len(frame) > MAX_RAW_ROWS:
            return self._empty(
                f"More than {MAX_RAW_ROWS:,} rows of {what} {between}: pick a shorter range for every point, "
                "or turn it off to see bucket means.",
                "warning",
            )
        self._bounds, self._step, self._frame, self._fine, self._mode = bounds, step or MIN_STEP, frame, None, mode
        self._held = bounds if mode == "points" else None
        rows = len(frame) if mode == "points" else int(frame["count"].sum())
        if mode == "points":
            detail = "every row, rasterized by datashader at pixel resolution"
        else:
            detail = "every row" if (frame["count"] == 1).all() else f"means over {_duration(step)} buckets"
            if mode == "density":
                detail += f"; {len(self.series)} series as a line density (datashader), one highlighted"
        self._summary.object = html.escape(
            f"{rows:,} rows from {start.strftime(TIME_FORMAT)} to {end.strftime(TIME_FORMAT)}, shown as {detail}"
        )
        self._message.visible = False
        plot = {"lines": self._lines_plot, "density": self._density_plot, "points": self._points_plot}[mode](frame)
        rules = self._alert_rules()
        if rules:  # the alert rules' levels, and their firings as marks
            plot = plot * history_overlay(rules, self._firings, self.metric, epoch_ms=mode == "points")
        self._plot.object = plot
        self._plot.visible = True

    def _empty(self, text: str, level: str = "info") -> None:
        self._frame, self._pipe, self._zoom, self._held = None, None, None, None
        self._summary.object = ""
        self._plot.param.update(object=None, visible=False)
        self._say(text, level)

    # -- plotting -----------------------------------------------------------------------------------------------------

    def _plot_data(self, frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
        key = SERIES[self.kind]
        out = break_gaps(frame, key, [self.metric, "min", "max", "count"], step)
        return out.assign(time=out["time"].dt.tz_convert(None))  # Bokeh shows naive times as they are: UTC

    def _dims(self) -> dict[str, hv.Dimension]:
        """Labels and unit of time and the current metric, for axes and hover: ``.redim(**self._dims())``."""
        metric = self.metric
        unit = self.settings.quote if metric == "price" else UNITS[self.settings.units][metric]
        return {
            "time": hv.Dimension("time", label="Time (UTC)"),
            metric: hv.Dimension(metric, label=METRICS[metric], unit=unit),
        }

    def _lines_plot(self, frame: pd.DataFrame) -> hv.DynamicMap:
        """A few series: hvPlot lines, thinned per pixel by ``downsample1d`` at every zoom."""
        self._pipe = Pipe(data=self._plot_data(frame, self._step))
        dmap = hv.DynamicMap(partial(self._lines, self.kind, self.metric), streams=[self._pipe])
        self._zoom = RangeX()
        self._zoom.param.watch(self._zoomed, "x_range")
        return downsample1d(dmap, width=SCREEN_POINTS, streams=[self._zoom])

    def _lines(self, kind: str, metric: str, data: pd.DataFrame) -> hv.NdOverlay:
        return data.hvplot.line(
            x="time",
            y=metric,
            by=SERIES[kind],
            hover_cols=["min", "max", "count"],
            legend="top_left" if kind == "weather" else False,
            line_width=1.5,
            responsive=True,
            height=HEIGHT,
            title=METRICS[metric],
        ).redim(**self._dims())

    def _density_plot(self, frame: pd.DataFrame) -> hv.DynamicMap:
        """Many series: datashader's line density of all of them, re-aggregated at every zoom, with the highlighted
        series drawn as an hvPlot line on top; a click highlights the series nearest to it."""
        self._pipe = Pipe(data=self._plot_data(frame, self._step))
        self._zoom = RangeXY()
        self._zoom.param.watch(self._zoomed, "x_range")
        lines = hv.DynamicMap(partial(self._all_lines, self.kind, self.metric), streams=[self._pipe])
        ds, rasterize = _datashader()
        density = rasterize(lines, aggregator=ds.count(self_intersect=False), streams=[self._zoom, PlotSize()]).opts(
            cmap=DENSITY_CMAP,
            cnorm="eq_hist",
            tools=["hover", "tap"],
            colorbar=True,
            clabel="series per pixel",
            responsive=True,
            height=HEIGHT,
        )
        chosen = Params(self, ["highlight"])
        highlighted = hv.DynamicMap(partial(self._highlighted, self.kind, self.metric), streams=[self._pipe, chosen])
        self._tap = Tap(source=density)
        self._tap.param.watch(self._tapped, ["x", "y"])
        return (density * highlighted).opts(responsive=True, height=HEIGHT)

    def _all_lines(self, kind: str, metric: str, data: pd.DataFrame) -> hv.Curve:
        """One line through every series (NaN between them), for datashader's line aggregation."""
        joined = separate_series(data, SERIES[kind], [metric, "min", "max"])
        return joined.hvplot.line(x="time", y=metric, sort_date=False).redim(**self._dims())

    def _highlighted(self, kind: str, metric: str, data: pd.DataFrame, highlight: str | None) -> hv.Curve:
        key = SERIES[kind]
        rows = data[data[key] == highlight] if highlight is not None else data.iloc[:0]
        return rows.hvplot.line(
            x="time",
            y=metric,
            hover_cols=[key, "min", "max", "count"],
            color=HIGHLIGHT_COLOR,
            line_width=2,
            responsive=True,
            height=HEIGHT,
        ).redim(**self._dims())

    def _tapped(self, *events) -> None:
        """A click on the density: the series nearest to it is highlighted and named."""
        if self._frame is None or self._mode != "density" or self._tap.x is None or self._tap.y is None:
            return
        x = _naive_utc(self._tap.x)
        if pd.isna(x) or not isinstance(self._tap.y, int | float) or not math.isfinite(self._tap.y):
            return
        name = nearest_series(self._frame, SERIES[self.kind], self.metric, x, float(self._tap.y))
        if name is not None:
            self.highlight = name
            self._say(f"Nearest series to the click: {name} (highlighted).")

    def _points_plot(self, frame: pd.DataFrame) -> hv.DynamicMap:
        """Every point: datashader rasterizes the raw rows held, at pixel resolution, on every zoom or pan; a window
        outside them is read from the database (off the event loop) and replaces them.

        Times are held as epoch milliseconds (a float column, on a date-formatted axis): HoloViews hands numbers to
        datashader as they are, where datetimes would be copied and converted on every zoom.
        """
        self._pipe = Pipe(data=frame)
        self._zoom = RangeXY()
        self._zoom.param.watch(self._points_zoomed, "x_range")
        points = hv.DynamicMap(partial(self._points, self.metric), streams=[self._pipe, self._zoom])
        value = self._dims()[self.metric]
        ds, rasterize = _datashader()
        return rasterize(points, aggregator=ds.count(), streams=[self._zoom, PlotSize()]).opts(
            cmap=DENSITY_CMAP,
            cnorm="eq_hist",
            tools=["hover"],
            hover_tooltips=[("Time (UTC)", "$x{%F %T}"), (value.pprint_label, "$y"), ("Rows", "@image")],
            hover_formatters={"$x": "datetime"},
            xformatter=DatetimeTickFormatter(),
            xticks=DatetimeTicker(),
            colorbar=True,
            clabel="rows per pixel",
            responsive=True,
            height=HEIGHT,
        )

    def _points(self, metric: str, data: pd.DataFrame, x_range=None, y_range=None) -> hv.Points:
        """The rows in view (a slice of the rows held, so that the aggregation reads only those) as hvPlot points."""
        if x_range is not None and len(data) and not any(pd.isna(_naive_utc(x)) for x in x_range):
            times = data["time"]
            lo = times.searchsorted(_epoch_ms(x_range[0]), "left")
            hi = times.searchsorted(_epoch_ms(x_range[1]), "right")
            data = data.iloc[lo:hi]  # rows in time order: a slice, no copy
        return data.hvplot.points(x="time", y=metric).redim(**self._dims())

    def _points_zoomed(self, event) -> None:
        """A zoom or pan in "every point" mode: datashader re-aggregates the rows held at once; when the visible
        window reaches outside them (a zoom out, a pan), or they span many views (a zoom in), the visible window's
        rows are read from the database and replace them."""
        if event.new is None or self._held is None or self._pipe is None:
            return
        x0, x1 = (_naive_utc(x) for x in event.new)
        if pd.isna(x0) or pd.isna(x1):  # the plot before its first draw
            return
        start, end = self._bounds
        window = (max(start, x0), min(end, x1))
        if window[1] <= window[0]:
            return
        held = self._held
        few = len(self._frame) <= HOLD_ROWS or held[1] - held[0] <= SHRINK * (window[1] - window[0])
        if held[0] <= window[0] and window[1] <= held[1] and few:
            return  # the rows held cover the view, and are few enough to keep: nothing to read
        request = self._latest
        if _in_session():
            pn.state.execute(partial(self._read_async, window, request))
        else:
            self._replace_rows(window, self._read_window(window), request, self._latest_window)

    async def _read_async(self, window: tuple[pd.Timestamp, pd.Timestamp], request: int) -> None:
        ticket = self._latest_window = next(self._windows)
        try:
            rows = await asyncio.to_thread(self._read_window, window)
        except Exception as exc:
            self._error(exc)
            return
        self._replace_rows(window, rows, request, ticket)

    def _replace_rows(self, window, rows: pd.DataFrame, request: int, ticket: int) -> None:
        if request != self._latest or ticket != self._latest_window or self._mode != "points" or self._pipe is None:
            return  # the selection changed, or a newer zoom asked for another window, meanwhile
        if len(rows) > MAX_RAW_ROWS:
            self._say(f"More than {MAX_RAW_ROWS:,} rows in view: zoom in to see every one of them.", "warning")
            return
        self._message.visible = False
        self._held, self._frame = window, rows
        self._pipe.send(rows)

    def _zoomed(self, event) -> None:
        """A zoom or pan on buckets: ``downsample1d`` or datashader re-draws at once; when the loaded buckets are
        too coarse for the visible window, finer ones are asked for (off the event loop)."""
        if event.new is None or self._frame is None or self._pipe is None:
            return
        x0, x1 = (_naive_utc(x) for x in event.new)
        if pd.isna(x0) or pd.isna(x1):  # the plot before its first draw
            return
        span = x1 - x0
        step = self._step
        if self._fine is not None and self._fine[0] <= x0 and x1 <= self._fine[1]:
            step = self._fine[2]
        if span <= pd.Timedelta(0) or step * SCREEN_POINTS <= span or step <= MIN_STEP:
            return  # the loaded buckets already give a point per pixel (or are as fine as they get)
        start, end = self._bounds
        window = (max(start, x0 - span), min(end, x1 + span))
        request = self._latest
        if _in_session():
            pn.state.execute(partial(self._refine_async, window, request))
        else:
            self._refine(window, self._fetch_window(window), request)

    def _fetch_window(self, window: tuple[pd.Timestamp, pd.Timestamp]) -> tuple[pd.DataFrame, pd.Timedelta]:
        points = DENSE_POINTS if self._mode == "density" else POINTS
        step = max((window[1] - window[0]) / points, MIN_STEP)
        return self.store.aggregate(self.kind, *window, step, self.series, self.metric), step

    async def _refine_async(self, window: tuple[pd.Timestamp, pd.Timestamp], request: int) -> None:
        try:
            result = await asyncio.to_thread(self._fetch_window, window)
        except Exception as exc:
            self._error(exc)
            return
        self._refine(window, result, request)

    def _refine(self, window, result: tuple[pd.DataFrame, pd.Timedelta], request: int) -> None:
        if request != self._latest or self._frame is None or self._pipe is None or self._mode == "points":
            return  # the selection changed meanwhile
        fine, step = result
        coarse = self._frame
        outside = coarse[(coarse["time"] < window[0]) | (coarse["time"] >= window[1])]
        key = SERIES[self.kind]
        merged = pd.concat([outside, fine]).sort_values([key, "time"], kind="stable", ignore_index=True)
        self._fine = (*window, step)
        # Gaps are judged by the coarse buckets: finer ones in the window must not cut the coarse line around it.
        self._pipe.send(self._plot_data(merged, self._step))

    # -- export -------------------------------------------------------------------------------------------------------

    def _export_plan(self, fmt: str) -> tuple[dict | None, str]:
        """Runs on a worker thread: the fields of an export ticket for the selection, or ``None`` and why not (no
        rows, or more than ``RTDASH_EXPORT_MAX_ROWS``)."""
        bounds = self.time_range()
        what = f"{METRICS[self.metric].lower()} of {_names(self.series)}" if self.series else "series"
        rows = self.store.count(self.kind, *bounds, self.series) if bounds and self.series else 0
        if not rows:
            return None, f"Nothing to export: no {what} is stored in the selected range."
        limit = self.settings.export_max_rows
        if rows > limit:
            return None, (
                f"The selected range holds {rows:,} rows, more than the export limit of {limit:,} rows "
                "(RTDASH_EXPORT_MAX_ROWS): pick a shorter range, or have the limit raised."
            )
        start, end = bounds
        fields = {"kind": self.kind, "series": list(self.series), "start": start, "end": end, "fmt": fmt}
        return {**fields, "filename": exports.file_name(self.kind, bounds, fmt), "total": rows}, ""

    def _export_clicked(self, fmt: str) -> None:
        """Export CSV or Parquet clicked: in a session, the rows are counted off the event loop, then downloaded
        (``_request_export``); in a notebook or script, written to a file in the working directory."""
        if self.store is None:
            return
        if self._exporting is not None:
            return self._say_export("An export of this page is running: wait for it to end.", "warning")
        if not _in_session():
            plan, why = self._export_plan(fmt)
            if plan is None:
                return self._say_export(why, "warning")
            path, rows = self.save(fmt)
            return self._say_export(f"Exported {rows:,} rows to {path.resolve()}.")
        self._exporting = "counting"
        self._export_busy(True)
        # Relative to the page, as Panel's own resources are (an embedding page's ``rel_path`` is the app's
        # server): not ``base_url``, which Panel derives from the request that made the session, and a session that
        # Bokeh made again at the page's websocket (the first discarded as unused) has a websocket's path there.
        rel_path = pn.state.rel_path  # read here, in the click's document
        url = f"{rel_path}/export/" if rel_path else "export/"
        pn.state.execute(partial(self._request_export, fmt, url, pn.state.user))

    async def _request_export(self, fmt: str, url: str, user: str | None) -> None:
        """Count the selection's rows on a thread; within the limit, issue a ticket and have the page download it."""
        try:
            plan, why = await asyncio.to_thread(self._export_plan, fmt)
        except Exception as exc:
            self._export_finished()
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return self._say_export(f"The history store did not answer: {text}", "error")
        if plan is None:
            self._export_finished()
            return self._say_export(why, "warning")
        ticket = exports.issue(**plan, owner=self, user=user, store=self.store)
        self._exporting, self._export_name, self._export_started = ticket.token, ticket.filename, False
        self._say_export(f"Exporting {ticket.total:,} rows to {ticket.filename}…")
        self._link.download(url + ticket.token, ticket.filename)
        self._doc.add_timeout_callback(partial(self._export_unused, ticket.token), int(exports.TICKET_TTL * 1000))

    def _export_progress(self, token: str, sent: int, total: int) -> None:
        """From the download (in the session's document): ``sent`` of ``total`` rows are on their way."""
        if token != self._exporting:
            return
        self._export_started = True
        percent = min(100, 100 * sent // total) if total else 100
        self._progress.param.update(value=percent, visible=True)
        self._say_export(f"Exporting… {percent} % ({sent:,} of {total:,} rows)")

    def _export_ended(self, token: str, sent: int, how: str) -> None:
        """From the download: it ended (``done``, ``cancelled`` by the browser, or ``failed`` reading the store)."""
        if token != self._exporting:
            return
        self._export_finished()
        if how == "done":
            self._say_export(f"Exported {sent:,} rows to {self._export_name}.")
        elif how == "cancelled":
            self._say_export(f"The export stopped after {sent:,} rows: the download was cancelled.", "warning")
        else:
            self._say_export(f"The export failed after {sent:,} rows: the history store did not answer.", "error")

    def _export_refused(self) -> None:
        """From the download: a second one of this session was refused while the first is being sent."""
        self._say_export("A second export of this page was refused: one is already running.", "warning")

    def _export_unused(self, token: str) -> None:
        """``TICKET_TTL`` after a ticket was issued: if its download never started, the buttons come back."""
        exports.discard(token)
        if token == self._exporting and not self._export_started:
            self._export_finished()
            self._say_export("The download did not start: export again.", "warning")

    def _export_busy(self, busy: bool) -> None:
        for button in (self._csv, self._parquet):
            button.param.update(disabled=busy, loading=busy)

    def _export_finished(self) -> None:
        self._exporting = None
        self._export_busy(False)
        self._progress.visible = False

    def _say_export(self, text: str, level: str = "info") -> None:
        """Show ``text`` (plain text, escaped here) beside the export buttons."""
        self._export_note.param.update(
            object=f'<div class="message {level}" role="status">{html.escape(text)}</div>', visible=True
        )

    def _session_ended(self, _context) -> None:
        self._closed = True
        exports.forget(self)

    def save(self, fmt: str, directory: str | Path = ".") -> tuple[Path, int]:
        """Write the selected range's rows (every column) as a CSV or Parquet file into ``directory``, chunk by chunk
        as a download streams them; the file's path and its rows.  No limit: for scripts and notebooks."""
        bounds = self.time_range()
        path = Path(directory) / exports.file_name(self.kind, bounds, fmt)
        start, end = bounds if bounds is not None else (None, None)
        rows = 0
        with open(path, "wb") as out:
            for count, data in exports.stream(self.store, self.kind, fmt, start, end, self.series):
                out.write(data)
                rows += count
        return path, rows


class DownloadLink(JSComponent):
    """Invisible: :meth:`download` has the page download a URL, as a click on a link with ``download`` would (the
    page stays; the browser's download shows the file, or its failure)."""

    _esm = """
export function render({ model }) {
  model.on("msg:custom", (msg) => {
    const link = document.createElement("a")
    link.href = msg.url
    link.download = msg.filename
    link.style.display = "none"
    document.body.appendChild(link)
    link.click()
    link.remove()
  })
  return document.createElement("span")
}
"""

    def __init__(self, **params):
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})

    def download(self, url: str, filename: str) -> None:
        self._send_msg({"url": url, "filename": filename})


def _in_session() -> bool:
    """Whether we run in a Panel server session (queries go to a thread) rather than a script or notebook."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def _names(series: list[str], shown: int = 5) -> str:
    """``series`` for a message: all of a few, the first ``shown`` and a count of the rest of many."""
    if len(series) <= shown:
        return ", ".join(series)
    return f"{', '.join(series[:shown])} and {len(series) - shown} more"


def _duration(step: pd.Timedelta) -> str:
    seconds = step.total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1000:.3g} ms"
