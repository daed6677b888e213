"""The seed tutorial's pattern, as a baseline for the benchmarks: ``panel serve benchmarks/baselines/tutorial.py``.

Everything here runs once per browser session, because ``panel serve`` executes the script for each one:

- a streamz ``PeriodicDataFrame`` per source, created at module level, so every viewer starts its own pollers;
- blocking ``requests.get`` inside the streamz callback (they run on streamz's one shared IO-loop thread);
- hvPlot streaming plots straight off the streamz frames with ``backlog=1000``.

hvPlot 0.12.2 still accepts a streamz frame (``df.hvplot.line(backlog=...)`` builds a ``holoviews.streams.Buffer``
and sinks the stream into it), so this is the tutorial's own code path, not an imitation.  It draws the same charts
as rtdash's Live tab (the price, and temperature, humidity and wind speed by city), reads the same ``RTDASH_*``
variables (provider base URLs, intervals, backlog, timeout) and talks to the same providers (Coinbase, Open-Meteo).
Weather is one batched Open-Meteo request for all cities, as rtdash does; the tutorial's one request per city
would multiply its calls by the number of cities, and the baseline is not meant to lose by that.

Benchmark-only: ``BENCH_PREFILL=<rows>`` starts each chart with that many synthetic rows already in its buffer, so
bytes per update can be measured with a full backlog (rtdash's poller is seeded the same way by the benchmark).
"""

from __future__ import annotations

import os

import hvplot.streamz  # noqa: F401 - registers .hvplot on streamz frames
import numpy as np
import pandas as pd
import panel as pn
import requests
from streamz.dataframe import DataFrame, PeriodicDataFrame

CITIES = {  # the seed's seven cities, coordinates hard-coded as the tutorial did
    "San Francisco": (37.7749, -122.4194),
    "Los Angeles": (34.0522, -118.2437),
    "Santa Barbara": (34.4208, -119.6982),
    "Sacramento": (38.5816, -121.4944),
    "Fresno": (36.7378, -119.7871),
    "San Diego": (32.7157, -117.1611),
    "San Luis Obispo": (35.2828, -120.6596),
}


def _seconds(name: str, default: str) -> float:
    text = os.environ.get(name, default).strip()
    try:
        return float(text)
    except ValueError:
        return pd.Timedelta(text).total_seconds()


COINBASE = os.environ.get("RTDASH_COINBASE_URL", "https://api.coinbase.com").rstrip("/")
OPENMETEO = os.environ.get("RTDASH_OPENMETEO_URL", "https://api.open-meteo.com").rstrip("/")
PRICE_INTERVAL = _seconds("RTDASH_PRICE_INTERVAL", "5s")
WEATHER_INTERVAL = _seconds("RTDASH_WEATHER_INTERVAL", "120s")
TIMEOUT = _seconds("RTDASH_TIMEOUT", "10s")
BACKLOG = int(os.environ.get("RTDASH_BACKLOG", "1000"))
ASSET = (os.environ.get("RTDASH_ASSETS") or "BTC").split(",")[0].strip()
PREFILL = int(os.environ.get("BENCH_PREFILL", "0"))


def price_data(**kwargs) -> pd.DataFrame:
    body = requests.get(f"{COINBASE}/v2/prices/{ASSET}-USD/spot", timeout=TIMEOUT).json()
    return pd.DataFrame({ASSET: [float(body["data"]["amount"])]}, index=[pd.Timestamp.now()])


def weather_data(**kwargs) -> pd.DataFrame:
    lats, lons = zip(*CITIES.values(), strict=True)
    body = requests.get(
        f"{OPENMETEO}/v1/forecast",
        params={
            "latitude": ",".join(map(str, lats)),
            "longitude": ",".join(map(str, lons)),
            "current": "temperature_2m,relative_humidity_2m,wind_speed_10m",
            "wind_speed_unit": "ms",
        },
        timeout=TIMEOUT,
    ).json()
    places = body if isinstance(body, list) else [body]
    now = pd.Timestamp.now()
    return pd.DataFrame(
        {
            "temperature": [p["current"]["temperature_2m"] for p in places],
            "humidity": [p["current"]["relative_humidity_2m"] for p in places],
            "wind_speed": [p["current"]["wind_speed_10m"] for p in places],
        },
        index=pd.MultiIndex.from_product([[now], list(CITIES)], names=["time", "city"]),
    )


def wide(frame: DataFrame, column: str) -> DataFrame:
    """One column per city, as ``df.hvplot.line`` wants for one line per city."""

    def pick(df: pd.DataFrame) -> pd.DataFrame:
        return df[column].unstack("city")

    return DataFrame(frame.stream.map(pick), example=pick(frame.example))


price = PeriodicDataFrame(price_data, interval=pd.Timedelta(seconds=PRICE_INTERVAL))
weather = PeriodicDataFrame(weather_data, interval=pd.Timedelta(seconds=WEATHER_INTERVAL))

plot_opts = dict(backlog=BACKLOG, height=300, responsive=True, shared_axes=False)
price_plot = price.hvplot.line(y=ASSET, title=f"{ASSET} price (USD)", **plot_opts)
weather_frames = {column: wide(weather, column) for column in ("temperature", "humidity", "wind_speed")}
weather_plots = [
    frame.hvplot.line(title=f"{column.replace('_', ' ').capitalize()} by city", **plot_opts)
    for column, frame in weather_frames.items()
]

if PREFILL:  # benchmark-only: fill the buffers first (see the module's docstring)
    times = pd.date_range(end=pd.Timestamp.now(), periods=PREFILL, freq=pd.Timedelta(seconds=PRICE_INTERVAL))
    price.emit(pd.DataFrame({ASSET: 65000 + np.random.default_rng(0).normal(0, 50, PREFILL).cumsum()}, index=times))

pn.template.FastListTemplate(
    title="Real-time dashboard (tutorial pattern)",
    main=[pn.Column(price_plot, *weather_plots, sizing_mode="stretch_width")],
).servable()
