"""One poller per source per process: a streamz ``PeriodicDataFrame`` that never blocks and never dies.

The ``PeriodicDataFrame`` (``Clock``, on a fixed grid) is the clock.  Its callback runs on streamz's IOLoop
thread, so it only *starts* a fetch on the poller's own worker thread (unless one is in flight or a backoff is
running) and returns an empty frame at once.  When a fetch completes, the worker emits the rows into the same streamz
stream; the sink keeps the last ``backlog`` rows per series and hands the new rows to every subscriber on that
subscriber's own loop.

A slow or hanging provider therefore delays nothing but its own next fetch, and an exception never reaches
streamz (which would stop the ``PeriodicDataFrame`` for good).

Rows of the provider's own history (rtdash.stream.history, on a thread of its own) join through ``add_past``: merged
into the history in time order and handed to the same subscribers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pandas as pd
import panel as pn
import param
from streamz.dataframe import PeriodicDataFrame
from tornado.ioloop import IOLoop

from ..config import format_duration
from ..sources import SERIES, Source, SourceError, empty_frame, redact
from ..sources.base import is_history
from ..sources.http import retry_wait
from ..status import Status

log = logging.getLogger("rtdash.stream")

STATES = ["starting", "ok", "stale", "error"]


def next_tick(due: float, now: float, interval: float) -> float:
    """The clock's next due time after the tick that was due at ``due`` ran at ``now``: one interval on, on the
    same grid however late that tick ran; a tick that could not run in its own interval is skipped, not made up."""
    following = due + interval
    if following <= now:
        following += (now - following) // interval * interval + interval
    return following


class Clock(PeriodicDataFrame):
    """streamz's ``PeriodicDataFrame``, ticking on a fixed grid (``start + k * interval``).

    ``PeriodicDataFrame`` sleeps a whole interval after each tick (streamz 0.6.6, ``PeriodicDataFrame._cb``; no
    upstream report found), so every late wake-up of its loop thread pushes every later tick back: with 100 viewers
    on one server (the GIL busy with their updates) a 1 s clock ticked every 1.06 s on average and once after 1.7 s,
    and fewer prices were fetched than the interval promises.  Here a late tick delays only itself.
    """

    @staticmethod
    async def _cb(interval, source, continue_):
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        last = pd.Timestamp.now()
        while continue_[0]:
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not continue_[0]:
                break
            now = pd.Timestamp.now()
            await asyncio.gather(*source._emit(dict(last=last, now=now)))
            last = now
            due = next_tick(due, loop.time(), interval)


class SourceStatus(Status):
    """What a source is doing, for the badges and the health endpoint.  Written by the poller's worker thread."""

    kind = param.String(doc="price or weather")
    provider = param.String(doc="Who answers: Coinbase, Open-Meteo, Simulated ...")
    state = param.Selector(default="starting", objects=STATES)
    simulated = param.Boolean(default=False, doc="The rows are simulated because live data was never reached.")
    fallback_reason = param.String(default=None, allow_None=True)
    last_success = param.Date(default=None, allow_None=True)
    last_attempt = param.Date(default=None, allow_None=True)
    last_error = param.String(default=None, allow_None=True, doc="The provider's message, keys removed.")
    last_error_time = param.Date(default=None, allow_None=True)
    detail = param.String(default=None, allow_None=True, doc="Series that failed while others answered.")
    failures = param.Integer(default=0, doc="Consecutive failed fetches.")
    next_retry = param.Date(default=None, allow_None=True, doc="When the next attempt is due after a failure.")
    fetches = param.Integer(default=0, doc="Fetches attempted since start.")
    errors = param.Integer(default=0, doc="Fetches failed since start.")
    rows = param.Integer(default=0, doc="Rows received since start.")
    rejected = param.Dict(default={}, doc="Rows refused since start (absurd values, wrong units), by reason.")
    interval = param.Number(default=None, allow_None=True)
    filled = param.Integer(default=0, doc="Rows fetched from the provider's history since start.")
    history = param.Dict(default={}, doc="The provider's history: state, requests, budget, ranges still missing.")


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _count(counts: dict[str, int], rejected: dict[str, str] | None) -> dict[str, int]:
    """``counts`` (rows refused by reason) plus the refused rows of one fetch (``{series: reason}``), as a new dict."""
    return dict(Counter(counts) + Counter((rejected or {}).values()))


class Subscription:
    """A subscriber of a poller: new rows reach ``callback`` on the loop that subscribed, in order."""

    _ids = itertools.count()

    def __init__(self, poller: Poller, callback: Callable[[pd.DataFrame], None], dispatch: Callable | None):
        self.id = next(self._ids)
        self.poller = poller
        self.callback = callback
        self._dispatch = dispatch
        self.history: pd.DataFrame = empty_frame(poller.kind)
        self._pending: list[pd.DataFrame] = []  # rows waiting for the one scheduled callback
        self._pending_lock = threading.Lock()

    def deliver(self, df: pd.DataFrame) -> None:
        if self._dispatch is None:
            self._run(df)
            return
        # At most one callback waits on the subscriber's loop: rows that come meanwhile join it.  A session that
        # falls behind gets fewer, larger updates instead of an ever longer queue (which would also keep Bokeh
        # from ever finding a closed session idle enough to discard it).
        with self._pending_lock:
            self._pending.append(df)
            if len(self._pending) > 1:
                return
        self._dispatch(self._drain)

    def _drain(self) -> None:
        with self._pending_lock:
            frames, self._pending = self._pending, []
        if frames:
            self._run(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True))

    def _run(self, df: pd.DataFrame) -> None:
        # Checked when the callback runs, not when it was queued: a subscription cancelled meanwhile gets nothing.
        if self.active:
            self.callback(df)

    def cancel(self) -> None:
        self.poller._unsubscribe(self.id)

    @property
    def active(self) -> bool:
        return self.id in self.poller._subscribers


def current_dispatch() -> tuple[Callable | None, object | None]:
    """How to run a callback on the caller's loop, and the Bokeh document if any.

    In a Panel server session: the document's next tick (which holds the document lock).  In a Jupyter kernel:
    the kernel's running asyncio loop.  Anywhere else (a script, a test): directly, on the calling thread.  Only a
    kernel's loop is used, not any running loop: a loop that merely looks running (Playwright's sync API keeps one
    in the main thread) would never run the callbacks.
    """
    doc = pn.state.curdoc
    if doc is not None and getattr(doc, "session_context", None) is not None:
        # Scheduled from the server's own loop thread: Panel's holds move the document's held events around
        # without a lock, so a callback added from another thread meanwhile could be lost (and with it every later
        # update of the session, which waits for that callback).  ``IOLoop.add_callback`` is thread-safe.
        loop = IOLoop.current()
        return lambda callback: loop.add_callback(_next_tick, doc, callback), doc
    if "ipykernel" in sys.modules:
        from IPython import get_ipython

        if get_ipython() is not None and getattr(get_ipython(), "kernel", None) is not None:
            try:
                return asyncio.get_running_loop().call_soon_threadsafe, None
            except RuntimeError:
                pass
    return None, None


def _next_tick(doc, callback: Callable) -> None:
    """On the server's loop: ``callback`` on the document's next tick, unless the session ended meanwhile."""
    if doc.session_context is not None:  # a destroyed document has no session context (and no callbacks)
        doc.add_next_tick_callback(callback)


class Poller:
    """Polls one source every ``interval`` seconds and fans the rows out to subscribers."""

    def __init__(self, source: Source, interval: float, *, backlog: int, backoff_max: float, secrets=()):
        self.source = source
        self.kind = source.kind
        self.interval = interval
        self.backlog = backlog
        self.backoff_max = max(backoff_max, interval)
        self.secrets = list(secrets)
        self.status = SourceStatus(kind=self.kind, provider=source.provider, interval=interval)
        self._history = empty_frame(self.kind)
        self._empty = empty_frame(self.kind)
        self._lock = threading.RLock()
        self._subscribers: dict[int, Subscription] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rtdash-{self.kind}")
        self._inflight: Future | None = None
        self._inflight_since = 0.0
        self._next_attempt = 0.0  # monotonic; a failure pushes it back
        self._retry_after_until = 0.0  # monotonic; a 429's Retry-After, which even Refresh respects
        self._retry_token: object | None = None  # the scheduled retry that is still wanted
        self._running = False
        self.updates = 0  # deliveries made to subscribers, for the metrics
        self.filler = None  # fetches the provider's history (rtdash.stream.history.HistoryFiller), if any
        # The constructor calls _tick once, synchronously: it must not fetch yet (no sink is attached).
        self.frame = Clock(self._tick, interval=pd.Timedelta(seconds=interval), start=False)
        self.frame.stream.filter(len).sink(self._publish)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> Poller:
        if not self._running:
            self._running = True
            self._submit()  # the first fetch now, not one interval from now
            self.frame.start()
        return self

    def stop(self, wait: bool = False) -> None:
        """Stop polling and filling history; ``wait``: until a fetch and a history fill in flight have handed their
        rows on (each ends within the timeout)."""
        self._running = False
        if self.filler is not None:
            self.filler.stop()
        self.frame.stop()
        self._executor.shutdown(wait=wait, cancel_futures=True)
        if self.filler is not None and wait:
            self.filler.stop(wait=True)
        self.source.close()

    # -- the clock: runs on streamz's IOLoop thread, must not block or raise ---------------------------------------

    def _tick(self, **_) -> pd.DataFrame:
        try:
            if self._running:
                self._maybe_submit()
        except Exception:  # pragma: no cover - a bug here must not stop the PeriodicDataFrame
            log.exception("poller tick failed")
        return self._empty

    def _retry(self, token: object) -> None:
        """The retry after a failure, at its due time, unless a fetch has happened since (a tick, a Refresh)."""
        try:
            with self._lock:
                due = self._running and token is self._retry_token and self._inflight is None
                if due:
                    self._submit()
        except Exception:  # pragma: no cover - a bug here must not stop the loop
            log.exception("poller retry failed")

    def _maybe_submit(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._inflight is not None:
                waited = now - self._inflight_since
                if waited > self.interval + self.source.settings.timeout and self.status.state == "ok":
                    self.status.update(
                        state="stale", last_error=f"{self.source.provider}: no answer for {waited:.0f} s"
                    )
                return
            if now >= self._next_attempt:
                self._submit()

    def _submit(self) -> Future:
        with self._lock:
            if self._inflight is None:
                self._retry_token = None  # a retry still scheduled is no longer needed
                self._inflight_since = time.monotonic()
                try:
                    self._inflight = self._executor.submit(self._fetch)
                except RuntimeError as exc:  # stop() shut the executor, or the interpreter is exiting
                    return self._refused(f"the poller is stopped ({exc})")
            return self._inflight

    def _refused(self, why: str) -> Future:
        """A fetch that will not happen, as a future that raises :class:`SourceError` saying why."""
        future: Future = Future()
        future.set_exception(SourceError(f"{self.source.provider}: {why}"))
        return future

    def fetch_now(self) -> Future:
        """Fetch at once (the Refresh button).  Callers at the same time share one request.

        The future gives the new rows, or raises :class:`SourceError`; the rows also go to every subscriber.
        A pending ``Retry-After`` is respected: the future fails at once and says how long to wait.
        """
        wait = self._retry_after_until - time.monotonic()
        if wait > 0 and self._inflight is None:
            return self._refused(f"rate limited, retry in {wait:.0f} s")
        return self._submit()

    # -- the fetch: runs on the poller's worker thread --------------------------------------------------------------

    def _fetch(self) -> pd.DataFrame:
        try:
            df = self.source.fetch()
        except Exception as exc:
            error = exc if isinstance(exc, SourceError) else SourceError(f"{self.source.provider}: {exc!r}")
            if not isinstance(exc, SourceError):
                log.warning("%s source: unexpected error", self.kind, exc_info=True)
            self._failed(error)
            raise error from None
        finally:
            with self._lock:
                self._inflight = None
        try:
            self._succeeded(df)
            self.frame.emit(df)
        except Exception as exc:  # a bug on the way to the charts and the store: logged and shown, the poller goes on
            log.error("%s source: %d fetched rows were not handed on", self.kind, len(df), exc_info=True)
            error = SourceError(f"{self.source.provider}: fetched rows were not handed on ({exc!r})")
            self._failed(error)
            raise error from None
        return df

    def _succeeded(self, df: pd.DataFrame) -> None:
        s = self.status
        errors = df.attrs.get("errors") or {}
        simulated = bool(self.source.simulated)
        fallback = getattr(self.source, "fallback_reason", None)  # only ``auto`` sources fall back
        if s.state in ("stale", "error") and s.failures:
            log.warning("%s source %s recovered after %d failed fetches", self.kind, self.source.provider, s.failures)
        if simulated and not s.simulated and fallback:
            reason = redact(fallback, self.secrets)
            log.warning("%s source: showing simulated data, live source unreachable: %s", self.kind, reason)
        with self._lock:
            self._next_attempt = 0.0
        if self.filler is not None and (s.failures or (s.simulated and not simulated)):
            # The provider answers again (or for the first time, after simulated rows stood in): the hole the failures
            # left, and what its history could not give before, from its history.
            self.filler.after_outage(s.last_success if s.failures else None)
        s.update(
            state="ok",
            provider=self.source.provider,
            simulated=simulated,
            fallback_reason=redact(fallback, self.secrets) if simulated and fallback else None,
            last_success=_now(),
            last_attempt=_now(),
            failures=0,
            next_retry=None,
            detail="; ".join(f"{name}: {redact(msg, self.secrets)}" for name, msg in errors.items()) or None,
            fetches=s.fetches + 1,
            rows=s.rows + len(df),
            rejected=_count(s.rejected, df.attrs.get("rejected")),
        )

    def _failed(self, error: SourceError) -> None:
        s = self.status
        failures = s.failures + 1
        delay = min(self.backoff_max, self.interval * 2 ** (failures - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)  # jitter, so that many servers do not retry in step
        wait, note = self._retry_after(error.retry_after)
        if wait:
            delay = max(delay, wait)
        now = time.monotonic()
        with self._lock:
            self._next_attempt = now + delay
            if wait:
                self._retry_after_until = now + wait
            self._retry_token = token = object()
        # The retry is due at its time, not at the first clock tick after it (which would add up to an interval).
        self.frame.loop.add_callback(self.frame.loop.call_later, delay, self._retry, token)
        message = redact(str(error), self.secrets) + note
        state = "stale" if s.last_success is not None else "error"
        if state != s.state:
            log.warning(
                "%s source %s is %s: %s; retrying in %s",
                self.kind,
                self.source.provider,
                state,
                message,
                format_duration(round(delay, 1)),
            )
        else:
            log.debug("%s source failure %d: %s", self.kind, failures, message)
        s.update(
            state=state,
            last_error=message,
            last_error_time=_now(),
            last_attempt=_now(),
            failures=failures,
            next_retry=_now() + pd.Timedelta(seconds=delay),
            fetches=s.fetches + 1,
            errors=s.errors + 1,
            rejected=_count(s.rejected, getattr(error, "rejected", None)),
        )

    def _retry_after(self, asked: float | None) -> tuple[float | None, str]:
        """The wait a provider's Retry-After imposes, and a note for the status when it asked for more.

        Retry-After comes from outside: it is honoured up to the longest backoff (RTDASH_BACKOFF_MAX) or
        ``RETRY_AFTER_MAX``, whichever is smaller, so that no answer stops a poller.
        """
        wait = retry_wait(asked, self.backoff_max)
        if asked is None or wait >= asked:
            return asked, ""
        why = "RTDASH_BACKOFF_MAX" if wait == self.backoff_max else "the most rtdash waits"
        return wait, f"; the provider asked to wait longer than the {format_duration(wait)} cap ({why})"

    # -- fan-out: runs on streamz's IOLoop thread ---------------------------------------------------------------------

    def _publish(self, df: pd.DataFrame) -> None:
        with self._lock:
            history = self._history
            past = history["source"].map(is_history).astype(bool) if len(history) else None
            live = history[~past] if past is not None else history
            if len(live) and live["source"].iloc[-1] == "simulated" and df["source"].iloc[0] != "simulated":
                history = history[past]  # live data arrived: the simulated rows are no longer worth showing
            history = pd.concat([history, df], ignore_index=True) if len(history) else df.reset_index(drop=True)
            self._history = history.groupby(SERIES[self.kind], sort=False).tail(self.backlog).reset_index(drop=True)
            subscribers = list(self._subscribers.values())
        self._deliver(subscribers, df)

    def _deliver(self, subscribers: list, df: pd.DataFrame) -> None:
        """Hand ``df`` to each subscriber (outside the lock); one that cannot take it is dropped."""
        for sub in subscribers:
            try:
                sub.deliver(df)
                self.updates += 1
            except Exception:
                log.debug("dropping a subscriber that cannot take updates", exc_info=True)
                self._unsubscribe(sub.id)

    def add_past(self, df: pd.DataFrame) -> None:
        """Rows of the provider's history (any time, older or newer than those held): merged into the history in
        time order and handed to every subscriber, as new rows are."""
        if df.empty:
            return
        with self._lock:
            history = pd.concat([self._history, df], ignore_index=True) if len(self._history) else df
            history = history.sort_values("time", kind="stable").drop_duplicates(
                [SERIES[self.kind], "time", "source"], keep="last"
            )
            self._history = history.groupby(SERIES[self.kind], sort=False).tail(self.backlog).reset_index(drop=True)
            subscribers = list(self._subscribers.values())
        self._deliver(subscribers, df)

    def subscribe(self, callback: Callable[[pd.DataFrame], None], *, direct: bool = False) -> Subscription:
        """Call ``callback(new_rows)`` after every fetch, on the caller's own loop, until cancelled.

        ``subscription.history`` holds the rows collected before, so a new chart starts full; no row is both
        in it and delivered.  In a Panel server session the subscription ends with the session.

        ``direct=True`` is for server-wide consumers (the history writer): the callback runs on the poller's own
        thread, whatever session or loop subscribes, lives as long as the poller, and must not block.
        """
        dispatch, doc = (None, None) if direct else current_dispatch()
        sub = Subscription(self, callback, dispatch)
        with self._lock:
            sub.history = self._history  # shared, as history() is
            self._subscribers[sub.id] = sub
        if doc is not None:
            pn.state.on_session_destroyed(lambda _context: sub.cancel())
        return sub

    def _unsubscribe(self, sub_id: int) -> None:
        with self._lock:
            self._subscribers.pop(sub_id, None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def history(self) -> pd.DataFrame:
        """The last ``backlog`` rows of every series, oldest first.

        The frame is shared: every caller gets the same one until the next fetch replaces it (it is never changed in
        place), so that what the charts make of it is made once for all sessions (``rtdash.views.live``).  Read
        it; never change it.
        """
        with self._lock:
            return self._history

    def seed(self, df: pd.DataFrame) -> None:
        """Pre-fill the history (from a store, after a restart) before subscribers arrive."""
        with self._lock:
            combined = pd.concat([df, self._history], ignore_index=True) if len(self._history) else df
            self._history = combined.groupby(SERIES[self.kind], sort=False).tail(self.backlog).reset_index(drop=True)
