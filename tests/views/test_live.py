"""The Live tab's charts against a real Runtime on the fake API: HoloViews draws each figure once from the rows
collected so far; after that new rows are streamed into the lines' ColumnDataSources, with NaN rows at gaps, the
backlog as rollover, and the old rows dropped when the data switches between simulated and live.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.document.events import ColumnsStreamedEvent as ColumnsStreamed

from rtdash.stream import Runtime, get_runtime
from rtdash.views.live import LiveView, StreamingChart
from tests.helpers import wait_until
from tests.views.test_refresh import plain

QUIET = {"RTDASH_WEATHER_INTERVAL": "1h", "RTDASH_PRICE_INTERVAL": "1h", "RTDASH_CITIES": "London,Berlin"}


@pytest.fixture
def runtime(make_settings) -> Runtime:
    rt = get_runtime(make_settings(**QUIET))
    wait_until(lambda: len(rt.price.history()) and len(rt.weather.history()), 10, message="the first fetches")
    return rt


def prices(times: list[str], values: list[float], source: str = "coinbase") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.to_datetime(times, utc=True),
            "asset": "BTC",
            "quote": "USD",
            "price": values,
            "source": source,
        }
    )


def chart(length: int = 5, history: pd.DataFrame | None = None) -> StreamingChart:
    history = prices([], []) if history is None else history
    return StreamingChart("price", ["BTC"], "price", 1.0, length, history, {})


def rendered(view: LiveView) -> tuple[Document, list[ColumnsStreamed]]:
    """The view in a Bokeh document, and the list its streamed events go to."""
    doc = Document()
    doc.add_root(view.__panel__().get_root(doc))
    events: list[ColumnsStreamed] = []
    doc.callbacks.on_change(lambda event: isinstance(event, ColumnsStreamed) and events.append(event))
    return doc, events


def test_the_figure_starts_with_the_history_then_streams_only_new_rows() -> None:
    c = chart(history=prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01"], [1.0, 2.0]))
    assert c.data("BTC")["price"].tolist() == [1.0, 2.0]
    doc = Document()
    doc.add_root(c.figure)
    events: list[ColumnsStreamed] = []
    doc.callbacks.on_change(lambda event: events.append(event))
    # the same rows again, and one new one: only the new one is sent
    c.send(prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 00:00:02"], [1.0, 2.0, 3.0]))
    (event,) = events
    assert isinstance(event, ColumnsStreamed)
    assert event.data == {"time": [pd.Timestamp("2026-01-01 00:00:02").value / 1e6], "price": [3.0]}
    assert event.rollover == 5
    assert c.data("BTC")["time"].iloc[-1] == pd.Timestamp("2026-01-01 00:00:02")


def test_the_live_charts_draw_on_a_canvas_not_webgl() -> None:
    """HoloViews picks WebGL, which a browser without a GPU renders in software (seconds behind with 20 pages)."""
    assert chart().figure.output_backend == "canvas"


def test_the_backlog_rolls_over() -> None:
    c = chart(length=3)
    for second in range(6):
        c.send(prices([f"2026-01-01 00:00:0{second}"], [float(second)]))
    assert c.data("BTC")["price"].tolist() == [3.0, 4.0, 5.0]


def test_a_gap_longer_than_three_intervals_breaks_the_line() -> None:
    c = chart(length=10)
    c.send(prices(["2026-01-01 00:00:00", "2026-01-01 00:00:01"], [1.0, 2.0]))
    c.send(prices(["2026-01-01 00:00:10"], [3.0]))
    values = c.data("BTC")["price"]
    assert values.isna().sum() == 1 and values.iloc[-1] == 3.0


def test_switching_from_simulated_to_live_drops_the_simulated_points() -> None:
    c = chart(history=prices(["2026-01-01 00:00:00"], [1.0], source="simulated"))
    c.send(prices(["2026-01-01 00:00:01"], [50_000.0]))
    assert c.data("BTC")["price"].tolist() == [50_000.0]


def test_a_session_gets_the_rows_of_each_fetch_as_streamed_events(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    _doc, events = rendered(view)
    rows = {metric: len(c.data("London")) for metric, c in view._weather.items()}
    price_rows = len(view._prices["BTC"].data("BTC"))
    assert price_rows >= 1 and all(n >= 1 for n in rows.values())
    wait_until(lambda: not runtime.price.fetch_now().exception(timeout=10), 10, message="a price fetch")
    wait_until(lambda: len(view._prices["BTC"].data("BTC")) > price_rows, 10, message="the new price in the chart")
    streamed = [e for e in events if e.model is view._prices["BTC"].sources["BTC"]]
    assert streamed, "the new price reached the document as a ColumnsStreamed event"
    assert all(len(e.data["time"]) == len(e.data["price"]) for e in streamed)
    assert np.isfinite(view._prices["BTC"].data("BTC")["price"].iloc[-1])


def test_pause_holds_new_points_and_resume_catches_up(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    rendered(view)
    before = len(view._prices["BTC"].data("BTC"))
    view.paused = True
    runtime.price.fetch_now().result(timeout=10)
    wait_until(lambda: len(runtime.price.history()) > before, 10, message="the poller's new row")
    assert len(view._prices["BTC"].data("BTC")) == before
    plain(setattr, view, "paused", False)
    assert len(view._prices["BTC"].data("BTC")) == len(runtime.price.history())


def test_the_price_card_reads_the_chart_it_belongs_to(runtime) -> None:
    view = plain(LiveView, runtime=runtime)
    card, source = view._cards["BTC"], view._prices["BTC"].sources["BTC"]
    assert card.source_id == source.id and card.quote == "USD" and card.provider == "Coinbase"
