"""Simulated prices and weather: deterministic for a seed, no network, every row labelled ``simulated``."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from .base import SERIES, Source
from .cities import built_in

START_PRICES = {"BTC": 65000.0, "ETH": 3500.0, "SOL": 150.0, "DOGE": 0.15, "ADA": 0.45, "XRP": 0.55, "LTC": 80.0}


DAY = 86400.0
NOISE_CHUNK = 50_000  # noise values drawn per seeded block (absolute: block i always covers the same indices)
WALK_STEP = 0.0003  # a live price's own step (log) around the shared path, pulled back towards it each fetch
WALK_PULL = 0.9  # so it stays within ~0.07 % of the path (its spread is STEP / sqrt(1 - PULL**2))


def _stable(name: str) -> int:
    return zlib.crc32(name.encode())


def _noise(seed: int, name: str, index: np.ndarray, scale: float) -> np.ndarray:
    """Standard normal noise that depends only on (seed, name, absolute index): the same for every run."""
    out = np.empty(len(index))
    chunks = index // NOISE_CHUNK
    for chunk in np.unique(chunks):
        values = np.random.default_rng([seed, _stable(name), int(chunk) & 0x7FFFFFFF]).normal(0, scale, NOISE_CHUNK)
        mask = chunks == chunk
        out[mask] = values[index[mask] - chunk * NOISE_CHUNK]
    return out


def _waves(seed: int, name: str, seconds: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random-looking path: sines from 30 days down to 1 minute, amplitude growing like sqrt(period)."""
    rng = np.random.default_rng([seed, _stable(name), 7])
    periods = np.geomspace(30 * DAY, 60, 28)
    phases = rng.uniform(0, 2 * math.pi, len(periods))
    out = np.zeros(len(seconds))
    for period, phase in zip(periods, phases, strict=True):
        out += amplitude * math.sqrt(period / DAY) * np.sin(2 * math.pi * (seconds % period) / period + phase)
    return out


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
    """Prices on the same seeded path as the simulated history (so live polling continues where the history ends),
    each fetch with a small seeded step of its own around it: the n-th fetch at a given time gives the same prices
    for the same seed."""

    kind = "price"
    source_type = "simulated"
    label = "Simulated"

    def __init__(self, **params):
        params.setdefault("simulated", True)
        super().__init__(**params)
        self._rng = {asset: np.random.default_rng([self.settings.seed, _stable(asset)]) for asset in self.series}
        self._walk = dict.fromkeys(self.series, 0.0)

    def fetch_one(self, asset: str, now: pd.Timestamp | None = None) -> dict:
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        self._walk[asset] = WALK_PULL * self._walk[asset] + self._rng[asset].normal(0.0, WALK_STEP)
        path = _waves(self.settings.seed, asset, np.array([now.value / 1e9]), 0.01)[0]
        return {
            "time": now,
            "asset": asset,
            "quote": self.settings.quote,
            "price": round(START_PRICES.get(asset, 100.0) * math.exp(path + self._walk[asset]), 6),
        }

    def fetch(self, now: pd.Timestamp | None = None) -> pd.DataFrame:
        now = pd.Timestamp.now(tz="UTC") if now is None else now
        rows = [self.fetch_one(asset, now) for asset in self.series]
        return self.to_frame(rows, {})


class SimulatedWeather(SimulatedHistory, Source):
    """Weather with a daily cycle at each city's solar time and the seeded fronts of the simulated history, plus
    seeded noise."""

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
        fronts = _waves(self.settings.seed, city, np.array([now.value / 1e9]), 0.8)[0]  # as the history has
        celsius = base + 6 * cycle + fronts + self._rng.normal(0, 0.3)
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
