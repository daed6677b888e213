"""The History tab's dense modes in a real ``panel serve`` and Chromium: 100 series become a datashader raster with
the highlighted series drawn as a line on top, and "every point" rasterizes 10 million stored rows and re-aggregates
them on zoom.  What is drawn is read from the page's Bokeh document, not from pixels.
"""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from rtdash.store.duckdb import DuckDBStore
from tests.helpers import wait_until

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CITIES = [f"City {i:03d}" for i in range(100)]
RAW_ROWS = 10_000_000
SERVE_ENV = {"RTDASH_TILES": "none", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_WEATHER_INTERVAL": "1h"}

# The History figure: its x range, its image (datashader's raster: position, width, filled pixels, total count)
# and its lines (rows and the distinct values of a column).
HISTORY_JS = """(column) => {
  for (const doc of Bokeh.documents) {
    for (const f of doc.all_models) {
      if (f.type !== 'Figure') continue;
      const images = f.renderers.filter((r) => r.glyph && r.glyph.type === 'Image');
      if (!images.length) continue;
      const data = images[0].data_source.data;
      const get = (d, k) => (d instanceof Map ? d.get(k) : d[k]);
      const image = get(data, 'image')[0];
      let filled = 0, total = 0;
      for (const v of image) { if (Number.isFinite(v) && v > 0) { filled++; total += v; } }
      const lines = f.renderers.filter((r) => r.glyph && r.glyph.type === 'Line').map((r) => {
        const d = r.data_source.data;
        const values = get(d, column);
        return {rows: get(d, 'time').length, values: values ? [...new Set(Array.from(values))] : []};
      });
      const view = Bokeh.index.find_one(f);
      const frame = view ? view.frame.bbox : null;
      const box = view ? view.el.getBoundingClientRect() : null;
      return {start: f.x_range.start, end: f.x_range.end, x: get(data, 'x')[0], dw: get(data, 'dw')[0],
              filled: filled, total: total, lines: lines,
              left: box ? box.x + frame.left : null, top: box ? box.y + frame.top : null,
              width: frame ? frame.width : null, height: frame ? frame.height : null,
              ystart: f.y_range.start, yend: f.y_range.end};
    }
  }
  return null;
}"""
# Zoom the History figure to [start, end] (ms) as a box zoom does: set its x_range, then tell the server the ranges
# changed (the RangesUpdate event that Bokeh's zoom tools send, and that HoloViews' RangeXY stream listens to).
ZOOM_JS = """([start, end]) => {
  for (const doc of Bokeh.documents) {
    for (const f of doc.all_models) {
      if (f.type === 'Figure' && f.renderers.some((r) => r.glyph && r.glyph.type === 'Image')) {
        f.x_range.setv({start: start, end: end});
        Bokeh.index.find_one(f).trigger_ranges_update_event();
        return true;
      }
    }
  }
  return false;
}"""


def history(page: Page, column: str = "city") -> dict | None:
    return page.evaluate(HISTORY_JS, column)


def open_history(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_text("History", exact=True).click()


def write_cities(path, end: pd.Timestamp) -> None:
    """A day of 5-minute temperatures of 100 cities; city ``i`` waves around ``i`` degrees."""
    times = pd.date_range(end - pd.Timedelta("1D"), end, freq="5min", tz="UTC")
    wave = 0.8 * np.sin(np.arange(len(times)) / 10)
    frames = [
        pd.DataFrame(
            {"time": times, "city": c, "lat": 0.0, "lon": 0.0, "temperature": i + (-1) ** i * wave, "source": "sim"}
        )
        for i, c in enumerate(CITIES)
    ]
    with DuckDBStore(path) as store:
        store.write("weather", pd.concat(frames, ignore_index=True))


def test_a_hundred_series_are_a_raster_with_the_highlighted_line_on_top(serve, page, tmp_path):
    path = tmp_path / "cities.duckdb"
    write_cities(path, pd.Timestamp.now(tz="UTC").floor("min"))
    app = serve(env={**SERVE_ENV, "RTDASH_STORE": str(path)})
    open_history(page, app.url + "/realtime_dashboard?tab=history&metric=temperature&range=1d")
    cities = page.locator("select[multiple]")
    wait_until(lambda: cities.locator("option").count() >= 100, 60, 0.3, "the stored cities as options")
    cities.select_option(CITIES)
    expect(page.get_by_text("100 series as a line density")).to_be_visible(timeout=60_000)

    def drawn():
        chart = history(page)
        return chart and chart["filled"] > 1000 and chart["lines"] and chart["lines"][0]["rows"] > 100 and chart

    chart = wait_until(drawn, 60, 0.3, "a raster of 100 series and the highlighted line")
    assert [line["values"] for line in chart["lines"]] == [["City 000"]]  # one line: the highlighted series
    assert chart["total"] > chart["filled"]  # pixels crossed by several series: a density

    # a click on the chart at City 042's level highlights the nearest series and names it
    y = chart["top"] + chart["height"] * (chart["yend"] - 42) / (chart["yend"] - chart["ystart"])
    page.mouse.click(chart["left"] + 5, y)
    expect(page.get_by_text("Nearest series to the click: City 042")).to_be_visible(timeout=30_000)
    wait_until(lambda: history(page)["lines"][0]["values"] == ["City 042"], 30, 0.3, "City 042's line on top")
    assert "Traceback" not in page.content()
    assert not [e for e in page.console_errors if "Bokeh" in e or "Error" in e]


def fill_raw(path, rows: int, end: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``rows`` BTC prices 0.25 s apart up to ``end``, inserted by DuckDB itself into the table the store creates."""
    DuckDBStore(path).close()  # the schema, as the app creates it
    step_us = 250_000
    first_us = end.value // 1000 - (rows - 1) * step_us
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO price (time, asset, quote, price, source) "
            f"SELECT make_timestamptz({first_us} + i * {step_us}), 'BTC', 'USD', "
            "60000 + 2000 * sin(i / 400000.0) + 300 * sin(i / 7000.0) + (hash(i) % 1000) / 10.0, 'bench' "
            f"FROM range({rows}) AS t(i)"
        )
    return pd.Timestamp(first_us, unit="us", tz="UTC"), end


def test_every_point_rasterizes_ten_million_rows_and_re_aggregates_on_zoom(serve, page, tmp_path):
    path = tmp_path / "raw.duckdb"
    first, last = fill_raw(path, RAW_ROWS, pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("1min"))
    app = serve(env={**SERVE_ENV, "RTDASH_STORE": str(path), "RTDASH_ASSETS": "BTC"})
    open_history(page, app.url + "/realtime_dashboard?tab=history&metric=price&asset=BTC&range=all")
    expect(page.get_by_text("shown as means over")).to_be_visible(timeout=60_000)  # buckets first
    page.locator("input[type=checkbox]").check()  # "Every point (datashader)"
    # 10,000,000 rows and those the live poller adds
    expect(
        page.get_by_text(re.compile(r"10,000,0\d\d rows from .* every row, rasterized by datashader"))
    ).to_be_visible(timeout=90_000)

    def drawn():
        chart = history(page, "price")
        return chart and chart["total"] >= RAW_ROWS * 0.99 and chart

    whole = wait_until(drawn, 90, 0.5, "every row counted in the raster")
    assert not whole["lines"]
    page.screenshot(path=str(tmp_path / "every-point.png"))

    # zoom to one hour in the middle: the server reads that window and datashader re-aggregates it
    middle = first + (last - first) / 2
    start_ms = (middle.tz_localize(None) - pd.Timestamp(0)) / pd.Timedelta("1ms")
    end_ms = start_ms + 3_600_000
    assert page.evaluate(ZOOM_JS, [start_ms, end_ms])

    def zoomed():
        chart = history(page, "price")
        return chart and abs(chart["x"] - start_ms) < 60_000 and chart["dw"] < 3_700_000 and chart

    chart = wait_until(zoomed, 90, 0.5, "the raster of the zoomed hour")
    assert 14_000 <= chart["total"] <= 14_500  # an hour of rows 0.25 s apart: 14,400
    assert "Traceback" not in page.content()
    assert not [e for e in page.console_errors if "Bokeh" in e or "Error" in e]
