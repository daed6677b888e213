"""The history through the served app: a kill -9 and a restart, and the History tab in a real browser."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import requests
from playwright.sync_api import expect

from rtdash.store.duckdb import DuckDBStore
from rtdash.store.postgres import PostgresStore
from tests.helpers import ROOT, wait_until
from tests.store.test_store import same_rows

# Every ColumnDataSource of the page with a time column: {"<value column>": [times in ms, ...], ...}.
CHART_TIMES = """() => {
  const out = [];
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (data == null || typeof data !== "object") continue;
      const get = (k) => (data instanceof Map ? data.get(k) : data[k]);
      const time = get("time");
      if (time == null) continue;
      const keys = data instanceof Map ? [...data.keys()] : Object.keys(data);
      out.push({keys: keys, times: Array.from(time).filter((t) => t === t)});
    }
  }
  return out;
}"""


def open_store(url: str):
    return PostgresStore(url) if url.startswith("postgresql://") else DuckDBStore(url)


def keys(df: pd.DataFrame, kind: str) -> set:
    name = "asset" if kind == "price" else "city"
    return set(zip(df["time"], df[name].astype(str), df["source"].astype(str), strict=True))


def start_session(app) -> None:
    """Open a session (the first one starts the pollers) the way a browser's first request does."""
    assert requests.get(app.url + "/realtime_dashboard", timeout=30).status_code == 200


@pytest.mark.slow
@pytest.mark.ui
def test_a_killed_server_keeps_its_rows_and_restarts_prefilled(serve, store_url, page):
    env = {
        "RTDASH_STORE": store_url,
        "RTDASH_PRICE_INTERVAL": "200ms",
        "RTDASH_WEATHER_INTERVAL": "500ms",
        "RTDASH_CITIES": "Fresno,Sacramento",
        "RTDASH_TILES": "none",
    }
    postgres = store_url.startswith("postgresql://")
    first = serve(env=env, serve_args=["--plugins", "rtdash.server"])  # for /health: what the writer wrote
    start_session(first)

    def written() -> int:
        store = requests.get(first.url + "/health", timeout=10).json()["store"]
        assert store["state"] == "ok" and store["dropped"] == 0, store
        return store["written"]

    wait_until(lambda: written() >= 30, 60, 0.2, "rows written")
    if postgres:  # another process may read while the server writes: note exactly what is stored
        with open_store(store_url) as store:
            before = {kind: keys(store.read(kind), kind) for kind in ("price", "weather")}
    reported = written()
    first.kill()  # SIGKILL: no shutdown, no flush, no checkpoint
    with open_store(store_url) as store:
        after_kill = {kind: keys(store.read(kind), kind) for kind in ("price", "weather")}
        newest = store.bounds("price")[1]
    assert len(after_kill["price"]) + len(after_kill["weather"]) >= reported  # every row written is still there
    if postgres:
        assert before["price"] <= after_kill["price"] and before["weather"] <= after_kill["weather"]

    killed_at = pd.Timestamp.now(tz="UTC")
    second = serve(env=env)
    page.goto(second.url + "/realtime_dashboard")

    def prefilled():
        charts = [c for c in page.evaluate(CHART_TIMES) if "price" in c["keys"] and c["times"]]
        return charts and min(min(c["times"]) for c in charts) <= newest.value / 1e6

    wait_until(prefilled, 60, 0.3, "the live price chart to show the rows stored before the restart")
    if postgres:
        with open_store(store_url) as reader:
            wait_until(lambda: reader.bounds("price")[1] > killed_at, 30, 0.2, "the restarted server to store rows")
    second.stop()
    with open_store(store_url) as store:
        final = {kind: keys(store.read(kind), kind) for kind in ("price", "weather")}
        assert store.bounds("price")[1] > killed_at
    assert after_kill["price"] <= final["price"] and after_kill["weather"] <= final["weather"]
    assert "Traceback" not in second.log_path.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.ui
def test_the_history_tab_plots_a_range_and_exports_it(serve, page, tmp_path):
    store_path = tmp_path / "history.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RTDASH_STORE": str(store_path)}
    filled = subprocess.run(
        [sys.executable, "-m", "rtdash", "backfill", "--days", "3", "--every", "1min"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert filled.returncode == 0, filled.stderr
    assert "price: 4,321 rows, 4,321 new" in filled.stdout
    assert "100%" in filled.stderr  # the progress bar

    app = serve(env={"RTDASH_STORE": str(store_path), "RTDASH_TILES": "none", "RTDASH_PRICE_INTERVAL": "1h"})
    page.goto(app.url + "/realtime_dashboard")
    page.get_by_text("History", exact=True).click()
    page.get_by_text("Last week", exact=True).click()
    expect(page.get_by_text(re.compile(r"[\d,]+ rows from .* shown as"))).to_be_visible(timeout=60_000)

    def plotted() -> int:
        charts = [c for c in page.evaluate(CHART_TIMES) if "price" in c["keys"] and "count" in c["keys"]]
        return sum(len(c["times"]) for c in charts)

    wait_until(lambda: plotted() > 1000, 60, 0.3, "the History chart to show the stored prices")

    with page.expect_download(timeout=60_000) as download:
        page.get_by_text("Export CSV", exact=True).click()
    assert download.value.suggested_filename.startswith("rtdash-price-")
    exported = pd.read_csv(download.value.path())
    exported["time"] = pd.to_datetime(exported["time"], utc=True)
    assert len(exported) >= 4321
    assert "Traceback" not in page.content()
    assert not [e for e in page.console_errors if "Bokeh" in e or "Error" in e]
    app.stop()
    with DuckDBStore(store_path) as store:
        start, end = exported["time"].min(), exported["time"].max() + pd.Timedelta("1us")
        same_rows(exported, store.read("price", start, end, series=["BTC"]), "price")
