"""Simulated prices and weather: deterministic for a seed, no network, every row labelled ``simulated``."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from .base import SERIES, Source
from .cities import built_in

START_PRICES = {"BTC": 65000.0, "ETH": 3500.0, "SOL": 150.0, "DOGE": 0.15, "ADA": 0.45, "XRP": 0.55, "LTC": 80.0}


def _stable(name: str) -> int:
    return zlib.crc32(name.encode())


class SimulatedHistory:
    """History for the simulated sources: the rows ``python -m rtdash backfill`` writes, a function of the time
    and the seed alone, so that the same range always answers the same rows."""

    resolution = 60.0
    page_span = 86400.0

    def history_page(self, start: pd.Timestamp, end: pd.Timestamp, names: list[str]) -> pd.DataFrame:
        from ..store.backfill import simulated_rows  # the store imports the sources

        step = int(self.resolution * 1e9)
        first, last = -(-start.value // step), (end.value - 1) // step
        index = np.arange(first, last + 1, dtype="int64")
        times = pd.DatetimeIndex((index * step).astype("datetime64[ns]"), tz="UTC")
        if not len(times):
            return self.past_frame([], start, end)
        rows = simulated_rows(self.kind, self.settings, times, index)
        rows = rows[rows[SERIES[self.kind]].isin(names)].drop(columns="source")
        return self.past_frame(rows.to_dict("records"), start, end)


class SimulatedPrice(SimulatedHistory, Source):
    """A geometric random walk per asset: the n-th fetch gives the same prices for the same seed."""

    kind = "price"
    source_type = "simulated"
    label = "Simulated"

    def __init__(self, **params):
        params.setdefault("simulated", True)
        super().__init__(**params)
        self._rng = {asset: np.random.default_rng([self.settings.seed, _stable(asset)]) for asset in self.series}
        self._price = {asset: START_PRICES.get(asset, 100.0) for asset in self.series}

    def fetch_one(self, asset: str) -> dict:
        self._price[asset] *= math.exp(self._rng[asset].normal(0.0, 0.0008))
        return {
            "time": pd.Timestamp.now(tz="UTC"),
            "asset": asset,
            "quote": self.settings.quote,
            "price": round(self._price[asset], 6),
        }

    def fetch(self) -> pd.DataFrame:
        rows = [self.fetch_one(asset) for asset in self.series]
        return self.to_frame(rows, {})


class SimulatedWeather(SimulatedHistory, Source):
    """Weather with a daily cycle at each city's solar time, plus seeded noise."""

    kind = "weather"
    source_type = "simulated"
    label = "Simulated"

    def __init__(self, **params):
        params.setdefault("simulated", True)
        super().__init__(**params)
        self._rng = np.random.default_rng(self.settings.seed)

    def weather_at(self, city: str, lat: float, lon: float, now: pd.Timestamp) -> dict:
        solar_hour = (now.hour + now.minute / 60 + lon / 15) % 24
        cycle = math.sin(2 * math.pi * (solar_hour - 9) / 24)  # warmest mid-afternoon
        base = 27 - 0.35 * abs(lat) + (_stable(city) % 5)
        celsius = base + 6 * cycle + self._rng.normal(0, 0.3)
        humidity = min(100.0, max(5.0, 60 - 20 * cycle + self._rng.normal(0, 2)))
        wind = max(0.0, 3 + 2 * math.cos(2 * math.pi * solar_hour / 24) + self._rng.normal(0, 0.5))
        imperial = self.settings.units == "imperial"
        return {
            "time": now,
            "city": city,
            "lat": lat,
            "lon": lon,
            "temperature": round(celsius * 1.8 + 32 if imperial else celsius, 2),
            "humidity": round(humidity, 1),
            "wind_speed": round(wind / 0.44704 if imperial else wind, 2),
        }

    def fetch(self) -> pd.DataFrame:
        now = pd.Timestamp.now(tz="UTC")
        rows = []
        for city in self.series:
            lat, lon = built_in(city) or _made_up_place(city)
            rows.append(self.weather_at(city, lat, lon, now))
        return self.to_frame(rows, {})


def _made_up_place(city: str) -> tuple[float, float]:
    """A stable position for a city the built-in table does not know (offline there is no geocoding)."""
    h = _stable(city)
    return (h % 12000) / 100 - 60, (h // 12000 % 36000) / 100 - 180
