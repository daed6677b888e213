"""A malformed ``RTDASH_STORE`` (issue 13, items 1 and 5): the PostgreSQL password never reaches an error, the store's
``repr``, ``/health`` or a log line, the log filter never raises; a DuckDB path that cannot be opened is a
:class:`StoreError` that names the path and the reason, with the "one process at a time" hint only for a lock."""

from __future__ import annotations

import io
import json
import logging

import pandas as pd
import pytest

from rtdash import server
from rtdash.config import Settings
from rtdash.logs import setup_logging
from rtdash.store import StoreError, StoreWriter, open_store
from rtdash.store.postgres import PostgresStore
from rtdash.stream import get_runtime
from tests.helpers import free_port, wait_until


def malformed_urls() -> dict[str, str]:
    """URL -> its password: a bad percent escape, an unencoded ``@``, an unclosed IPv6 address."""
    port = free_port()  # nothing listens there
    return {
        f"postgresql://rtdash:PGPASS789%zz@127.0.0.1:{port}/rtdash": "PGPASS789%zz",
        f"postgresql://rtdash:PASS@w789q@127.0.0.1:{port}/rtdash": "PASS@w789q",
        "postgresql://rtdash:PGPASS@[::1/rtdash": "PGPASS",
    }


URLS = malformed_urls()
URL_IDS = ["bad-percent-escape", "unencoded-at", "unclosed-ipv6"]  # the same on every xdist worker (not the port)


def leaks(text: str, password: str) -> list[str]:
    """The parts of ``password`` (whole, and each side of an ``@``) that ``text`` shows."""
    return [part for part in {password, *password.split("@")} if part in text]


def rows() -> pd.DataFrame:
    times = pd.date_range("2024-01-01", periods=2, freq="1s", tz="UTC")
    return pd.DataFrame({"time": times, "asset": "BTC", "quote": "USD", "price": [1.0, 2.0], "source": "simulated"})


@pytest.fixture(autouse=True)
def _restore_logging():
    """setup_logging changes process-wide logging: give the next test the logging it had."""
    logger, root = logging.getLogger("rtdash"), logging.getLogger()
    saved = logger.propagate, logger.level, {h: list(h.filters) for h in root.handlers}
    yield
    logger.propagate, logger.level = saved[0], saved[1]
    for handler, filters in saved[2].items():
        handler.filters[:] = filters


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_the_store_error_and_repr_do_not_show_the_password(url):
    password = URLS[url]
    store = PostgresStore(url)
    try:
        assert not leaks(repr(store), password), repr(store)
        with pytest.raises(StoreError) as info:
            store.ping()
        message = str(info.value)
        assert "cannot connect to the history store postgresql://rtdash:***@" in message
        assert not leaks(message, password), message
        writer = StoreWriter(store).start()
        try:
            writer.put("price", rows())
            wait_until(lambda: writer.status.state == "down" and writer.status.last_error, 20)
            assert not leaks(json.dumps(writer.status.snapshot()), password), writer.status.last_error
        finally:
            writer.close(timeout=1)
    finally:
        store.close()


@pytest.mark.parametrize("url", URLS, ids=URL_IDS)
def test_health_and_the_log_do_not_show_the_password(url, make_settings):
    password = URLS[url]
    settings = make_settings(RTDASH_STORE=url)
    stream = io.StringIO()
    setup_logging(settings, stream=stream)  # the real filter, with the settings' secrets
    runtime = get_runtime(settings)
    status, body = wait_until(lambda: (r := server.health()) and r[1]["store"]["state"] == "down" and r, 20)
    assert status == 503 and body["store"]["last_error"]
    assert not leaks(json.dumps(body), password), body["store"]
    wait_until(lambda: "is down" in stream.getvalue(), 10, message="the store's down line")
    log = logging.getLogger("rtdash.store")
    log.warning("store %r at %s", runtime.store, url)
    try:
        raise RuntimeError(f"connection to {url} failed")
    except RuntimeError:
        log.exception("history store failed")
    text = stream.getvalue()
    assert "history store failed" in text and "RuntimeError: connection to postgresql://rtdash:***@" in text
    assert not leaks(text, password), text


class Unprintable:
    def __repr__(self) -> str:
        raise ValueError("Invalid IPv6 URL")


def test_the_log_filter_never_raises_and_keeps_the_line():
    stream = io.StringIO()
    setup_logging(Settings.load(environ={}, dotenv=None), stream=stream)  # no store password among its secrets
    log = logging.getLogger("rtdash.store")
    url = "postgresql://rtdash:FILTERPASS@[::1/rtdash"
    log.warning("history store %s is down", PostgresStore(url))
    log.warning("cannot show %r for %s", Unprintable(), url)
    log.warning("a bad format %d", "not a number")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "history store PostgresStore('postgresql://rtdash:***@[::1/rtdash') is down" in lines[0]
    assert "cannot show" in lines[1] and "<Unprintable>" in lines[1] and "a bad format" in lines[2]
    assert "FILTERPASS" not in stream.getvalue()


# -- DuckDB paths that cannot be opened ------------------------------------------------------------------------------


def open_path(path) -> None:
    store = open_store(Settings.load(environ={"RTDASH_STORE": str(path)}, dotenv=None))
    store.close()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd/x.duckdb", "/etc/passwd is not a directory"),
        ("/etc/passwd/sub/x.duckdb", "Not a directory: /etc/passwd/sub"),
        ("/proc/x.duckdb", "No such file or directory"),
    ],
)
def test_a_path_that_cannot_be_opened_is_a_store_error_naming_path_and_reason(path, reason):
    with pytest.raises(StoreError) as info:
        open_path(path)
    message = str(info.value)
    assert message.startswith(f"cannot open the history store {path}: ") and reason in message, message
    assert "one process at a time" not in message and "\n" not in message


def test_a_folder_as_the_store_says_so_without_the_lock_hint(tmp_path):
    with pytest.raises(StoreError) as info:
        open_path(tmp_path)
    assert str(tmp_path) in str(info.value) and "Is a directory" in str(info.value)
    assert "one process at a time" not in str(info.value)
