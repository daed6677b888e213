"""``python -m rtdash backfill --source provider``: the providers' own history into the store, resumable and
idempotent, against the fake API."""

from __future__ import annotations

import re
import time

import pytest

from rtdash.cli import main
from rtdash.store.duckdb import DuckDBStore
from tests.helpers import fake_env


@pytest.fixture
def env(fake_api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name, value in fake_env(
        fake_api.url,
        RTDASH_PRICE_SOURCE="coinbase",
        RTDASH_WEATHER_SOURCE="open-meteo",
        RTDASH_CITIES="Berlin,London",
        RTDASH_HISTORY_BUDGET="100",
    ).items():
        monkeypatch.setenv(name, value)
    return tmp_path / "history.duckdb"


def _out(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_a_day_from_the_providers_with_progress_then_a_rerun_adds_nothing(env, fake_api, capsys):
    args = ["backfill", "--source", "provider", "--days", "1", "--store", str(env)]
    assert main(args) == 0
    out, err = _out(capsys)
    assert "price: 1,440 rows from Coinbase in 5 requests, 1,440 new" in out
    weather = re.search(r"weather: ([\d,]+) rows from Open-Meteo in 1 requests, ([\d,]+) new", out)
    assert weather and weather[1] == weather[2] and int(weather[1].replace(",", "")) >= 2 * 95
    assert "100%" in err and "pages" in err
    with DuckDBStore(env) as store:
        assert set(store.read("price")["source"]) == {"coinbase/1min"}
        assert set(store.read("weather")["source"]) == {"open-meteo/15min"}
    fake_api.reset_counts()
    assert main(args) == 0  # every page is stored already: skipped, nothing asked
    out, _ = _out(capsys)
    assert "price: 0 rows from Coinbase in 0 requests, 0 new" in out and fake_api.count("coinbase-history") == 0


def test_an_error_half_way_is_resumed_by_a_rerun(env, fake_api, capsys):
    args = ["backfill", "--source", "provider", "--days", "1", "--kinds", "price", "--store", str(env)]
    fake_api.set_fault("coinbase-history", "500", after=2)
    minute = time.time() // 60
    assert main(args) == 1
    out, err = _out(capsys)
    assert "price: 698 rows from Coinbase in 3 requests, 698 new" in out
    assert re.search(r"missing BTC .* UTC: Coinbase: HTTP 500", err) and "rerun later to resume" in err
    fake_api.clear_fault()
    fake_api.reset_counts()
    assert main(args) == 0
    out, _ = _out(capsys)
    # The day's window moves with the clock: when a minute began between the two runs' windows, one candle the rerun
    # gets is one the first run already stored ("742 rows ..., 741 new").  Each run reads the clock somewhere inside
    # it, so only a minute that began during neither run nor between them rules that out (seen beside two busy
    # loops: a minute that began inside the first run, before its window, and 742 new).
    boundary = time.time() // 60 != minute
    assert time.time() // 60 - minute <= 1, "the two runs took over a minute"
    match = re.search(r"price: 742 rows from Coinbase in 3 requests, (\d+) new", out)  # only the pages missing
    assert match, out
    new = int(match.group(1))
    assert new == 742 or (boundary and new == 741), out
    with DuckDBStore(env) as store:
        assert store.count("price") == 698 + new


def test_beyond_the_providers_retention_is_said_not_asked(env, fake_api, capsys):
    args = ["backfill", "--source", "provider", "--days", "95", "--kinds", "weather", "--store", str(env)]
    assert main(args) == 1
    _, err = _out(capsys)
    assert "missing Berlin, London" in err and "beyond Open-Meteo's retention of 92d" in err
    assert fake_api.count("open-meteo-history") == 14  # 92 days, a week a request
