"""A real ``panel serve`` with five real sessions polls each source once per interval, not once per session, and the
sessions' subscriptions are gone once they close (``/health`` reports the subscribers of each source)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import requests
import panel.models.tabulator  # noqa: F401 - the client must know the models the app sends
from bokeh.client import ClientSession, pull_session

from tests.fakeapi import FakeAPI
from tests.helpers import ServedApp, wait_until

INTERVAL = 1.0
WINDOW = 5  # intervals counted


def health(app: ServedApp) -> dict:
    response = requests.get(f"{app.url}/health", timeout=5)
    response.raise_for_status()
    return response.json()


def subscribers(app: ServedApp) -> dict[str, int]:
    return {kind: source["subscribers"] for kind, source in health(app)["sources"].items()}


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
def sessions() -> Iterator[list[ClientSession]]:
    opened: list[ClientSession] = []
    yield opened
    for session in opened:
        with contextlib.suppress(Exception):
            session.close()


@pytest.mark.slow
def test_five_sessions_share_one_poll_per_interval_and_leave_nothing_behind(
    fake_api: FakeAPI, serve, sessions: list[ClientSession]
) -> None:
    app = serve(
        env={
            "RTDASH_PRICE_SOURCE": "coinbase",
            "RTDASH_WEATHER_SOURCE": "open-meteo",
            "RTDASH_CITIES": "Berlin,Tokyo",
            "RTDASH_PRICE_INTERVAL": f"{INTERVAL}s",
            "RTDASH_WEATHER_INTERVAL": f"{INTERVAL}s",
        },
        serve_args=["--plugins", "rtdash.server"],  # /health from startup
    )
    for _ in range(5):
        sessions.append(pull_session(url=f"{app.url}/realtime_dashboard"))
    wait_until(lambda: subscribers(app)["price"] >= 5, timeout=30, message="five sessions to subscribe")
    body = health(app)
    assert set(body["sources"]) == {"price", "weather"}, "more than one live stream in the server"
    per_session = body["sources"]["price"]["subscribers"] // 5
    assert body["sources"]["price"]["subscribers"] == 5 * per_session >= 5, body
    assert body["sources"]["weather"]["subscribers"] >= 5, body

    # Count at the fake API, once every session is open.
    opened = max(r.time for r in fake_api.requests)
    for provider in ("coinbase", "open-meteo"):
        count, times = polls_in_window(fake_api, provider, opened)
        assert WINDOW - 1 <= count <= WINDOW + 1, f"{provider}: {count} polls in {WINDOW} intervals: {times}"
    assert fake_api.count("geocoding") == 0

    # Sessions that close take their subscriptions with them.
    for session in sessions[:2]:
        session.close()
    wait_until(lambda: expect_subscribers(app, 3 * per_session), timeout=30, message="two sessions to go")
    for session in sessions[2:]:
        session.close()
    wait_until(lambda: expect_subscribers(app, 0, weather=0), timeout=30, message="every subscription gone")


def expect_subscribers(app: ServedApp, price: int, weather: int | None = None) -> bool:
    found = subscribers(app)
    assert found["price"] == price, f"price subscribers: {found}"
    assert weather is None or found["weather"] == weather, f"weather subscribers: {found}"
    return True
