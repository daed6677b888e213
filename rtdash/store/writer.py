"""The writer between the pollers and the store: a bounded buffer drained by one background thread.

``put`` only appends to the buffer (it runs on the pollers' thread, which must never wait for I/O).  The thread
writes what is buffered in batches; when the store fails it keeps the rows, retries with backoff and writes them
when the store is back.  Writes are idempotent, so a batch retried after a half-finished attempt adds nothing twice.
A full buffer refuses new rows, counts them in ``status.dropped`` and logs one line: it is never silent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import pandas as pd
import param

from ..config import format_duration
from ..sources import COLUMNS, SERIES
from ..status import Status
from .base import Store

if TYPE_CHECKING:
    from ..stream.runtime import Runtime

log = logging.getLogger("rtdash.store")

BUFFER_ROWS = 200_000  # at the default intervals (one asset every 5 s, 7 cities every 2 min) about a week of rows
BACKOFF_MAX = 30.0
PRUNE_EVERY = 3600.0


class StoreStatus(Status):
    """What the writer is doing, for the status badge and the health endpoint."""

    backend = param.String(doc="duckdb or postgresql")
    state = param.Selector(default="starting", objects=["starting", "ok", "down", "closed"])
    buffered = param.Integer(default=0, doc="Rows waiting in memory for the store.")
    capacity = param.Integer(default=BUFFER_ROWS, doc="Most rows the buffer holds; more are dropped and counted.")
    received = param.Integer(default=0, doc="Rows handed to the writer since start.")
    written = param.Integer(default=0, doc="Rows inserted since start (rows already stored are not counted).")
    dropped = param.Integer(default=0, doc="Rows lost because the buffer was full.")
    pruned = param.Integer(default=0, doc="Rows deleted by the retention since start.")
    last_write = param.Date(default=None, allow_None=True)
    last_error = param.String(default=None, allow_None=True)
    last_error_time = param.Date(default=None, allow_None=True)
    down_since = param.Date(default=None, allow_None=True)


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class StoreWriter:
    """Writes rows to ``store`` on a background thread; see the module's docstring."""

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = BUFFER_ROWS,
        backoff_max: float = BACKOFF_MAX,
        retention: float | None = None,
    ):
        self.store = store
        self.capacity = capacity
        self.backoff_max = backoff_max
        self.retention = retention
        self.status = StoreStatus(backend=store.backend, capacity=capacity)
        self._pending: deque[tuple[str, pd.DataFrame]] = deque()
        self._lock = threading.Condition()
        self._counts = {"buffered": 0, "received": 0, "dropped": 0}
        self._full = False  # dropping now; logged once per episode
        self._failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtdash-store-writer", daemon=True)

    def start(self) -> StoreWriter:
        self._thread.start()
        return self

    # -- the producer side: any thread, never blocks ------------------------------------------------------------------

    def put(self, kind: str, df: pd.DataFrame) -> int:
        """Queue the rows of ``df`` for writing; how many were accepted (the rest are dropped and counted)."""
        try:
            if kind not in COLUMNS or not {"time", SERIES[kind], "source"} <= set(df.columns):
                raise ValueError(f"not a {kind} frame: columns {list(df.columns)}")
            with self._lock:
                room = max(self.capacity - self._counts["buffered"], 0)
                accepted = df if len(df) <= room else df.iloc[:room]
                dropped = len(df) - len(accepted)
                if len(accepted):
                    self._pending.append((kind, accepted))
                self._counts["buffered"] += len(accepted)
                self._counts["received"] += len(df)
                self._counts["dropped"] += dropped
                first_drop, self._full = dropped and not self._full, self._full or bool(dropped)
                self.status.update(**self._counts)  # under the lock: see _write
            if first_drop:
                log.warning(
                    "history store buffer full (%d rows) while the store is %s: dropping new rows until it drains",
                    self.capacity,
                    self.status.state,
                )
            self._wake.set()
            return len(accepted)
        except Exception:  # a subscriber that raises is dropped by the poller: never let that happen
            log.exception("history writer could not queue %s rows", kind)
            return 0

    # -- the writer thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            if self._failures:
                delay = min(self.backoff_max, 0.5 * 2 ** (self._failures - 1))
                self._stop.wait(delay)
            else:
                self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._attempt()
            if self.retention and self.status.state == "ok" and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + min(PRUNE_EVERY, self.retention / 10)
                self._prune()
        if self.status.state != "down":  # a last drain on close (before the first write too); when down, logged
            self._attempt()
        with self._lock:
            lost = self._counts["buffered"]
        if lost:
            log.warning("history writer closed with %d rows not written (store %s)", lost, self.status.state)
        self.status.state = "closed"

    def _attempt(self) -> None:
        """Write everything buffered (or check the store when nothing is); mark the store ok or down."""
        was, since = self.status.state, self.status.down_since
        with self._lock:
            items = list(self._pending)
        try:
            if items:
                self._write(items)
            elif was != "ok":
                self.store.ping()
        except Exception as exc:
            self._down(exc)
            return
        self._up(was, since)

    def _write(self, items: list[tuple[str, pd.DataFrame]]) -> None:
        for kind in COLUMNS:
            batch = [item for item in items if item[0] == kind]
            if not batch:
                continue
            frame = pd.concat([df for _, df in batch], ignore_index=True) if len(batch) > 1 else batch[0][1]
            inserted = self.store.write(kind, frame)
            done = {id(item) for item in batch}
            with self._lock:
                self._pending = deque(item for item in self._pending if id(item) not in done)
                self._counts["buffered"] -= len(frame)
                if self._full and self._counts["buffered"] < self.capacity:
                    self._full = False
                # The status changes under the lock, with the counts: a ``flush`` that sees the buffer empty sees
                # the status say so, and a ``put`` on another thread cannot show its older counts after these.
                self.status.update(
                    state="ok",
                    down_since=None,
                    written=self.status.written + inserted,
                    last_write=_now(),
                    **self._counts,
                )
                if not self._pending:
                    self._lock.notify_all()

    def _down(self, exc: Exception) -> None:
        self._failures += 1
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        changes = {"last_error": message, "last_error_time": _now()}
        if self.status.state != "down":
            log.warning(
                "history store %s is down: %s; keeping up to %d rows in memory and retrying",
                self.store,
                message,
                self.capacity,
            )
            changes.update(state="down", down_since=changes["last_error_time"])
        self.status.update(**changes)

    def _up(self, was: str, since: pd.Timestamp | None) -> None:
        if was == "down":
            took = (_now() - since).total_seconds() if since is not None else 0.0
            log.warning(
                "history store %s is back after %s; %d rows dropped meanwhile in all",
                self.store,
                format_duration(max(round(took, 1), 0.1)),
                self.status.dropped,
            )
        self._failures = 0
        if self.status.state != "ok":
            self.status.update(state="ok", down_since=None)

    def _prune(self) -> None:
        try:
            deleted = self.store.prune(_now() - pd.Timedelta(seconds=self.retention))
        except Exception as exc:
            log.warning("history retention could not prune: %s", exc)
            return
        if deleted:
            log.info("history retention: deleted %d rows older than %s", deleted, format_duration(self.retention))
            self.status.pruned += deleted

    # -- control -------------------------------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the buffer is empty and the status says so (True) or ``timeout`` seconds passed (False)."""
        self._wake.set()
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (unless the store is down) and stop the thread; a thread still busy after
        ``timeout`` seconds is logged."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "history writer still busy with %s after %s; closing anyway", self.store, format_duration(timeout)
            )


def seed(store: Store, runtime: Runtime) -> None:
    """Pre-fill the live history of each poller with the last ``backlog`` stored rows of its configured series."""
    settings = runtime.settings
    for kind, poller in runtime.pollers.items():
        names = settings.assets if kind == "price" else settings.cities
        try:
            df = store.latest(kind, settings.backlog, series=names)
        except Exception as exc:
            log.warning("could not pre-fill the live %s charts from the history store %s: %s", kind, store, exc)
            continue
        if len(df):
            poller.seed(df)


def attach(store: Store, runtime: Runtime) -> StoreWriter | None:
    """Seed the runtime's pollers from ``store`` and, unless the role is ``viewer``, write their rows to it.

    Call it before the pollers start, so that no fetched row is missed and the seed comes first.
    """
    seed(store, runtime)
    if runtime.settings.role == "viewer":
        return None
    writer = StoreWriter(store, retention=runtime.settings.retention).start()
    for kind, poller in runtime.pollers.items():
        poller.subscribe(lambda df, kind=kind: writer.put(kind, df), direct=True)
    return writer
