"""History from the providers: the recent past fetched at start, and holes filled once a provider answers again.

A source's provider answers one page of its history per request (:meth:`rtdash.sources.Source.history_page`);
:func:`fill` pages a range through it, newest page first, within a :class:`Budget` of calls per hour, honouring
``Retry-After``.  What cannot be fetched — beyond the provider's retention, the budget spent, the provider failing —
is returned as :class:`Gap` s, and stays a visible gap.  Rows are handed on page by page, so a fill that stops half
way keeps what it got; writing them is idempotent (the store's key), so a range fetched twice adds nothing.

:class:`HistoryFiller` does this for one poller on a thread of its own: the live polls never wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

import pandas as pd

from ..config import format_duration
from ..sources import SERIES, Source, SourceError, redact
from ..sources.base import HistoryUnavailable
from ..sources.http import retry_wait
from ..store import StoreError

if TYPE_CHECKING:
    from .poller import Poller

log = logging.getLogger("rtdash.stream")

HOUR = 3600.0
ATTEMPTS = 3  # tries of one page that a provider answers with 429/503 and a Retry-After
GAP_INTERVALS = 3  # a hole longer than this many poll intervals is filled (as rtdash.views.live breaks lines)
MISSING_SHOWN = 10  # ranges still missing kept in the status


class Budget:
    """At most ``per_hour`` provider calls in any hour (a sliding window), shared by every fill of one source."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic):
        self.per_hour = per_hour
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - HOUR:
            self._spent.popleft()

    @property
    def spent(self) -> int:
        """Calls made in the last hour."""
        with self._lock:
            self._expire(self._clock())
            return sum(n for _, n in self._spent)

    def take(self, calls: int) -> bool:
        """Spend ``calls`` when the last hour leaves room for them (True), else spend nothing (False)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if sum(n for _, n in self._spent) + calls > self.per_hour:
                return False
            self._spent.append((now, calls))
            return True


@dataclass
class Gap:
    """A range of series ``names`` the provider did not fill, and why."""

    names: list[str]
    start: pd.Timestamp
    end: pd.Timestamp
    reason: str

    def as_dict(self) -> dict:
        return {
            "series": ", ".join(self.names),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
        }


@dataclass
class FillResult:
    """What one fill did: rows handed on, requests and calls made, ranges still missing."""

    rows: int = 0
    requests: int = 0
    calls: int = 0
    rejected: int = 0
    missing: list[Gap] = field(default_factory=list)


PACE = 0.2  # s between two history requests of one fill: at most 5 a second (Coinbase's public limit is 10)


def pages(source: Source, start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """``[start, end)`` cut into ranges of at most the source's ``page_span``, newest first."""
    span = pd.Timedelta(seconds=source.page_span)
    out = []
    while end > start:
        out.append((max(start, end - span), end))
        end -= span
    return out


def fill(
    source: Source,
    ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    *,
    budget: Budget,
    on_rows: Callable[[pd.DataFrame], None],
    stop: threading.Event | None = None,
    backoff_max: float = 300.0,
    skip: Callable[[list[str], pd.Timestamp, pd.Timestamp], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: pd.Timestamp | None = None,
    pace: float = PACE,
) -> FillResult:
    """Fetch the provider's history of each series over its range (``{name: (start, end)}``) and hand every page's
    rows to ``on_rows``; see the module's docstring.  ``skip(names, start, end)`` True leaves a page out (already
    stored: a resumed backfill); ``progress(pages done, pages)`` follows along; requests are ``pace`` seconds apart.
    """
    stop = stop or threading.Event()
    source = source.history_provider
    result = FillResult()
    now = now or pd.Timestamp.now(tz="UTC")
    if source.resolution <= 0:
        reason = f"{source.label} cannot fill gaps ({source.no_history})"
        result.missing = [Gap([name], a, b, reason) for name, (a, b) in ranges.items() if b > a]
        return result
    if source.batched and ranges:  # one request answers every series: one range covering all of them
        starts, ends = zip(*ranges.values(), strict=True)
        groups = [(list(ranges), min(starts), max(ends))]
    else:
        groups = [([name], a, b) for name, (a, b) in ranges.items()]
    work: list[tuple[list[str], pd.Timestamp, pd.Timestamp]] = []
    for names, start, end in groups:
        if source.retention is not None:
            oldest = now - pd.Timedelta(seconds=source.retention)
            if start < oldest:
                reason = f"beyond {source.label}'s retention of {format_duration(source.retention)}"
                result.missing.append(Gap(names, start, min(end, oldest), reason))
                start = oldest
        work += [(names, a, b) for a, b in pages(source, start, end)]
    for done, (names, start, end) in enumerate(work):
        if progress:
            progress(done, len(work))
        if skip is not None and skip(names, start, end):
            continue
        calls = source.history_calls(names)
        if result.requests:
            stop.wait(pace)
        if stop.is_set() or not budget.take(calls):
            why = "stopped" if stop.is_set() else f"request budget spent (RTDASH_HISTORY_BUDGET={budget.per_hour}/h)"
            result.missing += [Gap(n, a, b, why) for n, a, b in work[done:]]
            break
        try:
            df = _page(source, start, end, names, stop, backoff_max, result)
        except SourceError as exc:
            why = str(exc) if not isinstance(exc, HistoryUnavailable) else str(exc).split(": ", 1)[-1]
            result.missing += [Gap(n, a, b, why) for n, a, b in work[done:]]
            break
        result.rows += len(df)
        result.rejected += int(df.attrs.get("rejected", 0))
        if len(df):
            on_rows(df)
    else:
        if progress:
            progress(len(work), len(work))
    result.missing = _merged(result.missing)
    return result


def _page(source, start, end, names, stop, backoff_max, result: FillResult) -> pd.DataFrame:
    """One page, tried again after a ``Retry-After`` (at most ``ATTEMPTS`` times, waits capped as the poller caps
    them)."""
    for attempt in range(ATTEMPTS):
        result.requests += 1
        result.calls += source.history_calls(names)
        try:
            return source.history_page(start, end, names)
        except SourceError as exc:
            wait = retry_wait(exc.retry_after, backoff_max)
            if wait is None or attempt == ATTEMPTS - 1 or stop.wait(wait):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _merged(gaps: list[Gap]) -> list[Gap]:
    """Adjacent gaps of the same series and reason as one, oldest first."""
    out: list[Gap] = []
    for gap in sorted(gaps, key=lambda g: (g.names, g.reason, g.start)):
        last = out[-1] if out else None
        if last is not None and (last.names, last.reason) == (gap.names, gap.reason) and gap.start <= last.end:
            last.end = max(last.end, gap.end)
        else:
            out.append(Gap(list(gap.names), gap.start, gap.end, gap.reason))
    return sorted(out, key=lambda g: g.start)


def holes(
    store, kind: str, names: list[str], start: pd.Timestamp, end: pd.Timestamp, *, bucket: float, shortest: float
) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Per series, the ranges within ``[start, end)`` at least ``shortest`` seconds long in which ``store`` holds no
    row (counted in buckets of ``bucket`` seconds, in the database).  A stretch before a series' first stored row is
    not a hole: only what lies between rows, or after the last one up to ``end``."""
    step = pd.Timedelta(seconds=bucket)
    least = pd.Timedelta(seconds=max(shortest, bucket))
    # Each series' first row before the counts: a row the writer adds in between is then in both or only the counts.
    oldest_of = {name: store.bounds(kind, [name])[0] for name in names}
    counts = store.aggregate(kind, start, end, step, series=names)
    out: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for name in names:
        oldest = oldest_of[name]
        if oldest is None or oldest >= end:
            continue
        times = sorted(counts.loc[counts[SERIES[kind]] == name, "time"])
        # Holes lie between edges: the window's start when the series began before it (as the bucket before it), the
        # buckets that hold rows, and the window's end.
        before = [start - step] if oldest < start else []
        found = []
        for left, right in pairwise([*before, *times, end]):
            a, b = max(left + step, start), right
            if b - a >= least:
                found.append((a, b))
        if found:
            out[name] = found
    return out


def _coalesced(spans: list[tuple[pd.Timestamp, pd.Timestamp]], span: float) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Ranges joined while the whole still fits one page of ``span`` seconds (one request instead of several: the
    rows between them are written again, which adds nothing); newest first."""
    out: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for a, b in sorted(spans):
        if out and b - out[-1][0] <= pd.Timedelta(seconds=span):
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out[::-1]


class HistoryFiller:
    """Fetches a poller's past from its provider on a thread of its own: at start, the holes the store shows, and
    after an outage.

    The rows go to :meth:`Poller.add_past` (live charts, the store writer); ``poller.status`` says how many were
    filled (``filled``) and what is still missing (``history``).
    """

    def __init__(self, poller: Poller, *, past: float | None, budget: int, backoff_max: float, secrets=()):
        self.poller = poller
        self.past = past
        self.budget = Budget(budget)
        self.backoff_max = backoff_max
        self.secrets = list(secrets)
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rtdash-history-{poller.kind}")
        self._lock = threading.Lock()
        self._missing: list[Gap] = []
        source = poller.source.history_provider
        if not budget:
            state, message = "off", "RTDASH_HISTORY_BUDGET=0: no history is fetched"
        elif source.resolution <= 0:
            state, message = "unavailable", f"{source.label} cannot fill gaps ({source.no_history})"
        else:
            state, message = "idle", None
        self._update(state=state, message=message)

    @property
    def enabled(self) -> bool:
        return self.poller.status.history.get("state") not in ("off", "unavailable")

    def _update(self, **changes) -> None:
        s = self.poller.status
        resolution = self.poller.source.history_provider.resolution
        history = {
            "state": "idle",
            "requests": 0,
            "calls_last_hour": 0,
            "budget_per_hour": self.budget.per_hour,
            "resolution": format_duration(resolution) if resolution else None,
            "missing": [],
            "message": None,
            "last_fill": None,
            **s.history,
        }
        history.update(changes)
        history["calls_last_hour"] = self.budget.spent
        s.history = history

    def start(self) -> Future | None:
        """Fetch the recent past: ``past`` back from now, or from each series' newest row when it is newer (the
        rows already kept from before a restart), so that the hole a restart left is what is fetched."""
        if not self.enabled or not self.past:
            return None
        now = pd.Timestamp.now(tz="UTC")
        earliest = now - pd.Timedelta(seconds=self.past)
        known = self.poller.history()
        newest = known.groupby(SERIES[self.poller.kind])["time"].max().to_dict() if len(known) else {}
        ranges = {name: (max(earliest, newest.get(name, earliest)), now) for name in self.poller.source.series}
        return self.request(ranges)

    def after_outage(self, since: pd.Timestamp | None) -> Future | None:
        """The provider answers again: fill the hole since ``since`` (the last successful fetch before the failures),
        when it is longer than ``GAP_INTERVALS`` intervals, and ask again for what a provider error left missing
        before (not what is beyond its retention)."""
        if not self.enabled:
            return None
        now = pd.Timestamp.now(tz="UTC")
        ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        if since is not None and (now - since).total_seconds() > GAP_INTERVALS * self.poller.interval:
            ranges = {name: (since, now) for name in self.poller.source.series}
        with self._lock:
            retry = [g for g in self._missing if "retention" not in g.reason]
        for gap in retry:
            for name in gap.names:
                start = min(gap.start, ranges[name][0]) if name in ranges else gap.start
                ranges[name] = (start, max(gap.end, ranges[name][1]) if name in ranges else gap.end)
        return self.request(ranges) if ranges else None

    def search(self, store, back: float | None) -> Future | None:
        """Look for holes in ``store`` over the ``back`` seconds before the recent past that :meth:`start` fetches
        (a server that was down yesterday, a provider out for an hour), and fill them from the provider, newest
        first, after that fetch and within the same budget.  The store is read on the filler's thread."""
        if not self.enabled or not back or store is None:
            return None
        try:
            return self._executor.submit(self._search, store, back)
        except RuntimeError:  # stopped
            return None

    def _search(self, store, back: float) -> FillResult | None:
        kind, source = self.poller.kind, self.poller.source.history_provider
        now = pd.Timestamp.now(tz="UTC")
        end = now - pd.Timedelta(seconds=self.past or 0)
        start = end - pd.Timedelta(seconds=back)
        bucket = max(source.resolution, self.poller.interval)
        try:
            found = holes(
                store, kind, list(self.poller.source.series), start, end, bucket=bucket, shortest=GAP_INTERVALS * bucket
            )
        except Exception as exc:  # the store down or failing (or a bug): logged, said, and the live polls go on
            bug = not isinstance(exc, StoreError)
            why = redact(repr(exc), self.secrets)
            log.warning("%s: the store could not be searched for holes: %s", kind, why, exc_info=bug)
            self._update(message=redact(f"holes not searched: {exc}", self.secrets))
            return None
        if not found:
            return None
        if source.batched:  # one request answers every series: the union of their holes, asked for all of them
            spans = _coalesced([h for hs in found.values() for h in hs], source.page_span)
            jobs = [{name: span for name in self.poller.source.series} for span in spans]
        else:
            jobs = [{name: span} for name, hs in found.items() for span in _coalesced(hs, source.page_span)]
            jobs.sort(key=lambda job: next(iter(job.values()))[1], reverse=True)
        log.info(
            "%s: %d hole(s) in the store over the %s before the last %s; asking %s",
            kind,
            sum(len(hs) for hs in found.values()),
            format_duration(back),
            format_duration(self.past or 0),
            source.label,
        )
        return self._run(*jobs)

    def request(self, ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]]) -> Future | None:
        try:
            return self._executor.submit(self._run, ranges)
        except RuntimeError:  # stopped
            return None

    def _run(self, *jobs: dict[str, tuple[pd.Timestamp, pd.Timestamp]]) -> FillResult | None:
        """Fill each of ``jobs`` (``{name: (start, end)}``) in turn; the status says what they did together."""
        kind, source = self.poller.kind, self.poller.source.history_provider
        self._update(state="filling")
        result = FillResult()
        try:
            for ranges in jobs:
                if self._stop.is_set():
                    break
                one = fill(
                    source,
                    ranges,
                    budget=self.budget,
                    on_rows=self.poller.add_past,
                    stop=self._stop,
                    backoff_max=self.backoff_max,
                )
                result.rows += one.rows
                result.requests += one.requests
                result.calls += one.calls
                result.rejected += one.rejected
                result.missing += one.missing
        except Exception as exc:  # a bug must not end the thread silently: logged, and said in the status
            log.warning("%s history from %s failed", kind, source.label, exc_info=True)
            self._update(state="error", message=redact(f"{source.label}: {exc!r}", self.secrets))
            return None
        ranges = {}
        for job in jobs:
            for name, (a, b) in job.items():
                ranges.setdefault(name, []).append((a, b))
        with self._lock:
            # What was missing before and was asked for again now is what this fill says is missing.
            self._missing = [g for g in self._missing if not _covered(g, ranges)]
            self._missing = _merged(self._missing + result.missing)[-MISSING_SHOWN:]
            missing = [{**g.as_dict(), "reason": redact(g.reason, self.secrets)} for g in self._missing]
        s = self.poller.status
        s.update(filled=s.filled + result.rows)
        state = "partial" if result.missing else "ok"
        message = redact(result.missing[-1].reason, self.secrets) if result.missing else None
        self._update(
            state=state,
            requests=s.history.get("requests", 0) + result.requests,
            missing=missing,
            message=message,
            last_fill=pd.Timestamp.now(tz="UTC").isoformat(),
            rejected=s.history.get("rejected", 0) + result.rejected,
        )
        if result.rows or result.missing:
            log.info(
                "%s history from %s: %d rows in %d requests%s",
                kind,
                source.label,
                result.rows,
                result.requests,
                f"; missing: {message}" if message else "",
            )
        return result

    def stop(self, wait: bool = False) -> None:
        """Stop filling; ``wait``: until a fill in flight has ended (at its next request: within the timeout), so
        that nothing of it runs, hands rows on or logs after the runtime stopped."""
        self._stop.set()
        self._executor.shutdown(wait=wait, cancel_futures=True)


def _covered(gap: Gap, ranges: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]) -> bool:
    """Whether ``ranges`` (what a fill just asked for, per series) covered all of ``gap``."""
    return all(any(a <= gap.start and gap.end <= b for a, b in ranges.get(name, ())) for name in gap.names)
