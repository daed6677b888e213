"""Server logs: one line per event that matters, as text or JSON (``RTDASH_LOG_FORMAT=json``), never a key.

``setup_logging(settings)`` gives the ``rtdash`` loggers one handler on stderr and puts a :class:`RedactFilter`
on it and on every handler the root logger already has (``panel serve`` installs one), so that a key cannot
reach a log line through any logger: not in the message, its arguments, nor a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from typing import IO

from .config import Settings
from .sources import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and goes into the JSON line.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_lock = threading.Lock()
_secrets: set[str] = set()


class RedactFilter(logging.Filter):
    """Removes the known secrets, and anything shaped like a key in a URL or header, from every record."""

    def __init__(self, secrets: set[str] | None = None):
        super().__init__()
        self.secrets = _secrets if secrets is None else secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never raises, so a record that cannot be formatted still gives a line."""
        secrets = sorted(self.secrets, key=len, reverse=True)
        try:
            record.msg, record.args = redact(_message(record), secrets), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, secrets)
            if record.stack_info:
                record.stack_info = redact(record.stack_info, secrets)
            for name, value in list(record.__dict__.items()):
                if name not in _STANDARD and isinstance(value, str):
                    setattr(record, name, redact(value, secrets))
        except Exception as exc:  # keep the event, drop whatever could not be redacted
            record.msg, record.args = f"{record.name}: a log record could not be redacted ({type(exc).__name__})", None
            record.exc_info = record.exc_text = record.stack_info = None
            for name in [name for name in record.__dict__ if name not in _STANDARD]:
                delattr(record, name)
        return True


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
        for root_handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactFilter) for f in root_handler.filters):
                root_handler.addFilter(RedactFilter())
        return handler
