"""The History tab: any stored range of one metric, for an asset or several cities, and its export.

Two levels of aggregation keep millions of stored rows interactive:

- the database reduces the selected range to at most ``POINTS`` buckets per series (mean, min, max, count per
  bucket; :meth:`Store.aggregate`), so a month of one-second rows arrives as a few ten thousand points;
- HoloViews' ``downsample1d`` (LTTB) reduces those to about one point per pixel for the browser, again on every
  zoom, on the server.  Zooming in further than the loaded buckets resolve asks the database for finer buckets
  of the visible window, which replace the coarse ones there.

Line charts of a few series fit ``downsample1d`` better than datashader's ``rasterize``: lines keep their colours,
legend and hover (time, mean, min, max, count).  Queries and exports run on a worker thread, never on the
server's event loop.  City names come from data: they reach the page only as widget options, legend labels and
hover values, which Bokeh renders as text; every message is escaped.
"""

from __future__ import annotations

import asyncio
import html
import io
import itertools
import math
from functools import partial

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend used by the options below
import pandas as pd
import panel as pn
import param
import pyarrow as pa
import pyarrow.parquet as pq
from holoviews.operation.downsample import downsample1d
from holoviews.streams import Pipe, RangeX

from ..sources import COLUMNS, SERIES, UNITS
from ..store import Store
from ..store.base import LABELS, utc

RANGES = {"Last hour": pd.Timedelta("1h"), "Last day": pd.Timedelta("1D"), "Last week": pd.Timedelta("7D")}
SPANS = [*RANGES, "All", "Custom"]
METRICS = {"price": "Price", "temperature": "Temperature", "humidity": "Humidity", "wind_speed": "Wind speed"}
POINTS = 20_000  # database buckets per series per query
SCREEN_POINTS = 1_500  # points per series sent to the browser; fewer loaded buckets in view → ask for finer ones
MIN_STEP = pd.Timedelta("1ms")
GAP_STEPS = 3  # a jump of more than this many buckets (or typical spacings) breaks the line
TIME_FORMAT = "%Y-%m-%d %H:%M UTC"
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


class HistoryView(pn.viewable.Viewer):
    """The History tab for the store of ``runtime`` (``runtime.store``; ``None`` means history is off)."""

    runtime = param.Parameter(precedence=-1, doc="The process's Runtime: its store and settings.")
    settings = param.Parameter(default=None, precedence=-1, doc="Defaults to the runtime's settings.")
    span = param.Selector(default="Last day", objects=SPANS, doc="The time range shown and exported.")
    custom = param.Tuple(default=None, allow_None=True, length=2, doc="(start, end) of the Custom range, UTC.")
    metric = param.Selector(default="price", objects=list(METRICS))
    asset = param.Selector(default=None, objects=[], allow_None=True, doc="The asset whose price is shown.")
    cities = param.ListSelector(default=[], objects=[], doc="The cities whose weather is shown.")

    def __init__(self, **params):
        super().__init__(**params)
        if self.settings is None and self.runtime is not None:
            self.settings = self.runtime.settings
        self.store: Store | None = getattr(self.runtime, "store", None)
        self._requests = itertools.count()
        self._latest = -1
        self._known = {"price": list(self.settings.assets), "weather": list(self.settings.cities)}
        with param.parameterized.discard_events(self):  # no widgets yet, and nothing to load before __init__ ends
            self._set_series_options()
        self._frame: pd.DataFrame | None = None  # the coarse buckets of the whole range
        self._fine: tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta] | None = None  # window of finer buckets
        self._pipe: Pipe | None = None
        self._bounds: tuple[pd.Timestamp, pd.Timestamp] | None = None
        self._step = MIN_STEP

        span = pn.widgets.RadioButtonGroup.from_param(self.param.span)
        self._custom = pn.widgets.DatetimeRangePicker(label="Custom range (UTC)", visible=False, width=340)
        self._custom.param.watch(self._custom_picked, "value")
        metric = pn.widgets.Select.from_param(self.param.metric, options={v: k for k, v in METRICS.items()}, width=180)
        self._asset = pn.widgets.Select.from_param(self.param.asset, label="Asset", description=None, width=160)
        self._cities = pn.widgets.MultiSelect.from_param(
            self.param.cities, label="Cities", description=None, size=5, width=240
        )
        self._message = pn.pane.HTML("", visible=False, sizing_mode="stretch_width", stylesheets=[MESSAGE_CSS])
        self._summary = pn.pane.Str("", styles={"color": "#4b5563", "font-size": "13px"})
        self._plot = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=460, visible=False)
        self._body = pn.Column(self._message, self._summary, self._plot, min_height=120, sizing_mode="stretch_width")
        self._csv = pn.widgets.FileDownload(
            callback=partial(self._download, "csv"), filename="rtdash.csv", label="Export CSV", width=150
        )
        self._parquet = pn.widgets.FileDownload(
            callback=partial(self._download, "parquet"), filename="rtdash.parquet", label="Export Parquet", width=150
        )
        self._layout = pn.Column(
            pn.Row(span, self._custom),
            pn.Row(metric, self._asset, self._cities),
            self._body,
            pn.Row(self._csv, self._parquet),
            sizing_mode="stretch_width",
        )
        self._sync_visibility()
        if self.store is None:
            reason = getattr(self.runtime, "store_error", None) or "RTDASH_STORE is none"
            self._say(f"History is off: {reason}.", "warning")
            self._layout[:] = [self._message]
        elif _in_session():
            # Not pn.state.onload: a page whose map tiles cannot load (offline) never reports itself ready.
            pn.state.execute(self._load_async)
        else:
            self.load()  # a notebook or a script: at once

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    # -- selection ---------------------------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return kind_of(self.metric)

    @property
    def series(self) -> list[str]:
        return ([self.asset] if self.asset else []) if self.kind == "price" else list(self.cities)

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

    def _custom_picked(self, event) -> None:
        if event.new and all(event.new):
            self.custom = tuple(utc(v) for v in event.new)  # the picker's times are read as UTC

    @param.depends("span", "metric", watch=True)
    def _sync_visibility(self) -> None:
        self._custom.visible = self.span == "Custom"
        self._asset.visible = self.kind == "price"
        self._cities.visible = self.kind == "weather"

    @param.depends("span", "custom", "metric", "asset", "cities", watch=True)
    def _changed(self) -> None:
        if self.store is None:
            return
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
        """Runs on a worker thread: the series the store knows, the range, its buckets."""
        known = {kind: self.store.series(kind) for kind in ("price", "weather")}
        bounds = self.time_range()
        if bounds is None:
            return known, None, None, None
        start, end = bounds
        step = max((end - start) / POINTS, MIN_STEP)
        frame = self.store.aggregate(self.kind, start, end, step, self.series, self.metric)
        return known, bounds, step, frame

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
        known, bounds, step, frame = result
        for kind, names in known.items():
            self._known[kind] = list(dict.fromkeys([*self._known[kind], *names]))
        self._set_series_options()
        if not self.series:
            return self._empty("Pick at least one city.")
        what = f"{METRICS[self.metric].lower()} of {', '.join(self.series)}"
        if bounds is None:
            return self._empty(f"No {what} is stored yet.")
        start, end = bounds
        if frame.empty:
            return self._empty(
                f"No {what} stored between {start.strftime(TIME_FORMAT)} and {end.strftime(TIME_FORMAT)}."
            )
        self._bounds, self._step, self._frame, self._fine = bounds, step, frame, None
        rows = int(frame["count"].sum())
        detail = "every row" if (frame["count"] == 1).all() else f"means over {_duration(step)} buckets"
        self._summary.object = (
            f"{rows:,} rows from {start.strftime(TIME_FORMAT)} to {end.strftime(TIME_FORMAT)}, shown as {detail}"
        )
        self._message.visible = False
        self._pipe = Pipe(data=self._plot_data(frame, step))
        dmap = hv.DynamicMap(partial(self._overlay, self.kind, self.metric), streams=[self._pipe])
        zoom = RangeX()
        zoom.param.watch(self._zoomed, "x_range")
        self._plot.object = downsample1d(dmap, width=SCREEN_POINTS, streams=[zoom])
        self._zoom = zoom
        self._plot.visible = True

    def _empty(self, text: str) -> None:
        self._frame, self._pipe = None, None
        self._summary.object = ""
        self._plot.param.update(object=None, visible=False)
        self._say(text)

    # -- plotting -----------------------------------------------------------------------------------------------------

    def _plot_data(self, frame: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
        key = SERIES[self.kind]
        out = break_gaps(frame, key, [self.metric, "min", "max"], step)
        return out.assign(time=out["time"].dt.tz_localize(None))  # Bokeh shows naive times as they are: UTC

    def _overlay(self, kind: str, metric: str, data: pd.DataFrame) -> hv.NdOverlay:
        key = SERIES[kind]
        unit = self.settings.quote if metric == "price" else UNITS[self.settings.units][metric]
        value = hv.Dimension(metric, label=METRICS[metric], unit=unit)
        vdims = [value, hv.Dimension("min"), hv.Dimension("max"), hv.Dimension("count")]
        curves = {
            name: hv.Curve(group, hv.Dimension("time", label="Time (UTC)"), vdims, label=str(name)).opts(
                tools=["hover"], line_width=1.5, responsive=True, height=440
            )
            for name, group in data.groupby(key, sort=True)
        }
        overlay = hv.NdOverlay(curves, kdims=[hv.Dimension(key, label=key.title())]).relabel(METRICS[metric])
        return overlay.opts(  # not batched: one glyph per series keeps the hover's values per point
            legend_position="top_left", show_legend=kind == "weather", batched=False, responsive=True, height=440
        )

    def _zoomed(self, event) -> None:
        """A zoom or pan: ``downsample1d`` re-picks the points; when the loaded buckets are too coarse for the
        visible window, finer ones are asked for (off the event loop)."""
        if event.new is None or self._frame is None or self._pipe is None:
            return
        x0, x1 = (
            pd.Timestamp(x).tz_localize("UTC") if pd.Timestamp(x).tzinfo is None else pd.Timestamp(x) for x in event.new
        )
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
        step = max((window[1] - window[0]) / POINTS, MIN_STEP)
        return self.store.aggregate(self.kind, *window, step, self.series, self.metric), step

    async def _refine_async(self, window: tuple[pd.Timestamp, pd.Timestamp], request: int) -> None:
        try:
            result = await asyncio.to_thread(self._fetch_window, window)
        except Exception as exc:
            self._error(exc)
            return
        self._refine(window, result, request)

    def _refine(self, window, result: tuple[pd.DataFrame, pd.Timedelta], request: int) -> None:
        if request != self._latest or self._frame is None or self._pipe is None:
            return  # the selection changed meanwhile
        fine, step = result
        coarse = self._frame
        outside = coarse[(coarse["time"] < window[0]) | (coarse["time"] >= window[1])]
        key = SERIES[self.kind]
        merged = pd.concat([outside, fine]).sort_values([key, "time"], kind="stable", ignore_index=True)
        self._fine = (*window, step)
        self._pipe.send(self._plot_data(merged, step))

    # -- export -------------------------------------------------------------------------------------------------------

    def export(self, fmt: str) -> tuple[str, io.BytesIO]:
        """The selected range's rows (every column) as a CSV or Parquet file, written chunk by chunk."""
        bounds = self.time_range()
        start, end = bounds if bounds is not None else (None, None)
        stamp = "-".join(t.strftime("%Y%m%dT%H%M%S") for t in bounds) if bounds else "empty"
        name = f"rtdash-{self.kind}-{stamp}.{fmt}"
        out = io.BytesIO()
        chunks = self.store.export(self.kind, start, end, self.series) if bounds else iter(())
        if fmt == "csv":
            header = True
            for chunk in chunks:
                chunk.to_csv(out, header=header, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
                header = False
            if header:
                out.write((",".join(COLUMNS[self.kind]) + "\n").encode())
        else:
            schema = pa.schema(
                [(c, pa.timestamp("us", tz="UTC") if c == "time" else _arrow_type(c)) for c in COLUMNS[self.kind]]
            )
            with pq.ParquetWriter(out, schema, compression="zstd", coerce_timestamps="us") as writer:
                for chunk in chunks:
                    writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
        out.seek(0)
        return name, out

    async def _download(self, fmt: str) -> io.BytesIO:
        button = self._csv if fmt == "csv" else self._parquet
        button.loading = True
        try:
            name, data = await asyncio.to_thread(self.export, fmt)
        finally:
            button.loading = False
        button.filename = name
        return data


def _in_session() -> bool:
    """Whether we run in a Panel server session (queries go to a thread) rather than a script or notebook."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def _arrow_type(column: str) -> pa.DataType:
    return pa.string() if column in LABELS else pa.float64()


def _duration(step: pd.Timedelta) -> str:
    seconds = step.total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds * 1000:.3g} ms"
