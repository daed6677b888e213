"""The process-wide live state: one poller per source per distinct settings, shared by every session."""

from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..sources import make_source
from ..store import StoreError, StoreWriter, attach, open_store
from .poller import Poller

log = logging.getLogger("rtdash")

_runtimes: dict[tuple, Runtime] = {}
_lock = threading.Lock()


class Runtime:
    """The price and weather pollers of one set of settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
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
        # History: opened now, seeded into the pollers and written to from start().  Without one, live only.
        self.writer: StoreWriter | None = None
        self.follower = None  # a viewer follows the store instead of polling (rtdash.scaleout)
        self.store_error: str | None = None
        try:
            self.store = open_store(settings)
        except StoreError as exc:
            self.store, self.store_error = None, str(exc)
            log.error("history is off: %s", exc)

    @property
    def price(self) -> Poller:
        return self.pollers["price"]

    @property
    def weather(self) -> Poller:
        return self.pollers["weather"]

    def start(self) -> Runtime:
        if self.store is not None and self.writer is None:
            self.writer = attach(self.store, self)
        if self.settings.role == "viewer":
            from ..scaleout import follow

            self.follower = follow(self)
            return self
        for poller in self.pollers.values():
            poller.start()
        return self

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        for poller in self.pollers.values():
            poller.stop()
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
        return runtime


def stop_all() -> None:
    """Stop every runtime of the process (tests, shutdown)."""
    with _lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for runtime in runtimes:
        runtime.stop()
