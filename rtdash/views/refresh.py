"""The Refresh tab: the weather of every city on demand, on a map coloured by one metric and in a sorted table.

The Refresh button asks the shared weather poller for a fetch now (``Poller.fetch_now``): sessions that click at
the same time share one request, and the session's thread never waits for it, as the answer is handed back to the
session's own loop (and, served, taken by the session itself should that hand-back not come).  Until the first click
the view shows the latest rows the poller has collected.
"""

from __future__ import annotations

import html
import logging
import time
from concurrent.futures import Future
from functools import partial

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh plotting options used below
import pandas as pd
import panel as pn
import param
from bokeh.models import NumberFormatter
from holoviews.element.tiles import lon_lat_to_easting_northing, tile_sources

from ..sources import UNITS, SourceError, empty_frame, redact
from ..stream import Runtime
from ..stream.poller import current_dispatch
from . import OutputGuard, Text, when_drawn

log = logging.getLogger("rtdash.views")

METRICS = {"Temperature": "temperature", "Humidity": "humidity", "Wind speed": "wind_speed"}
LABELS = {column: label for label, column in METRICS.items()}
CMAPS = {"temperature": "RdYlBu_r", "humidity": "YlGnBu", "wind_speed": "viridis"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAP_HEIGHT = 460
MAP_MIN_WIDTH = 420
TABLE_WIDTH = 700  # at most; narrower outputs (a notebook beside its file browser) get a narrower table that scrolls
TABLE_MIN_WIDTH = 320
CHECK_MS = 1000  # how often a served view looks at a refresh that has not come back (RefreshView._check)
LATE_S = 2.0  # how long after the fetch its outcome may take to come back before the view takes it itself

STATUS_CSS = """
.status {font-family: system-ui, sans-serif; font-size: 14px; padding: 6px 10px; border-radius: 4px; color: #374151}
.status.error {background: #fef2f2; border: 1px solid #fca5a5; color: #991b1b}
.status .stale {font-weight: 600; text-transform: uppercase; font-size: 12px; letter-spacing: .05em}
"""


def tile_source(name: str) -> str | None:
    """The HoloViews tile source called ``name`` (any case), or None for ``none``."""
    if name.casefold() == "none":
        return None
    return {source.casefold(): source for source in tile_sources}[name.casefold()]


def latest_per_city(df: pd.DataFrame) -> pd.DataFrame:
    """The newest row of every city in ``df``."""
    return df.sort_values("time", kind="stable").groupby("city", sort=False).tail(1).reset_index(drop=True)


def merge(previous: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The latest row of every city: ``rows``, and the previous row of a city they lack (a partial failure).

    Live rows replace simulated ones rather than mix with them.
    """
    previous = previous[(previous["source"] == "simulated") == (rows["source"] == "simulated").any()]
    if not len(previous):
        return rows.reset_index(drop=True)
    return latest_per_city(pd.concat([previous, rows], ignore_index=True))


class RefreshView(pn.viewable.Viewer):
    """A Refresh button and a metric selector over a map and a table of the latest weather of every city."""

    runtime = param.ClassSelector(class_=Runtime, precedence=-1, doc="The shared pollers of the server.")
    metric = param.Selector(default="temperature", objects=METRICS, doc="What colours the map and sorts the table.")
    refresh = param.Action(lambda self: self.fetch(), label="Refresh", doc="Fetch fresh weather now.")
    frame = param.DataFrame(precedence=-1, doc="The latest row of every city shown.")
    fetching = param.Boolean(default=False, precedence=-1, doc="A refresh is under way.")
    error = param.String(
        default=None, allow_None=True, precedence=-1, doc="Why the last refresh failed, or which cities it missed."
    )
    stale = param.Boolean(default=False, precedence=-1, doc="The rows shown are older than a failed refresh.")

    def __init__(self, deferred: bool = False, **params) -> None:
        """``deferred``: build the map and the table when ``show()`` is first called (its tab shown), not now: most
        sessions never open the tab, and the two cost a page about 60 ms of server time (the app's tabs)."""
        params.setdefault("frame", empty_frame("weather"))
        super().__init__(**params)
        settings = self.runtime.settings
        self._units = UNITS[settings.units]
        self._tiles = tile_source(settings.tiles)
        self._secrets = settings.secrets

        self._button = pn.widgets.Button.from_param(self.param.refresh, color="primary", width=120, description=None)
        self._selector = pn.widgets.RadioButtonGroup.from_param(
            self.param.metric, color="primary", variant="outline", name="", description=None
        )
        self._status = Text(stylesheets=[STATUS_CSS], sizing_mode="stretch_width", margin=(5, 10))
        self._future: Future | None = None  # the last refresh's fetch
        self._done_at = 0.0  # monotonic time it ended
        self._map: pn.pane.HoloViews | None = None
        self._table: pn.widgets.Tabulator | None = None
        # The table goes under the map when both do not fit side by side (a notebook's width): the map keeps a
        # usable size rather than being squeezed beside the table, and the table fits the output's width.
        self._body = pn.FlexBox(flex_wrap="wrap", sizing_mode="stretch_width")
        # Outside a server session (a notebook), the guard tells the kernel when the output is gone, so that Panel
        # forgets its models (rtdash.views.OutputGuard).
        guard = [OutputGuard()] if current_dispatch()[1] is None else []
        self._layout = pn.Column(
            pn.Row(self._button, self._selector, self._status, sizing_mode="stretch_width"),
            self._body,
            *guard,
            sizing_mode="stretch_width",
        )
        if not deferred:
            self.show()
        self._update_status()

        # Show the rows collected so far, or the first ones to arrive; after that only Refresh changes the view.
        self._first = self.runtime.weather.subscribe(self._first_rows)
        if len(self._first.history):
            self._first.cancel()
            self.frame = latest_per_city(self._first.history)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def show(self) -> None:
        """Its tab is shown: build the map and the table (once), in a served page once it has been drawn.

        A map whose tiles cannot load (offline) would keep the page it is in from ever saying it has been drawn
        (Bokeh's "document ready"), which Panel's ``onload`` callbacks wait for (the Live tab's weather charts,
        the link's state): a page opened on this tab offline would not have them.
        """
        if self._table is not None:
            return
        if not pn.state.loaded:
            when_drawn(self.show)
            return
        points = hv.DynamicMap(self._points)
        if self._tiles is not None:
            points = (tile_sources[self._tiles]() * points).opts(xlabel="Longitude", ylabel="Latitude")
        self._map = pn.pane.HoloViews(
            points,
            sizing_mode="stretch_width",
            min_width=MAP_MIN_WIDTH,
            height=MAP_HEIGHT,
            linked_axes=False,
            # Beside the table while both fit, the map taking what the table leaves; under it when not.
            styles={"flex": f"1 1 {MAP_MIN_WIDTH}px", "width": "auto"},
        )
        self._table = pn.widgets.Tabulator(
            self._table_frame(),
            show_index=False,
            disabled=True,
            selectable=False,
            layout="fit_data_stretch",
            sizing_mode="stretch_width",
            min_width=TABLE_MIN_WIDTH,
            max_width=TABLE_WIDTH,
            widths={"fetched": 130},
            max_height=MAP_HEIGHT,
            formatters={
                "city": {"type": "plaintext"},  # a city's name is text, never HTML
                **{m: NumberFormatter(format="0.0", text_align="right") for m in METRICS.values()},
            },
        )
        self._update_table()
        self._body[:] = [self._map, self._table]

    # -- fetching -----------------------------------------------------------------------------------------------

    def fetch(self) -> Future:
        """Ask the weather provider for fresh rows now (the Refresh button); the view updates when they arrive.

        Returns the poller's future, shared with every other caller of the moment; nothing here waits for it.
        In a server session the view also looks at the future every ``CHECK_MS`` while it runs (:meth:`_check`).
        """
        dispatch, doc = current_dispatch()
        self.fetching = True
        self._done_at = float("inf")  # until this fetch ends (_schedule)
        future = self._future = self.runtime.weather.fetch_now()
        future.add_done_callback(partial(self._schedule, dispatch))
        if doc is not None:
            doc.add_timeout_callback(partial(self._check, doc, future), CHECK_MS)
        return future

    def _schedule(self, dispatch, future: Future) -> None:
        """On the poller's thread: hand the outcome to the loop of the session that asked."""
        self._done_at = time.monotonic()
        if dispatch is None:
            self._fetched(future)
            return
        try:
            dispatch(partial(self._fetched, future))
        except Exception:  # the session ended while the fetch ran
            log.debug("refresh finished after its session ended", exc_info=True)

    def _check(self, doc, future: Future) -> None:
        """On the session's loop while a refresh runs: take its outcome if the hand-back has not come ``LATE_S``
        after the fetch ended, and say so in the log.

        Seen twice in CI, cause not found: the fetch succeeded, and the page stayed at "Fetching" for good.
        """
        if future is not self._future or not self.fetching:
            return  # handed back
        late = time.monotonic() - self._done_at if future.done() else 0.0
        if late < LATE_S:
            doc.add_timeout_callback(partial(self._check, doc, future), CHECK_MS)
            return
        log.warning("a refresh's outcome did not come back to its session %.0f s after the fetch; taken", late)
        self._fetched(future)

    def _fetched(self, future: Future) -> None:
        """On the session's loop: show the new rows, or why they did not come (keeping the previous ones).  Once
        per refresh (the hand-back and :meth:`_check` may both come)."""
        if future is not self._future or not self.fetching:
            return
        try:
            rows = future.result()
        except Exception as exc:
            message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
            self.param.update(fetching=False, error=redact(message, self._secrets), stale=len(self.frame) > 0)
            return
        self._first.cancel()
        missing = "; ".join((rows.attrs.get("errors") or {}).values())
        error = redact(f"Some cities are missing: {missing}", self._secrets) if missing else None
        self.param.update(fetching=False, error=error, stale=False, frame=merge(self.frame, rows))

    def _first_rows(self, rows: pd.DataFrame) -> None:
        self._first.cancel()
        if not len(self.frame):
            self.frame = latest_per_city(rows)

    # -- rendering ----------------------------------------------------------------------------------------------

    def _label(self, metric: str) -> str:
        return f"{LABELS[metric]} ({self._units[metric]})"

    @param.depends("metric", "frame", "stale")
    def _points(self) -> hv.Points:
        metric, unit = self.metric, self._units[self.metric]
        df = self.frame[["city", "lon", "lat"]].assign(value=self.frame[metric])
        if self._tiles is None:
            df = df.assign(x=df["lon"], y=df["lat"])
        else:
            easting, northing = lon_lat_to_easting_northing(df["lon"].to_numpy(), df["lat"].to_numpy())
            df = df.assign(x=easting, y=northing)
        title = self._label(metric) + (" — stale" if self.stale else "")
        kdims = [hv.Dimension("x", label="Longitude"), hv.Dimension("y", label="Latitude")]
        return hv.Points(df, kdims, [hv.Dimension("value", label=LABELS[metric]), "city"]).opts(
            color="value",
            cmap=CMAPS[metric],
            colorbar=True,
            size=16,
            line_color="#1f2937",
            line_width=1,
            tools=["hover"],
            hover_tooltips=[("City", "@city"), (LABELS[metric], f"@value{{0.0}} {unit}")],
            title=title,
            responsive=True,
            height=MAP_HEIGHT,
            padding=0.15,
            show_grid=self._tiles is None,
            active_tools=["wheel_zoom"],
            hooks=[self._title_colorbar],
        )

    def _title_colorbar(self, plot, element) -> None:
        """The colour bar is drawn once; its title follows the metric."""
        if colorbar := plot.handles.get("color_colorbar"):
            colorbar.title = self._label(self.metric)

    @param.depends("metric", "frame", watch=True)
    def _update_table(self) -> None:
        if self._table is None:
            return  # not shown yet (show() builds it from the rows of the moment)
        self._table.param.update(value=self._table_frame(), titles=self._titles())

    def _table_frame(self) -> pd.DataFrame:
        # The columns keep their order (a change of columns rebuilds the table in the page, and Tabulator fails on
        # a rebuild that starts before the last one ended); the rows follow the metric.
        df = self.frame.sort_values(self.metric, ascending=False, na_position="last", kind="stable")
        out = df[["city", *METRICS.values()]].reset_index(drop=True)
        out["fetched"] = df["time"].dt.strftime("%H:%M:%S").to_numpy()
        return out

    def _titles(self) -> dict[str, str]:
        return {"city": "City", "fetched": "Fetched (UTC)", **{m: self._label(m) for m in METRICS.values()}}

    @param.depends("frame", "fetching", "error", "stale", watch=True)
    def _update_status(self) -> None:
        self._button.disabled = self.fetching
        self._body.loading = self.fetching
        if len(self.frame):
            fetched = self.frame["time"].max().strftime(TIME_FORMAT) + " UTC"
            simulated = (self.frame["source"] == "simulated").any()
            source = "simulated data" if simulated else f"from {self.runtime.weather.status.provider}"
            shown = f"Fetched {fetched} {source}"
        else:
            shown = "No weather data yet: press Refresh"
        error = (self.error or "").rstrip(". ")
        if self.fetching:
            text = html.escape(f"Fetching fresh data… · {shown}")
        elif self.error and self.stale:
            text = '<span class="stale">stale</span> ' + html.escape(
                f"Refresh failed: {error} · still showing the rows {shown[0].lower()}{shown[1:]}"
            )
        elif self.error:
            text = html.escape(f"{error} · {shown}")
        else:
            text = html.escape(shown)
        css = "status error" if self.error else "status"
        self._status.object = f'<div class="{css}" role="status">{text}</div>'
