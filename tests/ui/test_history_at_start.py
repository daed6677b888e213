"""A fresh start in a real headless Chromium: the providers' recorded past is drawn at once, before the first live
poll's points could make a line, dashed and apart from the live points (chart data read from the page's Bokeh
document, never from pixels)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.helpers import wait_until
from tests.ui.test_live import open_dashboard, page_text

pytestmark = pytest.mark.ui

# Finite points per line of the figures that draw ``column``, by line name ("London"; "London (provider history)":
# the city's line among the provider-history lines' MultiLine), and where each figure's rule between provider
# history and live points stands.
LINES_JS = """(column) => {
  const lines = {}, rules = [];
  for (const f of window.Bokeh.documents[0]._all_models.values()) {
    if (f.type !== 'Figure') continue;
    let draws = false;
    for (const r of f.renderers) {
      const data = r.data_source ? r.data_source.data : {};
      if (data[column] !== undefined) {
        draws = true;
        lines[r.name] = Array.from(data[column]).filter(Number.isFinite).length;
      } else if (r.glyph && r.glyph.type === 'MultiLine' && r.tags.includes('past')) {
        data.name.forEach((name, i) => {
          lines[`${name} (provider history)`] = Array.from(data.ys[i]).filter(Number.isFinite).length;
        });
      }
    }
    if (draws) rules.push(...f.center.filter((a) => a.type === 'Span').map((a) => a.location));
  }
  return {lines, rules};
}"""


def test_a_fresh_start_with_a_120_s_weather_interval_shows_weather_lines_at_once(serve, fake_api, page):
    app = serve(
        env={
            "RTDASH_WEATHER_SOURCE": "open-meteo",
            "RTDASH_PRICE_SOURCE": "coinbase",
            "RTDASH_WEATHER_INTERVAL": "120s",
            "RTDASH_PRICE_INTERVAL": "120s",
            "RTDASH_CITIES": "London,Berlin",
        }
    )
    open_dashboard(page, app)

    def drawn():
        got = page.evaluate(LINES_JS, "temperature")
        past = [got["lines"].get(f"{city} (provider history)", 0) for city in ("London", "Berlin")]
        return all(n >= 20 for n in past) and got

    got = wait_until(drawn, 60, 0.3, "six hours of 15-minute weather per city, dashed")
    # One poll at start, the next one 120 s later: the lines are the provider's past, not live points.
    assert got["lines"]["London"] <= 1 and got["lines"]["Berlin"] <= 1
    assert got["rules"] and all(rule is not None for rule in got["rules"])
    prices = wait_until(
        lambda: (p := page.evaluate(LINES_JS, "price"))["lines"].get("BTC (provider history)", 0) >= 60 and p,
        60,
        0.3,
        "the last hour and more of one-minute candles",
    )
    assert prices["lines"]["BTC"] <= 1
    expect(page.get_by_text("the provider's recorded history").first).to_be_visible()
    assert fake_api.count("open-meteo-history") == 1 and fake_api.count("coinbase-history") == 2
    assert "Traceback" not in page_text(page)
    assert not page.console_errors


# Every time column of the History tab's charts (their sources have a "count" column: database buckets).
HISTORY_TIMES_JS = """() => {
  const out = [];
  for (const m of window.Bokeh.documents[0]._all_models.values()) {
    if (m.type !== 'ColumnDataSource' || m.data.count === undefined || m.data.price === undefined) continue;
    out.push(...Array.from(m.data.time).filter((t) => t === t));
  }
  return out;
}"""
# The times of the finite points of one series' provider-history line (one line of the price chart's MultiLine).
PAST_TIMES_JS = """(name) => {
  for (const f of window.Bokeh.documents[0]._all_models.values()) {
    const prices = f.type === 'Figure' && f.renderers.some((r) => r.data_source && r.data_source.data.price);
    if (!prices) continue;
    const r = f.renderers.find((r) => r.glyph && r.glyph.type === 'MultiLine' && r.tags.includes('past'));
    const d = r.data_source.data, i = d.name.indexOf(name);
    if (i < 0) return [];
    return Array.from(d.xs[i]).filter((t, j) => Number.isFinite(d.ys[i][j]));
  }
  return [];
}"""


@pytest.mark.slow
def test_a_server_stopped_for_40_minutes_has_the_hole_filled_in_store_history_and_live_charts(
    serve, fake_api, page, tmp_path
):
    import pandas as pd
    import requests

    from rtdash.store.duckdb import DuckDBStore

    path = tmp_path / "rtdash.duckdb"
    env = {"RTDASH_STORE": str(path), "RTDASH_PRICE_SOURCE": "coinbase", "RTDASH_WEATHER_SOURCE": "simulated"}
    # A window of 10,000 intervals of 500 ms (83 minutes) holds the hole.
    env.update({"RTDASH_PRICE_INTERVAL": "500ms", "RTDASH_BACKLOG": "10000", "RTDASH_TILES": "none"})
    first = serve(env={**env, "RTDASH_PAST": "none"}, serve_args=["--plugins", "rtdash.server"])
    assert requests.get(first.url + "/realtime_dashboard", timeout=60).status_code == 200
    health = first.url + "/health"
    wait_until(lambda: requests.get(health, timeout=10).json()["store"]["written"] >= 5, 60, 0.2, "live rows")
    first.stop()
    # As if it had stopped 40 minutes ago: its rows are moved back by that much.
    with DuckDBStore(path) as store:
        store._execute("UPDATE price SET time = time - INTERVAL 40 MINUTE")
        stopped = store.bounds("price")[1]
        assert set(store.read("price")["source"]) == {"coinbase"}

    second = serve(env=env, serve_args=["--plugins", "rtdash.server"])
    open_dashboard(page, second)
    hole = (stopped.value / 1e6, pd.Timestamp.now(tz="UTC").value / 1e6)

    def dashed_in_hole():
        times = page.evaluate(PAST_TIMES_JS, "BTC")
        return len([t for t in times if hole[0] < t <= hole[1]]) >= 38

    wait_until(dashed_in_hole, 60, 0.3, "the live chart to draw the hole from the provider's candles")
    page.get_by_text("History", exact=True).click()
    page.get_by_text("Last hour", exact=True).click()

    def history_in_hole():
        return len([t for t in page.evaluate(HISTORY_TIMES_JS) if hole[0] < t < hole[1] - 60_000]) >= 30

    wait_until(history_in_hole, 60, 0.3, "the History tab to show the filled hole")
    sources = requests.get(second.url + "/health", timeout=10).json()["sources"]
    assert sources["price"]["history"]["state"] == "ok" and 38 <= sources["price"]["filled"] <= 41
    second.stop()
    with DuckDBStore(path) as store:
        rows = store.read("price", stopped, None, ["BTC"])
    candles = rows[rows["source"] == "coinbase/1min"]
    assert 38 <= len(candles) <= 41 and candles["time"].min() - stopped <= pd.Timedelta(minutes=1)
    assert "Traceback" not in second.log_path.read_text(errors="replace")
