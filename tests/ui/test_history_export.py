"""History exports in a real ``panel serve`` and Chromium: Export CSV and Export Parquet download the store's rows of
the range as files over HTTP (not the websocket), with the progress shown in the page; with a login, the download
needs it too."""

from __future__ import annotations

import io
import json
import re
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
from playwright.sync_api import Page, expect

from rtdash.store.duckdb import DuckDBStore
from tests.helpers import ServedApp, fake_env, wait_until
from tests.store.test_store import prices, same_rows
from tests.test_auth import APP, COOKIE_SECRET, PASSWORD, USER, tab

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ROWS = 5_000
SERVE_ENV = {"RTDASH_TILES": "none", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_WEATHER_INTERVAL": "1h"}


@pytest.fixture
def store_path(tmp_path):
    """A DuckDB file holding ``ROWS`` BTC prices of the last hours (the served app then opens it)."""
    path = tmp_path / "history.duckdb"
    with DuckDBStore(path) as store:
        start = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("3h")
        store.write("price", prices(ROWS, assets=("BTC",), start=start, every="1s"))
    return path


def open_history(page: Page, url: str) -> None:
    page.goto(url)
    tab(page, "History").click()
    expect(page.get_by_text(re.compile(r"[\d,]+ rows from .* shown as"))).to_be_visible(timeout=60_000)


def read(path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    df = pd.read_csv(path)
    return df.assign(time=pd.to_datetime(df["time"], utc=True))


def test_export_csv_and_parquet_download_the_rows_of_the_range(serve, page, store_path):
    app = serve(env={**SERVE_ENV, "RTDASH_STORE": str(store_path)})
    frames: list[int] = []  # the size of every websocket message the page receives: no export travels as one
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(len(payload))))
    open_history(page, app.url + APP)
    frames.clear()  # from now on: the exports
    got, sizes = {}, {}
    for fmt, label in (("csv", "Export CSV"), ("parquet", "Export Parquet")):
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name=label).click()
        assert download.value.failure() is None
        name = download.value.suggested_filename
        assert re.fullmatch(rf"rtdash-price-\d{{8}}T\d{{6}}-\d{{8}}T\d{{6}}\.{fmt}", name), name
        assert "/export/" in download.value.url
        got[fmt] = read(download.value.path(), fmt)
        sizes[fmt] = download.value.path().stat().st_size
        done = page.get_by_text(re.compile(rf"Exported {len(got[fmt]):,} rows to {re.escape(name)}\."))
        expect(done).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name=label)).to_be_enabled()
    assert len(got["csv"]) >= ROWS and len(got["csv"]) == len(got["parquet"])
    assert max(frames) < sizes["csv"] / 10, (max(frames), sizes)  # the file travelled over HTTP, not the websocket
    assert "Traceback" not in page.content()
    app.stop()
    with DuckDBStore(store_path) as store:
        for frame in got.values():
            start, end = frame["time"].min(), frame["time"].max() + pd.Timedelta("1us")
            same_rows(frame, store.read("price", start, end, series=["BTC"]), "price")


def test_a_session_made_again_at_the_websocket_downloads_under_the_prefix(fake_api, page, store_path, tmp_path):
    """Bokeh discards a session whose page has not connected within the unused-session lifetime (1 s in the tests,
    15 s by default: a busy server, a slow client) and makes it again from the websocket's request, whose path is
    not the page's, so Panel gives that session no prefix: the download must still go to ``<prefix>/export/``."""
    app = ServedApp(
        env=fake_env(fake_api.url, **SERVE_ENV, RTDASH_STORE=str(store_path)),
        cwd=tmp_path,
        serve_args=["--prefix", "/rtdash", "--plugins", "rtdash.server"],
    )
    try:
        app.wait_ready(path="/rtdash/liveness")

        def sessions() -> int:
            return requests.get(app.url + "/rtdash/health", timeout=5).json()["sessions"]

        def connect_late(ws) -> None:  # the page's own session is gone before its websocket connects
            wait_until(lambda: sessions() == 0, 60, message="the page's first session to be discarded")
            ws.connect_to_server()

        page.route_web_socket(re.compile(r"/rtdash/realtime_dashboard/ws"), connect_late)
        open_history(page, app.url + "/rtdash" + APP)
        assert sessions() == 1  # the one made at the websocket
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Export CSV").click()
        assert download.value.failure() is None, app.output()
        assert urlsplit(download.value.url).path.startswith("/rtdash/export/")
        assert len(pd.read_csv(download.value.path())) >= ROWS  # the stored rows, and any fetched since
    finally:
        app.stop()


def test_the_row_limit_is_shown_in_the_page(serve, page, store_path):
    app = serve(env={**SERVE_ENV, "RTDASH_STORE": str(store_path), "RTDASH_EXPORT_MAX_ROWS": "1000"})
    open_history(page, app.url + APP)
    page.get_by_role("button", name="Export CSV").click()
    refusal = page.get_by_text(re.compile(r"holds [\d,]+ rows, more than the export limit of 1,000 rows"))
    expect(refusal).to_be_visible(timeout=60_000)
    expect(refusal).to_contain_text("RTDASH_EXPORT_MAX_ROWS")
    expect(page.get_by_role("button", name="Export CSV")).to_be_enabled()


def test_with_a_login_the_download_needs_it(serve, page, store_path, tmp_path):
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({USER: PASSWORD}))
    app = serve(
        env={**SERVE_ENV, "RTDASH_STORE": str(store_path)},
        serve_args=["--basic-auth", str(credentials), "--cookie-secret", COOKIE_SECRET, "--plugins", "rtdash.server"],
    )
    page.goto(app.url + APP)
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    tab(page, "History").click()
    expect(page.get_by_text(re.compile(r"[\d,]+ rows from .* shown as"))).to_be_visible(timeout=60_000)
    # Note the link the page is asked to download instead of following it.
    page.evaluate(
        "() => { window.__links = []; HTMLAnchorElement.prototype.click = function () {"
        " window.__links.push(this.href) } }"
    )
    page.get_by_role("button", name="Export CSV").click()
    page.wait_for_function("() => window.__links.length > 0", timeout=60_000)
    (url,) = page.evaluate("() => window.__links")
    assert url.startswith(app.url + "/export/")

    anonymous = requests.get(url, timeout=30)
    assert anonymous.status_code == 403 and len(anonymous.text) < 200 and "time," not in anonymous.text
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    forged = requests.get(url, cookies={"user": cookies["user"][:-4] + "AAAA"}, timeout=30)
    assert forged.status_code == 403
    logged_in = requests.get(url, cookies=cookies, timeout=60)  # the page's own login
    assert logged_in.status_code == 200, logged_in.text[:200]
    assert len(pd.read_csv(io.BytesIO(logged_in.content))) >= ROWS
