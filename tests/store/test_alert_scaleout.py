"""Alerts with a collector and a viewer (issue 17): the collector evaluates, stores and posts; the viewer evaluates
nothing and posts nothing, and learns of each firing and resolution from the store."""

from __future__ import annotations

import pytest

from rtdash.config import Settings
from rtdash.stream import get_runtime
from tests.helpers import fake_env, wait_until
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.postgres

QUIET = {
    "RTDASH_PRICE_SOURCE": "coinbase",
    "RTDASH_WEATHER_SOURCE": "simulated",
    "RTDASH_PRICE_INTERVAL": "1h",
    "RTDASH_WEATHER_INTERVAL": "1h",
    "RTDASH_PAST": "none",
}


def test_the_collector_evaluates_and_posts_the_viewer_shows(pg_url, fake_api, tmp_path):
    with WebhookReceiver() as hook:
        rules = tmp_path / "alerts.toml"
        rules.write_text(f'[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\nwebhook = "{hook.url}"\n')

        def settings(role: str) -> Settings:
            env = fake_env(fake_api.url, RTDASH_STORE=pg_url, RTDASH_ROLE=role, RTDASH_ALERTS=str(rules), **QUIET)
            return Settings.load(environ=env, dotenv=None)

        collector = get_runtime(settings("collector"))
        viewer = get_runtime(settings("viewer"))
        heard = []
        viewer.alerts.listen(heard.append)
        wait_until(lambda: collector.price.status.fetches >= 1 and collector.price._inflight is None, 30)
        for price in (71000, 65000):
            fake_api.prices["BTC"] = price
            collector.price.fetch_now().result(timeout=30)
            state = "firing" if price > 70000 else "resolved"
            wait_until(lambda state=state: [e["state"] for e in heard][-1:] == [state], 30, message=state)
            assert bool(viewer.alerts.firing()) == (state == "firing")
        wait_until(lambda: len(hook.received) >= 2, 30, message="the collector's two POSTs")
        assert hook.states() == [("BTC high", "firing"), ("BTC high", "resolved")]
    assert [e["value"] for e in heard] == [71000.0, 65000.0]
    assert viewer.alerts.evaluations == 0 and viewer.alerts.webhooks == {}
    assert collector.alerts.evaluations >= 2
