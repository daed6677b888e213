"""Absurd values from a provider (issue 13, item 4): a row that is not finite, outside the physical range of its metric
or in a unit other than the one asked for is rejected with its reason in the source's status and a count in
``rtdash_rows_rejected_total``; it never reaches a subscriber (the charts, the store's writer).

Every answer is served by the FakeAPI, shaped like the real provider's but for the one absurd value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtdash import server
from rtdash.config import Settings
from rtdash.sources import make_source
from rtdash.stream import Poller
from tests.fakeapi import FakeAPI
from tests.helpers import wait_until

INTERVAL = 0.2


class Followed:
    """What the metrics sampler follows: a runtime's pollers (one here)."""

    def __init__(self, poller: Poller) -> None:
        self.pollers = {poller.kind: poller}


@pytest.fixture
def polled() -> Iterator[Callable[[Settings, str], tuple[Poller, list[pd.DataFrame]]]]:
    """``polled(settings, kind)``: a started poller whose metrics are followed, and the frames its subscriber got."""
    made: list[tuple[Poller, Followed]] = []

    def start(settings: Settings, kind: str) -> tuple[Poller, list[pd.DataFrame]]:
        poller = Poller(
            make_source(kind, settings),
            INTERVAL,
            backlog=settings.backlog,
            backoff_max=settings.backoff_max,
            secrets=settings.secrets,
        )
        frames: list[pd.DataFrame] = []
        poller.subscribe(frames.append, direct=True)  # as the store's writer subscribes
        followed = Followed(poller)
        server.sampler.watch(followed)
        made.append((poller, followed))
        return poller.start(), frames

    yield start
    for poller, _ in made:
        poller.stop()


def rejected(kind: str, provider: str, reason: str) -> float:
    """``rtdash_rows_rejected_total`` for these labels, as a scrape of ``/metrics`` shows it."""
    text = server.generate_latest().decode()
    labels = {"kind": kind, "provider": provider, "reason": reason}
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rtdash_rows_rejected_total" and sample.labels == labels
    )


def assert_rejected(poller: Poller, frames: list, provider: str, reason: str, before: float, message: str) -> None:
    """Every row of the fetch was rejected: the fetch failed with ``message``, counted, and nothing was delivered."""
    s = poller.status
    wait_until(lambda: s.failures >= 1, timeout=10, message=f"a failed fetch (status: {s.state}, {s.last_error})")
    assert (s.state, s.last_error) == ("error", message)
    assert "retrying in inf" not in (s.last_error or "")
    wait_until(lambda: rejected(poller.kind, provider, reason) >= before + 1, timeout=10, message="the counter")
    assert s.rejected.get(reason, 0) >= 1
    assert frames == [] and len(poller.history()) == 0 and s.rows == 0


# -- prices ------------------------------------------------------------------------------------------------------------


def spot(amount: object) -> dict:
    """A Coinbase spot price answer whose ``amount`` is ``amount`` (a string in the real API)."""
    return {"data": {"amount": amount, "base": "BTC", "currency": "USD"}}


@pytest.mark.parametrize(
    ("amount", "reason", "message"),
    [
        ("NaN", "not_finite", "Coinbase: rejected price nan (not a finite number)"),
        ("Infinity", "not_finite", "Coinbase: rejected price inf (not a finite number)"),
        ("-Infinity", "not_finite", "Coinbase: rejected price -inf (not a finite number)"),
        ("1e308", "out_of_range", "Coinbase: rejected price 1e+308 USD (outside 0…1e+12 USD)"),
        ("-5", "out_of_range", "Coinbase: rejected price -5 USD (not above 0)"),
        ("0", "out_of_range", "Coinbase: rejected price 0 USD (not above 0)"),
        (True, "not_a_number", "Coinbase: unexpected answer (amount True is not a number)"),
        (None, "not_a_number", "Coinbase: unexpected answer (amount None is not a number)"),
    ],
)
def test_an_absurd_coinbase_price_is_rejected(
    fake_api: FakeAPI, make_settings, polled, amount: object, reason: str, message: str
) -> None:
    before = rejected("price", "Coinbase", reason)
    fake_api.set_fault("coinbase", "http", status=200, body=spot(amount))
    poller, frames = polled(make_settings(RTDASH_PRICE_SOURCE="coinbase"), "price")
    assert_rejected(poller, frames, "Coinbase", reason, before, message)


def test_an_absurd_coincap_price_is_rejected(fake_api: FakeAPI, make_settings, polled) -> None:
    body = {
        "data": {
            "id": "bitcoin",
            "rank": "1",
            "symbol": "BTC",
            "name": "Bitcoin",
            "supply": "19800000",
            "maxSupply": "21000000",
            "marketCapUsd": "-99000000",
            "volumeUsd24Hr": "1980000",
            "priceUsd": "-5",
            "changePercent24Hr": "0.1",
            "vwap24Hr": "-5",
            "explorer": "https://blockchain.info/",
            "tokens": {},
        },
        "timestamp": 1763701200123,
    }
    before = rejected("price", "CoinCap", "out_of_range")
    fake_api.set_fault("coincap", "http", status=200, body=body)
    settings = make_settings(RTDASH_PRICE_SOURCE="coincap", COINCAP_API_KEY=fake_api.coincap_key)
    poller, frames = polled(settings, "price")
    assert_rejected(poller, frames, "CoinCap", "out_of_range", before, "CoinCap: rejected price -5 USD (not above 0)")


def test_one_absurd_price_among_good_ones_is_left_out_and_named(fake_api: FakeAPI, make_settings, polled) -> None:
    fake_api.prices["ETH"] = math.nan  # served as "NaN", like the real API's strings
    before = rejected("price", "Coinbase", "not_finite")
    poller, frames = polled(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_ASSETS="BTC,ETH"), "price")
    wait_until(lambda: frames, timeout=10, message="the first rows")
    s = poller.status
    assert s.state == "ok"
    assert s.detail == "ETH: Coinbase: rejected price nan (not a finite number)"
    delivered = pd.concat(frames, ignore_index=True)
    assert set(delivered["asset"]) == {"BTC"} and delivered["price"].notna().all()
    assert set(poller.history()["asset"]) == {"BTC"}
    wait_until(lambda: rejected("price", "Coinbase", "not_finite") >= before + 1, timeout=10, message="the counter")


# -- weather -----------------------------------------------------------------------------------------------------------


def forecast(
    temperature: object = 12.3,
    humidity: object = 81,
    wind: object = 3.4,
    units: tuple[str, str, str] = ("°C", "%", "m/s"),
) -> dict:
    """An Open-Meteo forecast answer for one place with these ``current`` values and ``current_units``."""
    return {
        "latitude": 52.52,
        "longitude": 13.419998,
        "generationtime_ms": 0.0311136245727539,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 38.0,
        "current_units": {
            "time": "iso8601",
            "interval": "seconds",
            "temperature_2m": units[0],
            "relative_humidity_2m": units[1],
            "wind_speed_10m": units[2],
        },
        "current": {
            "time": "2026-11-21T10:15",
            "interval": 900,
            "temperature_2m": temperature,
            "relative_humidity_2m": humidity,
            "wind_speed_10m": wind,
        },
    }


OM = "Open-Meteo: rejected"


@pytest.mark.parametrize(
    ("body", "units", "reason", "message"),
    [
        (forecast(temperature=-999), "metric", "out_of_range", f"{OM} temperature -999 °C (outside -90…60 °C)"),
        (forecast(temperature=61), "metric", "out_of_range", f"{OM} temperature 61 °C (outside -90…60 °C)"),
        (forecast(humidity=500), "metric", "out_of_range", f"{OM} humidity 500 % (outside 0…100 %)"),
        (forecast(humidity=-1), "metric", "out_of_range", f"{OM} humidity -1 % (outside 0…100 %)"),
        (forecast(wind=-3), "metric", "out_of_range", f"{OM} wind speed -3 m/s (outside 0…120 m/s)"),
        (forecast(wind="1e308"), "metric", "out_of_range", f"{OM} wind speed 1e+308 m/s (outside 0…120 m/s)"),
        (forecast(temperature="Infinity"), "metric", "not_finite", f"{OM} temperature inf (not a finite number)"),
        (forecast(None, None, None), "metric", "no_value", f"{OM} a row with no value"),
        (forecast(units=("K", "%", "m/s")), "metric", "unit", f"{OM} temperature in 'K' (asked for °C)"),
        (forecast(units=("°C", "g/kg", "m/s")), "metric", "unit", f"{OM} humidity in 'g/kg' (asked for %)"),
        (
            forecast(units=("°C", "%", "furlong/fortnight")),
            "metric",
            "unit",
            f"{OM} wind speed in 'furlong/fortnight' (asked for m/s)",
        ),
        (
            forecast(500, units=("°F", "%", "mp/h")),
            "imperial",
            "out_of_range",
            f"{OM} temperature 500 °F (outside -130…140 °F)",
        ),
    ],
)
def test_an_absurd_open_meteo_row_is_rejected(
    fake_api: FakeAPI, make_settings, polled, body: dict, units: str, reason: str, message: str
) -> None:
    before = rejected("weather", "Open-Meteo", reason)
    fake_api.set_fault("open-meteo", "http", status=200, body=body)
    settings = make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin", RTDASH_UNITS=units)
    poller, frames = polled(settings, "weather")
    assert_rejected(poller, frames, "Open-Meteo", reason, before, message)


def test_one_absurd_place_among_good_ones_is_left_out_and_named(fake_api: FakeAPI, make_settings, polled) -> None:
    fake_api.set_fault("open-meteo", "http", status=200, body=[forecast(), forecast(humidity=500)])
    before = rejected("weather", "Open-Meteo", "out_of_range")
    settings = make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin,Reykjavik")
    poller, frames = polled(settings, "weather")
    wait_until(lambda: frames, timeout=10, message="the first rows")
    s = poller.status
    assert s.state == "ok"
    assert s.detail == f"Reykjavik: {OM} humidity 500 % (outside 0…100 %)"
    delivered = pd.concat(frames, ignore_index=True)
    assert delivered["city"].tolist() == ["Berlin"] and delivered["humidity"].tolist() == [81.0]
    wait_until(lambda: rejected("weather", "Open-Meteo", "out_of_range") >= before + 1, timeout=10)


def test_an_absurd_openweather_row_is_rejected(fake_api: FakeAPI, make_settings, polled) -> None:
    body = {
        "coord": {"lon": 13.405, "lat": 52.52},
        "weather": [{"id": 803, "main": "Clouds", "description": "broken clouds", "icon": "04d"}],
        "base": "stations",
        "main": {
            "temp": -999,
            "feels_like": 4.92,
            "temp_min": 6.69,
            "temp_max": 8.92,
            "pressure": 1012,
            "humidity": 81,
        },
        "visibility": 10000,
        "wind": {"speed": 4.63, "deg": 250},
        "clouds": {"all": 75},
        "dt": 1763701200,
        "sys": {"type": 2, "id": 2011538, "country": "DE", "sunrise": 1763706000, "sunset": 1763736000},
        "timezone": 3600,
        "id": 2950159,
        "name": "Berlin",
        "cod": 200,
    }
    before = rejected("weather", "OpenWeather", "out_of_range")
    fake_api.set_fault("openweather", "http", status=200, body=body)
    settings = make_settings(
        RTDASH_WEATHER_SOURCE="openweather", RTDASH_CITIES="Berlin", OPENWEATHER_API_KEY=fake_api.openweather_key
    )
    poller, frames = polled(settings, "weather")
    message = "OpenWeather: rejected temperature -999 °C (outside -90…60 °C)"
    assert_rejected(poller, frames, "OpenWeather", "out_of_range", before, message)


def test_good_rows_pass_and_a_missing_value_is_a_gap(make_settings) -> None:
    """The checks take nothing away from real answers: a null among real values is kept as a gap."""
    from rtdash.sources.openmeteo import OpenMeteoSource

    source = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Berlin"))
    try:
        row = {"time": pd.Timestamp.now(tz="UTC"), "city": "Berlin", "lat": 52.5, "lon": 13.4}
        df = source.to_frame([row | {"temperature": -89.2, "humidity": None, "wind_speed": 0.0}], {})
    finally:
        source.close()
    assert len(df) == 1 and math.isnan(df["humidity"].iloc[0]) and df.attrs["rejected"] == {}
