"""The History tab in-process, against both stores: ranges, messages, zoom refinement, export."""

from __future__ import annotations

import io
from datetime import datetime

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest

from rtdash import export
from rtdash.stream import Runtime
from rtdash.views import history
from rtdash.views.history import (
    MIN_STEP,
    POINTS,
    SCREEN_POINTS,
    HistoryView,
    break_gaps,
    nearest_series,
    separate_series,
)
from tests.helpers import PanelServer, wait_until
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


def test_a_deferred_view_reads_nothing_until_shown(runtime):
    """The app's History tab: no query for a session that never opens it, then the selection, kept up to date."""
    runtime.store.write("price", prices(60, start=now() - pd.Timedelta("2h"), every="1min"))
    view = HistoryView(runtime=runtime, deferred=True)
    view.span = "Last week"  # a shared link's range, set before the tab is shown
    assert view._frame is None and not view._plot.visible and view._summary.object == ""
    view.show()
    assert view._summary.object.startswith("60 rows") and view._plot.visible
    view.asset = "ETH"
    assert view._frame["asset"].eq("ETH").all()


def test_a_served_session_makes_the_tab_s_widgets_when_it_is_first_shown(runtime):
    """In a server, a session that never opens the History tab makes none of its widgets (less to build per
    session); in a notebook or script they are made at once (a component made after a notebook's output was shown
    would ask a CDN for its stylesheets)."""
    runtime.store.write("price", prices(60, start=now() - pd.Timedelta("2h"), every="1min"))
    views: list[HistoryView] = []
    server = PanelServer(lambda: views.append(HistoryView(runtime=runtime, deferred=True)) or views[-1])
    try:
        server.new_session()
        view = views[-1]
        assert server.on_loop(lambda: [type(o).__name__ for o in view._layout]) == []
        server.on_loop(view.show)
        widgets = server.on_loop(lambda: [type(w).__name__ for w in view._layout.select(pn.widgets.Widget)])
        assert {"RadioButtonGroup", "Select", "MultiSelect", "Checkbox", "Button"} <= set(widgets), widgets
        wait_until(lambda: server.on_loop(lambda: view._summary.object).startswith("60 rows"), 30)
    finally:
        server.stop()
    script = HistoryView(runtime=runtime, deferred=True)  # not in a session: made at once, nothing read
    assert script._layout.select(pn.widgets.Button) and script._frame is None


def test_an_empty_range_says_so(runtime):
    runtime.store.write("price", prices(10, start=now() - pd.Timedelta("2h")))
    view = HistoryView(runtime=runtime)
    view.span = "Last hour"
    assert view._message.visible and not view._plot.visible
    assert "No price of BTC stored between" in view._message.object
    view.metric = "temperature"
    assert "No temperature of Fresno" in view._message.object


def test_a_custom_range(runtime, tmp_path):
    runtime.store.write("price", prices(600, start=START))
    view = HistoryView(runtime=runtime)
    view.span = "Custom"
    assert "Pick the start and the end" in view._message.object
    view.custom = (datetime(2024, 3, 1, 0, 3), datetime(2024, 3, 1, 0, 1))  # naive times are UTC; any order
    assert view._summary.object.startswith("120 rows from 2024-03-01 00:01 UTC to 2024-03-01 00:03 UTC")
    path, rows = view.save("csv", tmp_path)
    assert path.name == "rtdash-price-20240301T000100-20240301T000300.csv" and rows == 120


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
    assert rows >= 86_000 and view._summary.object.startswith(f"{rows:,} rows")  # the seconds since the write left
    assert "means over 4.32 s" in view._summary.object
    plotted(view)  # a rendered plot: the zoom below reaches downsample1d and the view, as a browser's would
    end = now() - pd.Timedelta("2h")
    view._zoom.event(x_range=((end - pd.Timedelta("10min")).tz_localize(None), end.tz_localize(None)))
    assert view._fine is not None and view._fine[2] < coarse
    data = view._pipe.data
    inside = data[(data.time >= (end - pd.Timedelta("9min")).tz_localize(None)) & (data.time < end.tz_localize(None))]
    assert len(inside) >= 539 and inside["count"].eq(1).all()  # every stored row, not 4.32 s means
    assert data["time"].min() < (now() - pd.Timedelta("20h")).tz_localize(None)  # the rest is still there
    assert data["price"].notna().all()  # no break cuts the coarse line around the finer buckets
    assert abs(data["count"].sum() - rows) <= 10  # each row counted once (but in the buckets at the window's edges)
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
def test_export_gives_the_rows_of_the_store(runtime, fmt, tmp_path, monkeypatch):
    """Outside a server (a notebook, a script) Export writes the file into the working directory, chunk by chunk."""
    runtime.store.write("price", prices(5000, start=now() - pd.Timedelta("2h")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(export, "CHUNK_ROWS", 700)
    view = HistoryView(runtime=runtime, span="All")
    (view._csv if fmt == "csv" else view._parquet).clicks += 1
    (path,) = tmp_path.glob(f"rtdash-price-*.{fmt}")
    assert str(path) in view._export_note.object and "Exported 5,000 rows" in view._export_note.object
    got = read_export(io.BytesIO(path.read_bytes()), fmt)
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


# -- dense modes: many series, every point -----------------------------------------------------------------------------

CITIES = [f"City {i:03d}" for i in range(100)]


def many_cities(store, start: pd.Timestamp, n: int = 288, every: str = "5min") -> None:
    """``n`` rows of each of 100 simulated cities: city ``i``'s temperature waves around ``i`` (``i`` at ``start``),
    crossing its neighbours'."""
    times = pd.date_range(start, periods=n, freq=every, tz="UTC")
    wave = 0.8 * np.sin(np.arange(n) / 10)
    frames = [
        pd.DataFrame(
            {"time": times, "city": city, "lat": 0.0, "lon": 0.0, "temperature": i + (-1) ** i * wave, "source": "sim"}
        )
        for i, city in enumerate(CITIES)
    ]
    store.write("weather", pd.concat(frames, ignore_index=True))


def ms(t: pd.Timestamp) -> float:
    """A time as the "every point" chart's x: epoch milliseconds."""
    return t.value / 1e6


def rendered(view: HistoryView) -> dict:
    """The Bokeh data sources of the rendered chart, by glyph type: ``{"Image": [...], "Line": [...]}``."""
    plot = hv.renderer("bokeh").get_plot(view._plot.object)
    view._rendered = plot  # keeps the streams linked to this plot, as a page does
    subplots = list(plot.subplots.values()) if getattr(plot, "subplots", None) else [plot]
    out: dict[str, list] = {}
    for sub in subplots:
        out.setdefault(type(sub.handles["glyph"]).__name__, []).append(sub.handles["source"])
    return out


def test_many_series_are_a_datashaded_density_with_one_line_on_top(runtime):
    end = now()
    start = end - pd.Timedelta("1D") + pd.Timedelta("5min")
    many_cities(runtime.store, start)
    view = HistoryView(runtime=runtime, metric="temperature")
    view.cities = CITIES
    assert view._mode == "density" and view._highlight.visible
    assert "100 series as a line density" in view._summary.object
    assert view.highlight == "City 000"
    sources = rendered(view)
    image = np.asarray(sources["Image"][0].data["image"][0])
    assert np.nanmax(image) >= 2  # a pixel crossed by more than one series: a density, not one line
    assert len(sources["Line"]) == 1
    line = sources["Line"][0].data
    assert set(line["city"]) == {"City 000"} and len(line["time"]) == 288
    # a click near City 042's values highlights it, and says so
    view._tap.event(x=start.tz_localize(None), y=42.1)
    assert view.highlight == "City 042"
    assert "Nearest series to the click: City 042" in view._message.object
    assert set(sources["Line"][0].data["city"]) == {"City 042"}
    # zooming in re-aggregates, with finer buckets from the store
    before = view._pipe.data
    view._zoom.event(x_range=((end - pd.Timedelta("2h")).tz_localize(None), end.tz_localize(None)), y_range=None)
    assert view._fine is not None and view._pipe.data is not before
    assert pd.Timestamp(sources["Image"][0].data["x"][0]) >= (end - pd.Timedelta("2h1min")).tz_localize(None)
    for x, y in ((1e300, 1.0), (float("nan"), 2.0), (start.tz_localize(None), float("inf"))):  # hostile clicks
        view._tap.event(x=x, y=y)
        assert view.highlight == "City 042"
    view.cities = CITIES[:3]  # a few series are lines again
    assert view._mode == "lines" and not view._highlight.visible


def test_every_point_keeps_up_to_hold_rows_and_zooms_without_reading(runtime):
    start = now() - pd.Timedelta("10h")
    runtime.store.write("price", prices(36_000, assets=("BTC",), start=start))
    view = HistoryView(runtime=runtime, every_point=True)
    assert view._mode == "points" and len(view._frame) == 36_000
    held = view._frame
    for x0, x1 in [("1h", "2h"), ("1h10min", "1h20min"), ("0h", "10h"), ("5h", "6h")]:
        view._zoom.event(x_range=(ms(start + pd.Timedelta(x0)), ms(start + pd.Timedelta(x1))), y_range=None)
        assert view._frame is held and view._held == view._bounds  # every zoom re-aggregates the rows held


def test_every_point_rasterizes_the_raw_rows_and_reads_the_window_it_shows(runtime, monkeypatch):
    monkeypatch.setattr(history, "HOLD_ROWS", 0)  # as with more rows than a session keeps: it narrows to the view
    start = now() - pd.Timedelta("10h")
    rows = prices(36_000, assets=("BTC",), start=start)  # one row a second
    runtime.store.write("price", rows[18_000:])  # the later half first: stored out of time order
    runtime.store.write("price", rows[:18_000])
    view = HistoryView(runtime=runtime)
    assert view._mode == "lines"
    view.every_point = True
    assert view._mode == "points" and "every row, rasterized by datashader" in view._summary.object
    assert len(view._frame) == 36_000 and view._held == view._bounds
    assert view._frame["time"].is_monotonic_increasing  # held in time order, so that a view is a slice
    sources = rendered(view)
    image = sources["Image"][0]

    def counted() -> int:
        return int(np.nansum(np.asarray(image.data["image"][0])))

    assert counted() == 36_000  # every row counted once

    # zooming in: the rows held are re-aggregated, and only the rows in view are read again and held
    held = view._frame
    x0, x1 = start + pd.Timedelta("1h"), start + pd.Timedelta("2h")
    view._zoom.event(x_range=(ms(x0), ms(x1)), y_range=None)
    assert view._held == (x0, x1) and view._frame is not held
    assert len(view._frame) == runtime.store.count("price", x0, x1, ["BTC"]) == 3600
    assert 3590 <= counted() <= 3600
    # zooming in a little re-aggregates the rows held, without a read
    held = view._frame
    view._zoom.event(x_range=(ms(x0 + pd.Timedelta("10min")), ms(x1)), y_range=None)
    assert view._frame is held and 2990 <= counted() <= 3000
    # panning past the rows held reads the visible window
    x0, x1 = start + pd.Timedelta("1h30min"), start + pd.Timedelta("2h30min")
    view._zoom.event(x_range=(ms(x0), ms(x1)), y_range=None)
    assert view._held == (x0, x1) and len(view._frame) == 3600
    assert 3590 <= counted() <= 3600
    view.every_point = False
    assert view._mode == "lines"


def test_many_series_helpers():
    df = pd.DataFrame(
        {"time": pd.to_datetime([1, 2, 1, 2], unit="s", utc=True), "city": ["A", "A", "B", "B"], "v": [1.0, 2, 10, 20]}
    )
    joined = separate_series(df, "city", ["v"])
    assert list(joined["v"].isna()) == [False, False, True, False, False]
    assert list(joined["city"]) == ["A", "A", "B", "B", "B"]
    assert nearest_series(df, "city", "v", pd.Timestamp(1.9, unit="s", tz="UTC"), 15) == "B"
    assert nearest_series(df, "city", "v", pd.Timestamp(1.1, unit="s", tz="UTC"), 3) == "A"
    assert nearest_series(df.iloc[:0], "city", "v", pd.Timestamp(1, unit="s", tz="UTC"), 3) is None
