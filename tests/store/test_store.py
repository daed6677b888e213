"""One suite for both history stores: DuckDB in a temporary file and a real PostgreSQL server (see conftest)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import psycopg
import pytest

from rtdash.cli import main
from rtdash.config import Settings
from rtdash.sources import COLUMNS
from rtdash.store import KINDS, StoreError, StoreWriter, open_store
from rtdash.store.duckdb import DuckDBStore
from rtdash.store.postgres import PostgresStore
from rtdash.stream import Runtime
from tests.helpers import wait_until

START = pd.Timestamp("2024-03-01 00:00:00", tz="UTC")


def prices(n: int, *, assets=("BTC", "ETH"), start=START, every="1s", source="simulated", seed=1) -> pd.DataFrame:
    """``n`` times × ``assets`` price rows, oldest first, with values that differ per row."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=n, freq=every, tz="UTC")
    frames = [
        pd.DataFrame(
            {"time": times, "asset": asset, "quote": "USD", "price": 100 * (i + 1) + rng.normal(0, 1, n).cumsum()}
        )
        for i, asset in enumerate(assets)
    ]
    return pd.concat(frames, ignore_index=True).assign(source=source).sort_values(["time", "asset"], ignore_index=True)


def weather(n: int, cities=("Fresno", '<b>Zürich, "CH"</b>'), start=START) -> pd.DataFrame:
    times = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    rows = [
        {"time": t, "city": c, "lat": 1.5, "lon": -2.25, "temperature": 20 + i % 7, "humidity": 50.0, "wind_speed": 3.0}
        for i, t in enumerate(times)
        for c in cities
    ]
    return pd.DataFrame(rows).assign(source="open-meteo")


def same_rows(got: pd.DataFrame, want: pd.DataFrame, kind: str) -> None:
    """Equal as sets of rows (the stores order by time then series)."""
    keys = ["time", "asset" if kind == "price" else "city", "source"]
    got = got[COLUMNS[kind]].sort_values(keys, ignore_index=True).astype({c: object for c in keys[1:]})
    want = want[COLUMNS[kind]].sort_values(keys, ignore_index=True).astype({c: object for c in keys[1:]})
    want = want.assign(time=want["time"].astype("datetime64[ns, UTC]"))
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=True)


# -- idempotence -------------------------------------------------------------------------------------------------------


def test_rows_round_trip_exactly(store):
    df = prices(50)
    df.loc[3, "price"] = np.nan  # a missing value stays missing
    assert store.write("price", df) == len(df)
    got = store.read("price")
    same_rows(got, df, "price")
    assert str(got["time"].dt.tz) == "UTC"
    assert got["time"].is_monotonic_increasing


def test_text_from_data_is_stored_verbatim(store):
    df = weather(5)
    store.write("weather", df)
    same_rows(store.read("weather"), df, "weather")
    assert store.series("weather") == sorted(["Fresno", '<b>Zürich, "CH"</b>'])


def test_writing_the_same_rows_again_adds_nothing(store):
    df = prices(100)
    assert store.write("price", df) == 200
    assert store.write("price", df) == 0  # a replay
    assert store.write("price", pd.concat([df.iloc[150:], prices(120).iloc[150:]])) == 40  # overlap + 20 new times
    assert store.count("price") == 240
    # a row is identified by (source, series, time): the same time from another source is another row
    assert store.write("price", prices(1, source="coinbase")) == 2
    assert store.count("price") == 242
    # times are kept to the microsecond: nanoseconds do not make a second row
    ns = prices(1, start=START + pd.Timedelta(nanoseconds=300))
    assert store.write("price", ns) == 0


def test_duplicates_inside_one_batch_are_written_once(store):
    df = prices(10)
    assert store.write("price", pd.concat([df, df])) == 20
    assert store.count("price") == 20


# -- reading -----------------------------------------------------------------------------------------------------------


def test_read_filters_by_range_series_and_columns(store):
    df = prices(600)
    store.write("price", df)
    start, end = START + pd.Timedelta("1min"), START + pd.Timedelta("2min")
    got = store.read("price", start, end, series=["ETH"])
    want = df[(df.time >= start) & (df.time < end) & (df.asset == "ETH")]
    same_rows(got, want, "price")
    assert store.count("price", start, end, series=["ETH"]) == len(want) == 60
    assert list(store.read("price", start, end, columns=["time", "price"]).columns) == ["time", "price"]
    assert store.read("price", START - pd.Timedelta("1D"), START).empty
    assert store.bounds("price") == (START, START + pd.Timedelta(seconds=599))
    assert store.bounds("weather") == (None, None)
    with pytest.raises(ValueError, match="unknown price column"):
        store.read("price", columns=["time", "price; DROP TABLE price"])


def test_export_rows_match_the_store(store):
    df = prices(2500)
    store.write("price", df)
    start, end = START + pd.Timedelta("10s"), START + pd.Timedelta("2000s")
    chunks = list(store.export("price", start, end, chunk_rows=700))
    assert len(chunks) > 1 and all(len(chunk) <= 700 for chunk in chunks)
    exported = pd.concat(chunks, ignore_index=True)
    assert exported["time"].is_monotonic_increasing
    same_rows(exported, store.read("price", start, end), "price")
    assert len(exported) == store.count("price", start, end) == 2 * 1990


# -- latest and the live history's seed --------------------------------------------------------------------------------


def test_latest_gives_the_last_rows_of_each_series(store):
    df = prices(30, assets=("BTC", "ETH", "SOL"))
    store.write("price", df)
    got = store.latest("price", 5, series=["BTC", "SOL"])
    want = df[df.asset.isin(["BTC", "SOL"])].groupby("asset").tail(5)
    same_rows(got, want, "price")
    assert got["time"].is_monotonic_increasing
    assert len(store.latest("price", 5)) == 15
    assert store.latest("weather", 5).empty


def test_a_runtime_seeds_its_pollers_from_the_store(store_url, make_settings, fake_api):
    fake_api.set_fault("coinbase", "slow", delay=3.0)  # the fetch made at start lands after the seed is read
    settings = make_settings(
        RTDASH_STORE=store_url,
        RTDASH_ASSETS="BTC",
        RTDASH_BACKLOG="20",
        RTDASH_PRICE_INTERVAL="1h",  # one fetch at start, then none during the test
        RTDASH_WEATHER_INTERVAL="1h",
    )
    earlier = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta("1h")
    stored = prices(50, assets=("BTC", "ETH"), start=earlier, source="coinbase")
    with open_store(settings) as store:
        store.write("price", stored)
    runtime = Runtime(settings)
    try:
        runtime.start()
        history = runtime.price.history()
        seeded = history[history["time"] <= stored["time"].max()]
        # the last backlog rows of the configured asset only, with the live rows' dtypes
        same_rows(seeded, stored[stored.asset == "BTC"].tail(20), "price")
        assert seeded["asset"].dtype == object
        # and the fetch made at start reaches the store
        wait_until(lambda: runtime.store.count("price", series=["BTC"]) == 51, 20, message="the first fetch stored")
    finally:
        runtime.stop()


# -- aggregation in the database ---------------------------------------------------------------------------------------


def test_aggregate_matches_pandas(store):
    df = prices(3600)
    df = df[~df.time.between(START + pd.Timedelta("20min"), START + pd.Timedelta("30min"))]  # a gap
    store.write("price", df)
    got = store.aggregate("price", START, START + pd.Timedelta("1h"), pd.Timedelta("5min"), series=["BTC"])
    btc = df[df.asset == "BTC"].set_index("time")["price"].resample("5min")
    want = pd.DataFrame({"price": btc.mean(), "min": btc.min(), "max": btc.max(), "count": btc.count()})
    want = want[want["count"] > 0].reset_index()  # empty buckets are absent: a gap stays a gap
    assert list(got.columns) == ["time", "asset", "price", "min", "max", "count"]
    assert (got["asset"] == "BTC").all()
    pd.testing.assert_frame_equal(got.drop(columns="asset"), want, check_dtype=False, check_freq=False)
    assert len(got) == 10


def test_aggregate_buckets_are_aligned_and_ordered_by_series(store):
    store.write("price", prices(120, every="1min", start=START + pd.Timedelta("17min")))  # 00:17 to 02:16
    got = store.aggregate("price", None, None, 3600)
    assert got["time"].dt.minute.eq(0).all()  # aligned to whole hours, wherever the data starts
    assert list(got["asset"]) == ["BTC"] * 3 + ["ETH"] * 3
    assert got.groupby("asset")["count"].sum().eq(120).all()
    day = store.aggregate("weather", None, None, pd.Timedelta("1D"))
    assert day.empty and list(day.columns) == ["time", "city", "temperature", "min", "max", "count"]
    with pytest.raises(ValueError, match="unknown price metric"):
        store.aggregate("price", None, None, 60, metric="humidity")


# -- retention ---------------------------------------------------------------------------------------------------------


def test_window_reads_every_value_of_one_metric_in_a_window(store):
    df = prices(600)
    df.loc[df.index[10], "price"] = np.nan  # a row without a value is left out
    store.write("price", df)
    start, end = START + pd.Timedelta("1min"), START + pd.Timedelta("3min")
    got = store.window("price", "price", start, end, series=["BTC"])
    assert list(got.columns) == ["time", "price"] and str(got["time"].dt.tz) == "UTC"
    want = df[(df["asset"] == "BTC") & (df["time"] >= start) & (df["time"] < end)].dropna(subset=["price"])
    assert len(got) == 120
    pd.testing.assert_frame_equal(
        got.sort_values("time", ignore_index=True).astype({"time": "datetime64[ns, UTC]"}),
        want[["time", "price"]].astype({"time": "datetime64[ns, UTC]"}).reset_index(drop=True),
        check_exact=True,
    )
    assert len(store.window("price", "price", None, None)) == df["price"].notna().sum()  # every series, no bounds
    assert len(store.window("price", "price", None, None, limit=25)) == 25
    assert store.window("price", "price", START - pd.Timedelta("1D"), START, ["BTC"]).empty
    assert store.window("price", "price", None, None, series=[]).empty


def test_window_reads_a_weather_metric_and_refuses_unknown_ones(store):
    store.write("weather", weather(30))
    got = store.window("weather", "humidity", None, None, series=['<b>Zürich, "CH"</b>'])
    assert len(got) == 30 and got["humidity"].eq(50.0).all()
    with pytest.raises(ValueError, match="unknown price metric 'temperature'"):
        store.window("price", "temperature", None, None)
    with pytest.raises(ValueError, match="unknown kind"):
        store.window("prices; DROP TABLE price", "price", None, None)


def test_prune_deletes_only_older_rows(store):
    store.write("price", prices(100))
    store.write("weather", weather(10))
    cutoff = START + pd.Timedelta("30s")
    assert store.prune(cutoff) == 60 + 2 * 1
    assert store.bounds("price")[0] == cutoff
    assert store.count("weather") == 18


def test_the_writer_applies_the_retention(store):
    now = pd.Timestamp.now(tz="UTC").floor("s")
    store.write("price", prices(10, start=now - pd.Timedelta("3D")))  # older than the retention
    store.write("price", prices(10, start=now - pd.Timedelta("1h"), seed=2))
    writer = StoreWriter(store, retention=pd.Timedelta("2D").total_seconds()).start()
    try:
        wait_until(lambda: writer.status.pruned == 20, 20, message="the old rows pruned")
        assert store.count("price") == 20
        assert store.bounds("price")[0] == now - pd.Timedelta("1h")
    finally:
        writer.close()


# -- the writer --------------------------------------------------------------------------------------------------------


def test_the_writer_writes_what_it_is_given(store):
    writer = StoreWriter(store).start()
    try:
        df = prices(40)
        for i in range(0, len(df), 7):  # one put per fetch
            writer.put("price", df.iloc[i : i + 7])
        writer.put("price", df.iloc[:10])  # a replay
        assert writer.flush(20)
        assert store.count("price") == 80
        wait_until(lambda: writer.status.written == 80 and writer.status.buffered == 0, 5)
        assert writer.status.state == "ok" and writer.status.received == 90 and writer.status.dropped == 0
    finally:
        writer.close()


def test_a_full_buffer_is_counted_and_logged(store, caplog):
    writer = StoreWriter(store, capacity=25)  # not started yet: nothing drains the buffer
    df = prices(20)
    with caplog.at_level(logging.WARNING, logger="rtdash.store"):
        accepted = [writer.put("price", df.iloc[i : i + 10]) for i in range(0, 40, 10)]
    assert accepted == [10, 10, 5, 0]
    assert writer.status.dropped == 15 and writer.status.buffered == 25 and writer.status.received == 40
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1, "one line per episode, not one per dropped batch"
    writer.start()
    try:
        assert writer.flush(20)
        assert store.count("price") == 25
        assert writer.status.buffered == 0 and writer.status.dropped == 15
        # once drained, new rows are accepted again
        assert writer.put("price", df.iloc[30:]) == 10
        assert writer.flush(20) and store.count("price") == 35
    finally:
        writer.close()


def test_an_outage_loses_no_row(postgres_server, pg_url, make_settings, caplog):
    """Collect from the local imitation APIs into PostgreSQL, stop the server meanwhile, start it again: every
    fetched row is stored exactly once."""
    settings = make_settings(
        RTDASH_STORE=pg_url,
        RTDASH_ASSETS="BTC,ETH",
        RTDASH_CITIES="Fresno,Sacramento",
        RTDASH_PRICE_INTERVAL="100ms",
        RTDASH_WEATHER_INTERVAL="250ms",
        RTDASH_PAST="none",  # live rows only: each is counted in its poller's status
        RTDASH_GAP_SEARCH="none",  # (no holes filled from the provider either)
    )
    runtime = Runtime(settings)
    store, writer = runtime.store, None
    try:
        runtime.start()
        writer = runtime.writer
        writer.backoff_max = 0.5
        wait_until(lambda: writer.status.written >= 10, 20, message="rows written before the outage")
        with caplog.at_level(logging.WARNING, logger="rtdash.store"):
            postgres_server.stop()
            wait_until(lambda: writer.status.state == "down", 20, message="the writer to notice the outage")
            buffered = wait_until(lambda: writer.status.buffered >= 20 and writer.status.buffered, 20)
            postgres_server.start()
            wait_until(lambda: writer.status.state == "ok", 30, message="the writer to notice the recovery")
            # the state turns ok just before the line is logged
            wait_until(lambda: any("is back" in r.getMessage() for r in caplog.records), 10, message="'is back'")
        assert buffered and any("is down" in r.getMessage() for r in caplog.records)
        for poller in runtime.pollers.values():
            poller.stop(wait=True)  # a fetch in flight has counted its rows: wait until it hands them on
        assert writer.flush(30)
        assert writer.status.dropped == 0
        for kind, poller in runtime.pollers.items():
            assert poller.status.rows > 0
            assert store.count(kind) == poller.status.rows, kind
    finally:
        if not postgres_server.running():
            postgres_server.start()
        runtime.stop()


# -- opening -----------------------------------------------------------------------------------------------------------


def test_open_store_follows_the_setting(tmp_path, pg_url):
    def load(value: str):
        return open_store(Settings.load(environ={"RTDASH_STORE": value}, dotenv=None))

    assert load("none") is None
    with load(str(tmp_path / "sub" / "h.duckdb")) as store:
        assert isinstance(store, DuckDBStore) and (tmp_path / "sub" / "h.duckdb").exists()
    with load(pg_url) as store:
        assert isinstance(store, PostgresStore)
        store.ping()
    with pytest.raises(StoreError, match="sqlite:// is not supported"):
        load("sqlite:///x.db")


def test_a_postgres_store_opens_while_the_server_is_down(tmp_path):
    url = "postgresql://rtdash:secret-password@127.0.0.1:9/rtdash"  # nothing listens on port 9
    store = PostgresStore(url)
    assert "secret-password" not in repr(store)
    writer = StoreWriter(store).start()
    try:
        writer.put("price", prices(2))
        wait_until(lambda: writer.status.state == "down", 20)
        assert writer.status.buffered == 4 and "secret-password" not in (writer.status.last_error or "")
    finally:
        writer.close(timeout=1)
        store.close()


def test_a_duckdb_file_in_use_by_another_process_says_so(tmp_path):
    path = tmp_path / "h.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match=r"one process at a time.*PostgreSQL"):
            DuckDBStore(path)
    finally:
        holder.communicate("", timeout=30)


def test_the_timescaledb_path_issues_valid_sql(pg_url):
    """TimescaleDB cannot be installed here, so its two functions are stood in for by SQL ones with the same
    signatures (``create_hypertable`` does nothing, ``time_bucket`` is ``date_bin``): this checks the statements of
    the hypertable path, not TimescaleDB itself."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION create_hypertable(relation regclass, time_column_name name, if_not_exists boolean,"
            " migrate_data boolean) RETURNS text LANGUAGE sql AS $$ SELECT relation::text $$"
        )
        conn.execute(
            "CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz, origin timestamptz)"
            " RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$ SELECT date_bin(bucket_width, ts, origin) $$"
        )
    with PostgresStore(pg_url, timescale=True) as store:
        store.write("price", prices(120))
        got = store.aggregate("price", None, None, 60, series=["BTC"])
        assert list(got["count"]) == [60, 60]
        assert "time_bucket" in store._bucket("%(every)s", "time", "%(origin)s")


def test_backfill_reruns_add_no_duplicates(store_url, capsys):
    args = ["backfill", "--days", "0.02", "--every", "2s", "--kinds", "price,weather", "--store", store_url]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "100%" in first.err and "price: 865 rows, 865 new" in first.out  # 0.02 days / 2 s + 1
    with open_store(Settings.load(environ={"RTDASH_STORE": store_url}, dotenv=None)) as store:
        before = store.read("price")
    assert main(args) == 0
    again = capsys.readouterr().out
    new = {kind: int(re.search(rf"{kind}: [\d,]+ rows, ([\d,]+) new", again)[1].replace(",", "")) for kind in KINDS}
    with open_store(Settings.load(environ={"RTDASH_STORE": store_url}, dotenv=None)) as store:
        after = store.read("price")
        assert store.count("weather") == 7 * 865 + new["weather"]
    assert len(after) == 865 + new["price"] and new["price"] <= 3  # only the times that passed meanwhile
    # the same times get the same values: the rerun's rows are those of the first run
    same_rows(after[after.time <= before.time.max()], before, "price")
    assert after["time"].dt.second.mod(2).eq(0).all() and after["time"].dt.microsecond.eq(0).all()


def test_backfill_needs_a_store(capsys):
    assert main(["backfill", "--store", "none"]) == 2
    assert "RTDASH_STORE is none" in capsys.readouterr().err


def test_closing_waits_for_a_query_under_way(tmp_path):
    """The runtime closes the store at shutdown while a thread may still be reading it (a History query, the search
    for holes): DuckDB refused ("connection is busy with another call") and the rows' file stayed open.  Close
    waits for it, and refuses new operations."""
    import threading

    from rtdash.store.base import StoreError
    from rtdash.store.duckdb import DuckDBStore

    store = DuckDBStore(tmp_path / "busy.duckdb")
    outcome: list = []

    def slow_query() -> None:
        try:
            outcome.append(store._scalar("SELECT count(*) FROM range(200000000) t(x) WHERE hash(x) % 7 = 3"))
        except Exception as exc:  # interrupted is fine; what matters is that close does not fail
            outcome.append(exc)

    reader = threading.Thread(target=slow_query)
    reader.start()
    wait_until(lambda: store._busy == 1, 30, 0.01, message="the query to start")
    store.close(timeout=60)
    reader.join(60)
    assert outcome and (isinstance(outcome[0], int) or "nterrupt" in str(outcome[0])), outcome
    with pytest.raises(StoreError, match="closed"):
        store.count("price")
