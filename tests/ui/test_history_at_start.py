"""A fresh start in a real headless Chromium: the providers' recorded past is drawn at once, before the first live
poll's points could make a line, dashed and apart from the live points (chart data read from the page's Bokeh
document, never from pixels)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.helpers import wait_until
from tests.ui.test_live import open_dashboard, page_text

pytestmark = pytest.mark.ui

# Finite points per line of the figures that draw ``column``, by line name ("London", "London (provider history)"),
# and where each figure's rule between provider history and live points stands.
LINES_JS = """(column) => {
  const lines = {}, rules = [];
  for (const f of window.Bokeh.documents[0]._all_models.values()) {
    if (f.type !== 'Figure') continue;
    let draws = false;
    for (const r of f.renderers) {
      const data = r.data_source ? r.data_source.data : {};
      if (data[column] === undefined) continue;
      draws = true;
      lines[r.name] = Array.from(data[column]).filter(Number.isFinite).length;
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
