"""The Live tab's charts against a real Runtime on the fake API: each chart is declared with hvPlot and drawn by
HoloViews once, sessions get copies of its models with their own ids; the lines start with the rows collected so far,
after that new rows are streamed into the lines' ColumnDataSources, with NaN rows at gaps, the backlog as rollover,
and the old rows dropped when the data switches between simulated and live.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.document.events import ColumnsStreamedEvent as ColumnsStreamed
from bokeh.models import ColumnDataSource, HoverTool, MultiLine, Scatter
from bokeh.settings import settings as bokeh_settings
from panel.io.state import set_curdoc
from tornado.ioloop import IOLoop

from rtdash import server
from rtdash.sources.base import is_history
from rtdash.stream import Runtime, get_runtime
from rtdash.views import live
from rtdash.views.live import (
    MARKER_POINTS,
    SPAN_INTERVALS,
    SPARES,
    WEATHER_METRICS,
    FigureTemplate,
    LiveView,
    StreamingChart,
    copy_models,
    figure_template,
    placeholder_rows,
    weather_lines,
)
from tests.helpers import wait_until
from tests.views.test_refresh import plain

QUIET = {"RTDASH_WEATHER_INTERVAL": "1h", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_CITIES": "London,Berlin"}


@pytest.fixture
def runtime(make_settings) -> Runtime:
    rt = get_runtime(make_settings(**QUIET))
    wait_until(lambda: len(rt.price.history()) and len(rt.weather.history()), 10, message="the first fetches")
    return rt


def prices(times: list[str], values: list[float], source: str = "coinbase") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, utc=True),
            "asset": "BTC",
            "quote": "USD",
            "price": values,
            "source": source,
        }
    )


def price_lines(rows: pd.DataFrame):
    return rows.hvplot.line(x="time", y="price", by="asset", title="BTC")


def chart(length: int = 5, history: pd.DataFrame | None = None) -> StreamingChart:
    history = prices([], []) if history is None else history
    return StreamingChart("price", ["BTC"], "price", 1.0, length, history, price_lines)


def rendered(view: LiveView) -> tuple[Document, list[ColumnsStreamed]]:
    """The view in a Bokeh document, and the list its streamed events go to."""
    doc = Document()
    doc.add_root(view.__panel__().get_root(doc))
    events: list[ColumnsStreamed] = []
    doc.callbacks.on_change(lambda event: isinstance(event, ColumnsStreamed) and events.append(event))
    return doc, events


def test_the_figure_starts_with_the_history_then_streams_only_new_rows() -> None:
    c = chart(history=prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01"], [1.0, 2.0]))
    assert c.data("BTC")["price"].tolist() == [1.0, 2.0]
    doc = Document()
    doc.add_root(c.figure)
    events: list[ColumnsStreamed] = []
    doc.callbacks.on_change(lambda event: events.append(event))
    # the same rows again, and one new one: only the new one is sent
    c.send(prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 00:00:02"], [1.0, 2.0, 3.0]))
    (event,) = events
    assert isinstance(event, ColumnsStreamed)
    assert event.data == {"time": [pd.Timestamp("2026-01-01 00:00:02").value / 1e6], "price": [3.0]}
    assert event.rollover == 5
    assert c.data("BTC")["time"].iloc[-1] == pd.Timestamp("2026-01-01 00:00:02")


def test_the_live_charts_draw_on_a_canvas_not_webgl() -> None:
    """HoloViews picks WebGL, which a browser without a GPU renders in software (seconds behind with 20 pages)."""
    assert chart().figure.output_backend == "canvas"


ID_FORMATS = {"server": r"p\d+", "notebook": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"}


@pytest.mark.parametrize("where", ID_FORMATS)
def test_each_copy_of_a_chart_has_models_of_its_own(where, monkeypatch) -> None:
    """``panel serve`` numbers models (``p123``); Panel in a notebook turns Bokeh's simple ids off (UUIDs)."""
    monkeypatch.setattr(bokeh_settings.simple_ids, "_user_value", where == "server")
    template = FigureTemplate(price_lines(placeholder_rows("price", ["BTC"])), "price")
    figures, sources, markers, _, _ = zip(*(template.copy(markers=m) for m in (False, True)), strict=True)
    models = [{m.id: m for m in figure.references()} for figure in figures]
    assert all(re.fullmatch(ID_FORMATS[where], id_) for ids in models for id_ in ids)
    assert not set(models[0]) & set(models[1]) and not set(models[0]) & template._ids
    for figure, by_series, marks, ids in zip(figures, sources, markers, models, strict=True):
        line, past, *marker = figure.renderers  # the line, the provider history's lines (dashed), the markers if asked
        assert past.tags == ["past"] and template.colours == {"BTC": line.glyph.line_color}
        assert by_series["BTC"] is line.data_source and by_series["BTC"].id in ids
        assert marker == list(marks.values()) and all(m.data_source is line.data_source for m in marker)
        assert figure.document is None  # ready for the session's document
        extra = {m.id for r in marker for m in (r, r.glyph, r.view, r.view.filter)}  # the markers' own models
        kinds = sorted(type(m).__name__ for id_, m in ids.items() if id_ not in extra)
        assert kinds == sorted(type(m).__name__ for m in models[0].values())


def test_spare_copies_are_handed_out_first_and_made_again_on_the_event_loop(monkeypatch) -> None:
    """A session takes a copy made ahead; the spares are made again on the loop it runs on, each copy with models of
    its own."""
    monkeypatch.setattr(live, "SPARE_DELAY", 0.0)
    template = FigureTemplate(price_lines(placeholder_rows("price", ["BTC"])), "price", spares=2)
    template.fill_spares()
    ready = [spare[0] for spare in template._spares]

    async def session() -> list:
        IOLoop.current()  # the server's loop: Tornado's, over asyncio's
        taken = [template.copy()[0] for _ in range(3)]  # two spares, then one made there and then
        while len(template._spares) < 2:
            await asyncio.sleep(0.05)
        return taken

    taken = plain(asyncio.run, asyncio.wait_for(session(), 30))  # a thread with no loop of Playwright's
    assert taken[:2] == ready[::-1] and taken[2] not in ready
    figures = [*taken, *(spare[0] for spare in template._spares)]
    ids = [{m.id for m in figure.references()} for figure in figures]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no model shared by two copies


def test_spares_are_made_with_markers_or_without_as_the_last_session_asked(monkeypatch) -> None:
    """A session whose lines start with more than MARKER_POINTS points takes a copy without markers; the spares are
    then made that way, and the other way again once a session asks for markers."""
    monkeypatch.setattr(live, "SPARE_DELAY", 0.0)
    template = FigureTemplate(price_lines(placeholder_rows("price", ["BTC"])), "price", spares=1)
    template.fill_spares()
    kinds = []

    async def session(markers: bool) -> None:
        IOLoop.current()
        kinds.append(bool(template.copy(markers=markers).markers))
        while not template._spares or template._refilling:
            await asyncio.sleep(0.05)
        kinds.append(bool(template._spares[0].markers))

    plain(asyncio.run, asyncio.wait_for(session(False), 30))
    plain(asyncio.run, asyncio.wait_for(session(True), 30))
    assert kinds == [False, False, True, True]
    full = pd.date_range("2026-01-01", periods=MARKER_POINTS + 1, freq="1s").astype(str).tolist()
    assert chart(length=1000, history=prices(full, [1.0] * len(full))).markers == {}
    assert list(chart(length=1000, history=prices(full[:2], [1.0, 2.0])).markers) == ["BTC"]


def test_spares_filled_meanwhile_are_not_made_again(monkeypatch) -> None:
    """A refill due after ``fill_spares`` (the warm-up) has filled them makes no copy beyond ``spares``."""
    monkeypatch.setattr(live, "SPARE_DELAY", 0.2)
    template = FigureTemplate(price_lines(placeholder_rows("price", ["BTC"])), "price", spares=2)

    async def session() -> None:
        IOLoop.current()
        template.copy()  # no spare yet: made there and then, and a refill is due
        template.fill_spares()
        await asyncio.sleep(1.0)  # the refill's time has come and gone

    plain(asyncio.run, asyncio.wait_for(session(), 30))
    assert len(template._spares) == 2 and not template._refilling


def test_a_chart_without_a_look_of_its_own_keeps_no_spares(monkeypatch) -> None:
    """Only the process's chart templates (a ``template`` key) are kept, and they keep copies ahead only once a
    server's warm-up asks for them (a notebook shows a chart once per output); a one-off chart never does."""
    monkeypatch.setattr(live, "_TEMPLATES", {})
    kept = figure_template("price", ["BTC"], "price", price_lines, ("a look",))
    assert kept.spares == 0 and figure_template("price", ["BTC"], "price", price_lines, ("a look",)) is kept
    one_off = figure_template("price", ["BTC"], "price", price_lines, None)
    assert one_off.spares == 0 and one_off not in live._TEMPLATES.values()


def test_warm_up_draws_the_live_charts_and_their_spares(make_settings, monkeypatch) -> None:
    monkeypatch.setattr(live, "_TEMPLATES", {})
    settings = make_settings(**QUIET)
    server.warm_up(settings)  # at the server's start (no session yet)
    for metric in WEATHER_METRICS:
        template = figure_template("weather", settings.cities, metric, *weather_lines(settings, metric))
        assert template.spares == SPARES and len(template._spares) == SPARES


def test_a_warm_up_inside_the_first_session_leaves_the_spares_to_the_event_loop(make_settings, monkeypatch) -> None:
    """Plain ``panel serve`` warms up in its first session, which waits for it: the charts are drawn, and their
    spares are made on the loop once that session has taken its copy."""
    monkeypatch.setattr(live, "_TEMPLATES", {})
    monkeypatch.setattr(live, "SPARE_DELAY", 0.0)
    settings = make_settings(**QUIET)
    with set_curdoc(Document()):  # as while panel serve runs the app's script for the first session
        server.warm_up(settings)
    template = figure_template("weather", settings.cities, "humidity", *weather_lines(settings, "humidity"))
    assert template.spares == SPARES and not template._spares

    async def session() -> None:
        IOLoop.current()
        template.copy()
        while len(template._spares) < SPARES or template._refilling:  # asyncio.wait_for below: 60 s at most
            await asyncio.sleep(0.05)

    plain(asyncio.run, asyncio.wait_for(session(), 60))
    assert len(template._spares) == SPARES


def test_the_lines_leave_their_selected_unselected_and_muted_looks_to_bokehjs() -> None:
    """No selection tool and no Bokeh legend: three glyph models per line fewer to copy, send and build."""
    for renderer in chart().figure.renderers:
        assert (renderer.selection_glyph, renderer.nonselection_glyph, renderer.muted_glyph) == ("auto",) * 3


def test_copy_models_renames_ids_not_text() -> None:
    """A string that happens to spell a model's id, or its serialized reference, is left as it is."""
    source = ColumnDataSource({"time": [1.0], "label": ["x"]})
    source.tags = [source.id, f'{{"id": "{source.id}"}}']
    doc = Document()
    doc.add_root(source)
    copied, ids = copy_models(doc.to_json(deferred=False), {source.id})
    (new,) = copied.roots
    assert new.id == ids[source.id] != source.id
    assert new.tags == source.tags and new.data == {"time": [1.0], "label": ["x"]}


def test_the_weather_charts_are_declared_one_line_per_city(runtime) -> None:
    """hvPlot's ``by="city"``: a line per city in the settings' order and colours, each named after its city (the
    tooltips' ``$name``) and each under the hover tool; the lines hold only what is streamed (time and value)."""
    view = plain(LiveView, runtime=runtime)
    cities = runtime.settings.cities
    for metric, chart in view._weather.items():
        # Beside the lines and their markers, one renderer of the provider history's dashed lines (tagged "past").
        renderers = [r for r in chart.figure.renderers if r not in chart.markers.values() and r.tags != ["past"]]
        (past,) = [r for r in chart.figure.renderers if r.tags == ["past"]]
        assert past.data_source is chart.past and isinstance(past.glyph, MultiLine)
        dash, alpha = (getattr(v, "value", v) for v in (past.glyph.line_dash, past.glyph.line_alpha))  # Value(...)
        assert dash == "dashed" and alpha < 1
        assert [r.name for r in renderers] == cities
        assert [r.glyph.line_color for r in renderers] == ["#1f77b4", "#ff7f0e"]
        assert [r.data_source for r in renderers] == [chart.sources[city] for city in cities]
        assert all(sorted(r.data_source.data) == sorted(["time", metric]) for r in renderers)
        (hover,) = chart.figure.select(HoverTool)
        assert hover.renderers == renderers  # every city, not just the first (holoviz/holoviews#6912)
        assert list(hover.tooltips[0]) == ["City", "$name"]


def test_the_backlog_rolls_over() -> None:
    c = chart(length=3)
    for second in range(6):
        c.send(prices([f"2026-01-01 00:00:0{second}"], [float(second)]))
    assert c.data("BTC")["price"].tolist() == [3.0, 4.0, 5.0]


def test_a_line_holds_the_window_of_its_length_in_intervals_up_to_its_newest_point() -> None:
    """Points from before a restart (50 min ago) stay only while they are in the window (5 intervals of 1 s here):
    they do not squeeze the new ones into the chart's edge, and the gap shows as a break."""
    old = prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 00:00:02"], [1.0, 2.0, 3.0])
    c = chart(length=5, history=old)
    assert c.data("BTC")["price"].tolist() == [1.0, 2.0, 3.0]
    c.send(prices(["2026-01-01 00:00:04"], [4.0]))  # the oldest is 4 s back, within the window: all stay
    assert c.data("BTC")["price"].tolist()[:3] == [1.0, 2.0, 3.0]
    assert c.data("BTC")["price"].iloc[-1] == 4.0
    c.send(prices(["2026-01-01 00:50:00", "2026-01-01 00:50:01"], [5.0, 6.0]))  # a restart 50 min later
    data = c.data("BTC")
    assert data["price"].tolist()[-2:] == [5.0, 6.0] and data["price"].iloc[:-2].isna().all(), data
    assert data["time"].iloc[0] >= pd.Timestamp("2026-01-01 00:49:56")

    # On start, history older than the window before its newest point is not drawn.
    restarted = chart(length=5, history=pd.concat([old, prices(["2026-01-01 00:50:00"], [5.0])]))
    assert restarted.data("BTC")["price"].tolist() == [5.0]


def test_a_single_reading_shows_as_a_marker_on_a_time_axis_that_reads_as_time() -> None:
    """One reading per series draws no line: markers show it until the line has more than MARKER_POINTS points,
    the axis spans SPAN_INTERVALS intervals around it, and its ticks read as clock times at any zoom."""
    c = StreamingChart("price", ["BTC"], "price", 2.0, 1000, prices(["2026-01-01 00:00:00"], [1.0]), price_lines)
    marker = c.markers["BTC"]
    assert marker.visible and marker.data_source is c.sources["BTC"] and marker in c.figure.renderers
    assert (marker.glyph.x, marker.glyph.y) == ("time", "price")
    assert marker.glyph.fill_color == marker.glyph.line_color == c.figure.renderers[0].glyph.line_color
    assert c.figure.x_range.default_span == SPAN_INTERVALS * 2.0 * 1000
    formatter = c.figure.xaxis[0].formatter
    assert [formatter.microseconds, formatter.milliseconds, formatter.seconds] == [
        "%H:%M:%S.%6N",
        "%H:%M:%S.%3N",
        "%H:%M:%S",
    ]
    times = pd.date_range("2026-01-01 00:00:02", periods=MARKER_POINTS, freq="2s").astype(str).tolist()
    c.send(prices(times, [float(i) for i in range(MARKER_POINTS)]))
    assert not marker.visible  # more than MARKER_POINTS points: the line alone
    c.send(prices(["2026-01-01 01:00:00"], [1.0]))  # a restart: the old points leave the window, one is left
    assert len(c.data("BTC")) <= 2 and marker.visible


def test_a_gap_longer_than_three_intervals_breaks_the_line() -> None:
    c = chart(length=10)
    c.send(prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01"], [1.0, 2.0]))
    c.send(prices(["2026-01-01 00:00:10"], [3.0]))
    values = c.data("BTC")["price"]
    assert values.isna().sum() == 1 and values.iloc[-1] == 3.0


def test_switching_from_simulated_to_live_drops_the_simulated_points() -> None:
    c = chart(history=prices(["2026-01-01 00:00:00"], [1.0], source="simulated"))
    c.send(prices(["2026-01-01 00:00:01"], [50_000.0]))
    assert c.data("BTC")["price"].tolist() == [50_000.0]


def test_a_session_gets_the_rows_of_each_fetch_as_streamed_events(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    _doc, events = rendered(view)
    rows = {metric: len(c.data("London")) for metric, c in view._weather.items()}
    price_rows = len(view._prices["BTC"].data("BTC"))
    assert price_rows >= 1 and all(n >= 1 for n in rows.values())
    wait_until(lambda: not runtime.price.fetch_now().exception(timeout=10), 10, message="a price fetch")
    wait_until(lambda: len(view._prices["BTC"].data("BTC")) > price_rows, 10, message="the new price in the chart")
    streamed = [e for e in events if e.model is view._prices["BTC"].sources["BTC"]]
    assert streamed, "the new price reached the document as a ColumnsStreamed event"
    assert all(len(e.data["time"]) == len(e.data["price"]) for e in streamed)
    assert np.isfinite(view._prices["BTC"].data("BTC")["price"].iloc[-1])


def test_pause_holds_new_points_and_resume_catches_up(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    rendered(view)
    before = len(view._prices["BTC"].data("BTC"))
    view.paused = True
    runtime.price.fetch_now().result(timeout=10)
    wait_until(lambda: len(runtime.price.history()) > before, 10, message="the poller's new row")
    assert len(view._prices["BTC"].data("BTC")) == before
    plain(setattr, view, "paused", False)
    history = runtime.price.history()  # the live rows: the provider's history is drawn apart (a dashed line)
    assert len(view._prices["BTC"].data("BTC")) == (~history["source"].map(is_history).astype(bool)).sum()


def test_the_price_card_reads_the_chart_it_belongs_to(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    card, source = view._cards["BTC"], view._prices["BTC"].sources["BTC"]
    assert card.source_id == source.id and card.quote == "USD" and card.provider == "Coinbase"


def _show(viewable) -> str:
    """Render ``viewable`` as a notebook output is (``_repr_mimebundle_``: a root in its own document, with a comm, in
    Panel's registry); the root's id."""
    from pyviz_comms import Comm

    return viewable._render_model(Document(), Comm()).ref["id"]


def _delete(ref: str) -> None:
    """What the page's pyviz_comms extension sends when it disposes of an output."""
    import panel as pn

    pn.extension._process_comm_msg({"event_type": "delete", "id": ref})


def test_an_output_lifetime_ends_when_the_last_output_showing_it_is_deleted() -> None:
    import panel as pn

    from rtdash.views import OutputLifetime

    pane = pn.pane.Markdown("x")
    ended = []
    lifetime = OutputLifetime([pane], lambda: ended.append(True))
    assert lifetime.check() and not lifetime.shown  # not shown yet: alive, it may be shown later
    first, second = _show(pn.Column(pane)), _show(pn.Column(pane))  # shown twice
    assert lifetime.outputs() == {first, second}
    _delete(first)
    assert ended == [] and lifetime.check()
    _delete(second)
    assert ended == [True] and not lifetime.check()
    _delete(second)
    assert ended == [True]  # once


def test_an_output_shown_and_deleted_between_two_checks_still_ends_the_lifetime() -> None:
    import panel as pn
    from bokeh.plotting import figure

    from rtdash.views import OutputLifetime

    pane = pn.pane.Bokeh(figure())
    ended = []
    lifetime = OutputLifetime([pane], lambda: ended.append(True))  # kept by its owner (weakly by the registry)
    _delete(_show(pn.Column(pane)))
    assert ended == [True] and lifetime.ended


def test_a_chart_left_out_of_a_frozen_notebook_document_gets_it_back(runtime) -> None:
    """What a JupyterLab kernel was seen in: the chart still in its output's tree, its data source out of the output's
    document (so new points went nowhere), and the document's bookkeeping frozen by a ``freeze`` that never ended
    (Bokeh's has no ``finally``).  The view notices at an update, and at the next check, still frozen, unfreezes the
    document and puts its source back, redrawn whole."""
    import panel as pn

    view = plain(LiveView, runtime=runtime)
    ref = _show(view.__panel__())
    doc = pn.state._views[ref][2]
    source = view._prices["BTC"].sources["BTC"]
    assert source.document is doc
    with pytest.raises(RuntimeError), doc.models.freeze():
        raise RuntimeError("inside a freeze")
    del doc.models._models[source.id]
    source._detach_document()

    view._reattach_after = 0.0  # checks are at most every REATTACH_EVERY seconds
    plain(view._reattach)
    assert source.document is None  # frozen at one check: maybe a freeze in progress
    view._reattach_after = 0.0
    plain(view._reattach)
    assert source.document is doc and doc.models._freeze_count == 0
    events: list[ColumnsStreamed] = []
    doc.callbacks.on_change(lambda event: isinstance(event, ColumnsStreamed) and events.append(event))
    view._prices["BTC"].send(prices([pd.Timestamp.now(tz="UTC").isoformat()], [1.0]))
    assert [e.model for e in events] == [source]


def _ms(text: str) -> float:
    return pd.Timestamp(text).value / 1e6


def past_values(c: StreamingChart, name: str) -> list[float]:
    """The values of series ``name``'s provider-history line (one of the lines of the chart's ``MultiLine``)."""
    data = c.past.data
    return np.asarray(data["ys"][data["name"].index(name)]).tolist()


def test_provider_history_is_drawn_apart_with_a_rule_where_live_polling_begins() -> None:
    """Candles (``coinbase/1min``) go to the dashed line, live prices to the line; the rule stands at the last candle
    before the first live price.  Candles a later fill brings into a hole join the dashed line only."""
    candles = prices([f"2026-01-01 00:0{m}:00" for m in range(5)], [1.0, 2.0, 3.0, 4.0, 5.0], "coinbase/1min")
    live = prices(["2026-01-01 00:04:30", "2026-01-01 00:04:35"], [5.5, 5.6])
    c = StreamingChart("price", ["BTC"], "price", 5.0, 1000, pd.concat([candles, live]), price_lines, resolution=60.0)
    assert c.data("BTC")["price"].tolist() == [5.5, 5.6]
    assert past_values(c, "BTC") == [1.0, 2.0, 3.0, 4.0, 5.0]  # one-minute steps: no break
    assert c.boundary.location == _ms("2026-01-01 00:04:00")
    # An outage from 00:04:35 to 00:09:00, then its hole filled from the provider's candles.
    c.send(prices(["2026-01-01 00:09:00"], [9.0]))
    c.send(prices(["2026-01-01 00:06:00", "2026-01-01 00:07:00", "2026-01-01 00:08:00"], [6, 7, 8], "coinbase/1min"))
    line = c.data("BTC")["price"].tolist()
    assert line[:2] == [5.5, 5.6] and math.isnan(line[2]) and line[3] == 9.0  # the live line still breaks there
    assert [v for v in past_values(c, "BTC") if not math.isnan(v)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert c.boundary.location == _ms("2026-01-01 00:04:00")  # where live polling began, still


def test_the_provider_history_of_every_series_is_one_renderer_of_dashed_lines_in_the_series_colours() -> None:
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]

    def lines(rows: pd.DataFrame):
        return rows.hvplot.line(x="time", y="temperature", by="city", color=colours)

    times = pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:15"] * 2, utc=True)
    past = pd.DataFrame(
        {"time": times, "city": ["Oslo", "Oslo", "Rome", "Rome"], "lat": 0.0, "lon": 0.0, "source": "open-meteo/15min"}
    ).assign(temperature=[1.0, 2.0, 3.0, 4.0])
    c = StreamingChart("weather", ["Oslo", "Rome", "Lima"], "temperature", 60.0, 1000, past, lines, resolution=900.0)
    assert c.past.data["name"] == ["Oslo", "Rome"]  # Lima has no history: no line
    assert c.past.data["colour"] == colours[:2]
    assert past_values(c, "Oslo") == [1.0, 2.0] and past_values(c, "Rome") == [3.0, 4.0]
    assert len(c.figure.renderers) == 7  # a line and its markers per city, and one renderer of the dashed lines


def test_a_line_that_starts_with_many_points_has_no_markers_to_copy_send_or_build() -> None:
    """Markers are made for a line the first time it has few points (a fifth of a weather chart's models, which
    every session would copy, serialize and send, and every page build), and hidden, not removed, once it has more."""
    times = pd.date_range("2026-01-01", periods=MARKER_POINTS + 1, freq="1s").astype(str).tolist()
    c = chart(length=1000, history=prices(times, [1.0] * len(times)))
    assert c.markers == {} and [type(r.glyph).__name__ for r in c.figure.renderers] == ["Line", "MultiLine"]
    assert not c.figure.select(Scatter)
    c.send(prices(["2026-01-01 02:00:00"], [2.0]))  # a restart an hour later: one point left in the window
    assert c.markers["BTC"].visible and c.figure.select(Scatter) == [c.markers["BTC"].glyph]


def test_provider_history_keeps_to_the_charts_window() -> None:
    candles = prices([f"2026-01-01 00:{m:02d}:00" for m in range(60)], [float(m) for m in range(60)], "coinbase/1min")
    c = StreamingChart("price", ["BTC"], "price", 1.0, 600, candles, price_lines, resolution=60.0)  # 10 minutes
    assert past_values(c, "BTC") == [float(m) for m in range(49, 60)]
    assert c.boundary.location == _ms("2026-01-01 00:59:00")  # no live price yet: the newest candle
    c.send(prices(["2026-01-01 01:05:00"], [100.0]))
    assert past_values(c, "BTC") == [float(m) for m in range(55, 60)]


def test_an_output_whose_comm_is_not_open_yet_gets_its_changes_in_one_message_in_order_once_it_opens() -> None:
    """Panel keeps a push to a comm the page has not opened yet and retries it every 0.1 s, each push on a timer of its
    own: several went out in any order once it opened (a price point out of time order after Run All again, on a
    loaded machine).  The view pushes only to outputs whose comm is open; an output not listening keeps its changes,
    held in its document, and gets them all with the first push after it opens."""
    import panel as pn
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure
    from pyviz_comms import Comm

    from rtdash.views import OutputLifetime

    class Recording(Comm):
        """pyviz_comms' comm, whose page opens it when ``_comm`` is set, recording what is sent."""

        def __init__(self) -> None:
            super().__init__()
            self.sent: list = []

        def send(self, data=None, metadata=None, buffers=None) -> None:
            self.sent.append(data)

    source = ColumnDataSource({"x": [], "y": []})
    chart = figure()
    chart.line("x", "y", source=source)
    pane = pn.pane.Bokeh(chart)
    lifetime = OutputLifetime([pane], lambda: None)
    comm, doc = Recording(), Document()
    pn.Column(pane)._render_model(doc, comm)
    doc.hold()  # as Panel holds a notebook output's document (panel.io.notebook.render_model)
    for x in range(3):
        source.stream({"x": [x], "y": [x]})
        lifetime.push()
    assert comm.sent == []
    comm._comm = object()  # the page opened it
    source.stream({"x": [3], "y": [3]})
    lifetime.push()
    (content,) = [m for m in comm.sent if isinstance(m, str) and '"events"' in m]
    streamed = [e["data"] for e in json.loads(content)["events"] if e["kind"] == "ColumnsStreamed"]
    assert [dict(e["entries"])["x"] for e in streamed] == [[0], [1], [2], [3]]
