"""The Refresh tab in a real headless Chromium against ``panel serve realtime_dashboard.py`` on the fake API.

The weather interval is an hour, so the only weather requests after the first are the ones a test makes.  What the
map draws is read from the page's Bokeh document; the table from its cells.  Every request of the browser beyond
the served app is recorded and refused, except map tiles, which a test may answer with a local image.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Page, Route

from tests.helpers import ServedApp, wait_until

pytestmark = pytest.mark.ui

HOSTILE = "<img src=x onerror=alert(1)>"
QUIET = {"RTDASH_WEATHER_INTERVAL": "1h", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_TILES": "none"}
CITIES = 7  # the default list
TILE_HOSTS = ("tile.openstreetmap.org", "basemaps.cartocdn.com", "fastly.net", "arcgisonline.com")
PNG = base64.b64decode(  # 1x1 light grey
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)
NETWORK_ERROR = "Failed to load resource"  # Chromium's console line for a request that failed

# The points of the Refresh map (the only renderer with "value" and "city" columns) and their colour mapper.
MAP_JS = """() => {
  const models = [...window.Bokeh.documents[0].all_models];
  const r = models.find(m => m.type == "GlyphRenderer" && m.data_source.data.value !== undefined
                             && m.data_source.data.city !== undefined);
  if (!r) return null;
  const mapper = r.glyph.fill_color.transform;
  return {city: Array.from(r.data_source.data.city), value: Array.from(r.data_source.data.value),
          palette: Array.from(mapper.palette), low: mapper.low, high: mapper.high,
          tiles: models.filter(m => m.type.endsWith("TileSource")).map(m => m.url),
          mercator: models.some(m => m.type == "MercatorTickFormatter")};
}"""

# The map's views: their size on the page and the tile renderers' state (for a failure's message).
MAP_VIEW_JS = """() => {
  const out = [];
  const walk = (view) => {
    if (view.model && view.model.type === "TileRenderer") {
      out.push({tiles: Object.keys(view.pool ? view.pool : {}).length, url: view.model.tile_source.url,
                drawn: view._tiles ? view._tiles.length : null});
    }
    if (view.canvas_view && view.model.renderers && view.model.renderers.some(r => r.type === "TileRenderer")) {
      const box = view.canvas_view.el.getBoundingClientRect();
      out.push({plot: [box.width, box.height], frame: [view.frame.bbox.width, view.frame.bbox.height],
                x: [view.frame.x_range.start, view.frame.x_range.end],
                y: [view.frame.y_range.start, view.frame.y_range.end]});
    }
    for (const child of (view.child_views || [])) walk(child);
    if (view.renderer_views) for (const r of view.renderer_views.values()) walk(r);
  };
  for (const view of Object.values(window.Bokeh.index)) walk(view);
  return out;
}"""

# What the page's Bokeh document holds of the Refresh tab (the status lines, the table's rows), and whether it has
# told the server it is drawn ("document ready", which Panel waits for before it counts the page as loaded).
DOC_JS = """() => {
  const doc = window.Bokeh.documents[0];
  const held = [...doc.all_models]
    .filter(m => (typeof m.text === "string" && m.text.includes("status")) || m.type.includes("Tabulator"))
    .map(m => m.text || `table: ${Object.values(m.source.data)[0]?.length} rows`);
  const waiting = doc.roots().filter(r => !doc._idle_roots.has(r)).map(r => r.type);
  return {held, ready_sent: doc._notified_idle, roots_not_drawn: waiting};
}"""

# Where a city's point is on the screen, from the map's own scales.
POINT_JS = """(name) => {
  const find = (view) => {
    const r = view.model.renderers && view.model.renderers.find(r => r.data_source && r.data_source.data.value);
    if (r) return [view, r];
    for (const child of (view.child_views || [])) { const found = find(child); if (found) return found; }
    return null;
  };
  const [view, r] = Object.values(window.Bokeh.index).map(find).find(found => found);
  const data = r.data_source.data, i = Array.from(data.city).indexOf(name);
  const box = view.canvas_view.el.getBoundingClientRect();
  return [box.left + view.frame.x_scale.compute(data.x[i]), box.top + view.frame.y_scale.compute(data.y[i])];
}"""


@pytest.fixture
def shared(module_apps, module_api):
    """``(get, api)``: a module dashboard for the given settings and the module's fake API, whose faults are cleared
    after the test."""
    yield module_apps, module_api
    module_api.clear_fault()


@pytest.fixture
def browser_page(page: Page) -> Page:
    """``page`` with every request beyond 127.0.0.1 recorded in ``page.external`` and refused; a test sets
    ``page.tiles`` to "local" to answer map tiles with a small image instead.  The websocket's frames, timed from
    here, are kept in ``page.ws_frames`` for a failure's message."""
    page.external, page.tiles, page.ws_frames = [], "refuse", []
    start = time.monotonic()

    def frame(direction: str, payload) -> None:
        shown = f"({len(payload)} bytes)" if isinstance(payload, bytes) else payload[:160]
        page.ws_frames.append(f"{time.monotonic() - start:7.2f} s {direction} {shown}")

    page.on(
        "websocket",
        lambda ws: (
            ws.on("framereceived", partial(frame, "in")),
            ws.on("framesent", partial(frame, "out")),
            ws.on("close", lambda _: frame("closed", "")),
        ),
    )

    def route(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
            return
        page.external.append(url)
        if page.tiles == "local" and urlsplit(url).hostname.endswith(TILE_HOSTS):
            route.fulfill(status=200, content_type="image/png", body=PNG)
        else:
            route.abort()

    page.route("**/*", route)
    return page


def open_refresh_tab(page: Page, app: ServedApp, cities: int = CITIES) -> None:
    page.goto(f"{app.url}/realtime_dashboard")
    page.locator(".bk-tab", has_text="Refresh").click()
    explained_wait(page, app, lambda: len(column(page, "city")) == cities, f"{cities} cities in the table")


def column(page: Page, field: str) -> list[str]:
    """The visible text of one column of the Refresh table, top to bottom."""
    return page.locator(f'.tabulator-cell[tabulator-field="{field}"]').filter(visible=True).all_inner_texts()


def drawn(page: Page) -> dict:
    return page.evaluate(MAP_JS)


def wait_for_new_rows(page: Page, app: ServedApp, before: set[str]) -> None:
    """Wait until the table shows rows fetched at none of the times in ``before``."""
    explained_wait(page, app, lambda: set(column(page, "fetched")) - before, "the table to show the new rows")


def explained_wait(page: Page, app: ServedApp, condition: Callable[[], object], message: str) -> object:
    """``wait_until(condition)`` for 60 s; failing, its message also says what the page showed and held, what its
    map views drew, the websocket's last frames, the weather source's status and the server's log with the stack of
    each of its threads (seen rarely: the server's document stayed at "Fetching" after the fetch succeeded)."""
    try:
        return wait_until(condition, 60, message=message)
    except AssertionError as exc:
        shown = {"fetched": column(page, "fetched"), "status": page.locator("[role=status]").all_inner_texts()}
        held, points, views = page.evaluate(DOC_JS), drawn(page), page.evaluate(MAP_VIEW_JS)
        frames = "\n".join(page.ws_frames[-30:])
        try:
            weather = requests.get(app.url + "/health", timeout=30).json()["sources"]["weather"]
        except (requests.RequestException, ValueError, KeyError) as error:
            weather = repr(error)
        raise AssertionError(
            f"{exc}\nshown: {shown}\nBokeh document: {held}\nmap: {points}\nmap views: {views}\n"
            f"console: {page.console_errors}\nweather source: {weather}\n"
            f"last websocket frames:\n{frames}\nserver log and stacks:\n{app.stacks()}"
        ) from None


def test_refresh_makes_exactly_one_weather_request_and_updates_the_table(shared, browser_page) -> None:
    page = browser_page
    serve, fake_api = shared
    app = serve(QUIET)
    open_refresh_tab(page, app)
    before = set(column(page, "fetched"))
    # Rows are timed to the second: wait for a new second so that refreshed rows can be told apart.
    wait_until(lambda: datetime.now(UTC).strftime("%H:%M:%S") not in before, 5, message="a new second")
    asked = fake_api.count("open-meteo")
    fake_api.set_fault("open-meteo", "slow", delay=1.0)  # long enough to see the loading indicator

    page.get_by_role("button", name="Refresh").click()

    wait_until(lambda: page.locator(".pn-loading").filter(visible=True).count(), 5, message="the loading indicator")
    wait_for_new_rows(page, app, before)
    assert len(column(page, "fetched")) == CITIES and len(set(column(page, "fetched"))) == 1
    assert fake_api.count("open-meteo") == asked + 1
    wait_until(lambda: not page.locator(".pn-loading").filter(visible=True).count(), 5, message="loading to end")
    assert page.console_errors == [] and page.external == []


def test_the_metric_selector_recolours_the_map_without_a_request(shared, browser_page) -> None:
    page = browser_page
    serve, fake_api = shared
    app = serve(QUIET)
    open_refresh_tab(page, app)
    temperature = drawn(page)
    asked = fake_api.count("open-meteo")

    page.get_by_role("button", name="Humidity").click()

    wait_until(lambda: drawn(page)["palette"] != temperature["palette"], 60, message="the map to be recoloured")
    humidity = drawn(page)
    shown = dict(zip(column(page, "city"), map(float, column(page, "humidity")), strict=True))
    assert {city: round(value, 1) for city, value in zip(humidity["city"], humidity["value"], strict=True)} == shown
    assert (humidity["low"], humidity["high"]) == (min(shown.values()), max(shown.values()))
    assert list(shown.values()) == sorted(shown.values(), reverse=True)  # the table follows the metric
    assert humidity["city"] == temperature["city"] and humidity["value"] != temperature["value"]
    assert fake_api.count("open-meteo") == asked
    assert page.console_errors == []


def test_without_tiles_the_points_show_on_plain_axes_with_no_console_errors(shared, browser_page) -> None:
    page = browser_page
    serve, _ = shared
    app = serve(QUIET)
    open_refresh_tab(page, app)
    for metric in ("Wind speed", "Humidity", "Temperature"):
        page.get_by_role("button", name=metric).click()
    before = set(column(page, "fetched"))
    wait_until(lambda: datetime.now(UTC).strftime("%H:%M:%S") not in before, 5, message="a new second")
    page.get_by_role("button", name="Refresh").click()
    wait_for_new_rows(page, app, before)

    assert drawn(page)["tiles"] == [] and not drawn(page)["mercator"]  # plain longitude and latitude
    assert len(drawn(page)["city"]) == CITIES
    assert "Traceback" not in page.inner_text("body")
    assert page.console_errors == [] and page.external == []


@pytest.mark.parametrize("tiles", ["local", "refuse"])
def test_with_tiles_the_points_show_whether_or_not_tiles_load(shared, browser_page, tiles: str) -> None:
    """Tiles come from the internet: answered locally, nothing goes wrong; refused (offline), the points still
    show and the only console lines are Chromium's own for the failed tile requests."""
    page = browser_page
    page.tiles = tiles
    serve, _ = shared
    app = serve({**QUIET, "RTDASH_TILES": "OSM"})
    open_refresh_tab(page, app)

    def asked() -> list[str]:
        # Playwright's sync API runs the route handler that records a request only inside one of its own calls: a
        # wait that only read the list never saw a tile request the page made after open_refresh_tab returned (seen
        # on a loaded machine: 60 s with the requests pending, recorded and refused once the failure's report ran).
        page.wait_for_timeout(50)
        return page.external

    explained_wait(page, app, asked, "the browser to ask for tiles")

    assert [url for url in drawn(page)["tiles"] if "openstreetmap" in url] and drawn(page)["mercator"]
    assert len(drawn(page)["city"]) == CITIES
    assert [url for url in page.external if not urlsplit(url).hostname.endswith(TILE_HOSTS)] == []
    errors = page.console_errors if tiles == "local" else [e for e in page.console_errors if NETWORK_ERROR not in e]
    assert errors == []


def test_a_hostile_city_name_is_shown_as_text(serve, browser_page, fake_api) -> None:
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    fake_api.set_fault("open-meteo", "500")  # unreachable at start: simulated rows, which have every city
    app = serve(env={**QUIET, "RTDASH_CITIES": f"Fresno,{HOSTILE}"})
    open_refresh_tab(page, app, cities=2)

    assert HOSTILE in column(page, "city")
    page.mouse.move(*page.evaluate(POINT_JS, HOSTILE))
    tooltip = page.locator(".bk-Tooltip *").filter(visible=True)
    wait_until(lambda: HOSTILE in tooltip.all_inner_texts(), 5, message="the hover to show the name")
    assert page.locator("img[src='x']").count() == 0
    assert dialogs == [] and page.console_errors == []


def test_a_hanging_refresh_blocks_no_session(serve, browser_page, browser, fake_api) -> None:
    page = browser_page
    app = serve(env={**QUIET, "RTDASH_TIMEOUT": "60s"})
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    other = context.new_page()
    try:
        open_refresh_tab(page, app)
        open_refresh_tab(other, app)
        palette = drawn(page)["palette"]
        fake_api.set_fault("open-meteo", "hang")
        asked = fake_api.count("open-meteo")

        page.get_by_role("button", name="Refresh").click()

        assert fake_api.wait_for_count("open-meteo", asked + 1)  # and the server does not answer it
        for session in (other, page):  # another session, and even the one waiting, still answer
            session.get_by_role("button", name="Humidity").click()
            wait_until(lambda s=session: drawn(s)["palette"] != palette, 60, message="the map to be recoloured")
        assert page.get_by_role("button", name="Refresh").is_disabled()  # the refresh is still under way
        fake_api.clear_fault()  # the hung request now fails: the rows stay, marked stale
        wait_until(lambda: page.get_by_text("Refresh failed").count(), 60, message="the failure to show")
        assert len(column(page, "city")) == CITIES and page.get_by_text("stale", exact=True).count()
    finally:
        context.close()
