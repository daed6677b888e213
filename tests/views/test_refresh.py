"""The Refresh tab's view against a real Runtime on the fake API: one fetch per refresh, shared by concurrent views,
none for a metric change; failures keep the previous rows, marked stale.  Rendered into a Bokeh document where what
is drawn matters.  Every wait has a deadline; "exactly one" is judged once the view shows the new rows.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import GlyphRenderer, LinearColorMapper, WMTSTileSource
from holoviews.element.tiles import tile_sources

from rtdash.config import TILE_SOURCES, Settings, SettingsError
from rtdash.stream import Runtime, get_runtime
from rtdash.views import refresh
from rtdash.views.refresh import RefreshView
from tests.helpers import PanelServer, fake_env, wait_until

HOSTILE = "<img src=x onerror=alert(1)>"
QUIET = {"RTDASH_WEATHER_INTERVAL": "1h", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_TILES": "none"}


@pytest.fixture
def runtime(make_settings) -> Callable[..., Runtime]:
    """``runtime(**env)``: the shared Runtime on the fake API, once its first weather fetch is in."""

    def make(**env: str) -> Runtime:
        rt = get_runtime(make_settings(**{**QUIET, **env}))
        wait_until(lambda: len(rt.weather.history()) > 0, 30, message="the first weather fetch")
        return rt

    return make


def plain(fn: Callable, *args, **kwargs):
    """``fn(...)`` as a plain script runs it: in a thread with no asyncio loop, so that the view hands results over
    directly.  (The UI tests' sync Playwright leaves a loop "running" in pytest's main thread, which nothing runs
    while a test waits: the view would hand its results to that loop, as it does to a Jupyter kernel's.)"""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def new_view(runtime: Runtime) -> RefreshView:
    return plain(RefreshView, runtime=runtime)


def click_refresh(view: RefreshView) -> None:
    """What a click on the Refresh button does (the button's ``value`` event, as Panel sends it)."""
    (button,) = [b for b in view.__panel__().select(pn.widgets.Button) if b.name == "Refresh"]
    plain(button.param.trigger, "value")


def refreshed(view: RefreshView, before: pd.Timestamp) -> bool:
    return not view.fetching and len(view.frame) > 0 and view.frame["time"].min() > before


def map_of(view: RefreshView) -> tuple[dict, LinearColorMapper, Document]:
    """The points' data and colour mapper as the browser would get them."""
    doc = Document()
    root = view.__panel__().get_root(doc)
    doc.add_root(root)
    (points,) = [r for r in root.select({"type": GlyphRenderer}) if "value" in r.data_source.data]
    return points.data_source, points.glyph.fill_color["transform"], doc


def test_a_deferred_view_builds_its_map_and_table_when_first_shown(runtime) -> None:
    """The app's Refresh tab: most sessions never open it, so its map and table are built when it is shown."""
    view = plain(RefreshView, runtime=runtime(), deferred=True)
    assert view._map is None and view._table is None and len(view._body) == 0
    plain(view.show)
    plain(view.show)  # once
    assert list(view._body) == [view._map, view._table]
    assert sorted(view._table.value["city"]) == sorted(view.frame["city"])


def test_shows_the_rows_collected_before_the_first_click_without_fetching(runtime, fake_api) -> None:
    rt = runtime()
    view = new_view(rt)
    assert sorted(view.frame["city"]) == sorted(rt.settings.cities)
    table = view.__panel__().select(pn.widgets.Tabulator)[0].value
    assert list(table["temperature"]) == sorted(table["temperature"], reverse=True)
    assert "Fetched" in view.__panel__().select(pn.pane.HTML)[0].object
    assert fake_api.count("open-meteo") == 1


def test_refresh_makes_exactly_one_request_and_updates_the_table(runtime, fake_api) -> None:
    rt = runtime()
    view = new_view(rt)
    before, requests = view.frame["time"].max(), fake_api.count("open-meteo")
    click_refresh(view)
    wait_until(lambda: refreshed(view, before), 30, message="the refreshed rows")
    assert fake_api.count("open-meteo") == requests + 1
    table = view.__panel__().select(pn.widgets.Tabulator)[0]
    assert sorted(table.value["city"]) == sorted(rt.settings.cities)
    # The table follows the rows shown (a poll may bring newer ones meanwhile: read both at one moment).
    wait_until(lambda: set(table.value["fetched"]) == {view.frame["time"].max().strftime("%H:%M:%S")}, 30)
    assert not view.stale and view.error is None


def test_loading_indicator_while_fetching(runtime, fake_api) -> None:
    view = new_view(runtime())
    fake_api.set_fault("open-meteo", "slow", delay=1.0)
    click_refresh(view)
    layout = view.__panel__()
    assert view.fetching
    assert any(obj.loading for obj in layout.select(pn.layout.ListLike))
    assert [b.disabled for b in layout.select(pn.widgets.Button)] == [True]
    assert "Fetching" in layout.select(pn.pane.HTML)[0].object
    wait_until(lambda: not view.fetching, 30, message="the slow fetch to end")
    assert not any(obj.loading for obj in layout.select(pn.layout.ListLike))
    assert [b.disabled for b in layout.select(pn.widgets.Button)] == [False]


def test_changing_the_metric_recolours_the_map_without_fetching(runtime, fake_api) -> None:
    view = new_view(runtime())
    source, mapper, _doc = map_of(view)
    requests = fake_api.count("open-meteo")
    temperature_palette = list(mapper.palette)
    frame = view.frame.set_index("city")
    assert dict(zip(source.data["city"], source.data["value"], strict=True)) == frame["temperature"].to_dict()

    view.metric = "humidity"

    assert dict(zip(source.data["city"], source.data["value"], strict=True)) == frame["humidity"].to_dict()
    assert (mapper.low, mapper.high) == (frame["humidity"].min(), frame["humidity"].max())
    assert list(mapper.palette) != temperature_palette
    table = view.__panel__().select(pn.widgets.Tabulator)[0]
    # the rows follow the metric; the columns stay (a change of columns makes the page rebuild the table)
    assert list(table.value.columns) == ["city", "temperature", "humidity", "wind_speed", "fetched"]
    assert list(table.value["humidity"]) == sorted(frame["humidity"], reverse=True)
    assert table.titles["humidity"] == "Humidity (%)"
    assert fake_api.count("open-meteo") == requests


def test_a_failed_refresh_shows_the_reason_and_keeps_the_rows_marked_stale(runtime, fake_api) -> None:
    view = new_view(runtime())
    rows = view.frame.copy()
    reason = "Cannot initialize WeatherVariable from invalid String value"
    fake_api.set_fault("open-meteo", "http", status=400, body={"error": True, "reason": reason})
    click_refresh(view)
    wait_until(lambda: not view.fetching and view.error, 30, message="the failure")
    status = view.__panel__().select(pn.pane.HTML)[0].object
    assert reason in view.error and reason in status
    assert view.stale and "stale" in status
    pd.testing.assert_frame_equal(view.frame, rows)
    source, _mapper, _doc = map_of(view)
    assert len(source.data["value"]) == len(rows)

    fake_api.clear_fault()
    click_refresh(view)
    wait_until(lambda: refreshed(view, rows["time"].max()), 30, message="the recovery")
    assert not view.stale and view.error is None
    assert "stale" not in view.__panel__().select(pn.pane.HTML)[0].object


def test_concurrent_refreshes_from_many_views_share_one_request(runtime, fake_api) -> None:
    rt = runtime()
    views = [new_view(rt) for _ in range(5)]
    before, requests = views[0].frame["time"].max(), fake_api.count("open-meteo")
    fake_api.set_fault("open-meteo", "slow", delay=0.5)  # so that every click lands while the request is in flight
    for view in views:
        click_refresh(view)
    wait_until(lambda: all(refreshed(view, before) for view in views), 30, message="every view refreshed")
    assert fake_api.count("open-meteo") == requests + 1


def test_a_hostile_city_name_stays_text(runtime, fake_api) -> None:
    fake_api.set_fault("open-meteo", "500")  # unreachable at start: simulated rows, which have every city
    view = new_view(runtime(RTDASH_CITIES=f"Fresno,{HOSTILE}"))
    table = view.__panel__().select(pn.widgets.Tabulator)[0]
    assert set(table.value["city"]) == {"Fresno", HOSTILE}, table.value
    assert table.formatters["city"] == {"type": "plaintext"}  # Tabulator's plaintext formatter escapes
    source, _mapper, _doc = map_of(view)
    assert HOSTILE in list(source.data["city"])  # the hover's @city, which Bokeh escapes

    fake_api.clear_fault()  # live: the geocoder does not know the name, and the message quotes it
    click_refresh(view)
    wait_until(lambda: not view.fetching and view.error, 30, message="the live rows")
    pane = view.__panel__().select(pn.pane.HTML)[0]  # its text follows the view's parameters a moment later
    wait_until(lambda: "Some cities are missing" in pane.object, 30, message=f"the status to say so: {pane.object}")
    status = pane.object
    # Seen failing once beside two busy loops (message not kept): say what the view held.
    assert list(view.frame["city"]) == ["Fresno"], f"{view.frame}\nerror: {view.error}\nstatus: {status}"
    assert "Some cities are missing: unknown city" in status
    assert html.escape(HOSTILE) in status and HOSTILE not in status


def test_tiles_none_draws_plain_lon_lat_axes(runtime) -> None:
    view = new_view(runtime())
    source, _mapper, doc = map_of(view)
    assert not [m for m in doc.models if isinstance(m, WMTSTileSource)]
    frame = view.frame.set_index("city")
    assert dict(zip(source.data["city"], source.data["x"], strict=True)) == frame["lon"].to_dict()


def test_a_tile_source_name_draws_web_mercator_tiles(runtime) -> None:
    view = new_view(runtime(RTDASH_TILES="osm"))
    source, _mapper, doc = map_of(view)
    (tiles,) = [m for m in doc.models if isinstance(m, WMTSTileSource)]
    assert "openstreetmap" in tiles.url
    assert max(abs(x) for x in source.data["x"]) > 1e6  # metres east, not degrees


def test_the_accepted_tile_names_are_holoviews_tile_sources() -> None:
    assert sorted(name for name in TILE_SOURCES if name != "none") == sorted(tile_sources)


def test_an_unknown_tile_name_fails_at_startup_with_the_accepted_names() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.load(environ=fake_env("http://127.0.0.1:9", RTDASH_TILES="CartoLite"), dotenv=None)
    message = str(error.value)
    assert "RTDASH_TILES='CartoLite'" in message and "OSM" in message and "none" in message
    assert "did you mean CartoLight?" in message


def test_a_served_view_takes_the_outcome_itself_when_its_hand_back_is_lost(
    runtime, fake_api, monkeypatch, caplog
) -> None:
    """Seen twice in CI, cause not found: a served page stayed at "Fetching" for good after the fetch succeeded.  Here
    the hand-back from the poller's thread to the session is lost on purpose (the dispatch drops it): the view takes
    the outcome itself within ``LATE_S`` + ``CHECK_MS`` (RefreshView._check) and says so in the log."""
    rt, views, real = runtime(), [], refresh.current_dispatch

    def losing_dispatch():
        _, doc = real()
        return (lambda callback: None), doc

    def app() -> pn.viewable.Viewable:
        views.append((RefreshView(runtime=rt), pn.state.curdoc))
        return views[-1][0]

    monkeypatch.setattr(refresh, "current_dispatch", losing_dispatch)
    server = PanelServer(app)
    try:
        server.new_session()
        ((view, doc),) = views
        before = view.frame["time"].max()
        asked = fake_api.count("open-meteo")
        server.on_loop(lambda: doc.add_next_tick_callback(view.fetch))  # a click, as the session runs it
        wait_until(lambda: refreshed(view, before), 30, message="the view to take the new rows itself")
    finally:
        server.stop()
    assert fake_api.count("open-meteo") == asked + 1
    assert "did not come back to its session" in caplog.text
