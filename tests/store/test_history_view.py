"""The History tab in-process, against both stores: ranges, messages, zoom refinement, export."""

from __future__ import annotations

import io
from datetime import datetime

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from rtdash.stream import Runtime
from rtdash.views.history import MIN_STEP, POINTS, SCREEN_POINTS, HistoryView, break_gaps
from tests.store.test_store import START, prices, same_rows

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def runtime(store_url, make_settings):
    """A runtime on each store that is not started: the test writes the history itself."""
    runtime = Runtime(make_settings(RTDASH_STORE=store_url, RTDASH_ASSETS="BTC,ETH", RTDASH_CITIES=f"Fresno,{HOSTILE}"))
    yield runtime
    runtime.stop()


def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


def plotted(view: HistoryView) -> pd.DataFrame:
    """What the browser would get: the columns of the rendered Bokeh data sources, one frame."""
    plot = hv.renderer("bokeh").get_plot(view._plot.object)
    frames = [
        pd.DataFrame({k: v for k, v in sub.handles["source"].data.items() if k in ("time", view.metric)})
        for sub in plot.subplots.values()
    ]
    return pd.concat(frames, ignore_index=True)


def test_the_selected_range_is_plotted(runtime):
    runtime.store.write("price", prices(3 * 24 * 60, start=now() - pd.Timedelta("3D"), every="1min"))
    view = HistoryView(runtime=runtime)
    assert view.span == "Last day" and view.asset == "BTC"
    assert view._plot.visible and not view._message.visible
    rows = runtime.store.count("price", *view._bounds, series=["BTC"])
    assert rows in (1439, 1440) and view._summary.object.startswith(f"{rows:,} rows")  # a day of minutes
    assert "every row" in view._summary.object
    shown = plotted(view)
    assert 0 < len(shown) <= SCREEN_POINTS
    assert shown["time"].min() >= (now() - pd.Timedelta("1D") - pd.Timedelta("1min")).tz_localize(None)

    view.span = "All"  # outside a server the view reloads at once
    assert view._summary.object.startswith(f"{3 * 24 * 60:,} rows")
    view.asset = "ETH"
    assert view._frame["asset"].eq("ETH").all()


def test_an_empty_range_says_so(runtime):
    runtime.store.write("price", prices(10, start=now() - pd.Timedelta("2h")))
    view = HistoryView(runtime=runtime)
    view.span = "Last hour"
    assert view._message.visible and not view._plot.visible
    assert "No price of BTC stored between" in view._message.object
    view.metric = "temperature"
    assert "No temperature of Fresno" in view._message.object


def test_a_custom_range(runtime):
    runtime.store.write("price", prices(600, start=START))
    view = HistoryView(runtime=runtime)
    view.span = "Custom"
    assert "Pick the start and the end" in view._message.object
    view.custom = (datetime(2024, 3, 1, 0, 3), datetime(2024, 3, 1, 0, 1))  # naive times are UTC; any order
    assert view._summary.object.startswith("120 rows from 2024-03-01 00:01 UTC to 2024-03-01 00:03 UTC")
    assert view.export("csv")[0] == "rtdash-price-20240301T000100-20240301T000300.csv"


def test_city_names_are_text_not_html(runtime):
    view = HistoryView(runtime=runtime, metric="temperature")
    assert HOSTILE in view.param.cities.objects
    view.cities = [HOSTILE]
    assert "&lt;img src=x onerror=alert(1)&gt;" in view._message.object
    assert "<img" not in view._message.object


def test_zooming_in_asks_the_store_for_finer_buckets(runtime):
    runtime.store.write("price", prices(86_400, assets=("BTC",), start=now() - pd.Timedelta("1D") + pd.Timedelta("1s")))
    view = HistoryView(runtime=runtime)
    coarse = view._step
    assert coarse == pd.Timedelta("1D") / POINTS  # 4.32 s buckets for 86,400 rows
    rows = runtime.store.count("price", *view._bounds, series=["BTC"])
    assert rows >= 86_398 and view._summary.object.startswith(f"{rows:,} rows")
    assert "means over 4.32 s" in view._summary.object
    plotted(view)  # a rendered plot: the zoom below reaches downsample1d and the view, as a browser's would
    end = now() - pd.Timedelta("2h")
    view._zoom.event(x_range=((end - pd.Timedelta("10min")).tz_localize(None), end.tz_localize(None)))
    assert view._fine is not None and view._fine[2] < coarse
    data = view._pipe.data
    inside = data[(data.time >= (end - pd.Timedelta("9min")).tz_localize(None)) & (data.time < end.tz_localize(None))]
    assert len(inside) >= 539 and inside["count"].eq(1).all()  # every stored row, not 4.32 s means
    assert data["time"].min() < (now() - pd.Timedelta("20h")).tz_localize(None)  # the rest is still there
    # zooming within what is loaded asks nothing more
    fine = view._fine
    view._zoom.event(x_range=((end - pd.Timedelta("5min")).tz_localize(None), end.tz_localize(None)))
    assert view._fine is fine


def test_gaps_break_the_lines():
    times = pd.date_range("2024-01-01", periods=6, freq="1min", tz="UTC").delete([3])  # 00:03 missing: no gap
    late = pd.date_range("2024-01-01 01:00", periods=3, freq="1min", tz="UTC")
    df = pd.DataFrame({"time": times.append(late), "asset": "BTC", "price": np.arange(8.0)})
    df = df.assign(min=df.price, max=df.price)
    out = break_gaps(df, "asset", ["price", "min", "max"], MIN_STEP)
    assert len(out) == len(df) + 1
    gap = out[out.price.isna()]
    assert gap["time"].iloc[0] == pd.Timestamp("2024-01-01 00:32:30", tz="UTC")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_gives_the_rows_of_the_store(runtime, fmt):
    runtime.store.write("price", prices(5000, start=now() - pd.Timedelta("2h")))
    view = HistoryView(runtime=runtime, span="All")
    name, data = view.export(fmt)
    assert name.startswith("rtdash-price-") and name.endswith(f".{fmt}")
    got = read_export(data, fmt)
    assert len(got) == 5000 and set(got["asset"]) == {"BTC"}
    same_rows(got, runtime.store.read("price", series=["BTC"]), "price")


def read_export(data: io.BytesIO, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        df = pd.read_csv(data)
        return df.assign(time=pd.to_datetime(df["time"], utc=True))
    return pd.read_parquet(data)


def test_history_off_says_so(make_settings):
    runtime = Runtime(make_settings(RTDASH_STORE="none"))
    try:
        view = HistoryView(runtime=runtime)
        assert "History is off" in view._message.object and view._message.visible
    finally:
        runtime.stop()
