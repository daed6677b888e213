"""HTTP for the providers: one pooled ``requests.Session`` each, and answers checked by status *and* body."""

from __future__ import annotations

import email.utils
import html
import re
import time
from collections.abc import Callable
from typing import Any

import requests

from .. import __version__
from .base import RejectedRow, Source, SourceError, redact

USER_AGENT = f"rtdash/{__version__} (+https://github.com/rtdash/rtdash)"

# A provider's message out of its JSON error body, or None when the body is not an error envelope.
ErrorReader = Callable[[Any], "str | None"]


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    return session


# A provider's Retry-After is a number from outside: it is read into 0 … RETRY_AFTER_READ_MAX seconds (400 digits or
# the year 9999 read as that much), and a poller waits at most RTDASH_BACKOFF_MAX or RETRY_AFTER_MAX, whichever is
# smaller, saying so when the provider asked for more (rtdash.stream.poller).  A header that is neither seconds nor
# an HTTP date is ignored, and the error's message says so.
RETRY_AFTER_MAX = 3600.0  # s: the longest wait a provider can impose, whatever RTDASH_BACKOFF_MAX says
RETRY_AFTER_READ_MAX = 86400.0  # s: longer asks read as a day, which is still more than any cap
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), within ``0 … RETRY_AFTER_READ_MAX``.

    None when there is no header, or when it is neither (a negative number, garbage).
    """
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)  # may be inf for hundreds of digits: bounded below
    else:
        try:
            seconds = max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(seconds, RETRY_AFTER_READ_MAX)


def retry_wait(asked: float | None, backoff_max: float) -> float | None:
    """How long to honour a provider's Retry-After of ``asked`` seconds: at most ``backoff_max`` (the poller's
    longest backoff) and ``RETRY_AFTER_MAX``."""
    return None if asked is None else min(asked, backoff_max, RETRY_AFTER_MAX)


def _ignored_retry_after(value: str | None) -> str:
    """The note for an error's message when a ``Retry-After`` header was present but unreadable, else ``""``."""
    if value is None or not value.strip() or retry_after(value) is not None:
        return ""
    shown = value.strip()
    shown = shown[:40] + ("…" if len(shown) > 40 else "")
    return f"; Retry-After {shown!r} ignored (not seconds or an HTTP date)"


def _snippet(text: str, limit: int = 120) -> str:
    """A one-line excerpt of a non-JSON body: an HTML page is reduced to its title or its text."""
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(html.unescape(text).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def get_json(
    session: requests.Session,
    url: str,
    *,
    provider: str,
    timeout: float,
    read_error: ErrorReader,
    params: dict | None = None,
    headers: dict | None = None,
    secrets: list[str] | tuple[str, ...] = (),
) -> Any:
    """GET ``url`` and return its JSON body, or raise :class:`SourceError` with the provider's own reason.

    Errors are recognised by the HTTP status *and* by the body (some providers report errors with a 200),
    and messages never contain the request URL's query (where keys live) nor any of ``secrets``.
    """
    try:
        response = session.get(url, params=params, headers=headers, timeout=timeout)
    except requests.Timeout:
        raise SourceError(f"{provider}: no answer within {timeout:g} s") from None
    except requests.ConnectionError as exc:
        reason = "cannot resolve host" if "resolve" in str(exc) or "Name or service" in str(exc) else "cannot connect"
        host = requests.utils.urlparse(url).netloc
        raise SourceError(f"{provider}: {reason} {host}") from None
    except requests.RequestException as exc:
        raise SourceError(redact(f"{provider}: {type(exc).__name__}", secrets)) from None

    status = response.status_code
    header = response.headers.get("Retry-After") if status in (429, 503) else None
    wait, note = retry_after(header), _ignored_retry_after(header)
    try:
        body = response.json()
    except ValueError:
        text = _snippet(response.text)
        if status >= 400:
            detail = f": {text}" if text else ""
            message = f"{provider}: HTTP {status} {response.reason or ''}".rstrip() + detail
        else:
            kind = "an HTML page" if "<html" in response.text[:500].lower() else "invalid JSON"
            message = f"{provider}: answered with {kind} instead of data" + (f" ({text})" if text else "")
        raise SourceError(redact(message + note, secrets), retry_after=wait, status=status) from None

    message = read_error(body)
    if status >= 400 or message:
        if not message:  # an error status with a JSON body that says nothing: "HTTP 503 Service Unavailable"
            text = f"{provider}: HTTP {status} {response.reason or ''}".rstrip()
        else:
            text = f"{provider}: HTTP {status}: {message}" if status >= 400 else f"{provider}: {message}"
        raise SourceError(redact(text + note, secrets), retry_after=wait, status=status)
    return body


def unexpected(provider: str, what: str) -> SourceError:
    """The error for a well-formed answer of the wrong shape."""
    return SourceError(f"{provider}: unexpected answer ({what})")


def not_a_number(provider: str, what: str, value) -> RejectedRow:
    """The refusal of a series' row whose value is not a number at all (null, text, JSON ``true``)."""
    return RejectedRow(f"{provider}: unexpected answer ({what} {value!r} is not a number)", "not_a_number")


class HTTPSource(Source):
    """A provider reached over HTTP: one pooled session, the settings' timeout, keys kept out of messages."""

    read_error: ErrorReader = staticmethod(lambda body: None)

    def __init__(self, **params):
        super().__init__(**params)
        self.session = new_session()

    def get(self, url: str, *, params: dict | None = None, headers: dict | None = None) -> Any:
        return get_json(
            self.session,
            url,
            provider=self.label,
            timeout=self.settings.timeout,
            read_error=type(self).read_error,
            params=params,
            headers=headers,
            secrets=self.settings.secrets,
        )

    def close(self) -> None:
        self.session.close()
