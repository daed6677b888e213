"""Retry-After is a number from outside (issue 13, item 2): it is read into a bounded range, the wait it imposes is
capped by RTDASH_BACKOFF_MAX, the status says when the provider asked for more, and a poller fetches again once the
fault clears, whatever the header said."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest

from rtdash.config import Settings
from rtdash.sources import make_source
from rtdash.sources.http import retry_after
from rtdash.stream import Poller
from tests.fakeapi import FakeAPI
from tests.helpers import wait_until

INTERVAL = 0.2
TOO_LONG = {
    "400 digits": "9" * 400,
    "the year 9999": "Fri, 31 Dec 9999 23:59:59 GMT",
    "one year": "31536000",
    "ten seconds": "10",
}
UNREADABLE = {"negative": "-5", "garbage": "soon", "an exponent": "1e400", "a fraction of garbage": "3.x"}
RATE_LIMITED = "Coinbase: HTTP 429: Too many requests (rate_limit_exceeded)"


@pytest.fixture
def pollers() -> Iterator[Callable[[Settings], Poller]]:
    made: list[Poller] = []

    def make(settings: Settings) -> Poller:
        poller = Poller(
            make_source("price", settings),
            INTERVAL,
            backlog=settings.backlog,
            backoff_max=settings.backoff_max,
            secrets=settings.secrets,
        )
        made.append(poller)
        return poller.start()

    yield make
    for poller in made:
        poller.stop()


@pytest.mark.parametrize("header", [*TOO_LONG.values(), *UNREADABLE.values()], ids=[*TOO_LONG, *UNREADABLE])
def test_a_header_is_read_into_a_bounded_range(header: str) -> None:
    seconds = retry_after(header)
    if header in UNREADABLE.values():
        assert seconds is None
    else:
        assert math.isfinite(seconds) and 10 <= seconds <= 86400


@pytest.mark.parametrize("header", TOO_LONG.values(), ids=TOO_LONG)
def test_a_wait_longer_than_the_cap_is_capped_and_said(fake_api: FakeAPI, make_settings, pollers, header: str) -> None:
    fake_api.set_fault("coinbase", "429", retry_after=header)
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_BACKOFF_MAX="0.5s"))
    s = poller.status
    wait_until(lambda: s.failures >= 1, timeout=10, message="the 429")
    assert s.last_error == f"{RATE_LIMITED}; the provider asked to wait longer than the 500ms cap (RTDASH_BACKOFF_MAX)"
    assert "inf" not in s.last_error
    # The retry is scheduled within the cap (a computed time, not a measured one).
    assert (s.next_retry - s.last_error_time).total_seconds() <= 0.5 + 0.01
    fake_api.clear_fault()
    wait_until(lambda: s.state == "ok", timeout=10, message="a fetch after the fault cleared")
    assert fake_api.count("coinbase") >= 2


@pytest.mark.parametrize("header", UNREADABLE.values(), ids=UNREADABLE)
def test_an_unreadable_header_is_ignored_and_named(fake_api: FakeAPI, make_settings, pollers, header: str) -> None:
    fake_api.set_fault("coinbase", "429", retry_after=header)
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_BACKOFF_MAX="0.5s"))
    s = poller.status
    wait_until(lambda: s.failures >= 1, timeout=10, message="the 429")
    assert s.last_error == f"{RATE_LIMITED}; Retry-After {header!r} ignored (not seconds or an HTTP date)"
    fake_api.clear_fault()
    wait_until(lambda: s.state == "ok", timeout=10, message="a fetch after the fault cleared")


def test_auto_asks_live_again_within_the_cap(fake_api: FakeAPI, make_settings) -> None:
    """While ``auto`` shows simulated rows it honours Retry-After too, within the same cap."""
    source = make_source("price", make_settings(RTDASH_BACKOFF_MAX="0.5s"))
    try:
        fake_api.set_fault("coinbase", "429", retry_after=TOO_LONG["400 digits"])
        assert source.fetch()["source"].tolist() == ["simulated"]
        fake_api.clear_fault()
        wait_until(lambda: source.fetch()["source"].tolist() == ["coinbase"], timeout=10, message="live again")
    finally:
        source.close()
