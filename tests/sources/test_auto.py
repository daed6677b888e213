"""``auto``: the keyed provider when its key is set, else the keyless one; simulated rows only until the first live
success, never after."""

from __future__ import annotations

import pytest

from rtdash.sources import (
    AutoSource,
    CoinbaseSource,
    CoinCapSource,
    OpenMeteoSource,
    OpenWeatherSource,
    SourceError,
    make_source,
)
from tests.fakeapi import FakeAPI
from tests.helpers import wait_until


def test_auto_picks_the_provider(fake_api: FakeAPI, make_settings) -> None:
    keyless = make_settings()
    keyed = make_settings(COINCAP_API_KEY=fake_api.coincap_key, OPENWEATHER_API_KEY=fake_api.openweather_key)
    assert isinstance(make_source("price", keyless).live, CoinbaseSource)
    assert isinstance(make_source("weather", keyless).live, OpenMeteoSource)
    assert isinstance(make_source("price", keyed).live, CoinCapSource)
    assert isinstance(make_source("weather", keyed).live, OpenWeatherSource)
    assert isinstance(make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase")), CoinbaseSource)


def test_live_from_the_start(fake_api: FakeAPI, make_settings) -> None:
    source = make_source("price", make_settings())
    assert isinstance(source, AutoSource)
    fake_api.prices["BTC"] = 65000.12
    df = source.fetch()
    assert (df["source"].tolist(), df["price"].tolist()) == (["coinbase"], [65000.12])
    assert (source.simulated, source.live_seen, source.provider) == (False, True, "Coinbase")


def test_simulated_only_until_live_data_has_been_seen(fake_api: FakeAPI, make_settings) -> None:
    source = make_source("price", make_settings(RTDASH_TIMEOUT="0.3s"))
    fake_api.set_fault("coinbase", "500")
    for _ in range(3):
        df = source.fetch()
        assert df["source"].tolist() == ["simulated"]
        assert source.simulated and source.provider == "Simulated"
        assert source.fallback_reason == "Coinbase: HTTP 500 Internal Server Error: Internal Server Error"
    assert fake_api.count("coinbase") == 3  # live is asked every time until it answers

    fake_api.clear_fault()
    fake_api.prices["BTC"] = 123.45
    df = source.fetch()
    assert (df["source"].tolist(), df["price"].tolist()) == (["coinbase"], [123.45])
    assert (source.simulated, source.fallback_reason, source.provider) == (False, None, "Coinbase")

    for fault in ("500", "hang", "html-200", "429"):
        fake_api.set_fault("coinbase", fault)
        with pytest.raises(SourceError, match=r"^Coinbase: "):  # stale, never fake
            source.fetch()
        assert not source.simulated


def test_weather_falls_back_too(fake_api: FakeAPI, make_settings) -> None:
    source = make_source("weather", make_settings(RTDASH_CITIES="Berlin,Paris", RTDASH_TIMEOUT="0.3s"))
    fake_api.set_fault("open-meteo", "hang")
    df = source.fetch()
    assert df["city"].tolist() == ["Berlin", "Paris"] and set(df["source"]) == {"simulated"}
    assert source.fallback_reason == "Open-Meteo: no answer within 0.3 s"


def test_retry_after_is_honoured_while_falling_back(fake_api: FakeAPI, make_settings) -> None:
    source = make_source("price", make_settings())
    fake_api.set_fault("coinbase", "429", retry_after=1)
    assert source.fetch()["source"].tolist() == ["simulated"]

    def fetched_live_again() -> bool:
        assert source.fetch()["source"].tolist() == ["simulated"]
        return fake_api.count("coinbase") >= 2

    wait_until(fetched_live_again, timeout=10, interval=0.05)
    first, second = fake_api.requests
    assert second.time - first.time >= 1.0, "live was asked again before Retry-After"
