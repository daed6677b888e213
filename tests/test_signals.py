"""Signals that agree: ``/health`` is degraded while any source serves simulated rows, a badge says "simulated" when
its rows are, history that is off is said in the page's header with the reason and the fix, and every error of
``python -m rtdash`` is one line that says what to do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rtdash import server
from rtdash.stream import get_runtime
from rtdash.views.status import StatusView, badge_fields, status_snapshot, summary
from tests.fakeapi import closed_port_url
from tests.helpers import free_port, wait_until
from tests.test_config import run_rtdash


def ok(runtime, kind: str = "price"):
    """Waits until ``kind`` has answered (its first fetch is done); its status."""
    return wait_until(lambda: (s := runtime.pollers[kind].status).state == "ok" and s, 15, message=f"{kind} ok")


# -- /health and the badges --------------------------------------------------------------------------------------------


def test_health_is_degraded_while_a_source_is_chosen_simulated(fake_api, make_settings):
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="simulated", RTDASH_PRICE_INTERVAL="0.2s"))
    ok(runtime, "price"), ok(runtime, "weather")
    status, body = server.health()
    assert status == 200, "simulated rows do not take the server out of rotation"
    assert body["status"] == "degraded" and body["sources"]["price"]["simulated"] is True
    assert "price: simulated" in body["detail"] and "RTDASH_PRICE_SOURCE=simulated" in body["detail"]


def test_offline_fallback_is_degraded_and_its_badge_says_simulated(fake_api, make_settings):
    runtime = get_runtime(make_settings(RTDASH_COINBASE_URL=closed_port_url(), RTDASH_PRICE_INTERVAL="0.2s"))
    status = ok(runtime, "price")
    assert status.simulated and status.fallback_reason
    ok(runtime, "weather")
    code, body = server.health()
    assert code == 200 and body["status"] == "degraded"
    assert "price: simulated (offline fallback: Coinbase: cannot connect" in body["detail"]

    fields = badge_fields(status)
    assert fields["word"] == "simulated" and fields["fallback"], fields
    assert badge_fields(runtime.pollers["weather"].status)["word"] == "ok"
    assert "Prices from Simulated: simulated, last update" in summary(runtime)
    assert "Weather from Open-Meteo: ok, last update" in summary(runtime)


def test_health_is_ok_while_every_source_is_live(fake_api, make_settings):
    runtime = get_runtime(make_settings(RTDASH_PRICE_SOURCE="coinbase", RTDASH_WEATHER_SOURCE="open-meteo"))
    ok(runtime, "price"), ok(runtime, "weather")
    status, body = server.health()
    assert (status, body["status"]) == (200, "ok") and "detail" not in body
    assert {badge_fields(p.status)["word"] for p in runtime.pollers.values()} == {"ok"}


# -- history that is off, in the header ------------------------------------------------------------------------------


def test_history_off_by_setting_is_said_in_the_header(fake_api, make_settings):
    runtime = get_runtime(make_settings(RTDASH_STORE="none"))
    banner = StatusView(runtime=runtime).banner  # what create_app puts under the header
    assert banner.visible and "History is off: RTDASH_STORE is none" in banner.object
    assert "set RTDASH_STORE to a file path or a postgresql:// URL" in banner.object
    assert 'class="banner' not in banner.object, "a choice is a notice, not the simulated-data alarm"
    assert "History is off: RTDASH_STORE is none" in summary(runtime)


@pytest.fixture
def locked_store(tmp_path: Path):
    """A DuckDB file held open by another process (as a second server in the same folder finds it): (path, pid)."""
    path = tmp_path / "held.duckdb"
    code = textwrap.dedent(f"""
        import sys, duckdb
        con = duckdb.connect({str(path)!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        yield path, holder.pid
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def test_history_off_by_a_locked_store_says_why_and_what_to_do(fake_api, make_settings, locked_store):
    path, pid = locked_store
    runtime = get_runtime(make_settings(RTDASH_STORE=str(path)))
    assert runtime.store is None and runtime.store_error
    _, banner = status_snapshot(runtime)
    assert "History is off: cannot open the history store" in banner
    assert f"(PID {pid})" in banner, banner  # who holds it
    assert "stop the other one" in banner and "set RTDASH_STORE to another path" in banner
    assert "restart" in banner


# -- the command line --------------------------------------------------------------------------------------------------


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``rtdash: error:`` line of a failed run (anything else on stderr is progress, never a traceback)."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("rtdash: error: "), result.stderr
    return lines[0]


def test_backfill_into_a_postgresql_that_is_down_is_one_line(tmp_path):
    url = f"postgresql://rtdash:pw-5q4r3s@127.0.0.1:{free_port()}/rtdash"
    result = run_rtdash("backfill", "--days", "0.001", "--store", url, env={}, cwd=tmp_path)
    line = one_error_line(result)
    assert result.returncode == 1 and "cannot connect" in line and "pw-5q4r3s" not in result.stderr
    assert "then rerun" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nonsense"], "invalid choice: 'nonsense'"),
        ([], "the following arguments are required: command"),
        (["backfill", "--days", "-1"], "argument --days: '-1' is invalid"),
        (["backfill", "--days", "nan"], "argument --days: 'nan' is invalid"),
        (["backfill", "--days", "1e300"], "argument --days: '1e300' is invalid"),
        (["backfill", "--kinds", "rain"], "--kinds 'rain' is invalid"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, expected):
    result = run_rtdash(*args, env={"RTDASH_STORE": str(tmp_path / "h.duckdb")}, cwd=tmp_path)
    line = one_error_line(result)
    assert result.returncode == 2 and expected in line and "--help" in line, line
    assert not (tmp_path / "h.duckdb").exists()


def test_help_is_plain_text_and_lists_store(tmp_path):
    main = run_rtdash("--help", env={}, cwd=tmp_path)
    assert main.returncode == 0 and "``" not in main.stdout and "check" in main.stdout, main.stdout
    fill = run_rtdash("backfill", "--help", env={}, cwd=tmp_path)
    assert fill.returncode == 0 and "--store" in fill.stdout, fill.stdout


def test_backfill_store_option_is_the_store(tmp_path):
    path = tmp_path / "given.duckdb"
    args = ["backfill", "--days", "0.0001", "--every", "1s", "--store", str(path)]
    result = run_rtdash(*args, env={"RTDASH_STORE": "none"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.exists() and "price:" in result.stdout
