"""Alerts in a real ``panel serve`` and Chromium: the level line on the live chart, a notification in every open page
when a rule fires and when it resolves, the Alerts list, /health, and the level and the firing on History's chart.

Chart models are read from the page's Bokeh document, never from pixels.
"""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import close_quietly, wait_until
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.ui

# The alert levels in the page's Bokeh document: every Span at ``level`` (the live chart's carries the rule's name in
# its tags; History's, drawn by HoloViews, does not).
SPANS_JS = """(level) => {
  const out = [];
  for (const m of window.Bokeh.documents[0]._all_models.values()) {
    if (m.type === 'Span' && m.location === level) out.push(m.tags.join('|'));
  }
  return out;
}"""
# The rules named by the firing marks on History's chart (a glyph renderer whose data has a rule column).
MARKS_JS = """() => {
  for (const m of window.Bokeh.documents[0]._all_models.values()) {
    if (m.type === 'ColumnDataSource' && m.data.rule !== undefined) return Array.from(m.data.rule);
  }
  return null;
}"""


def test_a_firing_is_notified_in_every_page_listed_drawn_and_stored(serve, fake_api, browser, tmp_path):
    fake_api.prices["BTC"] = 65000
    with WebhookReceiver() as hook:
        rules = tmp_path / "alerts.toml"
        rules.write_text(
            f'[[rule]]\nname = "BTC above 70k"\nasset = "BTC"\nabove = 70000\nhysteresis = 100\ncooldown = 0\n'
            f'webhook = "{hook.url}"\n'
            '[[rule]]\nname = "London hot"\ncity = "London"\nmetric = "temperature"\nabove = 45\n'
        )
        app = serve(
            env={
                "RTDASH_ALERTS": str(rules),
                "RTDASH_PRICE_SOURCE": "coinbase",
                "RTDASH_PRICE_INTERVAL": "500ms",
                "RTDASH_WEATHER_INTERVAL": "2s",
                "RTDASH_CITIES": "London,Berlin",
                "RTDASH_PAST": "none",
                "RTDASH_STORE": str(tmp_path / "history.duckdb"),
            }
        )
        pages = []
        for _ in range(2):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{app.url}/realtime_dashboard")
            expect(page.locator(".price-chart").first).to_be_visible(timeout=60_000)
            pages.append((context, page))
        try:
            first, second = pages[0][1], pages[1][1]
            expect(first.get_by_text("no rule firing (2 rules watched)")).to_be_visible(timeout=30_000)
            # Each rule's level on its chart (the weather charts join once the page is drawn).
            for level, line in ((70000, "alert|BTC above 70k"), (45, "alert|London hot")):
                wait_until(lambda level=level, line=line: first.evaluate(SPANS_JS, level) == [line], 30, message=line)

            fake_api.prices["BTC"] = 71000
            for page in (first, second):
                expect(
                    page.locator(".notyf__message", has_text="[FIRING] BTC above 70k: BTC price is 71,000.00")
                ).to_be_visible(timeout=30_000)
                expect(page.locator('.firing[data-rule="BTC above 70k"]')).to_be_visible()
            assert requests.get(f"{app.url}/health", timeout=10).json()["alerts"]["firing"] == ["BTC above 70k"]

            fake_api.prices["BTC"] = 65000
            for page in (first, second):
                expect(
                    page.locator(".notyf__message", has_text="[RESOLVED] BTC above 70k: BTC price is 65,000.00")
                ).to_be_visible(timeout=30_000)
                expect(page.get_by_text("no rule firing (2 rules watched)")).to_be_visible()
            wait_until(lambda: len(hook.received) >= 2, 30, message="the webhook's two POSTs")
            assert hook.states() == [("BTC above 70k", "firing"), ("BTC above 70k", "resolved")]
            assert requests.get(f"{app.url}/health", timeout=10).json()["alerts"]["firing"] == []

            # History: the level as a line, the firing as a mark (read back from the store).
            first.get_by_text("History", exact=True).click()
            wait_until(lambda: first.evaluate(MARKS_JS), 60, message="History's firing marks")
            assert first.evaluate(MARKS_JS) == ["BTC above 70k"]
            assert len(first.evaluate(SPANS_JS, 70000)) == 2  # the live chart's and History's
            for page in (first, second):
                text = page.content()
                assert "Traceback" not in text and hook.url not in text and "secret-token" not in text
        finally:
            for context, _ in pages:
                close_quietly(context)
