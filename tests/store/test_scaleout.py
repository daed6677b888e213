"""Scale-out: one ``python -m rtdash collect`` calls the APIs and writes PostgreSQL; two ``panel serve`` processes
with ``RTDASH_ROLE=viewer`` follow it through LISTEN/NOTIFY and stream to their sessions, calling no API."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
import requests
from playwright.sync_api import expect

from tests.fakeapi import FakeAPI
from tests.helpers import ROOT, ServedApp, close_quietly, fake_env, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INTERVALS = {"RTDASH_PRICE_INTERVAL": "0.5s", "RTDASH_WEATHER_INTERVAL": "1s", "RTDASH_CITIES": "Fresno,Sacramento"}


def stored(url: str, kind: str) -> int:
    """Rows stored from live polls (the providers' history, ``coinbase/1min``, is stored too, and not counted)."""
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {kind} WHERE source NOT LIKE '%/%'").fetchone()[0]


class Collector:
    """``python -m rtdash collect`` as a subprocess, output kept for failure messages."""

    def __init__(self, env: dict[str, str], tmp_path):
        self.log_path = tmp_path / "collector.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
        full_env.update(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")  # closed in stop()
        command = [sys.executable, "-m", "rtdash", "collect"]
        self.proc = subprocess.Popen(command, env=full_env, cwd=tmp_path, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def viewer_api():
    """The API the viewers are pointed at: it must never be called."""
    with FakeAPI() as api:
        yield api


@pytest.mark.ui
def test_one_collector_two_viewers(pg_url, fake_api, viewer_api, browser, tmp_path):
    collector = Collector(fake_env(fake_api.url, RTDASH_STORE=pg_url, **INTERVALS), tmp_path)
    viewers = [
        ServedApp(
            env=fake_env(viewer_api.url, RTDASH_STORE=pg_url, RTDASH_ROLE="viewer", RTDASH_TILES="none", **INTERVALS),
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    pages, errors = [], []
    try:
        for viewer in viewers:
            viewer.wait_ready()
        assert fake_api.wait_for_count("coinbase", 1, timeout=30), collector.output()
        for viewer in viewers:
            page = browser.new_page()
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(viewer.url + "/realtime_dashboard")
            pages.append(page)

        # Both viewers receive the collector's rows as they are stored, over LISTEN/NOTIFY, for their sessions.
        def received(viewer: ServedApp) -> int:
            health = requests.get(viewer.url + "/health", timeout=5).json()
            assert health["sessions"] >= 1 and health["store"].get("state") == "ok", health
            return health["sources"]["price"]["rows"]

        before = [wait_until(lambda v=viewer: received(v), 30) for viewer in viewers]
        for viewer, count in zip(viewers, before, strict=True):
            wait_until(lambda v=viewer, c=count: received(v) >= c + 3, 30)

        # Each API is called once per interval, by the collector: every price call is one stored row, and the
        # viewers, however many sessions they serve, call nothing.
        assert fake_api.wait_for_count("coinbase", 8, timeout=30)
        wait_until(lambda: fake_api.count("coinbase") == stored(pg_url, "price"), 10, 0.02)
        assert viewer_api.count() == 0

        # Both processes show the same newest point: the collector's last one, frozen by failing its provider.
        fake_api.set_fault("coinbase", "500")
        fetched = fake_api.count("coinbase")
        wait_until(lambda: fake_api.count("coinbase") > fetched, 10)  # one failed call: no more rows after this
        newest = stored(pg_url, "price")
        with psycopg.connect(pg_url) as conn:
            price = conn.execute("SELECT price FROM price ORDER BY time DESC LIMIT 1").fetchone()[0]
        shown = f"${price:,.2f}"
        for page, viewer in zip(pages, viewers, strict=True):  # the big number of the Live tab's price card
            try:
                expect(page.locator(".card .price")).to_have_text(shown, timeout=60_000)
            except AssertionError as exc:
                text = page.evaluate("document.body.innerText")
                raise AssertionError(f"{exc}\npage errors: {errors}\npage text: {text!r}\n{viewer.output()}") from None
        assert newest >= 8
        for viewer in viewers:
            health = requests.get(viewer.url + "/health", timeout=5).json()
            assert health["store"]["role"] == "viewer" and health["store"]["state"] == "ok", health
            assert health["sources"]["price"]["rows"] > 0 and health["sources"]["price"]["fetches"] == 0, health
            assert "Traceback" not in viewer.output()
        assert viewer_api.count() == 0
    finally:
        for viewer in viewers:
            viewer.stop()
        code = collector.stop()
        for page in pages:
            close_quietly(page)
    assert code == 0, f"{code}\n{collector.output()}"
    assert "Traceback" not in collector.output()


def test_a_follower_streams_new_rows_and_catches_up_after_an_outage(postgres_server, pg_url, make_settings):
    import pandas as pd

    from rtdash.scaleout import Follower, install_notify
    from rtdash.store.postgres import PostgresStore
    from rtdash.stream import Runtime

    writer = PostgresStore(pg_url)
    install_notify(writer)
    runtime = Runtime(make_settings(RTDASH_ROLE="viewer", RTDASH_STORE=pg_url, RTDASH_ASSETS="BTC"))  # not started
    received: list[pd.DataFrame] = []
    runtime.price.subscribe(received.append)
    follower = Follower(runtime).start()

    base = pd.Timestamp.now(tz="UTC").floor("s")

    def rows(seconds: list[int]) -> pd.DataFrame:
        times = [base + pd.Timedelta(seconds=s) for s in seconds]
        return pd.DataFrame({"time": times, "asset": "BTC", "quote": "USD", "price": seconds, "source": "coinbase"})

    def got() -> list[float]:
        return [p for df in received for p in df["price"]]

    try:
        wait_until(lambda: follower.status.state == "ok", 10)
        writer.write("price", rows([1, 2]))
        wait_until(lambda: got() == [1, 2], 10)
        writer.write("price", rows([2, 3]))  # a row already handed over is not handed over again
        wait_until(lambda: got() == [1, 2, 3], 10)
        assert runtime.price.status.state == "ok" and runtime.price.status.fetches == 0

        postgres_server.stop()
        try:
            wait_until(lambda: follower.status.state == "down", 15)
            assert runtime.price.status.state == "stale"
        finally:
            postgres_server.start()

        def write_again() -> bool:  # the writer's own pooled connection was cut too: the first try may fail
            try:
                return writer.write("price", rows([4, 5])) >= 0
            except psycopg.Error:
                return False

        wait_until(write_again, 15)  # stored while the follower may still be reconnecting: caught up, in order
        wait_until(lambda: got() == [1, 2, 3, 4, 5], 30)
        assert follower.status.state == "ok" and follower.status.notifications >= 2

        # A hole filled by the collector, older than the newest row held: announced, read, merged in.
        with psycopg.connect(pg_url, autocommit=True) as conn:  # a hostile payload first: ignored
            conn.execute("SELECT pg_notify('rtdash_past_price', 'x' || repeat('9', 40))")
        hole = rows([-300, -240, -180]).assign(source="coinbase/1min", price=[7.0, 8.0, 9.0])
        assert writer.write("price", hole) == 3
        wait_until(
            lambda: [7.0, 8.0, 9.0] == [p for df in received for p in df.loc[df["source"] != "coinbase", "price"]], 30
        )
        assert runtime.price.history()["price"].tolist()[:3] == [7.0, 8.0, 9.0]  # in time order, before the live rows
        assert runtime.price.status.filled == 3 and follower.status.state == "ok"
        assert writer.write("price", hole) == 0  # nothing new: nothing announced, nothing handed over twice
    finally:
        follower.stop()
        runtime.stop()
        writer.close()


def test_a_viewer_needs_postgresql(fake_api, tmp_path):
    from rtdash.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="RTDASH_ROLE=viewer needs RTDASH_STORE=postgresql"):
        Settings.load(environ=fake_env(fake_api.url, RTDASH_ROLE="viewer"), dotenv=None)


def test_collect_without_postgresql_exits_2_with_the_settings_line(make_settings, capsys):
    from rtdash.scaleout import collect

    assert collect(make_settings(RTDASH_STORE="none")) == 2
    assert "RTDASH_ROLE=collector needs RTDASH_STORE=postgresql" in capsys.readouterr().out
