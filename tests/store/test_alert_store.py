"""The alerts table (issue 17): firings and resolutions stored once, read back in time order, in DuckDB and
PostgreSQL; the schema is created again without harm."""

from __future__ import annotations

import pandas as pd
import pytest

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


@pytest.mark.parametrize("every_point", [False, True])
def test_history_draws_the_levels_and_marks_the_firings(store_url, make_settings, tmp_path, every_point):
    import holoviews as hv
    from bokeh.models import ColumnDataSource, Span

    from rtdash.stream import Runtime
    from rtdash.views.history import HistoryView
    from tests.store.test_store import prices

    rules = tmp_path / "alerts.toml"
    rules.write_text(
        '[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\n'
        '[[rule]]\nname = "ETH low"\nasset = "ETH"\nbelow = 10\n'  # another asset: not on BTC's chart
    )
    runtime = Runtime(make_settings(RTDASH_STORE=store_url, RTDASH_ASSETS="BTC,ETH", RTDASH_ALERTS=str(rules)))
    try:
        now = pd.Timestamp.now(tz="UTC").floor("s")
        runtime.store.write("price", prices(120, start=now - pd.Timedelta("2h"), every="1min"))
        runtime.store.write_alert(event("firing", str(now - pd.Timedelta("1h")).removesuffix("+00:00"), 71000))
        runtime.store.write_alert(event("resolved", str(now - pd.Timedelta("30min")).removesuffix("+00:00"), 69000))
        view = HistoryView(runtime=runtime, every_point=every_point)
        figure = hv.renderer("bokeh").get_plot(view._plot.object).state
        spans = [m for m in figure.select({"type": Span}) if m.dimension == "width"]
        assert [span.location for span in spans] == [70000]
        marks = [m.data for m in figure.select({"type": ColumnDataSource}) if "rule" in m.data]
        assert len(marks) == 1 and list(marks[0]["rule"]) == ["BTC high"] and list(marks[0]["price"]) == [71000]
        expected = (now - pd.Timedelta("1h")).tz_localize(None)
        shown = marks[0]["time"][0]
        shown = pd.Timestamp(shown, unit="ms") if every_point else pd.Timestamp(shown)
        assert shown == expected
    finally:
        runtime.stop()


def test_the_retention_prunes_old_firings_too(store):
    store.write_alert(event("firing", "2026-01-01 09:00", 71000))
    store.write_alert(event("resolved", "2026-01-01 11:00", 69000))
    assert store.prune(pd.Timestamp("2026-01-01 10:00", tz="UTC")) == 1
    assert store.alerts()["state"].tolist() == ["resolved"]
