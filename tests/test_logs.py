"""Server logs: one line per event, JSON on request, and no key in any line — message, arguments or traceback."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from tornado.websocket import WebSocketClosedError

from rtdash.logs import ClosedWebsocketWrites, setup_logging
from rtdash.stream import get_runtime
from tests.helpers import wait_until

KEY = "ow-secret-8e7d6c5b4a"


@pytest.fixture(autouse=True)
def _restore_logging():
    """setup_logging changes process-wide logging: give the next test the logging it had."""
    logger, root = logging.getLogger("rtdash"), logging.getLogger()
    saved = logger.propagate, logger.level, {h: list(h.filters) for h in root.handlers}
    yield
    logger.propagate, logger.level = saved[0], saved[1]
    for handler, filters in saved[2].items():
        handler.filters[:] = filters


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_no_key(make_settings):
    settings = make_settings(RTDASH_LOG_FORMAT="json", OPENWEATHER_API_KEY=KEY)
    stream = io.StringIO()
    setup_logging(settings, stream=stream)
    log = logging.getLogger("rtdash.test")
    log.warning("fetching %s failed", f"https://api.example/data?appid={KEY}&q=Berlin", extra={"city": "Berlin"})
    try:
        raise RuntimeError(f"boom with {KEY}")
    except RuntimeError:
        log.exception("a crash")
    log.info("Authorization: Bearer abc.def.ghi")
    out = lines(stream)
    records = [json.loads(line) for line in out if line.startswith("{")]
    assert len(records) == 3, out  # the traceback is inside its record's line, not lines of its own
    assert KEY not in stream.getvalue() and "abc.def.ghi" not in stream.getvalue()
    first, second, third = records
    assert first["level"] == "WARNING" and first["logger"] == "rtdash.test" and first["city"] == "Berlin"
    assert "appid=***" in first["message"] and first["pid"] > 0 and first["time"].endswith("+00:00")
    assert "RuntimeError: boom with ***" in second["exception"]
    assert third["message"] == "Authorization: Bearer ***"


def test_setup_twice_keeps_one_handler_and_text_is_the_default(make_settings):
    stream = io.StringIO()
    setup_logging(make_settings(), stream=stream)
    setup_logging(make_settings(), stream=stream)
    logging.getLogger("rtdash.test").warning("once")
    assert [line.split(" ", 2)[2] for line in lines(stream)] == ["WARNING rtdash.test: once"]


def test_root_handlers_redact_too(make_settings):
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        setup_logging(make_settings(COINCAP_API_KEY="cc-secret-4f9a1b2c3d"), stream=io.StringIO())
        logging.getLogger("urllib3.connectionpool").warning("GET /v3/assets/bitcoin?apiKey=cc-secret-4f9a1b2c3d")
        assert "cc-secret" not in stream.getvalue() and "apiKey=***" in stream.getvalue()
    finally:
        root.removeHandler(handler)


def test_a_source_failure_and_its_recovery_are_one_line_each(fake_api, make_settings):
    settings = make_settings(RTDASH_PRICE_INTERVAL="0.2s", RTDASH_BACKOFF_MAX="0.4s", RTDASH_LOG_FORMAT="json")
    stream = io.StringIO()
    setup_logging(settings, stream=stream)
    runtime = get_runtime(settings)
    wait_until(lambda: runtime.price.status.state == "ok", 10)
    fake_api.set_fault("coinbase", "500")
    wait_until(lambda: runtime.price.status.failures >= 3, 15)
    fake_api.clear_fault()
    wait_until(lambda: runtime.price.status.state == "ok", 15)
    wait_until(lambda: any("recovered" in json.loads(line)["message"] for line in lines(stream)), 5)
    price = [json.loads(line)["message"] for line in lines(stream) if "price source" in line]
    assert len([m for m in price if "is stale" in m]) == 1, price  # not one line per failed fetch
    assert "retrying in" in next(m for m in price if "is stale" in m)
    assert len([m for m in price if "recovered" in m]) == 1, price


def test_every_line_is_bounded_through_every_logger(make_settings):
    """Issue 13, item 6: a 15 MB client message once made one 15.7-million-character line."""
    stream, own = io.StringIO(), io.StringIO()
    other = logging.getLogger("tornado.test_bounded")  # a library logger with a handler of its own, as panel's has
    handler = logging.StreamHandler(own)
    other.addHandler(handler)
    other.propagate = False
    try:
        setup_logging(make_settings(RTDASH_LOG_FORMAT="json"), stream=stream)
        logging.getLogger("rtdash.test").warning("message %r", "x" * 100_000)
        other.error("error handling message\n message: %r", "y" * 100_000)
        try:
            raise RuntimeError("z" * 100_000)
        except RuntimeError:
            logging.getLogger("rtdash.test").exception("a crash")
    finally:
        other.removeHandler(handler)
    first, second = (json.loads(line) for line in lines(stream))
    assert len(first["message"]) < 2_100, len(first["message"])
    assert first["message"].endswith("… (98,010 more characters)"), first["message"][-80:]  # of 100,010
    assert len(second["exception"]) < 10_200 and second["exception"].rstrip().endswith("z" * 100), "head and tail kept"
    assert len(own.getvalue()) < 2_100 and "more characters)" in own.getvalue()


def test_writes_to_a_closed_websocket_leave_no_traceback_and_other_task_errors_stay(make_settings, caplog):
    """asyncio's own report of an exception nobody retrieved (as Panel's unawaited writes give when a page has just
    gone): a closed websocket is dropped, any other exception is still logged with its traceback."""
    setup_logging(make_settings())
    reporter = logging.getLogger("asyncio")
    try:
        loop = asyncio.new_event_loop()
        try:
            for error in (WebSocketClosedError(), ValueError("a real bug")):
                loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": error})
        finally:
            loop.close()
        reported = [r for r in caplog.records if r.name == "asyncio"]
        assert [type(r.exc_info[1]).__name__ for r in reported] == ["ValueError"], reported
    finally:
        reporter.filters[:] = [f for f in reporter.filters if not isinstance(f, ClosedWebsocketWrites)]
