"""The seed BTC tracker's pattern in Dash, as a baseline for the benchmarks.

    python benchmarks/baselines/dash_app.py --port 8050        # needs `pip install rtdash[bench]`

Every browser tab runs its own ``dcc.Interval``; each tick its callback fetches from the provider (blocking
``requests``, in the server's request thread), appends the reading to a ``dcc.Store`` of the last readings (which
the browser sends up with the request and gets back with the answer) and returns the whole figure.  It draws the
same charts as rtdash's Live tab (the price, and temperature, humidity and wind speed by city), reads the same
``RTDASH_*`` variables and talks to the same providers (Coinbase, Open-Meteo, one batched request for all cities).
It runs Dash's own server (Flask, threaded) with debug off, as the tracker's ``app.run()`` did minus the debugger.

Benchmark-only: ``BENCH_PREFILL=<rows>`` starts the price store with that many synthetic readings, so bytes per
update can be measured with a full backlog.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import requests
from dash import Dash, Input, Output, State, dcc, html

CITIES = {
    "San Francisco": (37.7749, -122.4194),
    "Los Angeles": (34.0522, -118.2437),
    "Santa Barbara": (34.4208, -119.6982),
    "Sacramento": (38.5816, -121.4944),
    "Fresno": (36.7378, -119.7871),
    "San Diego": (32.7157, -117.1611),
    "San Luis Obispo": (35.2828, -120.6596),
}
WEATHER = {"temperature": "temperature_2m", "humidity": "relative_humidity_2m", "wind_speed": "wind_speed_10m"}


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


def prefilled() -> dict[str, list]:
    if not PREFILL:
        return {"time": [], "price": []}
    times = pd.date_range(end=pd.Timestamp.now(), periods=PREFILL, freq=pd.Timedelta(seconds=PRICE_INTERVAL))
    prices = 65000 + np.random.default_rng(0).normal(0, 50, PREFILL).cumsum()
    return {"time": [t.isoformat() for t in times], "price": [round(float(p), 2) for p in prices]}


def figure(title: str, x: list, series: dict[str, list]) -> go.Figure:
    fig = go.Figure([go.Scatter(x=x, y=y, mode="lines", name=name) for name, y in series.items()])
    fig.update_layout(title=title, height=300, margin=dict(l=40, r=20, t=40, b=30), uirevision="keep")
    return fig


app = Dash(__name__, title="Real-time dashboard (Dash pattern)")
app.layout = html.Div(
    [
        html.H2("Real-time dashboard (Dash pattern)"),
        dcc.Interval(id="price-tick", interval=int(PRICE_INTERVAL * 1000)),
        dcc.Interval(id="weather-tick", interval=int(WEATHER_INTERVAL * 1000)),
        dcc.Store(id="price-store", data=prefilled()),
        dcc.Store(id="weather-store", data={"time": [], **{c: {city: [] for city in CITIES} for c in WEATHER}}),
        dcc.Graph(id="price-graph"),
        *(dcc.Graph(id=f"{column}-graph") for column in WEATHER),
    ]
)


@app.callback(
    Output("price-graph", "figure"),
    Output("price-store", "data"),
    Input("price-tick", "n_intervals"),
    State("price-store", "data"),
)
def update_price(_n: int | None, store: dict[str, list]) -> tuple[go.Figure, dict[str, list]]:
    body = requests.get(f"{COINBASE}/v2/prices/{ASSET}-USD/spot", timeout=TIMEOUT).json()
    store["time"] = ([*store["time"], pd.Timestamp.now().isoformat()])[-BACKLOG:]
    store["price"] = ([*store["price"], float(body["data"]["amount"])])[-BACKLOG:]
    return figure(f"{ASSET} price (USD)", store["time"], {ASSET: store["price"]}), store


@app.callback(
    *(Output(f"{column}-graph", "figure") for column in WEATHER),
    Output("weather-store", "data"),
    Input("weather-tick", "n_intervals"),
    State("weather-store", "data"),
)
def update_weather(_n: int | None, store: dict[str, Any]) -> tuple:
    lats, lons = zip(*CITIES.values(), strict=True)
    body = requests.get(
        f"{OPENMETEO}/v1/forecast",
        params={
            "latitude": ",".join(map(str, lats)),
            "longitude": ",".join(map(str, lons)),
            "current": ",".join(WEATHER.values()),
            "wind_speed_unit": "ms",
        },
        timeout=TIMEOUT,
    ).json()
    places = body if isinstance(body, list) else [body]
    store["time"] = [*store["time"], pd.Timestamp.now().isoformat()][-BACKLOG:]
    for column, variable in WEATHER.items():
        for city, place in zip(CITIES, places, strict=True):
            store[column][city] = [*store[column][city], place["current"][variable]][-BACKLOG:]
    titles = {"temperature": "Temperature by city", "humidity": "Humidity by city", "wind_speed": "Wind speed by city"}
    figures = [figure(titles[column], store["time"], store[column]) for column in WEATHER]
    return (*figures, store)


def main() -> None:
    parser = argparse.ArgumentParser(description="The Dash baseline of the rtdash benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    args = parser.parse_args()
    app.run(host=args.host, port=args.port, debug=False)


if __name__ == "__main__":
    main()
