"""Alerts (issue 17): rules checked at load, evaluated once per fetch whatever the sessions, fired and resolved once,
posted to a webhook in order, counted in /health and the metrics, never showing a webhook's URL.

Prices are scripted through the fake API: a price set there is the next one answered, and each step is one
``fetch_now`` of a poller whose own clock never ticks during the test (a one-hour interval).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
import pytest

from rtdash import alerts as alerts_module
from rtdash.alerts import Alerts, load_rules
from rtdash.config import Settings, SettingsError
from rtdash.stream import get_runtime
from tests.helpers import PanelServer, fake_env, wait_until
from tests.webhook import WebhookReceiver

QUIET = {
    "RTDASH_PRICE_SOURCE": "coinbase",
    "RTDASH_WEATHER_SOURCE": "simulated",
    "RTDASH_PRICE_INTERVAL": "1h",
    "RTDASH_WEATHER_INTERVAL": "1h",
    "RTDASH_PAST": "none",
    "RTDASH_CITIES": "London,Berlin",
}


def rules_file(tmp_path, text: str, suffix: str = ".toml") -> str:
    path = tmp_path / f"alerts{suffix}"
    path.write_text(text)
    return str(path)


@pytest.fixture
def scripted(fake_api, tmp_path):
    """``runtime, step = scripted(rules_toml)``: a started runtime with those rules; ``step(price)`` has the fake
    API answer ``price`` for BTC at one fetch, and returns once the rules have evaluated it."""

    def make(text: str, **env: str):
        settings = Settings.load(
            environ=fake_env(fake_api.url, RTDASH_ALERTS=rules_file(tmp_path, text), **{**QUIET, **env}), dotenv=None
        )
        runtime = get_runtime(settings)
        # A fetch's future is done once its rows have reached every subscriber, the rules included: the first
        # fetches' evaluations are over before a test counts (a poller is idle a moment before they are).
        for poller in runtime.pollers.values():
            poller.fetch_now().result(timeout=20)

        def step(price: float) -> None:
            fake_api.prices["BTC"] = price
            before = runtime.alerts.evaluations
            df = runtime.price.fetch_now().result(timeout=20)
            assert df["price"].iloc[-1] == price
            wait_until(lambda: runtime.alerts.evaluations > before, 20, message=f"the rules to see {price}")

        return runtime, step

    return make


def states(runtime) -> list[tuple[str, str, float]]:
    return [(e["rule"], e["state"], e["value"]) for e in runtime.alerts.recent]


def test_a_price_path_across_a_level_fires_once_resolves_once_and_posts_each_once(scripted, caplog):
    caplog.set_level(logging.WARNING, logger="rtdash.alerts")
    with WebhookReceiver() as hook:
        rules = f'[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\nhysteresis = 500\nwebhook = "{hook.url}"\n'
        runtime, step = scripted(rules)
        for price in (65000, 69000, 71000, 72000, 71500, 69800, 69000, 66000):
            step(price)
        assert states(runtime) == [("BTC high", "firing", 71000.0), ("BTC high", "resolved", 69000.0)]
        wait_until(lambda: len(hook.received) >= 2, 20, message="both POSTs")
        runtime.stop()  # nothing more can come: the webhook's thread has ended
        assert hook.states() == [("BTC high", "firing"), ("BTC high", "resolved")]
        assert len(hook.attempts) == 2
    first = hook.received[0]
    assert first["series"] == "BTC price" and first["value"] == 71000.0 and first["level"] == 70000.0
    assert pd.Timestamp(first["time"]).tzinfo is not None
    assert first["text"].startswith("[FIRING] BTC high") and "71,000.00" in first["text"]  # Slack's field
    lines = [r.getMessage() for r in caplog.records if r.name == "rtdash.alerts"]
    assert [line.split("]")[0] for line in lines] == ["alert [FIRING", "alert [RESOLVED"]
    assert runtime.alerts.states["BTC high"].fired == 1


HIGH = '[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\n'


def test_a_value_flapping_inside_the_hysteresis_fires_no_more(scripted):
    runtime, step = scripted(HIGH + "hysteresis = 1000\ncooldown = 0\n")
    for price in (69500, 70100, 69200, 70400, 69100, 70900, 69050):
        step(price)
    assert states(runtime) == [("BTC high", "firing", 70100.0)]
    step(68500)
    step(70200)  # out of the band and back above: a new firing
    assert [s[1] for s in states(runtime)] == ["firing", "resolved", "firing"]


def test_a_cooldown_holds_back_a_second_firing(scripted):
    runtime, step = scripted('[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\ncooldown = "1h"\n')
    for price in (71000, 69000, 71000, 69000, 72000):
        step(price)
    assert [s[1] for s in states(runtime)] == ["firing", "resolved"]


def test_a_webhook_that_fails_then_recovers_gets_each_event_once_in_order(scripted, monkeypatch, caplog):
    monkeypatch.setattr(alerts_module, "WEBHOOK_BACKOFF", 0.05)
    with WebhookReceiver(fail=3) as hook:
        rules = f'[[rule]]\nname = "BTC low"\nasset = "BTC"\nbelow = 60000\ncooldown = 0\nwebhook = "{hook.url}"\n'
        runtime, step = scripted(rules)
        for price in (65000, 59000, 61000):
            step(price)
        wait_until(lambda: len(hook.received) >= 2, 30, message="both events to be delivered")
        runtime.stop()
        assert hook.states() == [("BTC low", "firing"), ("BTC low", "resolved")]
        assert [body["state"] for body in hook.attempts] == ["firing"] * 4 + ["resolved"]
    status = runtime.alerts.webhooks["BTC low"].status
    assert (status.delivered, status.failures, status.given_up) == (2, 3, 0)
    assert status.last_error == "HTTP 500"


def test_a_webhook_url_is_a_secret(scripted, caplog, tmp_path):
    from rtdash.server import health
    from rtdash.views.alerts import AlertsView

    caplog.set_level(logging.DEBUG)
    token = "T999/B999/hush-hush-token"
    url = f"http://127.0.0.1:9/services/{token}"  # nothing listens on port 9: every attempt fails
    runtime, step = scripted(f'[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 1\nwebhook = "{url}"\n')
    step(2)
    hook = runtime.alerts.webhooks["BTC high"]
    wait_until(lambda: hook.status.failures >= 1, 20)
    view = AlertsView(alerts=runtime.alerts)  # a page's list: it says the webhook fails, and not where it posts
    assert "webhook failing · BTC high: ConnectionError" in view._pane.object
    assert "hush-hush" not in view._pane.object and "***" in view._pane.object
    assert hook.status.last_error and "hush-hush" not in hook.status.last_error
    assert f"/services/{token}" in runtime.settings.secrets and url in runtime.settings.secrets
    assert "hush-hush" not in str(health()[1]) and "hush-hush" not in str(runtime.settings.describe())
    assert "hush-hush" not in caplog.text
    assert "hush-hush" not in repr(runtime.settings.rules)


def test_evaluations_per_fetch_equal_the_rules_however_many_sessions(scripted):
    from rtdash.app import create_app

    rules = (
        '[[rule]]\nname = "high"\nasset = "BTC"\nabove = 90000\n'
        '[[rule]]\nname = "moves"\nasset = "BTC"\nchange = 5\nwindow = "10min"\n'
        '[[rule]]\nname = "London hot"\ncity = "London"\nmetric = "temperature"\nabove = 60\n'
    )
    runtime, step = scripted(rules, RTDASH_MAX_SESSIONS_PER_CLIENT="100")
    settings = runtime.settings

    def per_fetch(fetches: int = 3) -> float:
        before = runtime.alerts.evaluations
        for k in range(fetches):
            step(65000 + k)
        return (runtime.alerts.evaluations - before) / fetches

    alone = per_fetch()
    server = PanelServer(lambda: create_app(settings), unused_session_lifetime_milliseconds=3_600_000)
    try:
        for _ in range(50):
            server.new_session()
        wait_until(lambda: runtime.alerts.listeners >= 50, 60, message="50 sessions listening to the alerts")
        crowded = per_fetch()
    finally:
        server.stop()
    assert alone == crowded == 2  # the two price rules, once each per price fetch
    assert runtime.price.subscriber_count >= 50  # the sessions are there, and did not add evaluations


def test_health_and_metrics_list_the_rules_firing(scripted):
    from rtdash.server import generate_latest, health

    _, step = scripted(
        '[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\n[[rule]]\nname = "BTC low"\nasset = "BTC"\n'
        "below = 10\n"
    )
    step(71000)
    body = health()[1]
    assert body["alerts"]["firing"] == ["BTC high"] and body["alerts"]["rules"] == 2
    text = generate_latest().decode()
    assert 'rtdash_alert_firing{rule="BTC high"} 1.0' in text
    assert 'rtdash_alert_firing{rule="BTC low"} 0.0' in text
    assert 'rtdash_alert_fired_total{rule="BTC high"}' in text
    step(65000)
    assert health()[1]["alerts"]["firing"] == []
    assert 'rtdash_alert_firing{rule="BTC high"} 0.0' in generate_latest().decode()


def test_a_quiet_source_fires_its_staleness_rule_and_resolves_when_data_comes(fake_api, tmp_path):
    rules = '[[rule]]\nname = "prices quiet"\nstale = "price"\nafter = "1s"\ncooldown = 0\n'
    fake_api.set_fault("coinbase", "500")
    env = {**QUIET, "RTDASH_PRICE_INTERVAL": "200ms", "RTDASH_BACKOFF_MAX": "300ms"}
    env = fake_env(fake_api.url, RTDASH_ALERTS=rules_file(tmp_path, rules), **env)
    settings = Settings.load(environ=env, dotenv=None)
    runtime = get_runtime(settings)
    wait_until(lambda: runtime.alerts.firing(), 30, message="the staleness rule to fire")
    fake_api.clear_fault()
    wait_until(lambda: not runtime.alerts.firing(), 30, message="the staleness rule to resolve")
    assert [e["state"] for e in runtime.alerts.recent] == ["firing", "resolved"]


def _evaluator(rules_text: str, tmp_path) -> Alerts:
    rules = load_rules(rules_file(tmp_path, rules_text), ["BTC"], ["London"])
    runtime = SimpleNamespace(settings=SimpleNamespace(secrets=[], role="all"), pollers={}, store=None)
    return Alerts(runtime, rules)


def _prices(*values: float, start: str = "2026-01-01 00:00", every: str = "1min") -> pd.DataFrame:
    times = pd.date_range(start, periods=len(values), freq=every, tz="UTC")
    return pd.DataFrame({"time": times, "asset": "BTC", "price": values, "source": "coinbase"})


def test_crosses_fires_on_each_crossing_beyond_the_band(tmp_path):
    alerts = _evaluator('[[rule]]\nname = "x"\nasset = "BTC"\ncrosses = 100\nhysteresis = 1\ncooldown = 0\n', tmp_path)
    for value in (95, 100.5, 99.5, 102, 100, 99.2, 98, 103):
        alerts.evaluate("price", _prices(value))
    assert [(e["state"], e["value"]) for e in alerts.recent] == [("fired", 102), ("fired", 98), ("fired", 103)]
    assert alerts.firing() == []  # a crossing is an event: nothing stays firing


def test_change_within_a_window_fires_and_resolves(tmp_path):
    alerts = _evaluator('[[rule]]\nname = "m"\nasset = "BTC"\nchange = 5\nwindow = "10min"\ncooldown = 0\n', tmp_path)
    alerts.evaluate("price", _prices(100, 101, 102, start="2026-01-01 00:00"))
    assert not alerts.recent
    alerts.evaluate("price", _prices(106, start="2026-01-01 00:05"))  # +6 % on 00:00's 100, within 10 min
    assert [e["state"] for e in alerts.recent] == ["firing"]
    alerts.evaluate("price", _prices(106.5, start="2026-01-01 00:11"))  # +5.4 % on 00:01's 101: still firing
    assert [e["state"] for e in alerts.recent] == ["firing"]
    alerts.evaluate("price", _prices(106.4, start="2026-01-01 00:16"))  # the window holds 106.5 and 106.4 only
    assert [e["state"] for e in alerts.recent] == ["firing", "resolved"]
    alerts.evaluate("price", _prices(100, start="2026-01-01 00:17"))  # -6 % from the window's high: a fall fires
    assert [e["state"] for e in alerts.recent] == ["firing", "resolved", "firing"]
    assert alerts.evaluations == 5


def test_history_rows_are_not_evaluated(tmp_path):
    alerts = _evaluator('[[rule]]\nname = "h"\nasset = "BTC"\nabove = 100\n', tmp_path)
    alerts.evaluate("price", _prices(150).assign(source="coinbase/1min"))
    assert not alerts.recent and alerts.evaluations == 0  # not a fetch: not counted either
    alerts.evaluate("price", _prices(150))
    assert len(alerts.recent) == 1 and alerts.evaluations == 1


GOOD = '[[rule]]\nname = "ok"\nasset = "BTC"\nabove = 1\n'


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabove = "lots"\n', ".toml", "rule 1 ('a'): above = 'lots' is invalid"),
        ('[[rule]]\nname = "a"\nasset = "XRP"\nabove = 1\n', ".toml", "'XRP' is not one of RTDASH_ASSETS"),
        ('[[rule]]\nasset = "BTC"\nabove = 1\n', ".toml", "rule 1: needs a name"),
        (GOOD + '[[rule]]\nname = "b"\nasset = "BTC"\n', ".toml", "rule 2 ('b'): needs exactly one condition"),
        (GOOD + GOOD, ".toml", "rule 2 ('ok'): the name is used by another rule"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabove = 1\nbelow = 2\n', ".toml", "needs exactly one condition"),
        ('[[rule]]\nname = "a"\ncity = "Paris"\nmetric = "temperature"\nabove = 1\n', ".toml", "RTDASH_CITIES"),
        ('[[rule]]\nname = "a"\ncity = "London"\nmetric = "rain"\nabove = 1\n', ".toml", "metric 'rain' is invalid"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nchange = 5\n', ".toml", "a change rule needs a window"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nchange = -5\nwindow = "1min"\n', ".toml", "change = -5 is invalid"),
        ('[[rule]]\nname = "a"\nstale = "news"\nafter = "5min"\n', ".toml", "stale = 'news' is invalid"),
        ('[[rule]]\nname = "a"\nstale = "price"\nafter = "soon"\n', ".toml", "after = 'soon' is invalid"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabove = 1\nseverity = "dire"\n', ".toml", "severity 'dire' is invalid"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabove = 1\nwebhook = "ftp://x"\n', ".toml", "webhook is invalid"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabove = inf\n', ".toml", "'inf' is invalid: expected a finite"),
        ('[[rule]]\nname = "a"\nasset = "BTC"\nabov = 1\n', ".toml", "unknown key 'abov' (did you mean above?)"),
        ("[[rule]\nname=", ".toml", "is not valid TOML"),
        ("rules:\n  - name: a\n    asset: BTC\n    below: [1\n", ".yaml", "is not valid YAML at line"),
        ("rules:\n  - name: a\n    asset: BTC\n    hysteresis: -1\n    below: 3\n", ".yml", "hysteresis = -1"),
        ("- a\n- b\n", ".yaml", "expected a table of rules"),
        ("name = 1\n", ".toml", "unknown top-level key 'name'"),
        ("rules = 3\n", ".toml", "must be a list of tables"),
        (GOOD, ".json", "expected a .toml, .yaml or .yml file"),
    ],
)
def test_a_bad_rules_file_is_refused_with_one_line_naming_the_rule(tmp_path, text, suffix, expected):
    path = rules_file(tmp_path, text, suffix)
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ={"RTDASH_ALERTS": path, "RTDASH_CITIES": "London"}, dotenv=None)
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith(f"RTDASH_ALERTS={path!r}")


def test_a_missing_rules_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="no such file"):
        Settings.load(environ={"RTDASH_ALERTS": str(tmp_path / "nope.toml")}, dotenv=None)


def test_yaml_and_the_example_file_give_rules(tmp_path):
    from tests.helpers import ROOT

    yaml_rules = "rules:\n  - name: hot\n    city: London\n    metric: wind\n    above: 20\n    severity: critical\n"
    settings = Settings.load(
        environ={"RTDASH_ALERTS": rules_file(tmp_path, yaml_rules, ".yaml"), "RTDASH_CITIES": "London"}, dotenv=None
    )
    assert [(r.name, r.metric, r.level, r.severity) for r in settings.rules] == [("hot", "wind_speed", 20, "critical")]
    example = ROOT / "deploy" / "alerts.example.toml"
    settings = Settings.load(environ={"RTDASH_ALERTS": str(example), "RTDASH_ASSETS": "BTC,ETH"}, dotenv=None)
    assert {r.condition for r in settings.rules} == {"above", "below", "crosses", "change", "stale"}
    assert Settings.load(environ={"RTDASH_ALERTS": "none"}, dotenv=None).rules == []


def test_the_alerts_list_and_notifications_show_names_as_text(tmp_path):
    from rtdash.views.alerts import AlertsView, alerts_html

    hostile = "<img src=x onerror=alert(1)>"
    alerts = _evaluator(f'[[rule]]\nname = "{hostile}"\nasset = "BTC"\nabove = 100\n', tmp_path)
    assert "no rule firing (1 rules watched)" in alerts_html(alerts)
    alerts.evaluate("price", _prices(150))
    page = alerts_html(alerts)
    assert hostile not in page and html_escape(hostile) in page
    assert "BTC price is 150.00 at 2026-01-01 00:00:00 UTC (above 100.00)" in page
    assert "Recent firings and resolutions (1)" in page

    shown = []
    notifications = SimpleNamespace(**{level: lambda text, duration, level=level: shown.append((level, text))
                                       for level in ("info", "warning", "error", "success")})  # fmt: skip
    view = AlertsView(alerts=alerts)
    view._notifications = notifications
    alerts.evaluate("price", _prices(90))
    resolved = f"[RESOLVED] {hostile}: BTC price is 90.00 (rule: above 100.00; warning)"
    assert shown == [("success", html_escape(resolved))]
    assert "no rule firing" in view._pane.object and "Recent firings and resolutions (2)" in view._pane.object


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_rtdash_check_lists_the_rules_without_their_webhooks(tmp_path, capsys):
    from rtdash.cli import check

    text = (
        '[[rule]]\nname = "BTC high"\nasset = "BTC"\nabove = 70000\nwebhook = "https://hooks.example.com/s/T1/abc"\n'
        '[[rule]]\nname = "quiet"\nstale = "weather"\nafter = "5min"\nseverity = "critical"\n'
    )
    env = {"RTDASH_ALERTS": rules_file(tmp_path, text), "RTDASH_PRICE_SOURCE": "simulated"}
    settings = Settings.load(environ={**env, "RTDASH_WEATHER_SOURCE": "simulated"}, dotenv=None)
    assert check(settings) == 0
    out = capsys.readouterr().out
    assert "alerts: 2 rules from " in out
    assert "  BTC high: BTC price above 70,000.00 (warning, webhook)" in out
    assert "  quiet: no fresh weather data for 5min (critical)" in out
    assert "hooks.example.com" not in out
