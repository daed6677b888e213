"""History from the providers, against the fake API's real-shaped answers: Coinbase's one-minute candles and
Open-Meteo's ``minutely_15`` past, paged within a budget, through provider errors, Retry-After and retention."""

from __future__ import annotations

import math
import threading

import pandas as pd
import pytest

from rtdash.sources import make_source
from rtdash.sources.base import is_history
from rtdash.stream import get_runtime
from rtdash.stream.history import ATTEMPTS, Budget, fill
from rtdash.stream.poller import Poller
from tests.fakeapi import candle_price
from tests.helpers import wait_until


def _minute(now: pd.Timestamp) -> pd.Timestamp:
    return now.floor("min")


def _fill(source, ranges, budget: int = 1000, **kwargs):
    frames: list[pd.DataFrame] = []
    result = fill(source, ranges, budget=Budget(budget), on_rows=frames.append, backoff_max=5, **kwargs)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return result, rows


def test_coinbase_candles_are_closes_at_the_end_of_their_minute_oldest_first(make_settings, fake_api):
    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_ASSETS="BTC"))
    end = _minute(pd.Timestamp.now(tz="UTC"))
    start = end - pd.Timedelta(minutes=30)
    df = source.history_page(start, end, ["BTC"])
    assert len(df) == 30 and df["time"].is_monotonic_increasing
    assert set(df["source"]) == {"coinbase/1min"} and df["source"].map(is_history).all()
    assert df["time"].min() == start and df["time"].max() == end - pd.Timedelta(minutes=1)
    first = df.iloc[0]
    want = candle_price(65000.12, "BTC", int(first["time"].timestamp()))
    assert first["price"] == pytest.approx(want, rel=1e-6)
    (request,) = fake_api.requests
    assert request.provider == "coinbase-history" and request.query["granularity"] == "ONE_MINUTE"
    assert request.path == "/api/v3/brokerage/market/products/BTC-USD/candles"


@pytest.mark.parametrize(
    "close",
    ["NaN", "Infinity", "-1", "0", "1e308", True, None, "sixty", {"x": 1}],
)
def test_hostile_candles_are_refused_like_live_prices(make_settings, fake_api, close):
    now = int(pd.Timestamp.now(tz="UTC").floor("min").timestamp())
    good = {"start": str(now - 180), "low": "1", "high": "2", "open": "1", "close": "65000.5", "volume": "1"}
    bad = dict(good, start=str(now - 120), close=close)
    garbage_time = dict(good, start="yesterday")
    body = {"candles": [bad, good, garbage_time, "not a candle"]}
    fake_api.set_fault("coinbase-history", "http", status=200, body=body)
    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    end = pd.Timestamp(now, unit="s", tz="UTC")
    df = source.history_page(end - pd.Timedelta(minutes=10), end, ["BTC"])
    assert df["price"].tolist() == [65000.5]
    assert all(math.isfinite(p) for p in df["price"])


def test_open_meteo_past_is_one_request_for_every_city(make_settings, fake_api):
    settings = make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin,London,Reykjavik")
    source = make_source("weather", settings)
    end = pd.Timestamp.now(tz="UTC").floor("15min")
    start = end - pd.Timedelta(hours=6)
    df = source.history_page(start, end, source.series)
    assert fake_api.count("open-meteo-history") == 1 and fake_api.count("open-meteo") == 0
    assert sorted(df["city"].unique()) == ["Berlin", "London", "Reykjavik"]
    assert df.groupby("city").size().tolist() == [24, 24, 24]
    assert set(df["source"]) == {"open-meteo/15min"}
    assert df["temperature"].between(-90, 60).all() and df["humidity"].between(0, 100).all()
    request = next(r for r in fake_api.requests if r.provider == "open-meteo-history")
    assert request.query["start_minutely_15"] == start.strftime("%Y-%m-%dT%H:%M")
    assert request.query["wind_speed_unit"] == "ms"


def test_open_meteo_past_in_other_units_is_converted(make_settings, fake_api):
    fake_api.set_fault(
        "open-meteo-history",
        "http",
        status=200,
        body={
            "minutely_15_units": {"temperature_2m": "°F", "relative_humidity_2m": "%", "wind_speed_10m": "km/h"},
            "minutely_15": {
                "time": ["2026-11-30T00:00", "2026-11-30T00:15", "garbage", "2026-11-30T00:45"],
                "temperature_2m": [50.0, "NaN", 1, 1e308],
                "relative_humidity_2m": [40, None, 1, 50],
                "wind_speed_10m": [36.0, None, 1, 3.6],
            },
        },
    )
    source = make_source("weather", make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin"))
    start = pd.Timestamp("2026-11-30T00:00", tz="UTC")
    df = source.history_page(start, start + pd.Timedelta(hours=1), ["Berlin"])
    # 00:00 converted; 00:15 has no value at all; "garbage" is no time; 00:45's temperature is absurd.
    assert df["time"].tolist() == [start]
    assert df["temperature"].iloc[0] == pytest.approx(10.0) and df["wind_speed"].iloc[0] == pytest.approx(10.0)


def test_a_long_range_is_paged_within_the_providers_limit(make_settings, fake_api):
    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    end = _minute(pd.Timestamp.now(tz="UTC"))
    result, rows = _fill(source, {"BTC": (end - pd.Timedelta(hours=12), end)})
    assert result.requests == fake_api.count("coinbase-history") == 3  # 720 minutes, 349 a page
    assert result.rows == len(rows) == 720 and not result.missing
    assert rows["time"].is_unique
    for request in fake_api.requests:
        assert (int(request.query["end"]) - int(request.query["start"])) // 60 + 1 <= 350


def test_a_provider_error_half_way_keeps_what_came_and_says_what_is_missing(make_settings, fake_api, tmp_path):
    from rtdash.store.duckdb import DuckDBStore

    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    end = _minute(pd.Timestamp.now(tz="UTC"))
    start = end - pd.Timedelta(hours=12)
    fake_api.set_fault("coinbase-history", "500", after=1)
    with DuckDBStore(tmp_path / "h.duckdb") as store:
        frames: list[pd.DataFrame] = []
        result = fill(source, {"BTC": (start, end)}, budget=Budget(100), on_rows=frames.append)
        for df in frames:
            store.write("price", df)
        assert result.rows == 349 and store.count("price") == 349  # the newest page, then the error
        (gap,) = result.missing
        assert gap.start == start and gap.end == end - pd.Timedelta(minutes=349)
        assert "HTTP 500" in gap.reason
        # Once the provider answers again, the same fill adds what was missing and nothing twice.
        fake_api.clear_fault()
        frames.clear()
        result = fill(source, {"BTC": (start, end)}, budget=Budget(100), on_rows=frames.append)
        assert not result.missing
        assert sum(store.write("price", df) for df in frames) == 720 - 349
        assert store.count("price") == 720


def test_retry_after_is_honoured_then_the_page_is_asked_again(make_settings, fake_api):
    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    end = _minute(pd.Timestamp.now(tz="UTC"))
    fake_api.set_fault("coinbase-history", "429", retry_after=1)

    def recover():
        fake_api.wait_for_count("coinbase-history", 1, timeout=60)
        fake_api.clear_fault()

    thread = threading.Thread(target=recover)
    thread.start()
    result, rows = _fill(source, {"BTC": (end - pd.Timedelta(minutes=20), end)})
    thread.join()
    assert len(rows) == 20 and not result.missing and result.requests == 2
    first, second = fake_api.requests[:2]
    assert second.time - first.time >= 1.0  # the fake's own clock: the wait Retry-After asked for


def test_a_provider_that_keeps_refusing_is_asked_a_bounded_number_of_times(make_settings, fake_api):
    source = make_source("price", make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    end = _minute(pd.Timestamp.now(tz="UTC"))
    fake_api.set_fault("coinbase-history", "429", retry_after=0)
    result, rows = _fill(source, {"BTC": (end - pd.Timedelta(hours=12), end)})
    assert fake_api.count("coinbase-history") == ATTEMPTS and rows.empty
    (gap,) = result.missing
    assert "Too many requests" in gap.reason


def test_a_range_beyond_retention_stays_a_gap(make_settings, fake_api):
    settings = make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin,London")
    source = make_source("weather", settings)
    now = pd.Timestamp.now(tz="UTC")
    start = now - pd.Timedelta(days=100)
    end = now - pd.Timedelta(days=91)
    result, rows = _fill(source, {"Berlin": (start, end), "London": (start, end)}, now=now)
    beyond = [gap for gap in result.missing if "retention" in gap.reason]
    assert len(beyond) == 1 and beyond[0].start == start
    assert beyond[0].end == now - pd.Timedelta(days=92)
    assert "92d" in beyond[0].reason
    assert not [gap for gap in result.missing if "retention" not in gap.reason]  # the provider served the rest
    assert rows["time"].min() >= now - pd.Timedelta(days=92) and len(rows) > 0
    assert fake_api.count("open-meteo-history") == 1  # a day of two cities in one request


def test_the_budget_bounds_the_calls_and_says_so(make_settings, fake_api):
    settings = make_settings(RTDASH_PRICE_SOURCE="coinbase")
    source = make_source("price", settings)
    end = _minute(pd.Timestamp.now(tz="UTC"))
    result, rows = _fill(source, {"BTC": (end - pd.Timedelta(hours=12), end)}, budget=1)
    assert fake_api.count("coinbase-history") == 1 and len(rows) == 349
    (gap,) = result.missing
    assert "RTDASH_HISTORY_BUDGET=1/h" in gap.reason


def test_open_meteo_counts_every_city_against_the_budget(make_settings, fake_api):
    settings = make_settings(RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin,London,Reykjavik")
    source = make_source("weather", settings)
    now = pd.Timestamp.now(tz="UTC")
    result, rows = _fill(source, {c: (now - pd.Timedelta(hours=6), now) for c in source.series}, budget=2)
    assert fake_api.count("open-meteo-history") == 0 and rows.empty
    assert "budget" in result.missing[0].reason


@pytest.mark.parametrize("kind,env", [("price", "coincap"), ("weather", "openweather")])
def test_keyed_providers_say_they_cannot_fill_gaps(make_settings, fake_api, kind, env):
    settings = make_settings(
        **{f"RTDASH_{kind.upper()}_SOURCE": env, "COINCAP_API_KEY": "k", "OPENWEATHER_API_KEY": "k"}
    )
    source = make_source(kind, settings)
    now = pd.Timestamp.now(tz="UTC")
    result, rows = _fill(source, {name: (now - pd.Timedelta(hours=1), now) for name in source.series})
    assert rows.empty and fake_api.count() == 0
    assert all("cannot fill gaps" in gap.reason for gap in result.missing)


def test_simulated_history_is_deterministic(make_settings):
    settings = make_settings(RTDASH_PRICE_SOURCE="simulated", RTDASH_WEATHER_SOURCE="simulated")
    end = pd.Timestamp("2026-11-30T04:00:00", tz="UTC")
    for kind in ("price", "weather"):
        a = make_source(kind, settings)
        b = make_source(kind, settings)
        first = a.history_page(end - pd.Timedelta(hours=1), end, a.series)
        pd.testing.assert_frame_equal(first, b.history_page(end - pd.Timedelta(hours=1), end, b.series))
        assert len(first) == 60 * len(a.series) and set(first["source"]) == {"simulated/1min"}


def test_add_past_merges_in_time_order_and_reaches_subscribers(make_settings):
    settings = make_settings(RTDASH_PRICE_SOURCE="simulated")
    poller = Poller(make_source("price", settings), 1.0, backlog=1000, backoff_max=2)
    got: list[pd.DataFrame] = []
    poller.subscribe(got.append, direct=True)
    live = make_source("price", settings).fetch()
    poller.seed(live)
    end = pd.Timestamp.now(tz="UTC").floor("min")
    past = poller.source.history_page(end - pd.Timedelta(minutes=10), end, ["BTC"])
    poller.add_past(past)
    poller.add_past(past)  # twice: kept once
    history = poller.history()
    assert len(history) == 11 and history["time"].is_monotonic_increasing
    assert history["source"].iloc[-1] == "simulated" and len(got) == 2
    poller.stop()


def test_a_started_runtime_draws_the_past_and_says_how_much_was_filled(make_settings, fake_api):
    settings = make_settings(
        RTDASH_PRICE_SOURCE="coinbase", RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin,London"
    )
    runtime = get_runtime(settings)
    wait_until(lambda: runtime.price.status.history.get("state") == "ok", 60, message="the price history")
    wait_until(lambda: runtime.weather.status.history.get("state") == "ok", 60, message="the weather history")
    price = runtime.price.history()
    candles = price[price["source"] == "coinbase/1min"]
    assert 355 <= len(candles) <= 360 and runtime.price.status.filled == len(candles)
    weather = runtime.weather.history()
    assert (weather["source"] == "open-meteo/15min").sum() >= 2 * 23
    assert fake_api.count("coinbase-history") == 2 and fake_api.count("open-meteo-history") == 1
    status = runtime.price.status.snapshot()["history"]
    assert status["requests"] == 2 and status["calls_last_hour"] == 2 and status["budget_per_hour"] == 60
    assert status["missing"] == [] and status["resolution"] == "1min"


def test_a_failing_history_never_stops_the_live_polls(make_settings, fake_api):
    fake_api.set_fault("coinbase-history", "502-html")
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_PRICE_INTERVAL="0.3s"))
    wait_until(lambda: runtime.price.status.history.get("state") == "partial", 60, message="the history to fail")
    wait_until(lambda: runtime.price.status.rows >= 3, 60, message="live prices meanwhile")
    history = runtime.price.status.history
    assert runtime.price.status.state == "ok" and "502" in history["message"]
    assert history["missing"] and history["missing"][0]["series"] == "BTC"


def test_a_stopped_runtime_leaves_no_history_fill_running(make_settings, fake_api):
    """A fill in flight when the runtime stops ends before ``stop`` returns: nothing of it runs, hands rows on or
    logs afterwards (its closing log line once landed in the next test's log)."""
    fake_api.set_fault("coinbase-history", "slow", delay=1.5)
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_PRICE_INTERVAL="0.3s"))
    wait_until(lambda: fake_api.count("coinbase-history") >= 1, 60, message="a history request in flight")
    runtime.stop()
    assert [t.name for t in threading.enumerate() if t.name.startswith("rtdash-history-")] == []


def test_history_off_with_a_zero_budget(make_settings, fake_api):
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_HISTORY_BUDGET="0"))
    wait_until(lambda: runtime.price.status.rows >= 1, 60, message="a live price")
    assert fake_api.count("coinbase-history") == 0
    assert runtime.price.status.history["state"] == "off"


def test_a_restart_fills_the_hole_since_the_newest_stored_row(make_settings, fake_api, tmp_path):
    """A server stopped 40 minutes ago: the store's newest price is from then; at start only the hole is fetched."""
    from rtdash.store.duckdb import DuckDBStore

    path = tmp_path / "rtdash.duckdb"
    stopped = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=40)
    with DuckDBStore(path) as store:
        store.write(
            "price",
            pd.DataFrame(
                {"time": [stopped], "asset": ["BTC"], "quote": ["USD"], "price": [65000.0], "source": ["coinbase"]}
            ),
        )
    settings = make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_WEATHER_SOURCE="simulated", RTDASH_STORE=str(path))
    runtime = get_runtime(settings)
    wait_until(lambda: runtime.price.status.history.get("state") == "ok", 60, message="the hole to be fetched")
    (request,) = [r for r in fake_api.requests if r.provider == "coinbase-history"]
    assert int(request.query["start"]) >= stopped.timestamp() - 61
    assert runtime.writer.flush(30)
    hole = runtime.store.read("price", stopped, pd.Timestamp.now(tz="UTC"), ["BTC"])
    filled = hole[hole["source"] == "coinbase/1min"]
    assert 38 <= len(filled) <= 40
    assert filled["time"].min() - stopped < pd.Timedelta(minutes=2)


def test_health_metrics_and_the_badge_say_what_was_filled_and_what_is_missing(make_settings, fake_api):
    from prometheus_client import REGISTRY

    from rtdash import server
    from rtdash.views.status import badge_fields

    fake_api.set_fault("open-meteo-history", "500")
    runtime = get_runtime(
        make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_WEATHER_SOURCE="open-meteo", RTDASH_CITIES="Berlin")
    )
    before = REGISTRY.get_sample_value("rtdash_history_rows_filled_total", {"kind": "price", "provider": "Coinbase"})
    server.sampler.watch(runtime)
    wait_until(lambda: runtime.price.status.history.get("state") == "ok", 60, message="the price history")
    wait_until(lambda: runtime.weather.status.history.get("state") == "partial", 60, message="the weather to fail")
    _, body = server.health()
    price, weather = body["sources"]["price"], body["sources"]["weather"]
    assert price["filled"] == runtime.price.status.filled > 300 and price["history"]["missing"] == []
    assert weather["filled"] == 0 and weather["history"]["missing"][0]["series"] == "Berlin"
    assert "HTTP 500" in weather["history"]["missing"][0]["reason"] and body["status"] == "ok"
    server.sampler.sync()
    after = REGISTRY.get_sample_value("rtdash_history_rows_filled_total", {"kind": "price", "provider": "Coinbase"})
    assert after - (before or 0) == price["filled"]
    assert "rows filled in 2 requests" in badge_fields(runtime.price.status)["history"]
    assert "still missing: Berlin" in badge_fields(runtime.weather.status)["history"]


def test_after_an_outage_the_hole_is_asked_from_the_provider_once_it_answers(make_settings, fake_api):
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_PRICE_INTERVAL="0.3s"))
    poller = runtime.price
    wait_until(lambda: poller.status.history.get("state") == "ok" and poller.status.rows >= 1, 60, message="start")
    fake_api.set_fault("coinbase", "500")  # the live prices and the candles alike
    wait_until(lambda: poller.status.failures >= 4, 60, message="an outage of several intervals")
    last_success = poller.status.last_success
    asked = fake_api.count("coinbase-history")
    fake_api.clear_fault()
    wait_until(lambda: fake_api.count("coinbase-history") > asked, 60, message="the hole asked for")
    request = [r for r in fake_api.requests if r.provider == "coinbase-history"][asked]
    assert int(request.query["start"]) == int(last_success.timestamp() - 60)  # candles ending after the last price
    assert int(request.query["end"]) + 60 >= int(last_success.timestamp())  # candles ending up to now
    wait_until(lambda: poller.status.history.get("requests") == asked + 1, 60, message="the fill to end")
    assert poller.status.history["state"] == "ok"


def test_what_a_provider_error_left_missing_at_start_is_asked_again_once_it_answers(make_settings, fake_api):
    fake_api.set_fault("coinbase", "500")  # down at start: no live price, no candles
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_PRICE_INTERVAL="0.3s"))
    poller = runtime.price
    wait_until(lambda: poller.status.history.get("state") == "partial", 60, message="the start's history to fail")
    wait_until(lambda: poller.status.failures >= 2, 60, message="live polls failing")
    assert poller.status.history["missing"][0]["series"] == "BTC"
    fake_api.clear_fault()
    wait_until(lambda: poller.status.history.get("state") == "ok", 60, message="the missing range filled")
    assert poller.status.history["missing"] == [] and 355 <= poller.status.filled <= 361


@pytest.mark.parametrize(
    "env,expected",
    [
        (
            {"RTDASH_HISTORY_BUDGET": "-1"},
            "RTDASH_HISTORY_BUDGET='-1' is invalid: expected a whole number of at least 0",
        ),
        ({"RTDASH_HISTORY_BUDGET": "99999"}, "at most 3,600"),
        ({"RTDASH_HISTORY_BUDGET": "lots"}, "RTDASH_HISTORY_BUDGET='lots' is invalid: expected a whole number"),
        ({"RTDASH_PAST": "93d"}, "RTDASH_PAST='93d' is invalid: expected a duration of at most 92d"),
        ({"RTDASH_PAST": "-5h"}, "RTDASH_PAST='-5h' is invalid"),
    ],
)
def test_the_history_settings_are_bounded_and_named(env, expected):
    from rtdash.config import Settings, SettingsError

    with pytest.raises(SettingsError) as error:
        Settings.load(environ=env, dotenv=None)
    assert expected in str(error.value)


def test_the_history_settings_read_as_documented():
    from rtdash.config import Settings

    assert Settings.load(environ={}, dotenv=None).past == 6 * 3600
    settings = Settings.load(environ={"RTDASH_PAST": "none", "RTDASH_HISTORY_BUDGET": "0"}, dotenv=None)
    assert settings.past is None and settings.history_budget == 0
    assert Settings.load(environ={"RTDASH_PAST": "1d"}, dotenv=None).past == 86400


def _minutes(asset: str, start: pd.Timestamp, end: pd.Timestamp, source: str = "coinbase") -> pd.DataFrame:
    times = pd.date_range(start.ceil("min"), end, freq="min", inclusive="left")
    return pd.DataFrame({"time": times, "asset": asset, "quote": "USD", "price": 65000.0, "source": source})


def test_holes_are_the_stretches_between_stored_rows_not_before_the_first(tmp_path):
    from rtdash.store.duckdb import DuckDBStore
    from rtdash.stream.history import holes

    now = pd.Timestamp.now(tz="UTC").floor("min")
    h = pd.Timedelta(hours=1)
    with DuckDBStore(tmp_path / "h.duckdb") as store:
        # BTC: rows from 30 h to 20 h ago and from 18 h to 10 h ago; ETH: rows from 12 h ago only.
        store.write("price", _minutes("BTC", now - 30 * h, now - 20 * h))
        store.write("price", _minutes("BTC", now - 18 * h, now - 10 * h))
        store.write("price", _minutes("ETH", now - 12 * h, now - 11 * h))
        found = holes(store, "price", ["BTC", "ETH", "SOL"], now - 26 * h, now - 6 * h, bucket=60, shortest=180)
    minute = pd.Timedelta(minutes=1)
    (first, last) = found["BTC"]
    assert abs(first[0] - (now - 20 * h)) <= minute and abs(first[1] - (now - 18 * h)) <= minute
    assert abs(last[0] - (now - 10 * h)) <= minute and last[1] == now - 6 * h
    (eth,) = found["ETH"]  # nothing before its first row counts; after its last, up to the window's end
    assert abs(eth[0] - (now - 11 * h)) <= minute and eth[1] == now - 6 * h
    assert "SOL" not in found  # never stored: no hole, nothing to ask


def test_a_hole_further_back_in_the_store_is_filled_at_start_and_not_asked_twice(make_settings, fake_api, tmp_path):
    """A server that was down yesterday from 20 h to 18 h ago, and stopped 7 h ago: at start the recent 6 h are
    fetched, then the store's holes over the day before: the two hours of yesterday and the hour before the recent
    past, stored as candles.  The next start finds nothing to ask."""
    from rtdash.store.duckdb import DuckDBStore
    from rtdash.stream import stop_all

    path = tmp_path / "rtdash.duckdb"
    now = pd.Timestamp.now(tz="UTC").floor("min")
    h = pd.Timedelta(hours=1)
    with DuckDBStore(path) as store:
        store.write("price", _minutes("BTC", now - 30 * h, now - 20 * h))
        store.write("price", _minutes("BTC", now - 18 * h, now - 7 * h))
    env = dict(RTDASH_PRICE_SOURCE="coinbase", RTDASH_WEATHER_SOURCE="simulated", RTDASH_STORE=str(path))
    settings = make_settings(RTDASH_PAST="6h", RTDASH_GAP_SEARCH="1d", **env)
    runtime = get_runtime(settings)

    def asked():
        return sorted(
            (int(r.query["start"]), int(r.query["end"])) for r in fake_api.requests if r.provider == "coinbase-history"
        )

    # The recent past (2 pages of at most 349 minutes), then one page per hole (20-18 h, 7-6 h ago).
    wait_until(lambda: len(asked()) >= 4 and runtime.price.status.history.get("state") == "ok", 60, message="fills")
    assert runtime.writer.flush(30)
    hole = runtime.store.read("price", now - 20 * h, now - 18 * h, ["BTC"])
    candles = hole[hole["source"] == "coinbase/1min"]
    assert len(candles) >= 118, f"{len(candles)} candles in the 2-hour hole"
    recent_edge = runtime.store.read("price", now - 7 * h, now - 6 * h, ["BTC"])
    assert (recent_edge["source"] == "coinbase/1min").sum() >= 58
    yesterday = [(a, b) for a, b in asked() if b <= (now - 17 * h).timestamp()]
    assert len(yesterday) == 1, asked()
    assert runtime.status()["price"]["history"]["missing"] == []
    stop_all()

    before = len(asked())
    runtime = get_runtime(settings)  # a restart a moment later: the store has no hole any more
    wait_until(lambda: runtime.price.status.history.get("state") == "ok", 60, message="the restart's fill")
    runtime.price.filler._executor.submit(lambda: None).result(60)  # the search ran (same thread, after the fill)
    assert [(a, b) for a, b in asked()[before:] if b <= (now - 6 * h).timestamp()] == []


def test_the_hole_search_is_bounded_and_can_be_off():
    from rtdash.config import Settings, SettingsError

    assert Settings.load(environ={}, dotenv=None).gap_search == 2 * 86400
    assert Settings.load(environ={"RTDASH_GAP_SEARCH": "none"}, dotenv=None).gap_search is None
    with pytest.raises(SettingsError, match="RTDASH_GAP_SEARCH='93d' is invalid: expected a duration of at most 92d"):
        Settings.load(environ={"RTDASH_GAP_SEARCH": "93d"}, dotenv=None)


def test_rows_the_writer_adds_or_prunes_while_holes_are_counted_are_no_error(tmp_path):
    """The store's writer runs beside the hole search: a series' first row may arrive after the buckets were counted,
    or the rows counted may be pruned before the first row is read.  Neither is a hole, and neither is an error."""
    from rtdash.store.duckdb import DuckDBStore
    from rtdash.stream.history import holes

    now = pd.Timestamp.now(tz="UTC").floor("min")
    h = pd.Timedelta(hours=1)

    class WrittenBetween(DuckDBStore):
        def aggregate(self, *args, **kwargs):
            counts = super().aggregate(*args, **kwargs)
            self.write("price", _minutes("ETH", now - 8 * h, now - 7 * h))  # the writer, just after the count
            return counts

    class PrunedBetween(DuckDBStore):
        def aggregate(self, *args, **kwargs):
            self.prune(now)  # retention, just before the count
            return super().aggregate(*args, **kwargs)

    with WrittenBetween(tmp_path / "w.duckdb") as store:
        store.write("price", _minutes("BTC", now - 30 * h, now - 20 * h))
        found = holes(store, "price", ["BTC", "ETH"], now - 26 * h, now - 6 * h, bucket=60, shortest=180)
    assert set(found) == {"BTC"}, found
    with PrunedBetween(tmp_path / "p.duckdb") as store:
        store.write("price", _minutes("ETH", now - 8 * h, now - 7 * h))
        assert holes(store, "price", ["ETH"], now - 26 * h, now - 6 * h, bucket=60, shortest=180) == {}
