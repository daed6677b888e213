"""A short load and soak of the served app (``benchmarks/load.py``, ``benchmarks/soak.py``), for CI.

No timing is asserted here (the figures belong to ``BENCHMARKS.md``); what must hold whatever the machine's speed:
every session gets updates and none breaks, the upstream calls stay one per interval however many sessions watch,
sessions that closed are all destroyed (``/health``), and the server logs no traceback; and what closed sessions
leave in Python's memory (``benchmarks/memory.py``) does not grow with the sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from benchmarks.load import load
from benchmarks.memory import measure
from benchmarks.soak import soak

pytestmark = pytest.mark.slow


def test_short_load_every_session_updates_and_one_call_per_interval() -> None:
    result = asyncio.run(load("rtdash", sessions=6, duration=10.0, interval=1.0, settle=60.0))
    shown = json.dumps({k: v for k, v in result.items() if k not in ("samples", "server_traceback_first")})
    assert result["sessions_opened"] == 6 and result["broken_sessions"] == 0, shown
    assert result["server_tracebacks"] == 0, result["server_traceback_first"]
    assert result["sessions_without_updates"] == 0, shown
    assert result["latency_samples"] > 0, shown
    # one shared poller: six sessions polling for themselves would make this ~6
    assert result["price_calls_per_interval"] <= 1.3, result
    assert result["health_sessions"] == 6, result


def test_short_soak_sessions_come_and_go_and_all_are_destroyed() -> None:
    result = asyncio.run(soak("rtdash", duration=20.0, warmup=5.0, interval=0.2, concurrent=4, lifetime=(1.0, 4.0)))
    assert result["sessions_opened"] >= 4 and result["sessions_failed_to_open"] == 0, result
    assert result["sessions_closed"] == result["sessions_opened"], result
    assert result["sessions_left"] == 0, result
    assert result["price_calls_per_interval"] <= 1.3, result
    assert result["server_tracebacks"] == 0, result["server_traceback_first"]


def _traceback_as_text(record: logging.LogRecord) -> bool:
    """A log filter that keeps a record's traceback as text (as it is shown), not its frames."""
    if record.exc_info:
        record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    return True


def test_closed_sessions_leave_nothing_in_python_memory(tmp_path, monkeypatch) -> None:
    """Two rounds of sessions that open, update and close: the objects Python's garbage collector tracks afterwards
    are back to where they were, within a third of what one open session holds (~13,000: a leak of a single session
    of the eight shows).  With an alert rule, so that Panel's notifications are on too (each session's notification
    area was kept once, and its document with it): an app without rules runs the same code but for them.
    (``benchmarks.memory`` traces the allocations as well; tracemalloc made this test take two minutes.)"""
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[rule]]\nname = "BTC above 1"\nasset = "BTC"\nabove = 1\n')
    monkeypatch.setenv("RTDASH_ALERTS", str(rules))
    # pytest keeps every log record of a test for its report, counted here as if the server held them: the INFO
    # lines of every session and request, and a record's traceback keeps its frames and what they reference
    # (asyncio's "Task exception was never retrieved" of Panel's writes to a websocket that had just closed held up
    # to ~4 MB of a session's messages).  Meanwhile the report keeps warnings and errors, tracebacks as text.
    handlers = [(handler, handler.level) for handler in logging.getLogger().handlers]
    for handler, _ in handlers:
        handler.addFilter(_traceback_as_text)
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        result = asyncio.run(measure(sessions=4, rounds=2, seconds=2.0, traced=False))
    finally:
        for handler, level in handlers:
            handler.removeFilter(_traceback_as_text)
            handler.setLevel(level)
    rounds = result["steps"][1:]
    assert all(step["updated"] == 4 and step["left"] == 0 for step in rounds), rounds
    shown = {k: v for k, v in result.items() if k != "objects_grown"}
    assert result["objects_per_session"] > 5000, shown  # the measure sees the sessions at all
    assert result["objects_growth"] < result["objects_per_session"] / 3, shown
