"""Server logs: one line per event that matters, as text or JSON (``RTDASH_LOG_FORMAT=json``), never a key.

``setup_logging(settings)`` gives the ``rtdash`` loggers one handler on stderr and puts a :class:`RedactFilter`
on it and on every handler the root logger and the libraries' loggers already have (``panel serve`` installs one on
the root, Panel and Bokeh have their own), so that a key cannot reach a log line through any logger: not in the
message, its arguments, nor a traceback.  The filter also bounds every record: a message to ``MAX_MESSAGE``
characters, a traceback to ``MAX_TRACEBACK`` (a client's 15 MB message, which Bokeh logs whole with ``%r``, once
made one 15.7-million-character line).  Writes to a websocket that had closed, which asyncio would report as
tracebacks, are dropped (:class:`ClosedWebsocketWrites`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Sequence
from typing import IO

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from .config import Settings
from .sources import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into the JSON line.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

MAX_MESSAGE = 2_000  # characters of a record's message (and of each extra field)
MAX_TRACEBACK = 10_000  # characters of a record's traceback or stack: its start and its end
_MARGIN = 1_000  # characters redacted beyond what a bounded text shows (longer than any key or password)
_lock = threading.Lock()
_secrets: set[str] = set()


class RedactFilter(logging.Filter):
    """Removes the known secrets, and anything shaped like a key in a URL or header, from every record."""

    def __init__(self, secrets: set[str] | None = None):
        super().__init__()
        self.secrets = _secrets if secrets is None else secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact and bound ``record`` in place; never raises, so a record that cannot be formatted still gives a
        line."""
        if getattr(record, "_redacted", None) is self.secrets:  # done by another handler's filter
            return True
        secrets = sorted(self.secrets, key=len, reverse=True)
        try:
            record.msg, record.args = bound(_message(record), MAX_MESSAGE, secrets=secrets), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = bound(record.exc_text, MAX_TRACEBACK, keep_end=True, secrets=secrets)
            if record.stack_info:
                record.stack_info = bound(record.stack_info, MAX_TRACEBACK, keep_end=True, secrets=secrets)
            for name, value in list(record.__dict__.items()):
                if name not in _STANDARD and isinstance(value, str):
                    setattr(record, name, bound(value, MAX_MESSAGE, secrets=secrets))
        except Exception as exc:  # keep the event, drop whatever could not be redacted
            record.msg, record.args = f"{record.name}: a log record could not be redacted ({type(exc).__name__})", None
            record.exc_info = record.exc_text = record.stack_info = None
            for name in [name for name in record.__dict__ if name not in _STANDARD]:
                delattr(record, name)
        record._redacted = self.secrets
        return True


def bound(text: str, limit: int, keep_end: bool = False, secrets: Sequence[str] = ()) -> str:
    """``text`` without ``secrets`` (:func:`rtdash.sources.redact`), cut to about ``limit`` characters: its start and
    ``… (N more characters)``, or with ``keep_end`` its start and its end around ``… (N characters left out) …`` (a
    traceback's last lines name the error).

    Only what is shown is redacted, with a margin longer than any key so that one across the cut is still found:
    redacting a 15 MB message whole would hold the server's loop for over a second.
    """
    if len(text) <= limit:
        return redact(text, secrets)
    half = limit // 2 if keep_end else limit
    head = redact(text[: half + _MARGIN], secrets)[:half]
    if not keep_end:
        return f"{head}… ({len(text) - limit:,} more characters)"
    tail = redact(text[-(half + _MARGIN) :], secrets)[-half:]
    return f"{head}\n… ({len(text) - 2 * half:,} characters left out) …\n{tail}"


def _message(record: logging.LogRecord) -> str:
    """The record's message; when its arguments do not format (a bad format string, a ``repr`` that raises), the
    format string and each argument that can be shown, rather than losing the line."""
    try:
        return record.getMessage()
    except Exception:
        args = record.args if isinstance(record.args, tuple) else () if record.args is None else (record.args,)
        return " ".join([_show(record.msg), *(_show(arg) for arg in args)])


def _show(value: object) -> str:
    try:
        return value if isinstance(value, str) else repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, any ``extra=`` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False)


class ClosedWebsocketWrites(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" records of writes to a websocket that had closed.

    Panel starts a session's writes without awaiting every one (holoviz/panel#3341): when a page goes away while a
    message to it is on its way (a reload, a closed tab), each write left fails with Tornado's
    ``WebSocketClosedError`` and asyncio logs it as a traceback.  Nothing is lost that the page could still have
    shown, and the session's end is logged by Bokeh; any other exception asyncio reports is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, WebSocketClosedError | StreamClosedError)


class _RtdashHandler(logging.StreamHandler):
    """The handler ``setup_logging`` owns (found again, and replaced, by its type)."""


def setup_logging(settings: Settings, stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Handler:
    """Log ``rtdash.*`` at ``level`` to ``stream`` (stderr) as ``settings.log_format``; redact on every handler.

    Safe to call once per session: the handler is replaced, not added again, and the secrets of every call are
    kept (a process may serve more than one set of settings).
    """
    with _lock:
        _secrets.update(s for s in settings.secrets if s)
        logger = logging.getLogger("rtdash")
        for old in [h for h in logger.handlers if isinstance(h, _RtdashHandler)]:
            logger.removeHandler(old)
        handler = _RtdashHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
        handler.addFilter(RedactFilter())
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False  # one line per event: not again through panel serve's root handler
        for other in _library_handlers():
            if not any(isinstance(f, RedactFilter) for f in other.filters):
                other.addFilter(RedactFilter())
        reporter = logging.getLogger("asyncio")
        if not any(isinstance(f, ClosedWebsocketWrites) for f in reporter.filters):
            reporter.addFilter(ClosedWebsocketWrites())
        return handler


def _library_handlers() -> list[logging.Handler]:
    """The handlers of the root logger and of every other logger that has its own (``panel``, ``bokeh`` when no root
    handler was set up), and Python's last resort (a record no handler takes, such as asyncio's, goes to stderr)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [h for logger in loggers if isinstance(logger, logging.Logger) for h in logger.handlers]
    return [*handlers, *([logging.lastResort] if logging.lastResort is not None else [])]
