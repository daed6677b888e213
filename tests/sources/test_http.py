"""The HTTP layer every provider shares: Retry-After, non-JSON bodies reduced to one line, key redaction."""

from __future__ import annotations

import email.utils
import time

import pytest

from rtdash import __version__
from rtdash.sources import redact
from rtdash.sources.http import USER_AGENT, _snippet, new_session, retry_after


def test_user_agent_names_rtdash_and_its_version() -> None:
    assert USER_AGENT.startswith(f"rtdash/{__version__} ")
    session = new_session()
    assert session.headers["User-Agent"] == USER_AGENT
    session.close()


@pytest.mark.parametrize(("value", "seconds"), [("3", 3.0), (" 120 ", 120.0), ("0", 0.0), (None, None), ("", None)])
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= retry_after(in_a_minute) <= 61
    assert retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after("soon") is None
    assert retry_after("-5") is None


def test_html_and_garbage_become_one_short_line() -> None:
    page = "<html>\r\n<head><title>502 Bad\n Gateway</title></head><body><h1>502</h1></body></html>"
    assert _snippet(page) == "502 Bad Gateway"
    assert _snippet("<div>  Service\n\n temporarily <b>down</b> </div>") == "Service temporarily down"
    long = _snippet("x" * 500)
    assert len(long) == 121 and long.endswith("…")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /data/2.5/weather?lat=1&appid=abc123&units=metric", "GET /data/2.5/weather?lat=1&appid=***&units=metric"),
        ("?apiKey=abc123", "?apiKey=***"),
        ("?api_key=abc123 failed", "?api_key=*** failed"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer ***"),
        ("token=xyz", "token=***"),
        ("the key s3cr3t-value leaked", "the key *** leaked"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text, ["s3cr3t-value", ""]) == expected
