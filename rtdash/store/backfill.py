"""``python -m rtdash backfill``: fill the store with simulated history, for demos and benchmarks.

Times are aligned to ``every`` (multiples of it since the epoch) and every value is a function of its time alone
(seeded), so a rerun produces the same rows and the store's key skips them: reruns add no duplicates, only the
times that are new since the last run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..config import Settings
from ..sources import SimulatedWeather
from ..sources.simulated import START_PRICES, _noise, _stable, _waves
from .base import Store

CHUNK = 50_000  # timestamps per generated and written batch (absolute: chunk i always covers the same times)
DAY = 86400.0


def aligned_times(days: float, every: pd.Timedelta, now: pd.Timestamp | None = None) -> pd.DatetimeIndex:
    """The multiples of ``every`` since the epoch in the last ``days`` days up to ``now``."""
    step = every.value
    end = (pd.Timestamp.now(tz="UTC") if now is None else now).value // step * step
    start = end - int(days * DAY * 1e9) // step * step
    return pd.DatetimeIndex(np.arange(start, end + 1, step, dtype="int64").astype("datetime64[ns]"), tz="UTC")


def simulated_rows(kind: str, settings: Settings, times: pd.DatetimeIndex, index: np.ndarray) -> pd.DataFrame:
    """Rows of ``kind`` for every series of ``settings`` at ``times`` (``index`` = time / every, for the noise)."""
    seconds = times.asi8 / 1e9
    frames = []
    if kind == "price":
        for asset in settings.assets:
            log_price = _waves(settings.seed, asset, seconds, 0.01) + _noise(settings.seed, asset, index, 0.0002)
            price = START_PRICES.get(asset, 100.0) * np.exp(log_price)
            frames.append(pd.DataFrame({"time": times, "asset": asset, "quote": settings.quote, "price": price}))
    else:
        places = SimulatedWeather(settings=settings).fetch().set_index("city")[["lat", "lon"]]
        hours = (seconds % DAY) / 3600
        for city in settings.cities:
            lat, lon = places.loc[city]
            solar = (hours + lon / 15) % 24
            cycle = np.sin(2 * np.pi * (solar - 9) / 24)
            celsius = 27 - 0.35 * abs(lat) + _stable(city) % 5 + 6 * cycle  # as SimulatedWeather, plus fronts
            celsius = celsius + _waves(settings.seed, city, seconds, 0.8) + _noise(settings.seed, city, index, 0.1)
            humidity = np.clip(60 - 20 * cycle + _noise(settings.seed, city + "/h", index, 0.4), 5, 100)
            wind = np.maximum(
                0, 3 + 2 * np.cos(2 * np.pi * solar / 24) + _noise(settings.seed, city + "/w", index, 0.1)
            )
            if settings.units == "imperial":
                celsius, wind = celsius * 1.8 + 32, wind / 0.44704
            frames.append(
                pd.DataFrame(
                    {
                        "time": times,
                        "city": city,
                        "lat": lat,
                        "lon": lon,
                        "temperature": np.round(celsius, 2),
                        "humidity": np.round(humidity, 1),
                        "wind_speed": np.round(wind, 2),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True).assign(source="simulated")


def backfill(
    store: Store,
    settings: Settings,
    *,
    days: float,
    every: pd.Timedelta,
    kinds: tuple[str, ...] = ("price", "weather"),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[int, int]]:
    """Write ``days`` of simulated rows every ``every`` for ``kinds``; per kind (rows generated, rows new)."""
    times = aligned_times(days, every)
    index = times.asi8 // every.value
    per_kind = {kind: len(settings.assets if kind == "price" else settings.cities) for kind in kinds}
    total = sum(n * len(times) for n in per_kind.values())
    done, result = 0, {}
    for kind in kinds:
        rows = inserted = 0
        for lo in range(0, len(times), CHUNK):
            chunk = slice(lo, lo + CHUNK)
            df = simulated_rows(kind, settings, times[chunk], index[chunk])
            inserted += store.write(kind, df)
            rows += len(df)
            done += len(df)
            if progress:
                progress(done, total)
        result[kind] = (rows, inserted)
    return result


class ProgressBar:
    """``[#######-------]  52%  1,234,567/2,345,678 rows  310,000 rows/s  ETA 4 s`` on stderr, redrawn in place."""

    def __init__(self, stream=None, width: int = 30, unit: str = "rows"):
        self.stream, self.width, self.unit = stream or sys.stderr, width, unit
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < 0.2:
            return
        self._drawn = now
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        rate = done / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate else 0
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if done >= total else ""
        unit = self.unit
        self.stream.write(
            f"\r[{bar}] {fraction:4.0%}  {done:,}/{total:,} {unit}  {rate:,.0f} {unit}/s  ETA {eta:.0f} s  {end}"
        )
        self.stream.flush()
