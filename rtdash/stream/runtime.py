"""The process-wide live state: one poller per source per distinct settings, shared by every session, each with a
filler of the provider's own history (the recent past at start, the store's holes, holes after an outage)."""

from __future__ import annotations

import atexit
import logging
import threading

from ..alerts import Alerts
from ..config import Settings
from ..sources import make_source
from ..store import StoreError, StoreWriter, attach, open_store
from .history import HistoryFiller
from .poller import Poller

log = logging.getLogger("rtdash")

_runtimes: dict[tuple, Runtime] = {}
_lock = threading.Lock()


class Runtime:
    """The price and weather pollers of one set of settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.stopped = False
        for warning in settings.limit_warnings():
            log.warning("%s", warning)
        self.pollers: dict[str, Poller] = {
            kind: Poller(
                make_source(kind, settings),
                settings.price_interval if kind == "price" else settings.weather_interval,
                backlog=settings.backlog,
                backoff_max=settings.backoff_max,
                secrets=settings.secrets,
            )
            for kind in ("price", "weather")
        }
        # The providers' own history: the recent past at start, and holes after an outage (rtdash.stream.history).
        for poller in self.pollers.values():
            poller.filler = HistoryFiller(
                poller,
                past=settings.past,
                budget=settings.history_budget,
                backoff_max=settings.backoff_max,
                secrets=settings.secrets,
            )
        # History: opened now, seeded into the pollers and written to from start().  Without one, live only.
        self.writer: StoreWriter | None = None
        self.follower = None  # a viewer follows the store instead of polling (rtdash.scaleout)
        self.store_error: str | None = None
        try:
            self.store = open_store(settings)
        except StoreError as exc:
            self.store, self.store_error = None, str(exc)
            log.error("history is off: %s", exc)
        # Alert rules: evaluated after every fetch of the pollers (a viewer reads the collector's firings instead).
        self.alerts = Alerts(self, settings.rules)

    @property
    def price(self) -> Poller:
        return self.pollers["price"]

    @property
    def weather(self) -> Poller:
        return self.pollers["weather"]

    def start(self) -> Runtime:
        if self.store is not None and self.writer is None:
            self.writer = attach(self.store, self)
        self.alerts.start()  # before the pollers: the first fetch is evaluated too
        if self.settings.role == "viewer":
            from ..scaleout import follow

            self.follower = follow(self)
            return self
        for poller in self.pollers.values():
            poller.filler.start()  # on its own thread, alongside the first live poll (which it must not see)
            if self.writer is not None:  # then the holes further back in the store, on the same thread
                poller.filler.search(self.store, self.settings.gap_search)
            poller.start()
        return self

    def stop(self) -> None:
        """Stop polling, write every row the pollers fetched and close the store, in that order.

        A fetch in flight when the pollers stop still hands its rows to the writer: it is waited for (it ends within
        ``RTDASH_TIMEOUT``) before the writer writes what it holds and stops.
        """
        self.stopped = True  # its figures leave the metrics (rtdash.server.Sampler)
        if self.follower is not None:
            self.follower.stop()
        for poller in self.pollers.values():
            poller.stop(wait=True)
        self.alerts.stop()  # the firings it holds stored, before the store closes
        if self.writer is not None:
            self.writer.close()
        if self.store is not None:
            self.store.close()

    def status(self) -> dict[str, dict]:
        return {kind: poller.status.snapshot() for kind, poller in self.pollers.items()}


def get_runtime(settings: Settings) -> Runtime:
    """The running :class:`Runtime` for ``settings``, created and started on first use."""
    key = settings.key()
    with _lock:
        runtime = _runtimes.get(key)
        if runtime is None:
            runtime = _runtimes[key] = Runtime(settings).start()
            _stop_at_exit()
        return runtime


def _stop_at_exit() -> None:
    """Have :func:`stop_all` run when the interpreter exits, after every other exit callback registered so far.

    Every process stops its runtimes when it exits, however it was started (``panel serve``, whose end no code of
    ours sees, a notebook kernel, a script).  Without this, the history writer -- a daemon thread, so that it never
    keeps a process alive -- was still running when the interpreter finalized: CPython ends a daemon thread that takes
    the GIL back after finalization began with pthread_exit, and when that happened inside a DuckDB call (which
    releases the GIL while it works) the forced unwind went through DuckDB's C++ ``catch (...)``, which does not
    rethrow it: "terminate called after throwing an instance of '' / FATAL: exception not rethrown", SIGABRT, and the
    rows in the writer's buffer lost.  ``atexit`` callbacks run after the non-daemon threads (the pollers' fetches in
    flight) were joined and before any daemon thread is ended, so the writer drains its buffer and stops, then the
    store closes.  Callbacks run last registered first, and DuckDB registers one at import (the store imports it
    when it opens) after which it refuses queries that run Python code, as the writer's insert from Arrow does:
    hence registered again here, after the runtime's store was opened.
    """
    atexit.unregister(stop_all)
    atexit.register(stop_all)


def stop_all() -> None:
    """Stop every runtime of the process (tests, shutdown): their rows are written and their stores closed."""
    with _lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for runtime in runtimes:
        runtime.stop()
