"""Shareable URLs: the link carries the tab, the History metric, asset, cities and range and the Refresh map's
metric; opening it shows the same view; a hostile or mistaken value is ignored with a visible notice."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import panel as pn
import pytest
from panel.io.location import Location
from playwright.sync_api import expect

from rtdash.stream import get_runtime
from rtdash.views.history import HistoryView
from rtdash.views.refresh import RefreshView
from rtdash.views.urlstate import UrlState
from tests.helpers import wait_until

HOSTILE = [
    "tab=<script>alert(1)</script>",
    "metric=__class__",
    "cities=Fresno,<img src=x onerror=alert(2)>",
    "range=" + "9" * 500,
    "from=not-a-time&to=2026-01-01",
    "asset=../../etc/passwd",
    "map=%00%ff",
]


@pytest.fixture
def view(make_settings, tmp_path):
    """The tabs and views of a dashboard, with a real Location standing in for the browser's address bar."""

    def make(search: str = "") -> UrlState:
        runtime = get_runtime(make_settings(RTDASH_STORE=str(tmp_path / "u.duckdb"), RTDASH_ASSETS="BTC,ETH"))
        history, refresh = HistoryView(runtime=runtime), RefreshView(runtime=runtime)
        tabs = pn.Tabs(("Live", pn.pane.Markdown("live")), ("Refresh", refresh), ("History", history))
        return UrlState(tabs, history=history, refresh=refresh, location=Location(search=search))

    return make


def query(state: UrlState) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(state.bar.search.lstrip("?")).items()}


def test_a_link_opens_its_view(view):
    state = view("?tab=history&metric=temperature&cities=fresno,Sacramento&range=7d&map=humidity&utm=x")
    assert state.problems == [] and not state.notice.visible
    assert state.tabs.active == 2
    assert (state.history.metric, state.history.cities, state.history.span) == (
        "temperature",
        ["Fresno", "Sacramento"],
        "Last week",
    )
    assert state.refresh.metric == "humidity"
    assert query(state) == {
        "tab": "history",
        "metric": "temperature",
        "cities": "Fresno,Sacramento",
        "range": "7d",
        "map": "humidity",
        "utm": "x",  # not ours: left alone
    }


def test_a_custom_range_and_an_asset(view):
    state = view("?tab=history&metric=price&assets=eth&from=2026-01-01T00:00&to=2026-01-02T12:00Z")
    assert state.problems == []
    assert (state.history.asset, state.history.span) == ("ETH", "Custom")
    assert state.history.custom == (pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02 12:00", tz="UTC"))
    assert query(state)["from"] == "2026-01-01T00:00:00+00:00" and query(state)["to"] == "2026-01-02T12:00:00+00:00"


def test_the_link_follows_the_view(view):
    state = view()
    assert query(state)["tab"] == "live"
    state.tabs.active = 1
    state.history.param.update(metric="wind_speed", cities=["Fresno"], span="Last hour")
    state.refresh.metric = "humidity"
    assert query(state) == {
        "tab": "refresh",
        "metric": "wind_speed",
        "cities": "Fresno",
        "range": "1h",
        "map": "humidity",
    }
    again = view(state.bar.search)  # the link reproduces the view
    assert again.query() == state.query() and again.problems == []


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_value_is_ignored_with_a_notice(view, hostile):
    before = view().query()
    state = view("?" + hostile)
    assert len(state.problems) == 1, state.problems
    assert state.notice.visible and "Ignored from the link" in state.notice.object
    assert "<script>" not in state.notice.object and "<img" not in state.notice.object
    assert len(state.notice.object) < 600
    kept = {k: v for k, v in state.query().items() if k not in ("cities",)}
    assert kept == {k: v for k, v in before.items() if k not in ("cities",)}
    if "cities" in hostile:
        assert state.history.cities == ["Fresno"]  # the valid part of the value is kept


def test_everything_hostile_at_once(view):
    state = view("?" + "&".join(HOSTILE))
    assert len(state.problems) == len(HOSTILE)
    assert state.tabs.active == 0


# -- in the browser ----------------------------------------------------------------------------------------------------


def tab(page, name: str):
    return page.locator(".bk-tab").filter(has_text=re.compile(f"^{name}$"))


def served(serve, tmp_path):
    # No map tiles: they cannot be reached here, and until they load Panel never hears that the page is ready, so
    # the changes a click makes on the server are not sent to it (panel.io.document._drain_unconnected_events).
    return serve(env={"RTDASH_STORE": str(tmp_path / "history.duckdb"), "RTDASH_TILES": "none"})


def address(page) -> str:
    """The address bar as the page sees it (``page.url`` does not follow ``history.replaceState``)."""
    return page.evaluate("() => window.location.href")


def url_query(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(address(page)).query).items()}


@pytest.mark.ui
@pytest.mark.slow
def test_the_url_round_trips_in_the_browser(serve, browser, page, tmp_path):
    app = served(serve, tmp_path)
    page.goto(app.url + "/realtime_dashboard?tab=history&metric=temperature&cities=Fresno,Sacramento&range=7d")
    expect(tab(page, "History")).to_have_class(re.compile("bk-active"), timeout=30_000)
    expect(page.get_by_role("button", name="Last week")).to_have_class(re.compile("bk-active"))
    wait_until(lambda: url_query(page).get("map") == "temperature", 30)  # the address bar shows the whole view
    assert url_query(page)["cities"] == "Fresno,Sacramento"

    page.get_by_role("button", name="Last hour").click()
    wait_until(lambda: url_query(page).get("range") == "1h", 30)
    tab(page, "Refresh").click()
    wait_until(lambda: url_query(page).get("tab") == "refresh", 30)
    link = address(page)

    other = browser.new_page()
    try:
        other.goto(link)
        expect(tab(other, "Refresh")).to_have_class(re.compile("bk-active"), timeout=30_000)
        tab(other, "History").click()
        expect(other.get_by_role("button", name="Last hour")).to_have_class(re.compile("bk-active"))
        wait_until(lambda: url_query(other) == {**url_query(page), "tab": "history"}, 30)
    finally:
        other.close()
    assert "Traceback" not in app.output()


@pytest.mark.ui
@pytest.mark.slow
def test_hostile_values_are_ignored_in_the_browser(serve, page, tmp_path):
    app = served(serve, tmp_path)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app.url + "/realtime_dashboard?" + "&".join(HOSTILE))
    notice = page.get_by_role("status").filter(has_text="Ignored from the link")
    expect(notice).to_be_visible(timeout=30_000)
    expect(notice).to_contain_text("tab='<script>alert(1)</script>'")  # shown as text, not run
    expect(tab(page, "Live")).to_have_class(re.compile("bk-active"))
    wait_until(lambda: "tab" in url_query(page), 30)
    assert url_query(page)["tab"] == "live" and "script" not in address(page)  # the address bar is cleaned
    assert dialogs == []
    assert "Traceback" not in app.output() and "Traceback" not in page.content()
