"""The shared poller: never blocks, never dies, backs off, honours Retry-After, recovers, fans out in order.

Timing is only ever judged from the fake server's own request times; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator

import pandas as pd
import panel as pn
import pytest
from streamz.dataframe import PeriodicDataFrame

from rtdash.config import Settings
from rtdash.scaleout import FollowerStatus
from rtdash.sources import SourceError, make_source
from rtdash.store.writer import StoreStatus
from rtdash.stream import Poller, get_runtime
from rtdash.stream.poller import SourceStatus, next_tick
from tests.fakeapi import FakeAPI
from tests.helpers import PanelServer, fake_env, wait_until

INTERVAL = 0.2


@pytest.fixture
def pollers() -> Iterator[Callable[..., Poller]]:
    """``make(settings, kind="price", interval=INTERVAL)``: a started poller, stopped after the test."""
    made: list[Poller] = []

    def make(settings: Settings, kind: str = "price", interval: float = INTERVAL, start: bool = True) -> Poller:
        poller = Poller(
            make_source(kind, settings),
            interval,
            backlog=settings.backlog,
            backoff_max=settings.backoff_max,
            secrets=settings.secrets,
        )
        made.append(poller)
        return poller.start() if start else poller

    yield make
    for poller in made:
        poller.stop()


class Collector:
    """A subscriber callback that keeps what it is given."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []
        self._lock = threading.Lock()

    def __call__(self, df: pd.DataFrame) -> None:
        with self._lock:
            self.frames.append(df)

    @property
    def rows(self) -> pd.DataFrame:
        with self._lock:
            frames = list(self.frames)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def __len__(self) -> int:
        with self._lock:
            return len(self.frames)


class RefusingPort:
    """A 127.0.0.1 port that refuses connections until ``forward_to`` makes it a proxy to another server."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._closed = threading.Event()

    def forward_to(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        threading.Thread(target=self._accept, args=((host, int(port)),), daemon=True).start()

    def _accept(self, target: tuple[str, int]) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()


def settings_for(url: str, **env: str) -> Settings:
    env = {
        "RTDASH_PRICE_SOURCE": "coinbase",
        "RTDASH_WEATHER_SOURCE": "simulated",
        "RTDASH_TIMEOUT": "0.2s",
        "RTDASH_BACKOFF_MAX": "0.2s",
    } | env
    return Settings.load(environ=fake_env(url, **env), dotenv=None)


# --- failures ----------------------------------------------------------------------------------------------------

FAILURES = {
    # name: (fault, keywords for set_fault)
    "500": ("500", {}),
    "502-html": ("502-html", {}),
    "429": ("429", {}),
    "401": ("401", {}),
    "invalid-json": ("invalid-json", {}),
    "wrong-shape": ("wrong-shape", {}),
    "html-200": ("html-200", {}),
    "503-json": ("http", {"status": 503, "body": {"message": "maintenance"}}),
    "200-errors": ("http", {"status": 200, "body": {"errors": [{"id": "internal", "message": "oops"}]}}),
    "slow": ("slow", {"delay": 1.0}),
    "hang": ("hang", {}),
    "refused": (None, {}),
}


def test_survives_20_consecutive_failures_of_every_kind_and_recovers_on_the_first_good_answer(pollers) -> None:
    with contextlib.ExitStack() as stack:
        apis: dict[str, FakeAPI] = {name: stack.enter_context(FakeAPI()) for name in FAILURES}
        refusing = RefusingPort()
        stack.callback(refusing.close)
        runs: dict[str, tuple[Poller, Collector]] = {}
        for name, (fault, kwargs) in FAILURES.items():
            if fault is None:
                settings = settings_for(apis[name].url, RTDASH_COINBASE_URL=refusing.url)
            else:
                apis[name].set_fault("coinbase", fault, **kwargs)
                settings = settings_for(apis[name].url)
            poller = pollers(settings, start=False)
            collector = Collector()
            poller.subscribe(collector)
            runs[name] = (poller.start(), collector)

        def all_failed_20_times() -> bool:
            behind = {name: p.status.failures for name, (p, _) in runs.items() if p.status.failures < 20}
            assert not behind, f"not yet 20 failures: {behind}"
            return True

        wait_until(all_failed_20_times, timeout=60, message="20 failures of every kind")
        for name, (poller, collector) in runs.items():
            s = poller.status
            assert s.state == "error", name
            assert s.last_error.startswith("Coinbase: ") and "\n" not in s.last_error, (name, s.last_error)
            assert s.last_success is None and s.errors == s.fetches >= 20, name
            assert poller.frame.continue_[0], f"{name}: the PeriodicDataFrame stopped"
            assert len(collector) == 0, name

        for i, (name, api) in enumerate(apis.items()):
            api.prices["BTC"] = 1000.0 + i  # the next answer, exactly
            if name == "refused":
                refusing.forward_to(api.url)
            else:
                api.clear_fault()

        def all_recovered() -> bool:
            behind = {name: p.status.state for name, (p, _) in runs.items() if p.status.state != "ok"}
            assert not behind, f"not recovered: {behind}"
            return True

        wait_until(all_recovered, timeout=20, message="recovery")
        for i, (name, (poller, collector)) in enumerate(runs.items()):
            wait_until(lambda c=collector: len(c) >= 1, timeout=5)
            first = collector.frames[0]["price"].tolist()
            if name in ("slow", "hang"):
                # A request the client gave up on may still be answered late by the fake, taking the set price;
                # the next answer is then one step of the fake's random walk away from it.
                assert first == pytest.approx([1000.0 + i], rel=0.01), f"{name}: shown {first}"
            else:
                assert first == [1000.0 + i], f"{name}: the first good answer was not the one shown"
            s = poller.status
            assert (s.failures, s.next_retry, s.simulated) == (0, None, False), name
            assert s.last_success is not None and s.rows >= 1, name


def test_one_hanging_provider_does_not_delay_the_other(fake_api: FakeAPI, make_settings) -> None:
    settings = make_settings(
        RTDASH_PRICE_SOURCE="coinbase",
        RTDASH_WEATHER_SOURCE="open-meteo",
        RTDASH_CITIES="Berlin",
        RTDASH_PRICE_INTERVAL="200ms",
        RTDASH_WEATHER_INTERVAL="200ms",
        RTDASH_TIMEOUT="3s",
    )
    fake_api.set_fault("open-meteo", "hang")
    runtime = get_runtime(settings)
    wait_until(lambda: runtime.weather.status.failures >= 1, timeout=15, message="the hanging fetch to time out")
    hung = next(r for r in fake_api.requests if r.provider == "open-meteo").time
    during = [r.time for r in fake_api.requests if r.provider == "coinbase" and hung <= r.time <= hung + 3.0]
    # 3 s of hanging at a 200 ms interval: about 15 price fetches; a price poller waiting on weather gets 0 or 1.
    assert len(during) >= 8, f"only {len(during)} price fetches while the weather provider hung"
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) < 1.5, f"price fetches paused for {max(gaps):.1f} s"
    assert runtime.price.status.state == "ok" and runtime.price.status.failures == 0
    assert runtime.weather.status.last_error == "Open-Meteo: no answer within 3 s"


def test_429_retry_after_is_not_retried_before_it_says(fake_api: FakeAPI, make_settings, pollers) -> None:
    fake_api.set_fault("coinbase", "429", retry_after=3)
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_BACKOFF_MAX="5s"))
    wait_until(lambda: poller.status.failures == 1, timeout=10)
    s = poller.status
    assert s.last_error == "Coinbase: HTTP 429: Too many requests (rate_limit_exceeded)"
    assert (s.next_retry - s.last_error_time).total_seconds() >= 3.0
    refresh = poller.fetch_now()  # the Refresh button respects it too, without asking
    with pytest.raises(SourceError, match=r"^Coinbase: rate limited, retry in \d s$"):
        refresh.result(timeout=1)
    fake_api.clear_fault()
    wait_until(lambda: poller.status.state == "ok", timeout=10)
    first, second = fake_api.requests[:2]
    assert second.time - first.time >= 3.0, f"retried after {second.time - first.time:.2f} s"


def test_the_retry_comes_when_it_is_due_not_at_the_next_tick(fake_api: FakeAPI, make_settings, pollers) -> None:
    # Ticks come every 2 s; the retry is due 3 s after the 429 (its Retry-After is longer than the backoff), a
    # second before the tick after it.
    fake_api.set_fault("coinbase", "429", retry_after=3)
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_BACKOFF_MAX="5s"), interval=2.0)
    wait_until(lambda: poller.status.failures == 1, timeout=10)
    fake_api.clear_fault()
    wait_until(lambda: poller.status.state == "ok", timeout=10)
    first, second = fake_api.requests[:2]
    assert 3.0 <= second.time - first.time < 3.7, f"retried after {second.time - first.time:.2f} s, due after 3 s"


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [(10.0, 10.0, 11.0), (10.0, 10.3, 11.0), (10.0, 10.99, 11.0), (10.0, 11.5, 12.0), (10.0, 13.2, 14.0)],
)
def test_the_clock_keeps_its_grid_and_skips_a_tick_it_could_not_run(due, now, expected) -> None:
    assert next_tick(due, now, 1.0) == pytest.approx(expected)


def test_a_late_tick_does_not_push_the_later_ones_back(fake_api: FakeAPI, make_settings, pollers) -> None:
    """The streamz loop thread blocked for 1.5 intervals (a busy process) shifts no later fetch off the grid.  With
    streamz's own ``PeriodicDataFrame`` every later fetch moved by half an interval."""
    import statistics
    import time

    interval = 0.5
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"), interval=interval)
    assert isinstance(poller.frame, PeriodicDataFrame)
    wait_until(lambda: fake_api.count("coinbase") >= 6, timeout=30)
    poller.frame.loop.add_callback(time.sleep, 1.5 * interval)
    blocked = time.time()
    wait_until(lambda: sum(r.time > blocked + 2 * interval for r in fake_api.requests) >= 6, timeout=30)

    def phase(times: list[float]) -> float:  # where in the interval the fetches fall, as a median angle
        import cmath

        angles = [cmath.exp(2j * cmath.pi * (t % interval) / interval) for t in times]
        return cmath.phase(sum(angles)) / (2 * cmath.pi) * interval

    times = [r.time for r in fake_api.requests if r.provider == "coinbase"]
    before = phase([t for t in times[1:] if t < blocked])  # the first fetch is made at start, off the grid
    after = phase([t for t in times if t > blocked + 2 * interval])
    shift = abs((after - before + interval / 2) % interval - interval / 2)
    assert shift < interval / 4, f"the fetches moved {shift:.2f} s off their grid (interval {interval} s)"
    assert statistics.median(b - a for a, b in itertools.pairwise(times[-6:])) == pytest.approx(interval, abs=0.1)


def test_backoff_grows_with_jitter_up_to_the_cap(fake_api: FakeAPI, make_settings, pollers) -> None:
    fake_api.set_fault("coinbase", "500")
    poller = pollers(
        make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_BACKOFF_MAX="0.4s"), interval=0.1, start=False
    )
    delays: list[float] = []
    poller.status.param.watch(
        lambda _: delays.append((poller.status.next_retry - poller.status.last_error_time).total_seconds()),
        ["failures"],
    )
    poller.start()
    wait_until(lambda: len(delays) >= 6, timeout=20)
    # interval 0.1 s doubling, capped at 0.4 s, each drawn from [d/2, d]: [.05,.1] [.1,.2] [.2,.4] [.2,.4] ...
    assert 0.05 <= delays[0] <= 0.1 + 0.01 and 0.1 <= delays[1] <= 0.2 + 0.01, delays
    assert all(0.2 <= d <= 0.4 + 0.01 for d in delays[2:6]), delays
    assert len(set(delays)) == len(delays), "no jitter"
    times = [r.time for r in fake_api.requests]
    for k in range(5):  # never asked again before next_retry
        assert times[k + 1] - times[k] >= delays[k] - 0.02, (k, times, delays)


# --- the PeriodicDataFrame and the runtime ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["hang", "refused"])
def test_the_periodic_dataframe_neither_blocks_nor_raises(fake_api: FakeAPI, make_settings, fault: str) -> None:
    env = {"RTDASH_PRICE_SOURCE": "coinbase", "RTDASH_WEATHER_SOURCE": "open-meteo", "RTDASH_TIMEOUT": "30s"}
    if fault == "hang":
        fake_api.set_fault("*", "hang")
    else:
        refusing = RefusingPort()
        env |= {"RTDASH_COINBASE_URL": refusing.url, "RTDASH_OPENMETEO_URL": refusing.url}
    settings = make_settings(**env)
    started: dict[str, object] = {}

    def start() -> None:
        try:
            started["runtime"] = get_runtime(settings)
        except BaseException as exc:
            started["error"] = exc

    threading.Thread(target=start, daemon=True).start()
    # A fetch inside the constructor would wait for the 30 s timeout; raising would leave an error.
    wait_until(lambda: started, timeout=10, message="get_runtime() to return")
    assert "error" not in started, started
    runtime = started["runtime"]
    assert isinstance(runtime.price.frame, PeriodicDataFrame)
    if fault == "hang":
        assert fake_api.wait_for_count("coinbase", 1) and fake_api.wait_for_count("open-meteo", 1)
        assert runtime.price.status.state == runtime.weather.status.state == "starting"
    else:
        wait_until(lambda: runtime.price.status.state == "error", timeout=10)
        assert runtime.price.status.last_error.startswith("Coinbase: cannot connect")
        refusing.close()


def test_one_runtime_per_settings(fake_api: FakeAPI, make_settings) -> None:
    env = {"RTDASH_PRICE_SOURCE": "simulated", "RTDASH_WEATHER_SOURCE": "simulated"}
    first = get_runtime(make_settings(**env))
    assert get_runtime(make_settings(**env)) is first
    assert get_runtime(make_settings(**env, RTDASH_SEED="1")) is not first


# --- status ------------------------------------------------------------------------------------------------------


T0 = pd.Timestamp("2026-01-01", tz="UTC")
WHOLE_UPDATES = {  # a status read by /health, and two updates its writer thread makes in turn
    "source": (
        lambda: SourceStatus(kind="price", provider="Coinbase", interval=1.0),
        {"state": "ok", "last_success": T0, "last_error": None, "failures": 0},
        {"state": "error", "last_success": None, "last_error": "HTTP 500", "failures": 1},
    ),
    "store writer": (
        lambda: StoreStatus(backend="duckdb"),
        {"state": "ok", "down_since": None, "last_error": None, "written": 2},
        {"state": "down", "down_since": T0, "last_error": "IOError: disk full", "written": 1},
    ),
    "viewer's follower": (
        FollowerStatus,
        {"state": "ok", "rows": 2, "last_rows": T0, "last_error": None},
        {"state": "down", "rows": 1, "last_rows": None, "last_error": "OperationalError: gone"},
    ),
}


@pytest.mark.parametrize("kind", WHOLE_UPDATES)
def test_a_status_snapshot_never_holds_half_of_an_update(kind) -> None:
    """The worker thread sets a success's fields together while ``/health`` reads them on another: a snapshot holds
    all of them or none (one read ``state: ok`` with ``last_success`` still empty)."""
    make, success, failure = WHOLE_UPDATES[kind]
    status = make()
    whole_success, whole_failure = (
        {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in fields.items()}
        for fields in (success, failure)
    )
    status.update(**failure)
    done = threading.Event()
    torn: list[dict] = []

    def write() -> None:
        for _ in range(3000):
            status.update(**success)
            status.update(**failure)
        done.set()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns as often as the interpreter allows
    try:
        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set():
            snap = status.snapshot()
            fields = {name: snap[name] for name in success}
            if fields not in (whole_success, whole_failure):
                torn.append(fields)
        writer.join()
    finally:
        sys.setswitchinterval(switch)
    assert torn == []


def test_status_fields_move_as_expected(fake_api: FakeAPI, make_settings, pollers) -> None:
    fake_api.set_fault("coinbase", "hang")
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_TIMEOUT="1s", RTDASH_BACKOFF_MAX="0.4s"))
    s = poller.status
    assert fake_api.wait_for_count("coinbase", 1)
    assert (s.state, s.failures, s.last_error, s.next_retry, s.provider) == ("starting", 0, None, None, "Coinbase")

    fake_api.set_fault("coinbase", "500")
    wait_until(lambda: s.failures >= 2, timeout=10)
    assert s.state == "error" and s.last_success is None
    assert s.last_error == "Coinbase: HTTP 500 Internal Server Error: Internal Server Error"
    assert s.next_retry > s.last_error_time

    fake_api.clear_fault()
    wait_until(lambda: s.state == "ok", timeout=10)
    assert (s.failures, s.next_retry) == (0, None)
    assert s.last_success is not None and s.rows >= 1 and s.interval == INTERVAL

    fake_api.set_fault("coinbase", "html-200")
    wait_until(lambda: s.failures >= 1, timeout=10)
    assert s.state == "stale"  # live data was seen: stale, not error
    assert s.last_error == "Coinbase: answered with an HTML page instead of data (Sign in to Wi-Fi)"
    snapshot = poller.status.snapshot()
    assert snapshot["state"] == "stale" and isinstance(snapshot["last_success"], str)

    fake_api.clear_fault()
    wait_until(lambda: s.state == "ok", timeout=10)


def test_partial_answers_are_ok_with_a_detail(fake_api: FakeAPI, make_settings, pollers) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_ASSETS="BTC,NOPE"))
    wait_until(lambda: len(poller.history()), timeout=10)  # published just after the status turns ok
    assert poller.status.state == "ok"
    assert poller.status.detail == "NOPE: Coinbase: HTTP 404: Invalid currency (not_found)"
    assert set(poller.history()["asset"]) == {"BTC"}


def test_auto_shows_simulated_until_live_then_stale_never_fake(fake_api: FakeAPI, make_settings, pollers) -> None:
    fake_api.set_fault("coinbase", "500")
    poller = pollers(make_settings(RTDASH_BACKOFF_MAX="0.2s"), start=False)
    collector = Collector()
    poller.subscribe(collector)
    poller.start()
    s = poller.status
    wait_until(lambda: len(collector) >= 2, timeout=10)
    assert (s.state, s.simulated, s.provider) == ("ok", True, "Simulated")
    assert s.fallback_reason == "Coinbase: HTTP 500 Internal Server Error: Internal Server Error"
    assert set(collector.rows["source"]) == {"simulated"}

    fake_api.clear_fault()
    wait_until(lambda: not s.simulated, timeout=10)
    assert (s.state, s.provider, s.fallback_reason) == ("ok", "Coinbase", None)
    # Simulated points are dropped once live data comes (published just after the status turns live).
    wait_until(lambda: set(poller.history()["source"]) == {"coinbase"}, timeout=10)

    fake_api.set_fault("coinbase", "500")
    wait_until(lambda: s.failures >= 3, timeout=10)
    assert (s.state, s.simulated) == ("stale", False)
    n = len(collector)
    live_from = collector.rows["source"].tolist().index("coinbase")
    assert set(collector.rows["source"].iloc[live_from:]) == {"coinbase"}
    assert len(collector) == n


# --- fan-out -----------------------------------------------------------------------------------------------------


def test_subscribers_get_history_then_only_new_rows(fake_api: FakeAPI, make_settings, pollers) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_ASSETS="BTC,ETH"))
    wait_until(lambda: len(poller.history()) >= 6, timeout=10)
    collector = Collector()
    sub = poller.subscribe(collector)
    assert len(sub.history) >= 6 and list(sub.history.columns) == list(poller.history().columns)
    wait_until(lambda: len(collector) >= 3, timeout=10)
    # Make the poller quiet: once a fetch has failed, every earlier answer has been delivered.
    fake_api.set_fault("coinbase", "500")
    wait_until(lambda: poller.status.failures >= 1, timeout=10)
    seen = pd.concat([sub.history, collector.rows], ignore_index=True)
    assert len(seen) == poller.status.rows, "a row was lost or delivered twice"
    pd.testing.assert_frame_equal(seen, poller.history())
    assert all(times.is_monotonic_increasing for _, times in seen.groupby("asset")["time"])


def test_history_keeps_the_backlog_per_series(fake_api: FakeAPI, make_settings, pollers) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_ASSETS="BTC,ETH", RTDASH_BACKLOG="3"))
    wait_until(lambda: poller.status.rows >= 12, timeout=15)
    history = poller.subscribe(lambda df: None).history
    assert history.groupby("asset").size().to_dict() == {"BTC": 3, "ETH": 3}


def test_cancelled_subscribers_get_nothing(fake_api: FakeAPI, make_settings, pollers) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    kept, cancelled = Collector(), Collector()
    poller.subscribe(kept)
    sub = poller.subscribe(cancelled)
    assert poller.subscriber_count == 2
    wait_until(lambda: len(cancelled) >= 1, timeout=10)
    sub.cancel()
    n, m = len(kept), len(cancelled)
    assert not sub.active and poller.subscriber_count == 1
    wait_until(lambda: len(kept) >= n + 3, timeout=10)
    assert len(cancelled) == m


# --- in a Panel server session: the session's own loop -----------------------------------------------------------


@pytest.fixture
def panel_server() -> Iterator[Callable[..., PanelServer]]:
    servers: list[PanelServer] = []

    def start(app: Callable[[], object], **server_kwargs: object) -> PanelServer:
        servers.append(PanelServer(app, **server_kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def subscribing_app(poller: Poller, subscriptions: list, collectors: list[Collector], count: int = 1):
    """An app whose sessions each subscribe ``count`` collectors to ``poller``."""

    def app() -> pn.viewable.Viewable:
        for _ in range(count):
            collectors.append(Collector())
            subscriptions.append(poller.subscribe(collectors[-1]))
        return pn.pane.Markdown("rtdash")

    return app


def one_subscribed_session(poller: Poller, panel_server: Callable[..., PanelServer]) -> tuple[PanelServer, Collector]:
    """A served session subscribed to ``poller``, and what it got, once its first update has arrived."""
    collectors: list[Collector] = []
    server = panel_server(subscribing_app(poller, [], collectors))
    server.new_session()
    (got,) = collectors
    wait_until(lambda: len(got) >= 1, timeout=10)
    return server, got


def test_a_session_that_falls_behind_gets_one_update_with_every_row(
    fake_api: FakeAPI, make_settings, pollers, panel_server
) -> None:
    """A busy session's loop never holds more than one pending update: the rows that came meanwhile come together."""
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    server, got = one_subscribed_session(poller, panel_server)
    with server.busy():
        n, updates = len(got), poller.updates
        wait_until(lambda: poller.updates >= updates + 3, timeout=10)
        behind = poller.updates - updates
    wait_until(lambda: len(got) > n, timeout=10)
    late = got.frames[n]
    assert len(late) >= behind >= 3, f"{len(late)} rows for {behind} fetches"
    earlier = pd.concat(got.frames[:n])["time"]
    assert late["time"].is_monotonic_increasing and late["time"].min() > earlier.max()
    assert set(late["time"]) <= set(poller.history()["time"])


def test_updates_queued_for_a_session_are_dropped_when_cancelled_before_they_run(
    fake_api: FakeAPI, make_settings, pollers, panel_server
) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    subscriptions: list = []
    collectors: list[Collector] = []
    server = panel_server(subscribing_app(poller, subscriptions, collectors, count=2))
    server.new_session()
    (cancelled, kept), (sub, _) = collectors, subscriptions
    wait_until(lambda: len(cancelled) >= 1 and len(kept) >= 1, timeout=10)
    with server.busy():
        before, updates = len(cancelled), poller.updates
        wait_until(lambda: poller.updates >= updates + 2, timeout=10)  # queued on the busy loop
        sub.cancel()
        n = len(kept)
    wait_until(lambda: len(kept) > n, timeout=10)  # the loop has run what was queued, in order
    assert len(cancelled) == before, "an update arrived after cancel()"


def test_a_destroyed_session_leaves_no_subscription(fake_api: FakeAPI, make_settings, pollers, panel_server) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    subscriptions: list = []
    collectors: list[Collector] = []
    server = panel_server(
        subscribing_app(poller, subscriptions, collectors, count=2),
        check_unused_sessions_milliseconds=100,
        unused_session_lifetime_milliseconds=300,
    )
    for _ in range(3):
        server.new_session()  # no browser connects: each session is discarded after 300 ms
    assert len(subscriptions) == 6
    wait_until(lambda: poller.subscriber_count == 0, timeout=15, message="the sessions' subscriptions to go")
    assert not any(sub.active for sub in subscriptions)
    counts = [len(c) for c in collectors]
    n = poller.status.rows
    wait_until(lambda: poller.status.rows >= n + 2, timeout=10)
    assert [len(c) for c in collectors] == counts


def test_a_subscriber_that_raises_is_dropped_and_the_others_go_on(fake_api: FakeAPI, make_settings, pollers) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"), start=False)

    def broken(df: pd.DataFrame) -> None:
        raise RuntimeError("this document is gone")

    bad = poller.subscribe(broken)
    good = Collector()
    poller.subscribe(good)
    poller.start()
    wait_until(lambda: len(good) >= 3, timeout=10)
    assert not bad.active and poller.subscriber_count == 1
    assert poller.status.state == "ok"


def test_an_error_on_the_way_to_the_subscribers_is_logged_shown_and_the_poller_goes_on(
    fake_api: FakeAPI, make_settings, pollers, caplog
) -> None:
    """Something watching the status raises after a fetch (a bug of ours or a plug-in's): that fetch's rows reach
    nobody, the log and the status say so, and the fetches after it arrive as usual."""
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"), start=False)
    got = Collector()
    poller.subscribe(got)
    broken = threading.Event()
    broken.set()

    def watcher(event) -> None:
        if broken.is_set():
            raise RuntimeError("a watcher's bug")

    poller.status.param.watch(watcher, ["fetches"])
    with caplog.at_level(logging.ERROR, logger="rtdash.stream"):
        poller.start()
        wait_until(lambda: poller.status.errors >= 1, timeout=10, message="the failed hand-over in the status")
    assert "fetched rows were not handed on" in poller.status.last_error
    assert "a watcher's bug" in poller.status.last_error
    assert poller.status.state in ("stale", "error")
    assert len(got) == 0
    logged = [r for r in caplog.records if "were not handed on" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, [r.getMessage() for r in caplog.records]

    broken.clear()
    wait_until(lambda: len(got) >= 2 and poller.status.state == "ok", timeout=10, message="fetches handed on again")


def test_a_tick_or_refresh_after_stop_submits_nothing_and_logs_no_traceback(
    fake_api: FakeAPI, make_settings, pollers, caplog
) -> None:
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    wait_until(lambda: poller.status.state == "ok", timeout=10)
    poller.stop()
    calls = fake_api.count("coinbase")
    with caplog.at_level(logging.ERROR, logger="rtdash.stream"):
        poller._running = True  # a tick that had already looked at the flag when stop() ran
        poller._tick()
    with pytest.raises(SourceError, match="stopped"):
        poller.fetch_now().result(timeout=1)
    assert caplog.records == [] and fake_api.count("coinbase") == calls


def test_an_update_due_as_its_session_is_destroyed_is_dropped_without_an_error(
    fake_api: FakeAPI, make_settings, pollers, panel_server, caplog
) -> None:
    """The session ends on the server's loop between the poller's hand-over and the document's next tick."""
    poller = pollers(make_settings(RTDASH_PRICE_SOURCE="coinbase"))
    server, got = one_subscribed_session(poller, panel_server)
    (session,) = server.server.get_sessions("/")
    with caplog.at_level(logging.ERROR), server.busy():
        server.loop.add_callback(session.destroy)  # runs before the update queued below
        updates = poller.updates
        wait_until(lambda: poller.updates > updates, timeout=10)
    n = len(got)
    server.on_loop(lambda: None)  # the loop has run what was queued
    assert session.destroyed and len(got) == n
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
