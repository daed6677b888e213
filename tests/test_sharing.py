"""A real ``panel serve`` with five real browser sessions polls each source once per interval, not once per
session, and the sessions' subscriptions are gone once they close (``/health`` reports each source's subscribers).

Real pages rather than ``bokeh.client.pull_session``: a Python client never reports its document ready, and Panel
keeps such a session busy (so never idle enough to expire), which is not what a closed browser tab does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, expect

from tests.fakeapi import FakeAPI
from tests.helpers import ServedApp, wait_until

pytestmark = [pytest.mark.ui, pytest.mark.slow]

INTERVAL = 1.0
WINDOW = 5  # intervals counted
SESSIONS = 5


def health(app: ServedApp) -> dict:
    response = requests.get(f"{app.url}/health", timeout=5)
    response.raise_for_status()
    return response.json()


def subscribers(app: ServedApp) -> dict[str, int]:
    return {kind: source["subscribers"] for kind, source in health(app)["sources"].items()}


def expect_subscribers(app: ServedApp, price: int, weather: int | None = None) -> bool:
    found = subscribers(app)
    assert found["price"] == price, f"price subscribers: {found}"
    assert weather is None or found["weather"] == weather, f"weather subscribers: {found}"
    return True


def polls_in_window(api: FakeAPI, provider: str, after: float) -> tuple[int, list[float]]:
    """Requests ``provider`` received in ``WINDOW`` intervals from its second poll after ``after`` (server times),
    and the times of them all, for the failure message."""

    def times() -> list[float]:
        return [r.time for r in api.requests if r.provider == provider and r.time > after]

    start = wait_until(lambda: len(times()) >= 2 and times()[1], timeout=15, message=f"{provider} to be polled")
    end = start + WINDOW * INTERVAL
    wait_until(lambda: times()[-1] >= end, timeout=WINDOW * INTERVAL + 15, message=f"{provider} polls past the window")
    return sum(1 for t in times() if start <= t < end), [round(t - start, 2) for t in times()]


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in range(SESSIONS)]
    yield made
    for context in made:
        context.close()


def test_five_sessions_share_one_poll_per_interval_and_leave_nothing_behind(
    fake_api: FakeAPI, serve, contexts: list[BrowserContext]
) -> None:
    app = serve(
        env={
            "RTDASH_PRICE_SOURCE": "coinbase",
            "RTDASH_WEATHER_SOURCE": "open-meteo",
            "RTDASH_CITIES": "Berlin,Tokyo",
            "RTDASH_PRICE_INTERVAL": f"{INTERVAL:g}s",
            "RTDASH_WEATHER_INTERVAL": f"{INTERVAL:g}s",
        },
        serve_args=["--plugins", "rtdash.server"],  # /health from startup
    )
    pages = [context.new_page() for context in contexts]
    for page in pages:
        page.goto(f"{app.url}/realtime_dashboard")
    for page in pages:
        expect(page.locator(".bk-tab", has_text="Live")).to_be_visible(timeout=60_000)
    wait_until(lambda: subscribers(app)["price"] >= SESSIONS, timeout=60, message="five sessions to subscribe")
    body = health(app)
    assert set(body["sources"]) == {"price", "weather"}, f"more than one live stream in the server: {body}"
    per_session = body["sources"]["price"]["subscribers"] // SESSIONS
    assert body["sources"]["price"]["subscribers"] == SESSIONS * per_session >= SESSIONS, body
    assert body["sources"]["weather"]["subscribers"] >= SESSIONS, body

    # Count at the fake API, once every session is open: one poll per interval whatever the number of viewers.
    opened = max(r.time for r in fake_api.requests)
    for provider in ("coinbase", "open-meteo"):
        count, times = polls_in_window(fake_api, provider, opened)
        assert WINDOW - 1 <= count <= WINDOW + 1, f"{provider}: {count} polls in {WINDOW} intervals: {times}"
    assert fake_api.count("geocoding") == 0

    # Sessions that close take their subscriptions with them.
    for context in contexts[:2]:
        context.close()
    wait_until(lambda: expect_subscribers(app, 3 * per_session), timeout=60, message="two sessions to go")
    for context in contexts[2:]:
        context.close()
    wait_until(lambda: expect_subscribers(app, 0, weather=0), timeout=60, message="every subscription gone")
