"""Simulated prices and weather: deterministic for a seed, no network, every row labelled ``simulated``."""

from __future__ import annotations

import pandas as pd
import pytest

from rtdash.config import Settings
from rtdash.sources import PRICE_COLUMNS, WEATHER_COLUMNS, SimulatedPrice, SimulatedWeather, make_source
from rtdash.sources.cities import built_in
from tests.fakeapi import closed_port_url

NOON_UTC = pd.Timestamp("2026-06-21T12:00", tz="UTC")


def settings(**env: str) -> Settings:
    """Settings whose every URL refuses connections: a simulated source must not need any."""
    url = closed_port_url()
    urls = ["COINBASE", "COINCAP", "OPENMETEO", "OPENMETEO_GEOCODING", "OPENWEATHER"]
    return Settings.load(environ={f"RTDASH_{name}_URL": url for name in urls} | env, dotenv=None)


def prices(source: SimulatedPrice, n: int) -> list[list[float]]:
    return [source.fetch(NOON_UTC + pd.Timedelta(seconds=i))["price"].tolist() for i in range(n)]


def test_prices_are_deterministic_for_a_seed() -> None:
    env = {"RTDASH_ASSETS": "BTC,ETH,NEWCOIN", "RTDASH_SEED": "42"}
    first = prices(SimulatedPrice(settings=settings(**env)), 5)
    assert prices(SimulatedPrice(settings=settings(**env)), 5) == first
    assert prices(SimulatedPrice(settings=settings(**env | {"RTDASH_SEED": "43"})), 5) != first
    assert len({tuple(p) for p in first}) == 5  # it moves


def test_each_asset_walks_on_its_own() -> None:
    alone = prices(SimulatedPrice(settings=settings(RTDASH_ASSETS="ETH", RTDASH_SEED="1")), 3)
    with_others = prices(SimulatedPrice(settings=settings(RTDASH_ASSETS="BTC,ETH", RTDASH_SEED="1")), 3)
    assert [p[1] for p in with_others] == [p[0] for p in alone]


def test_price_rows() -> None:
    source = make_source(
        "price", settings(RTDASH_PRICE_SOURCE="simulated", RTDASH_ASSETS="BTC,ETH", RTDASH_QUOTE="EUR")
    )
    assert isinstance(source, SimulatedPrice) and source.simulated
    df = source.fetch()
    assert list(df.columns) == PRICE_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df[["asset", "quote", "source"]].values.tolist() == [
        ["BTC", "EUR", "simulated"],
        ["ETH", "EUR", "simulated"],
    ]
    assert df["price"].between(0.5 * 65000, 2 * 65000).iloc[0]


def test_weather_is_deterministic_for_a_seed() -> None:
    def run(seed: str) -> list[dict]:
        source = SimulatedWeather(settings=settings(RTDASH_SEED=seed))
        return [source.weather_at("Berlin", 52.52, 13.4, NOON_UTC + pd.Timedelta(minutes=i)) for i in range(5)]

    assert run("7") == run("7")
    assert run("7") != run("8")


def test_weather_follows_a_daily_cycle_at_each_citys_solar_time() -> None:
    source = SimulatedWeather(settings=settings())
    # Greenwich at 15:00 and 03:00 UTC; Tokyo (lon 139.65) is ~9.3 h ahead of it.
    afternoon = source.weather_at("London", 51.5, 0.0, pd.Timestamp("2026-06-21T15:00", tz="UTC"))
    night = source.weather_at("London", 51.5, 0.0, pd.Timestamp("2026-06-21T03:00", tz="UTC"))
    assert afternoon["temperature"] > night["temperature"] + 5
    tokyo = source.weather_at("Tokyo", 35.68, 139.65, pd.Timestamp("2026-06-21T06:00", tz="UTC"))  # 15:18 solar
    assert tokyo["temperature"] > source.weather_at("Tokyo", 35.68, 139.65, NOON_UTC)["temperature"]


def test_weather_rows_in_each_unit() -> None:
    cities = "Berlin,Nowhere Town"
    metric = SimulatedWeather(settings=settings(RTDASH_CITIES=cities, RTDASH_SEED="3"))
    imperial = SimulatedWeather(settings=settings(RTDASH_CITIES=cities, RTDASH_SEED="3", RTDASH_UNITS="imperial"))
    m = metric.weather_at("Berlin", 52.52, 13.4, NOON_UTC)
    i = imperial.weather_at("Berlin", 52.52, 13.4, NOON_UTC)
    assert i["temperature"] == pytest.approx(m["temperature"] * 1.8 + 32, abs=0.02)
    assert i["wind_speed"] == pytest.approx(m["wind_speed"] / 0.44704, abs=0.05)
    df = metric.fetch()
    assert list(df.columns) == WEATHER_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["city"].tolist() == ["Berlin", "Nowhere Town"] and set(df["source"]) == {"simulated"}
    assert (df["lat"].iloc[0], df["lon"].iloc[0]) == built_in("Berlin")
    # A city the table does not know still gets a stable place (offline there is no geocoding).
    again = SimulatedWeather(settings=settings(RTDASH_CITIES=cities)).fetch()
    assert (again["lat"].iloc[1], again["lon"].iloc[1]) == (df["lat"].iloc[1], df["lon"].iloc[1])
    assert -90 <= df["lat"].iloc[1] <= 90 and -180 <= df["lon"].iloc[1] <= 180
    assert df["humidity"].between(5, 100).all() and (df["wind_speed"] >= 0).all()


def test_live_simulation_continues_where_its_history_ends() -> None:
    """The live walk and the weather follow the history's seeded path: no jump where the history ends."""
    env = {"RTDASH_ASSETS": "BTC,NEWCOIN", "RTDASH_CITIES": "Berlin,Lagos", "RTDASH_SEED": "5"}
    for seed_now in (NOON_UTC, NOON_UTC + pd.Timedelta(days=3, hours=7)):
        price = SimulatedPrice(settings=settings(**env))
        past = price.history_page(seed_now - pd.Timedelta(minutes=5), seed_now, price.series)
        live = price.fetch(seed_now)
        for asset in price.series:
            last = past.loc[past["asset"] == asset, "price"].iloc[-1]
            now_price = live.loc[live["asset"] == asset, "price"].iloc[0]
            assert abs(now_price / last - 1) < 0.005, (asset, last, now_price)
        weather = SimulatedWeather(settings=settings(**env))
        past = weather.history_page(seed_now - pd.Timedelta(minutes=5), seed_now, weather.series)
        for city, lat, lon in (("Berlin", 52.52, 13.41), ("Lagos", 6.45, 3.39)):
            last = past.loc[past["city"] == city, "temperature"].iloc[-1]
            assert abs(weather.weather_at(city, lat, lon, seed_now)["temperature"] - last) < 2.0, city
