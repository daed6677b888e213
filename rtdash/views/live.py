"""The Live tab: latest prices with their change, and streaming price and weather charts.

Rows come from the shared pollers (one subscription per session) and go into one ``holoviews.streams.Buffer``
per series and chart, so HoloViews streams only the new points to the browser (``ColumnDataSource.stream``).  The
browser's ``DataRange1d`` follows the data and keeps a user's zoom or pan, while points keep arriving, until the
plot's reset tool is used.
"""

from __future__ import annotations

import functools
import html
import math
import operator

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh plotting options used below
import pandas as pd
import panel as pn
import param
from bokeh.models import DataRange1d, NumeralTickFormatter
from bokeh.palettes import Category10_10
from holoviews.streams import Buffer

from ..sources import SERIES, UNITS
from ..stream import Runtime

GAP_INTERVALS = 3  # a jump in time longer than this many poll intervals breaks the line
CHART_HEIGHT = 300
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}
WEATHER_METRICS = {"temperature": "Temperature", "humidity": "Humidity", "wind_speed": "Wind speed"}
UP, DOWN, FLAT = "#15803d", "#b91c1c", "#4b5563"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
PALETTE = Category10_10

LEGEND_CSS = """
.legend {display: flex; flex-wrap: wrap; gap: 4px 18px; font: 13px system-ui, sans-serif; color: #374151}
.legend .item {display: inline-flex; align-items: center; gap: 6px; white-space: pre}
.legend .swatch {display: inline-block; width: 18px; height: 3px; border-radius: 2px}
"""

CARD_CSS = """
.card {font-family: system-ui, sans-serif; padding: 4px 18px 8px 4px; line-height: 1.25}
.card .name {font-size: 14px; color: #4b5563; letter-spacing: .04em}
.card .price {font-size: 36px; font-weight: 600; font-variant-numeric: tabular-nums}
.card .change {font-size: 16px; font-weight: 600; font-variant-numeric: tabular-nums}
.card .time {font-size: 12px; color: #6b7280}
"""


def with_gaps(rows: pd.DataFrame, previous: pd.Timestamp | None, gap: float, values: list[str]) -> pd.DataFrame:
    """``rows`` of one series (oldest first) with a row of NaN ``values`` wherever time jumps by more than ``gap``
    seconds, from ``previous`` (the series' last time so far) on, so that a line breaks instead of bridging the gap.
    """
    times = rows["time"]
    before = times.shift()
    if previous is not None:
        before.iloc[0] = previous
    jumps = (times - before).dt.total_seconds() > gap
    if not jumps.any():
        return rows
    breaks = rows[jumps].copy()
    breaks["time"] = before[jumps] + (times[jumps] - before[jumps]) / 2
    breaks[values] = math.nan
    return pd.concat([rows, breaks]).sort_values("time", kind="stable").reset_index(drop=True)


class SeriesBuffers:
    """The curves of one chart: a ``Buffer`` per series (asset or city), fed with a poller's tidy rows.

    The buffers start with ``history``; then all the series' new rows of one fetch reach the browser in one update
    of the chart.  Only rows newer than a series' last one are taken, so the same rows may be offered twice (catching
    up after a pause).  When the rows switch between simulated and live, the old rows are dropped, not joined.
    """

    def __init__(self, kind: str, names: list[str], value: str, interval: float, length: int, history: pd.DataFrame):
        self.key = SERIES[kind]
        self.value = value
        self.gap = GAP_INTERVALS * interval
        self.last: dict[str, pd.Timestamp] = {}
        self.simulated = _simulated(history)
        chunks = self._new_rows(history)
        empty = pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns]"), value: pd.Series([], dtype="float64")})
        # The history is the buffers' initial data, so that the first update already streams.  Distinct names for
        # each buffer's data let one trigger carry them all.
        self.buffers = {
            name: Buffer(
                chunks.get(name, empty).iloc[-length:].reset_index(drop=True),
                length=length,
                index=False,
                rename={"data": f"data{i}"},
            )
            for i, name in enumerate(names)
        }

    def _new_rows(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Per series, its rows in ``df`` newer than its last one, as naive UTC times with NaN rows at gaps."""
        chunks = {}
        for name, rows in df.groupby(self.key, sort=False):
            last = self.last.get(name)
            if last is not None:
                rows = rows[rows["time"] > last]
            if rows.empty:
                continue
            rows = rows.sort_values("time", kind="stable")
            self.last[name] = rows["time"].iloc[-1]
            chunk = pd.DataFrame({"time": _naive_utc(rows["time"]), self.value: rows[self.value].to_numpy()})
            previous = None if last is None else _naive_utc(pd.Series([last])).iloc[0]
            chunks[name] = with_gaps(chunk, previous, self.gap, [self.value])
        return chunks

    def send(self, df: pd.DataFrame) -> None:
        """Append the rows of ``df`` that are new."""
        if df.empty:
            return
        simulated = _simulated(df)
        if simulated != self.simulated:
            self.last.clear()
            for buffer in self.buffers.values():
                buffer.clear()
        self.simulated = simulated
        updated = []
        for name, chunk in self._new_rows(df).items():
            if name in self.buffers:
                self.buffers[name].update(data=chunk)
                updated.append(self.buffers[name])
        if updated:
            Buffer.trigger(updated)

    def chart(self, curve_opts: dict, colours: dict[str, str] | None = None, **opts) -> hv.DynamicMap:
        """The curves, one per series (with ``curve_opts`` and its colour), overlaid."""

        def curve(buffer: Buffer, name: str, **_) -> hv.Curve:
            colour = {"color": colours[name]} if colours else {}
            return hv.Curve(buffer.data, "time", self.value, label=name).opts(**curve_opts, **colour)

        layers = [
            hv.DynamicMap(functools.partial(curve, buffer, name), streams=[buffer])
            for name, buffer in self.buffers.items()
        ]
        return functools.reduce(operator.mul, layers).opts(**opts)


def _simulated(df: pd.DataFrame) -> bool:
    return bool(len(df)) and bool((df["source"] == "simulated").all())


def setup_figure(plot, element) -> None:
    """A HoloViews hook, run once per figure: follow the data in the browser, and name each line after its series.

    The browser's ``DataRange1d`` follows the data and keeps a user's zoom or pan until reset, while the ``Buffer``
    still streams every new point.  (HoloViews' own ``following``, with ranges set by the server, stops drawing new
    points while a user is zoomed in, and loses a zoom made while an update is on its way.)  So the server leaves
    the ranges alone (``apply_ranges=False``) and its handler that stops following is taken off.

    A line's renderer is named after its series for the tooltips' ``$name``: a string column in the data would be
    sent whole at every update, and a name written into the tooltip template would be read as HTML.
    """
    figure = plot.state
    if isinstance(figure.x_range, DataRange1d):
        return
    figure.x_range = DataRange1d(range_padding=0.02, only_visible=True)
    figure.y_range = DataRange1d(range_padding=0.1, only_visible=True)
    handlers = figure._event_callbacks.get("rangesupdate", [])
    handlers[:] = [handler for handler in handlers if getattr(handler, "__name__", "") != "_disable_follow"]
    for line in plot.subplots.values() if getattr(plot, "subplots", None) else [plot]:
        if "glyph_renderer" in line.handles and line.current_frame is not None:
            line.handles["glyph_renderer"].name = line.current_frame.label


HOVER_TIME = ("Time (UTC)", "@{time}{%F %T}")
CURVE_OPTS = dict(line_width=2, tools=["hover"], hover_formatters={"@{time}": "datetime"})
CHART_OPTS = dict(
    responsive=True,
    height=CHART_HEIGHT,
    min_width=300,
    show_grid=True,
    show_legend=False,  # one legend of the cities above the weather charts, as HTML
    xlabel="Time (UTC)",
    apply_ranges=False,
    hooks=[setup_figure],
)


def _naive_utc(times: pd.Series) -> pd.Series:
    """Times as naive UTC ``datetime64[ns]`` values, which Bokeh draws without a time zone shift."""
    return times.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]").reset_index(drop=True)


def format_price(value: float, quote: str, scale: float | None = None) -> str:
    """``$65,000.12``, ``$0.16123``, ``1,234.50 CHF``: cents, or six significant digits below 1 (of ``scale``)."""
    symbol = CURRENCY_SYMBOLS.get(quote)
    number = f"{value:,.2f}" if abs(value if scale is None else scale) >= 1 else f"{value:.6g}"
    return f"{symbol}{number}" if symbol else f"{number} {quote}"


def price_card(asset: str, quote: str, data: pd.DataFrame | None, provider: str) -> str:
    """The HTML of one asset's big number: latest price, change since the window's first point, last update."""
    name = html.escape(f"{asset}-{quote}")
    prices = data.dropna(subset=["price"]) if data is not None else None
    if prices is None or prices.empty:
        waiting = html.escape(f"waiting for the first price from {provider}…")
        return f'<div class="card"><div class="name">{name}</div><div class="time">{waiting}</div></div>'
    first, last = prices["price"].iloc[0], prices["price"].iloc[-1]
    change = last - first
    percent = change / first * 100 if first else 0.0
    colour, arrow = (UP, "▲") if change > 0 else (DOWN, "▼") if change < 0 else (FLAT, "■")
    since = prices["time"].iloc[0].strftime("%H:%M:%S")
    updated = prices["time"].iloc[-1].strftime(TIME_FORMAT)
    sign = "+" if change >= 0 else "−"
    percent_text = "<0.01%" if 0 < abs(percent) < 0.005 else f"{sign}{abs(percent):.2f}%"
    change_text = f"{arrow} {sign}{format_price(abs(change), quote, scale=last)} ({percent_text})"
    return (
        f'<div class="card"><div class="name">{name}</div>'
        f'<div class="price">{html.escape(format_price(last, quote))}</div>'
        f'<div class="change" style="color: {colour}" title="since {since} UTC">{html.escape(change_text)}</div>'
        f'<div class="time">updated {updated} UTC · change since {since} UTC</div></div>'
    )


class LiveView(pn.viewable.Viewer):
    """Latest prices and streaming charts for one browser session."""

    runtime = param.ClassSelector(class_=Runtime, precedence=-1, doc="The shared pollers to follow.")
    paused = param.Boolean(default=False, doc="Hold new points in this session; resuming catches up.")

    def __init__(self, **params):
        super().__init__(**params)
        settings = self.runtime.settings
        self._quote = settings.quote
        units = UNITS[settings.units]
        colours = {city: PALETTE[i % len(PALETTE)] for i, city in enumerate(settings.cities)}
        history = {kind: poller.history() for kind, poller in self.runtime.pollers.items()}
        self._prices = {
            asset: SeriesBuffers("price", [asset], "price", settings.price_interval, settings.backlog, history["price"])
            for asset in settings.assets
        }
        self._weather = {
            metric: SeriesBuffers(
                "weather", settings.cities, metric, settings.weather_interval, settings.backlog, history["weather"]
            )
            for metric in WEATHER_METRICS
        }
        self._cards = {asset: pn.pane.HTML(stylesheets=[CARD_CSS], margin=(0, 10)) for asset in settings.assets}
        self._toggle = pn.widgets.Toggle.from_param(self.param.paused, name="Pause", width=110, align="center")
        self._paused_note = pn.pane.HTML(
            "Paused: new points are held; resume to catch up.", visible=False, styles={"color": "#92400e"}
        )
        self._price_charts = [self._price_chart(asset) for asset in settings.assets]
        self._weather_charts = [
            self._weather_chart(metric, title, units[metric], colours) for metric, title in WEATHER_METRICS.items()
        ]
        items = "".join(
            f'<span class="item"><span class="swatch" style="background: {colour}"></span>{html.escape(city)}</span>'
            for city, colour in colours.items()
        )
        self._legend = pn.pane.HTML(f'<div class="legend">{items}</div>', stylesheets=[LEGEND_CSS], margin=(0, 10))
        for kind, poller in self.runtime.pollers.items():
            # Rows that came between the history above and the subscription are in its history; the rest are skipped.
            self._receive(kind, poller.subscribe(functools.partial(self._receive, kind)).history)

    def _price_chart(self, asset: str) -> pn.pane.HoloViews:
        tooltips = [HOVER_TIME, ("Price", f"@{{price}}{{0,0.00[0000]}} {self._quote}")]
        chart = self._prices[asset].chart(
            dict(hover_tooltips=tooltips, color=PALETTE[0], **CURVE_OPTS),
            title=f"{asset}-{self._quote}",
            ylabel=f"Price ({self._quote})",
            yformatter=NumeralTickFormatter(format="0,0.[000000]"),
            **CHART_OPTS,
        )
        return pn.pane.HoloViews(chart, sizing_mode="stretch_width", css_classes=["price-chart"])

    def _weather_chart(self, metric: str, title: str, unit: str, colours: dict[str, str]) -> pn.pane.HoloViews:
        tooltips = [("City", "$name"), HOVER_TIME, (title, f"@{{{metric}}}{{0.0}} {unit}")]  # see setup_figure
        chart = self._weather[metric].chart(
            dict(hover_tooltips=tooltips, **CURVE_OPTS), colours, title=title, ylabel=f"{title} ({unit})", **CHART_OPTS
        )
        return pn.pane.HoloViews(chart, sizing_mode="stretch_width", css_classes=["weather-chart"])

    def _receive(self, kind: str, df: pd.DataFrame) -> None:
        """New rows of ``kind`` from the poller (on this session's document), or a backlog to catch up from."""
        if self.paused:
            return
        if kind == "price":
            for asset, buffers in self._prices.items():
                buffers.send(df[df["asset"] == asset])
            self._update_cards()
        else:
            for buffers in self._weather.values():
                buffers.send(df)

    def _update_cards(self) -> None:
        provider = self.runtime.price.status.provider
        for asset, card in self._cards.items():
            card.object = price_card(asset, self._quote, self._prices[asset].buffers[asset].data, provider)

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
        controls = pn.Column(self._toggle, self._paused_note, align="center")
        return pn.Column(
            pn.Row(*self._cards.values(), pn.HSpacer(), controls, sizing_mode="stretch_width"),
            pn.Row(*self._price_charts, sizing_mode="stretch_width"),
            self._legend,
            pn.Row(*self._weather_charts, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
