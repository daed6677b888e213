"""Scale-out on PostgreSQL: one collector calls the APIs; any number of viewer processes follow the store.

    RTDASH_STORE=postgresql://... python -m rtdash collect
    RTDASH_STORE=postgresql://... RTDASH_ROLE=viewer panel serve realtime_dashboard.py --num-procs 4 ...

The collector is a :class:`~rtdash.stream.Runtime` without a web server: its pollers fetch, its writer stores.  It
installs a statement trigger on the ``price`` and ``weather`` tables that sends ``NOTIFY rtdash_price`` (or
``rtdash_weather``) after every insert, in the inserting transaction, so a notification means committed rows.

A viewer's runtime starts a :class:`Follower` instead of its pollers: one connection ``LISTEN``\\s on both channels,
waiting in ``select`` (no polling loop); on a notification it reads the rows newer than the newest it holds of each
series and hands them to the pollers' subscribers exactly as a fetch would (``poller.frame.emit``), so the live
views cannot tell the difference.  Rows of a provider's history that the collector stores later than newer rows (a
hole filled) are announced on ``rtdash_past_price`` / ``rtdash_past_weather`` with the oldest one's time; a viewer
reads them from there and merges them in (``poller.add_past``).  When the connection fails it reconnects with
backoff and catches up on what it missed.  However many viewers and sessions, each API is called once per
interval, by the collector.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

import pandas as pd
import param

from .config import Settings, SettingsError, format_duration
from .sources import SERIES, redact
from .sources.base import is_history, tidy
from .status import Status
from .store import KINDS
from .store.postgres import PAST_CHANNEL

log = logging.getLogger("rtdash.scaleout")

CHANNEL = "rtdash_{kind}"
WAIT = 1.0  # seconds a LISTEN waits before looking at its stop flag and the collector's silence
BACKOFF_MAX = 30.0
FIRST_LOOK_BACK = pd.Timedelta("10min")  # how far back a viewer with no rows of a kind yet reads
NOTIFY_SQL = """
CREATE OR REPLACE FUNCTION rtdash_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtdash_' || TG_TABLE_NAME, '');
    RETURN NULL;
END
$$;
"""
TRIGGER_SQL = (
    "CREATE OR REPLACE TRIGGER rtdash_notify AFTER INSERT ON {kind} FOR EACH STATEMENT EXECUTE FUNCTION rtdash_notify()"
)


def install_notify(store) -> None:
    """Create the store's tables if needed, and the trigger that announces every insert (idempotent)."""
    import psycopg

    store.ping()  # the store creates its schema on its first connection
    with psycopg.connect(store.url, autocommit=True, connect_timeout=5) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('rtdash notify'))")
        conn.execute(NOTIFY_SQL)
        for kind in KINDS:
            conn.execute(TRIGGER_SQL.format(kind=kind))


class FollowerStatus(Status):
    """What a viewer's follower is doing, for the health endpoint."""

    state = param.Selector(default="starting", objects=["starting", "ok", "down", "closed"])
    notifications = param.Integer(default=0)
    rows = param.Integer(default=0)
    last_rows = param.Date(default=None, allow_None=True, doc="When rows last arrived from the collector.")
    last_error = param.String(default=None, allow_None=True)


class Follower:
    """Streams the rows the collector stores to a viewer runtime's subscribers; see the module's docstring."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.store = runtime.store
        self.status = FollowerStatus()
        self._newest: dict[str, dict[str, pd.Timestamp]] = {kind: {} for kind in KINDS}
        for kind, poller in runtime.pollers.items():  # what the seed from the store already holds
            self._remember(kind, poller.history())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtdash-follower", daemon=True)
        self._conn = None

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.status.state = "closed"

    # -- the LISTEN thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        import psycopg

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.store.url, autocommit=True, connect_timeout=5) as conn:
                    try:
                        install_notify(self.store)  # usually the collector did; harmless again
                    except Exception as exc:  # e.g. no privilege: the collector's trigger is what counts
                        log.debug("viewer could not install the notify trigger: %s", exc)
                    for kind in KINDS:
                        conn.execute(f"LISTEN {CHANNEL.format(kind=kind)}")
                        conn.execute(f"LISTEN {PAST_CHANNEL.format(kind=kind)}")
                    if self.status.state != "ok":
                        if self.status.state == "down":
                            log.warning("viewer: following the history store again")
                        self.status.update(state="ok", last_error=None)
                    failures = 0
                    for kind in KINDS:  # what was stored while this viewer was not listening
                        self._catch_up(kind)
                    while not self._stop.is_set():
                        notes = list(conn.notifies(timeout=WAIT))
                        kinds = {n.channel.removeprefix("rtdash_") for n in notes}
                        for kind in sorted(kinds & set(KINDS)):
                            self.status.notifications += 1
                            self._catch_up(kind)
                        for kind in KINDS:
                            oldest = [n.payload for n in notes if n.channel == PAST_CHANNEL.format(kind=kind)]
                            if oldest:
                                self._take_past(kind, oldest)
                        self._check_silence()
            except Exception as exc:
                failures += 1
                delay = min(BACKOFF_MAX, 0.5 * 2 ** (failures - 1))
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                message = redact(f"{type(exc).__name__}: {first}", self.runtime.settings.secrets)  # the store password
                if self.status.state != "down":
                    log.warning(
                        "viewer: cannot follow the history store: %s; retrying in %s", message, format_duration(delay)
                    )
                self.status.update(state="down", last_error=message)
                for poller in self.runtime.pollers.values():
                    if poller.status.state == "ok":
                        poller.status.update(state="stale", last_error=f"history store: {message}")
                self._stop.wait(delay)

    def _catch_up(self, kind: str) -> None:
        """Hand over the rows of ``kind`` newer than the newest this viewer holds of each of its series."""
        settings, name = self.runtime.settings, SERIES[kind]
        series = list(settings.assets if kind == "price" else settings.cities)
        newest = {key: value for key, value in self._newest[kind].items() if key in series}
        if newest:  # a series that stopped (the collector was reconfigured) must not make every read longer
            start = max(min(newest.values()), max(newest.values()) - FIRST_LOOK_BACK)
        else:
            start = pd.Timestamp.now(tz="UTC") - FIRST_LOOK_BACK
        df = tidy(self.store.read(kind, start=start, series=series), kind)
        if not len(df):
            return
        last = df[name].map(newest).astype("datetime64[ns, UTC]")
        fresh = df[last.isna() | (df["time"] > last)].sort_values("time", kind="stable").reset_index(drop=True)
        if not len(fresh):
            return
        self._remember(kind, fresh)
        poller = self.runtime.pollers[kind]
        past = fresh["source"].map(is_history).astype(bool)
        if past.any():  # the provider's history the collector fetched: merged in time order, drawn apart
            poller.add_past(fresh[past].reset_index(drop=True))
        if not past.all():
            poller.frame.emit(fresh[~past].reset_index(drop=True))  # history, then every subscriber, as after a fetch
        now = pd.Timestamp.now(tz="UTC")
        poller.status.update(
            state="ok",
            last_success=now,
            last_attempt=now,
            failures=0,
            last_error=None,
            rows=poller.status.rows + len(fresh),
        )
        self.status.update(rows=self.status.rows + len(fresh), last_rows=now)

    def _take_past(self, kind: str, payloads: list[str]) -> None:
        """The collector stored rows of a provider's history (a hole filled); those older than the newest this viewer
        holds were not in :meth:`_catch_up`: read them from the oldest announced and merge them into the history and
        the live charts' dashed lines.  A payload that is not an epoch in microseconds is ignored."""
        stamps = [int(p) for p in payloads if p.strip().isdigit() and len(p.strip()) <= 19]
        newest = self._newest[kind]
        if not stamps or not newest:
            return
        settings, name = self.runtime.settings, SERIES[kind]
        series = list(settings.assets if kind == "price" else settings.cities)
        start = pd.Timestamp(min(stamps), unit="us", tz="UTC")
        end = max(newest.values())
        if start > end:
            return  # newer than anything held: _catch_up hands it over
        df = tidy(self.store.read(kind, start=start, end=end, series=series), kind)
        past = df[df["source"].map(is_history).astype(bool)]
        past = past[past["time"] <= past[name].map(newest).astype("datetime64[ns, UTC]")]
        if len(past):
            self.runtime.pollers[kind].add_past(past.sort_values("time", kind="stable").reset_index(drop=True))
            s = self.runtime.pollers[kind].status
            s.update(filled=s.filled + len(past))

    def _remember(self, kind: str, df: pd.DataFrame) -> None:
        if len(df):
            for series, newest in df.groupby(SERIES[kind], sort=False)["time"].max().items():
                self._newest[kind][series] = max(newest, self._newest[kind].get(series, newest))

    def _check_silence(self) -> None:
        """A source whose rows stopped coming (the collector is down or failing) turns stale."""
        now = pd.Timestamp.now(tz="UTC")
        for poller in self.runtime.pollers.values():
            s = poller.status
            quiet = max(3 * poller.interval, 30.0)
            if s.state == "ok" and s.last_success is not None and (now - s.last_success).total_seconds() > quiet:
                s.update(state="stale", last_error=f"no new rows from the collector for {quiet:.0f} s")


def follow(runtime) -> Follower:
    """Start following the store for a viewer ``runtime`` (instead of starting its pollers)."""
    return Follower(runtime).start()


def collect(settings: Settings, stop: threading.Event | None = None) -> int:
    """``python -m rtdash collect``: poll and store until SIGTERM or SIGINT (or ``stop``); 0 on a clean stop."""
    from .stream import get_runtime, stop_all

    settings.role = "collector"
    try:
        settings.validate()  # a collector needs a PostgreSQL store, as the settings say
    except SettingsError as exc:
        print(f"rtdash: error: {exc}", flush=True)
        return 2
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    runtime = get_runtime(settings)
    if runtime.store is None:
        print(f"rtdash: error: {runtime.store_error}", flush=True)
        stop_all()
        return 2
    delay = 0.5
    while not stop.is_set():
        try:
            install_notify(runtime.store)
            break
        except Exception as exc:
            log.warning("collector: cannot prepare the history store yet: %s; retrying in %s", exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)
    log.warning(
        "collector: polling %s every %s and %s every %s into %r",
        runtime.price.source.provider,
        format_duration(runtime.price.interval),
        runtime.weather.source.provider,
        format_duration(runtime.weather.interval),
        runtime.store,
    )
    # Wake now and then: a signal the kernel delivers to another thread runs its Python handler only when the main
    # thread runs bytecode, which it never would inside an untimed wait (3 in 30 SIGTERMs under load hung).
    while not stop.wait(1.0):
        pass
    log.warning("collector: stopping")
    stop_all()
    return 0


def main(argv: Sequence[str] = ()) -> int:  # pragma: no cover - the cli's `collect` calls collect()
    from .cli import load_settings_or_exit
    from .logs import setup_logging

    settings = load_settings_or_exit(argv)
    setup_logging(settings)
    return collect(settings)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main(sys.argv[1:]))
