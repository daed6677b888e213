"""Exports of stored rows, streamed from the store to the browser as a plain HTTP download.

An export never sits in memory whole, and never travels over the session's websocket:

* the History tab counts the rows of its selection (refusing more than ``RTDASH_EXPORT_MAX_ROWS``), then
  :func:`issue` gives it a one-use, unguessable ticket that names what to export, and the page downloads
  ``<prefix>/export/<ticket>``;
* :class:`ExportHandler` answers that URL: it reads the rows from the store in chunks of ``CHUNK_ROWS`` on a worker
  thread (the drivers block), encodes each chunk (:func:`encode`: CSV text, or a Parquet row group drained from a
  small sink) and writes and flushes it before reading the next, so a server holds one chunk per export however
  large the range; a client that goes away ends the export at its next chunk.

The ticket is the only input taken from the URL, and all of it is refused when unknown: a ticket expires
``TICKET_TTL`` seconds after it was issued if unused, is used once, and dies with its session.  When the server has
a login, the download needs it too (the same user as the page, where Panel can tell); without one the ticket is the
credential.  One export per session streams at a time: another request of the same session is answered 429.

Tickets live in the memory of the process that issued them: with ``--num-procs`` or several hosts, a download that
reaches another process than the page's is answered 404.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tornado.web
from tornado.iostream import StreamClosedError

from . import auth
from .sources import COLUMNS
from .store.base import LABELS

log = logging.getLogger("rtdash.export")

CHUNK_ROWS = 50_000  # rows read, encoded and sent at a time: a few MB per export in flight, a progress step each
TICKET_TTL = 60.0  # seconds an issued ticket waits for its download
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def file_name(kind: str, bounds: tuple[pd.Timestamp, pd.Timestamp] | None, fmt: str) -> str:
    """``rtdash-<kind>-<start>-<end>.<fmt>``: the name an export is saved under."""
    stamp = "-".join(t.strftime("%Y%m%dT%H%M%S") for t in bounds) if bounds else "empty"
    return f"rtdash-{kind}-{stamp}.{fmt}"


class _Sink(io.RawIOBase):
    """A write-only file that keeps what is written until :meth:`drain` takes it: Parquet's output, chunk by chunk."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def encode(kind: str, fmt: str, chunks: Iterator[pd.DataFrame]) -> Iterator[tuple[int, bytes]]:
    """The bytes of a CSV or Parquet (zstd) file of ``chunks`` (frames of ``kind``'s columns), as they are made:
    ``(rows, data)`` per chunk, then ``(0, data)`` for what ends the file (Parquet's footer, an empty CSV's
    header).  Holds one chunk at a time."""
    if fmt == "csv":
        header = True
        for chunk in chunks:
            text = chunk.to_csv(header=header, index=False, date_format=TIME_FORMAT)
            header = False
            yield len(chunk), text.encode()
        if header:
            yield 0, (",".join(COLUMNS[kind]) + "\n").encode()
        return
    if fmt != "parquet":
        raise ValueError(f"unknown export format {fmt!r}: expected csv or parquet")
    schema = pa.schema([(c, pa.timestamp("us", tz="UTC") if c == "time" else _arrow_type(c)) for c in COLUMNS[kind]])
    sink = _Sink()
    with pq.ParquetWriter(sink, schema, compression="zstd", coerce_timestamps="us") as writer:
        for chunk in chunks:
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
            yield len(chunk), sink.drain()
    yield 0, sink.drain()


def _arrow_type(column: str) -> pa.DataType:
    return pa.string() if column in LABELS else pa.float64()


def stream(
    store, kind: str, fmt: str, start=None, end=None, series: list[str] | None = None
) -> Iterator[tuple[int, bytes]]:
    """:func:`encode` of the rows of ``kind`` with ``start <= time < end`` of ``series``, read from ``store`` in
    chunks of ``CHUNK_ROWS``."""
    if series is not None and not series:
        chunks: Iterator[pd.DataFrame] = iter(())
    else:
        chunks = store.export(kind, start, end, series, CHUNK_ROWS)
    return encode(kind, fmt, chunks)


# -- tickets -----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Ticket:
    """What one download exports, for whom, and whom to tell how it goes."""

    kind: str
    series: list[str] | None
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    fmt: str
    filename: str
    total: int  # the rows counted when it was issued: the progress's 100 %
    owner: Any  # the view that asked (weakly held): its session's slot, and its progress
    user: str | None = None  # the logged-in user of the page, when Panel can tell
    store: Any = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    issued: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.owner = weakref.ref(self.owner)

    def tell(self, method: str, *args) -> None:
        """Call ``method`` of the view that asked, in its session's document (Panel's widgets are changed there), on
        the next tick of the server's loop; nothing when that session is gone."""
        view = self.owner()
        doc = getattr(view, "_doc", None)
        if view is None or doc is None or getattr(view, "_closed", False):
            return
        try:
            doc.add_next_tick_callback(partial(getattr(view, method), *args))
        except Exception:  # the session ended meanwhile
            log.debug("could not report an export's progress to its page", exc_info=True)


_lock = threading.Lock()
_tickets: dict[str, Ticket] = {}
_streaming: weakref.WeakSet = weakref.WeakSet()  # the views of the sessions whose export is being sent


def issue(**fields) -> Ticket:
    """A new ticket (the fields of :class:`Ticket`), kept until it is used, expires or its session ends."""
    ticket = Ticket(**fields)
    with _lock:
        _expire()
        _tickets[ticket.token] = ticket
    return ticket


def take(token: str) -> Ticket | None:
    """The ticket ``token`` names, now used up; ``None`` for one unknown, used, expired or of a session gone."""
    with _lock:
        _expire()
        ticket = _tickets.pop(token, None)
    if ticket is None or ticket.owner() is None:
        return None
    return ticket


def peek(token: str) -> Ticket | None:
    """The ticket ``token`` names if it is still usable, without using it."""
    with _lock:
        _expire()
        return _tickets.get(token)


def discard(token: str) -> bool:
    """Forget ticket ``token``; whether it was still unused."""
    with _lock:
        return _tickets.pop(token, None) is not None


def forget(view) -> None:
    """Forget every unused ticket of ``view``: its session ended."""
    with _lock:
        for token in [t for t, ticket in _tickets.items() if ticket.owner() in (view, None)]:
            del _tickets[token]


def _expire() -> None:
    now = time.monotonic()
    for token in [t for t, ticket in _tickets.items() if now - ticket.issued > TICKET_TTL or ticket.owner() is None]:
        del _tickets[token]


# -- the download ------------------------------------------------------------------------------------------------------


class ExportHandler(tornado.web.RequestHandler):
    """``GET <prefix>/export/<ticket>``: the ticket's rows as a file, streamed chunk by chunk (module docstring)."""

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def _refuse(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text + "\n")

    async def get(self, token: str) -> None:
        user = None
        if auth.login_required(self.application):
            user = await auth.logged_in_user(self)
            if not user:
                return self._refuse(403, "Log in to download exports.")
        ticket = peek(token)
        if ticket is None or (user is not None and ticket.user is not None and ticket.user != user):
            return self._refuse(404, "Unknown or expired export link: export again from the History tab.")
        view = ticket.owner()
        if view is not None and view in _streaming:
            ticket.tell("_export_refused")
            return self._refuse(429, "An export of this page is already running: wait for it to end.")
        ticket = take(token)
        if ticket is None:
            return self._refuse(404, "Unknown or expired export link: export again from the History tab.")
        _streaming.add(view)
        try:
            await self._send(ticket)
        finally:
            _streaming.discard(view)

    async def _send(self, ticket: Ticket) -> None:
        self.set_header("Content-Type", CONTENT_TYPES[ticket.fmt])
        self.set_header("Content-Disposition", f'attachment; filename="{ticket.filename}"')
        self.set_header("X-Accel-Buffering", "no")  # a proxy passes each chunk on (nginx), not the whole file
        parts = stream(ticket.store, ticket.kind, ticket.fmt, ticket.start, ticket.end, ticket.series)
        sent = 0
        ticket.tell("_export_progress", ticket.token, 0, ticket.total)
        try:
            while (part := await asyncio.to_thread(next, parts, None)) is not None:
                rows, data = part
                self.write(data)
                await self.flush()  # waits until the client has taken it: one chunk in flight
                sent += rows
                if rows:
                    ticket.tell("_export_progress", ticket.token, sent, ticket.total)
        except StreamClosedError:
            ticket.tell("_export_ended", ticket.token, sent, "cancelled")
            return
        except Exception as exc:
            log.warning("export of %s rows failed: %s", ticket.kind, exc)
            self.request.connection.close()  # no end of the chunked body: the browser sees a failed download
            ticket.tell("_export_ended", ticket.token, sent, "failed")
            return
        finally:
            await asyncio.to_thread(parts.close)  # releases the store's cursor on a thread: it may block
        ticket.tell("_export_ended", ticket.token, sent, "done")
