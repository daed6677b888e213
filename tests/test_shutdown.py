"""Stopping a real ``panel serve``, ``python realtime_dashboard.py`` or ``python -m rtdash collect`` with SIGTERM or
Ctrl+C (SIGINT): every price the provider was asked for before the signal is in the store (a fetch in flight is
finished and written), the store is closed, the process exits 0, and nothing crashes on the way out."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from rtdash.store.duckdb import DuckDBStore
from rtdash.store.postgres import PostgresStore
from rtdash.store.writer import StoreWriter
from tests.fakeapi import FakeAPI
from tests.helpers import SCRIPT, ServedApp, fake_env, free_port, wait_until
from tests.store.conftest import pg_url, postgres_server  # noqa: F401  (the real PostgreSQL server's fixtures)

pytestmark = pytest.mark.slow

CRASH_SIGNS = ("FATAL", "terminate called", "Traceback", "Segmentation fault", "core dumped")
ASSETS = ("BTC", "ETH", "SOL", "DOGE")


class RecordingAPI(FakeAPI):
    """The fake API, remembering every price it answered with: ``(asset, price, time.time() when it was asked)``."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[tuple[str, float, float]] = []
        self._served_lock = threading.Lock()

    def _handle(self, raw_path, headers):
        asked = time.time()
        response = super()._handle(raw_path, headers)
        if raw_path.startswith("/v2/prices/") and response.status == 200:
            data = json.loads(response.body)["data"]
            with self._served_lock:
                self.served.append((data["base"], float(data["amount"]), asked))
        return response

    def served_before(self, moment: float) -> dict[tuple[str, float], float]:
        """The prices answered to requests that arrived before ``moment``: how long before it each arrived (s)."""
        with self._served_lock:
            return {(asset, price): moment - asked for asset, price, asked in self.served if asked < moment}


@pytest.fixture
def recording_api():
    with RecordingAPI() as api:
        yield api


def open_store(url: str):
    return PostgresStore(url) if url.startswith("postgresql://") else DuckDBStore(url)


@pytest.mark.parametrize(
    ("command", "backend", "sig"),
    [
        ("panel serve", "duckdb", signal.SIGTERM),
        ("panel serve", "duckdb", signal.SIGINT),
        pytest.param("panel serve", "postgresql", signal.SIGTERM, marks=pytest.mark.postgres),
        ("python realtime_dashboard.py", "duckdb", signal.SIGTERM),
    ],
    ids=["panel-duckdb-SIGTERM", "panel-duckdb-SIGINT", "panel-postgresql-SIGTERM", "script-duckdb-SIGTERM"],
)
def test_a_signal_stores_every_served_price_closes_the_store_and_exits_0(
    request, recording_api, tmp_path, command, backend, sig
):
    store_url = str(tmp_path / "history.duckdb") if backend == "duckdb" else request.getfixturevalue("pg_url")
    env = fake_env(
        recording_api.url,
        RTDASH_STORE=store_url,
        RTDASH_PRICE_INTERVAL="200ms",
        RTDASH_ASSETS=",".join(ASSETS),  # a write every 200 ms or less: the writer is often inside the store
        RTDASH_WEATHER_INTERVAL="200ms",
        RTDASH_CITIES="Fresno,Sacramento,Oakland",
        RTDASH_TILES="none",
    )
    if command == "panel serve":
        app, page = ServedApp(env=env, cwd=tmp_path), "/realtime_dashboard"
    else:
        port = free_port()
        script = [sys.executable, str(SCRIPT), "--port", str(port), "--address", "127.0.0.1"]
        app, page = ServedApp(env=env, cwd=tmp_path, command=script, port=port), "/"
    try:
        app.wait_ready()
        # The first page view starts the pollers (and, without --plugins, makes this process serve /health).
        assert requests.get(app.url + page, timeout=30).status_code == 200

        def written() -> int:
            store = requests.get(app.url + "/health", timeout=10).json()["store"]
            assert store["state"] == "ok" and store["dropped"] == 0, store
            return store["written"]

        wait_until(lambda: written() >= 40, 60, 0.2, "rows in the store")
        signalled_at = time.time()
        app.proc.send_signal(sig)  # to the server alone, as `kill` or Ctrl+C in its terminal would
        try:
            status = app.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after {sig.name}:\n{app.output()}") from None
        output = app.output()
        assert status == 0, f"exit status {status} after {sig.name}:\n{output}"
        assert not [sign for sign in CRASH_SIGNS if sign in output], output
    finally:
        app.stop()

    if backend == "duckdb":  # closed: DuckDB checkpoints its write-ahead log into the file and removes it
        assert not Path(f"{store_url}.wal").exists(), "the DuckDB store was not closed"
    assert_stored(recording_api.served_before(signalled_at), store_url, sig, output)


def assert_stored(served: dict[tuple[str, float], float], store_url: str, sig: signal.Signals, output: str) -> None:
    """Every ``(asset, price)`` in ``served`` is a row of the store at ``store_url`` (``output``, the process's, shown
    when one is not)."""
    assert {asset for asset, _ in served} == set(ASSETS)
    with open_store(store_url) as store:
        stored = store.read("price")
    kept = set(zip(stored["asset"].astype(str), stored["price"].astype(float), strict=True))
    missing = {price: f"asked {served[price]:.2f} s before" for price in sorted(served.keys() - kept)}
    assert not missing, (
        f"{len(missing)} of {len(served)} prices asked for before {sig.name} are not stored: {missing}\n{output}"
    )


@pytest.mark.postgres
def test_the_collector_stores_the_fetch_in_flight_at_sigterm_and_exits_0(request, recording_api, tmp_path):
    database = request.getfixturevalue("pg_url")
    env = fake_env(
        recording_api.url,
        RTDASH_STORE=database,
        RTDASH_PRICE_INTERVAL="200ms",
        RTDASH_ASSETS=",".join(ASSETS),
        RTDASH_WEATHER_INTERVAL="1s",
        RTDASH_CITIES="Fresno",
    )
    recording_api.set_fault("coinbase", "slow", delay=1.0)  # each price answer takes 1 s (RTDASH_TIMEOUT is 2 s)
    collector = ServedApp(env=env, cwd=tmp_path, command=[sys.executable, "-m", "rtdash", "collect"])
    try:
        with open_store(database) as store:
            wait_until(lambda: len(store.read("price")) >= 2 * len(ASSETS), 60, 0.2, "stored prices")
        asked = recording_api.count("coinbase")
        assert recording_api.wait_for_count("coinbase", asked + 1, timeout=10)  # a fetch starts: it takes 1 s
        signalled_at = time.time()
        collector.proc.send_signal(signal.SIGTERM)
        try:
            status = collector.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after SIGTERM:\n{collector.output()}") from None
        output = collector.output()
        assert status == 0, f"exit status {status} after SIGTERM:\n{output}"
        assert not [sign for sign in CRASH_SIGNS if sign in output], output
    finally:
        collector.stop()
    assert_stored(recording_api.served_before(signalled_at), database, signal.SIGTERM, output)


def test_the_writer_writes_on_close_what_it_got_before_its_first_write(tmp_path):
    """A shutdown right after the first fetch: the writer's last drain does not wait for the store to be "ok"."""
    with DuckDBStore(tmp_path / "history.duckdb") as store:
        row = {"time": pd.Timestamp.now(tz="UTC"), "asset": "BTC", "quote": "USD", "price": 65000.12, "source": "x"}
        writer = StoreWriter(store).start()
        writer.put("price", pd.DataFrame([row]))
        writer.close()
        assert writer.status.state == "closed" and writer.status.buffered == 0
        assert store.read("price")["price"].tolist() == [65000.12]


def test_a_fetch_that_starts_while_the_interpreter_exits_fails_as_a_source_error():
    """At Ctrl+C a poll may begin on the poller's thread after the interpreter began to exit, when no new thread can
    start: the sources that ask once per series then fail with a :class:`SourceError` the poller reports as a failed
    fetch, not with a ``RuntimeError`` it logs as a bug, traceback and all."""
    # Run at the interpreter's exit, after concurrent.futures' own exit hook refused new threads: where a poll that
    # begins at Ctrl+C finds itself.  These hooks run last registered first: this one is registered before that one
    # (at the import of concurrent.futures.thread).
    script = """if True:
        import threading

        def at_exit():
            rows, errors = fetch_each(lambda name: {"asset": name}, ["BTC", "ETH"])
            print("rows:", len(rows), "errors:", sorted(f"{name}: {error}" for name, error in errors), flush=True)

        threading._register_atexit(at_exit)

        from rtdash.sources.base import fetch_each
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    refused = "not fetched: cannot schedule new futures after interpreter shutdown"
    assert done.stdout.strip() == f"rows: 0 errors: ['BTC: {refused}', 'ETH: {refused}']", done
