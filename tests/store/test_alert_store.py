"""The alerts table (issue 17): firings and resolutions stored once, read back in time order, in DuckDB and
PostgreSQL; the schema is created again without harm."""

from __future__ import annotations

import pandas as pd

from rtdash.store import open_store
from rtdash.store.base import ALERTS_DDL


def event(state: str, time: str, value: float, rule: str = "BTC high") -> dict:
    return {
        "rule": rule,
        "series": "BTC price",
        "value": value,
        "level": 70000.0,
        "time": pd.Timestamp(time, tz="UTC").isoformat(),
        "state": state,
        "severity": "warning",
    }


def test_firings_are_stored_once_and_read_back_in_order(store):
    assert store.alerts().empty
    fired = event("firing", "2026-01-01 10:00:00.123456", 71000.5)
    assert store.write_alert(fired) == 1
    assert store.write_alert(fired) == 0  # written again (a retry): nothing added
    store.write_alert(event("resolved", "2026-01-01 10:05", 69000))
    store.write_alert(event("firing", "2026-01-01 09:00", 12.5, rule="other"))
    rows = store.alerts()
    assert list(rows["rule"]) == ["other", "BTC high", "BTC high"]
    assert list(rows["state"]) == ["firing", "firing", "resolved"]
    assert rows["time"].iloc[1] == pd.Timestamp("2026-01-01 10:00:00.123456", tz="UTC")
    assert rows["value"].iloc[1] == 71000.5 and rows["level"].iloc[1] == 70000.0
    mine = store.alerts(start="2026-01-01 09:30", rules=["BTC high"])
    assert list(mine["state"]) == ["firing", "resolved"]
    assert store.alerts(end="2026-01-01 09:30")["rule"].tolist() == ["other"]
    store._execute(ALERTS_DDL)  # idempotent: every start runs it
    assert len(store.alerts()) == 3


def test_a_reopened_store_keeps_its_firings(store_url, store):
    store.write_alert(event("firing", "2026-01-01 10:00", 71000))
    store.close()
    from rtdash.config import Settings

    with open_store(Settings(store=store_url)) as again:
        assert again.alerts()["state"].tolist() == ["firing"]
