"""Alerts: rules read from the file ``RTDASH_ALERTS`` names, evaluated once per fetch in the pollers' path.

A rule watches one series (an asset's price, a city's temperature, humidity or wind speed) for a condition —
``above``, ``below``, ``crosses`` a level, or a ``change`` of more than some percent within a ``window`` — or a
source for ``stale`` data (no fresh rows for ``after``).  TOML (``[[rule]]`` tables) or YAML (a ``rules:`` list)::

    [[rule]]
    name = "BTC above 70k"
    asset = "BTC"
    above = 70000
    hysteresis = 500        # resolved only below 69,500
    severity = "warning"
    webhook = "https://hooks.slack.com/services/..."

:func:`load_rules` checks the file at startup and refuses it with one line naming the rule and what is wrong.

:class:`Alerts` is the process-wide evaluator of one runtime.  It subscribes to each poller directly (the callback
runs on the poller's thread, once per fetch, whatever the number of sessions) and watches each source's status for
staleness.  A firing or a resolution is: one log line, a record in the history store (its ``alerts`` table), a POST
to the rule's webhook (:class:`Webhook`, on a thread of its own, with retries), and a call to every listener (each
open page's :class:`rtdash.views.alerts.AlertsView`).  ``above``, ``below``, ``change`` and ``stale`` rules fire and
later resolve; ``crosses`` is an event: each crossing fires once and needs no resolution.

A viewer (``RTDASH_ROLE=viewer``) evaluates nothing: it reads the firings the collector stored (every
``FOLLOW_EVERY`` seconds) and shows them.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import queue
import re
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from .config import SettingsError, format_duration, parse_duration, url_problem, url_secrets
from .sources import SERIES, redact
from .sources.base import is_history

log = logging.getLogger("rtdash.alerts")

CONDITIONS = ("above", "below", "crosses", "change", "stale")
SEVERITIES = ("info", "warning", "critical")
METRIC_ALIASES = {"wind": "wind_speed"}
KEYS = (
    *("name", "asset", "city", "metric"),
    *CONDITIONS,
    *("window", "after", "severity", "hysteresis", "cooldown", "webhook"),
)
MAX_RULES = 200
MAX_FILE_BYTES = 1_000_000
MAX_NAME = 80
MAX_LEVEL = 1e15  # larger than any price or reading: a level beyond it is a typo
MAX_CHANGE = 1000.0  # percent
DURATION_BOUNDS = (1.0, 365 * 86400.0)  # window, after
COOLDOWN_MAX = 86400.0
DEFAULT_COOLDOWN = 60.0
RECENT = 50  # firings and resolutions kept in memory for the pages
FOLLOW_EVERY = 2.0  # seconds between a viewer's reads of the stored firings
WEBHOOK_ATTEMPTS = 8
WEBHOOK_BACKOFF = 1.0  # seconds before the first retry; doubled each time
WEBHOOK_BACKOFF_MAX = 60.0
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_QUEUE = 1000


@dataclass(frozen=True)
class Rule:
    """One alert rule, as validated from the rules file."""

    name: str
    condition: str  # one of CONDITIONS
    kind: str  # price or weather: the source whose fetches evaluate it
    series: str | None  # the asset or city (None for stale)
    metric: str | None  # price, temperature, humidity or wind_speed (None for stale)
    level: float | None  # the level of above/below/crosses; the percent of change
    window: float | None = None  # seconds, for change
    after: float | None = None  # seconds, for stale
    severity: str = "warning"
    hysteresis: float = 0.0
    cooldown: float = DEFAULT_COOLDOWN
    webhook: str | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """What the rule watches, as a person says it: ``BTC price``, ``London temperature``, ``weather source``."""
        if self.condition == "stale":
            return f"{self.kind} source"
        return f"{self.series} {self.metric.replace('_', ' ')}"

    @property
    def line(self) -> float | None:
        """The level drawn on the series' charts, or None (change and stale rules draw none)."""
        return self.level if self.condition in ("above", "below", "crosses") else None

    def event(self, state: str, value: float | None, when: pd.Timestamp) -> dict:
        """A firing or resolution of this rule: what the log, the store, the webhook and the pages get."""
        return {
            "rule": self.name,
            "series": self.target,
            "condition": self.describe(),
            "value": value,
            "level": self.level,
            "time": pd.Timestamp(when).tz_convert("UTC").isoformat(),
            "state": state,
            "severity": self.severity,
        }

    def describe(self) -> str:
        """The rule's condition in words: ``above 70,000.00``, ``no fresh weather data for 5min``."""
        if self.condition == "stale":
            return f"no fresh {self.kind} data for {format_duration(self.after)}"
        if self.condition == "change":
            return f"a change of more than {self.level:g}% within {format_duration(self.window)}"
        return f"{self.condition} {_number(self.level)}"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "none"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6g}"


# -- the rules file --------------------------------------------------------------------------------------------------


def read_rules_file(path: str) -> list[Any]:
    """The rules of a TOML or YAML file as plain data, or a one-line :class:`SettingsError`."""
    where = f"RTDASH_ALERTS={path!r}"
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SettingsError(f"{where} is invalid: the file has {size:,} bytes, at most {MAX_FILE_BYTES:,}")
        text = file.read_text(encoding="utf-8")
    except SettingsError:
        raise
    except FileNotFoundError:
        raise SettingsError(f"{where} is invalid: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsError(f"{where} cannot be read: {reason}") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise SettingsError(f"{where} is not valid YAML{at}: {problem}") from None
    elif file.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{where} is not valid TOML: {str(exc).splitlines()[0]}") from None
    else:
        raise SettingsError(f"{where} is invalid: expected a .toml, .yaml or .yml file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{where} is invalid: expected a table of rules (rule = [...] or rules: [...])")
    unknown = sorted(set(data) - {"rule", "rules"})
    if unknown:
        raise SettingsError(f"{where} is invalid: unknown top-level key {unknown[0]!r}; expected rule or rules")
    rules = data.get("rule", data.get("rules", []))
    if not isinstance(rules, list):
        raise SettingsError(f"{where} is invalid: rule(s) must be a list of tables")
    if len(rules) > MAX_RULES:
        raise SettingsError(f"{where} is invalid: {len(rules)} rules, at most {MAX_RULES}")
    return rules


def load_rules(path: str | None, assets: list[str], cities: list[str]) -> list[Rule]:
    """The validated rules of the file at ``path`` (none without one), or a one-line :class:`SettingsError` that
    names the rule (its name, or its number when it has none) and what is wrong with it."""
    if not path:
        return []
    rules: list[Rule] = []
    for number, raw in enumerate(read_rules_file(path), start=1):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"rule {number}" + (f" ({name!r})" if isinstance(name, str) and name.strip() else "")
        try:
            rule = _rule(raw, assets, cities)
        except ValueError as exc:
            raise SettingsError(f"RTDASH_ALERTS={path!r}: {label}: {exc}") from None
        if any(other.name == rule.name for other in rules):
            raise SettingsError(f"RTDASH_ALERTS={path!r}: {label}: the name is used by another rule")
        rules.append(rule)
    return rules


def _rule(raw: Any, assets: list[str], cities: list[str]) -> Rule:
    """One rule from its table; ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("expected a table of keys (name, asset or city, a condition, ...)")
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown key {str(key)[:40]!r}{hint}; accepted are {', '.join(KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("needs a name")
    name = name.strip()
    if len(name) > MAX_NAME or any(ord(char) < 32 for char in name):
        raise ValueError(f"the name must be one line of at most {MAX_NAME} characters")
    conditions = [c for c in CONDITIONS if c in raw]
    if len(conditions) != 1:
        raise ValueError(f"needs exactly one condition of {', '.join(CONDITIONS)}; it has {len(conditions)}")
    condition = conditions[0]
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {str(severity)[:40]!r} is invalid: expected one of {', '.join(SEVERITIES)}")
    hysteresis = _number_in(raw, "hysteresis", 0.0, 0.0, MAX_LEVEL)
    cooldown = _duration_in(raw, "cooldown", DEFAULT_COOLDOWN, 0.0, COOLDOWN_MAX)
    webhook = raw.get("webhook")
    if webhook is not None:
        problem = url_problem(webhook) if isinstance(webhook, str) else "it is not a text"
        if problem:
            raise ValueError(f"webhook is invalid: {problem}; expected an http:// or https:// URL")
    common = dict(name=name, severity=severity, hysteresis=hysteresis, cooldown=cooldown, webhook=webhook)
    if condition == "stale":
        kind = raw["stale"]
        if kind not in ("price", "weather"):
            raise ValueError(f"stale = {str(kind)[:40]!r} is invalid: expected price or weather (the source)")
        for key in ("asset", "city", "metric", "window"):
            if key in raw:
                raise ValueError(f"a stale rule watches a source: {key} does not apply")
        if "after" not in raw:
            raise ValueError('a stale rule needs after, such as after = "5min"')
        after = _duration_in(raw, "after", None, *DURATION_BOUNDS)
        return Rule(condition="stale", kind=kind, series=None, metric=None, level=None, after=after, **common)
    if ("asset" in raw) == ("city" in raw):
        raise ValueError("needs either an asset (its price) or a city (its temperature, humidity or wind)")
    if "after" in raw:
        raise ValueError("after applies to stale rules only")
    if "asset" in raw:
        kind, series, known = "price", raw["asset"], assets
        metric = raw.get("metric", "price")
        if metric != "price":
            raise ValueError(f"metric {str(metric)[:40]!r} is invalid for an asset: expected price")
        series = series.upper() if isinstance(series, str) else series
    else:
        kind, series, known = "weather", raw["city"], cities
        metric = METRIC_ALIASES.get(raw.get("metric"), raw.get("metric"))
        if metric not in ("temperature", "humidity", "wind_speed"):
            raise ValueError(
                f"metric {str(metric)[:40]!r} is invalid for a city: expected temperature, humidity or wind"
            )
    if not isinstance(series, str) or series not in known:
        setting = "RTDASH_ASSETS" if kind == "price" else "RTDASH_CITIES"
        close = difflib.get_close_matches(str(series), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"{str(series)[:40]!r} is not one of {setting}: {', '.join(known)}{hint}")
    if condition == "change":
        level = _number_in(raw, "change", None, 0.0, MAX_CHANGE, exclusive_low=True)
        if "window" not in raw:
            raise ValueError('a change rule needs a window, such as window = "10min"')
        window = _duration_in(raw, "window", None, *DURATION_BOUNDS)
        return Rule(condition="change", kind=kind, series=series, metric=metric, level=level, window=window, **common)
    if "window" in raw:
        raise ValueError("window applies to change rules only")
    level = _number_in(raw, condition, None, -MAX_LEVEL, MAX_LEVEL)
    return Rule(condition=condition, kind=kind, series=series, metric=metric, level=level, **common)


def _number_in(raw, key, default, low, high, exclusive_low=False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} = {str(value)[:40]!r} is invalid: expected a finite number")
    if value < low or value > high or (exclusive_low and value == low):
        bound = "more than" if exclusive_low else "at least"
        raise ValueError(f"{key} = {value!r} is invalid: expected a number {bound} {low:g} and at most {high:g}")
    return float(value)


def _duration_in(raw, key, default, low, high) -> float:
    value = raw.get(key, default)
    if value == 0 and low == 0:
        return 0.0
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        seconds = parse_duration(value)
    except (ValueError, TypeError):
        raise ValueError(f"{key} = {str(value)[:40]!r} is invalid: expected a duration such as 30s, 5min, 1h") from None
    if seconds < low or seconds > high:
        raise ValueError(
            f"{key} = {str(value)[:40]!r} is invalid: expected at least {format_duration(low or 1)} "
            f"and at most {format_duration(high)}"
        )
    return seconds


def webhook_secrets(rules: list[Rule]) -> list[str]:
    """What to remove from every message so that no webhook URL shows: each URL whole, its path and query (an HTTP
    library's error names the path alone; Slack's token is in it), and any password in it."""
    found: list[str] = []
    for rule in rules:
        if not rule.webhook:
            continue
        found.append(rule.webhook)
        rest = re.sub(r"^[a-z]+://[^/?#]*", "", rule.webhook, flags=re.I)
        if len(rest) >= 4:
            found.append(rest)
        found += url_secrets(rule.webhook)
    return found


# -- firings ---------------------------------------------------------------------------------------------------------


def event_text(event: dict) -> str:
    """One line for a firing or a resolution (the log, the notification, Slack's ``text``):
    ``[FIRING] BTC high: BTC price is 71,000.00 (rule: above 70,000.00; warning)``."""
    mark = {"firing": "FIRING", "resolved": "RESOLVED", "fired": "FIRED"}.get(event["state"], event["state"])
    return f"[{mark}] {event['rule']}: {reading(event)} (rule: {event['condition']}; {event['severity']})"


def reading(event: dict) -> str:
    """What the series was at an event: ``BTC price is 71,000.00``; for a staleness rule, how long since fresh data."""
    value = event.get("value")
    if event["series"].endswith(" source"):
        age = "a while" if value is None or not math.isfinite(value) else format_duration(max(round(value), 1))
        return f"{event['series']}: last fresh data {age} ago"
    return f"{event['series']} is {_number(value)}"


class RuleState:
    """What the evaluator remembers of one rule between fetches."""

    def __init__(self) -> None:
        self.firing = False
        self.since: pd.Timestamp | None = None  # when the current firing began
        self.since_value: float | None = None  # the value it began with
        self.value: float | None = None  # the value at the last evaluation
        self.last_fired = -math.inf  # monotonic, for the cooldown
        self.side = 0  # crosses: +1 above the band, -1 below, 0 not known yet
        self.points: deque[tuple[pd.Timestamp, float]] = deque()  # change: the window's values
        self.fired = 0  # firings since start


class WebhookStatus:
    """A webhook's deliveries, for /health and the Alerts list (never its URL)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failures = 0  # failed attempts since start
        self.given_up = 0  # events not delivered after every attempt
        self.dropped = 0  # events refused because the queue was full
        self.last_error: str | None = None
        self.last_error_time: pd.Timestamp | None = None

    def snapshot(self) -> dict:
        out = dict(vars(self))
        out["last_error_time"] = self.last_error_time.isoformat() if self.last_error_time is not None else None
        return out


class Webhook:
    """POSTs a rule's firings and resolutions to its URL, in order, on a thread of its own.

    Each event is tried up to ``WEBHOOK_ATTEMPTS`` times, ``WEBHOOK_BACKOFF`` seconds apart at first, doubling up to
    ``WEBHOOK_BACKOFF_MAX``, each with a ``timeout``; the next event waits until the one before is delivered or given
    up, so a receiver sees them in order.  Any 2xx answer is a delivery.  Errors are kept in ``status`` with the
    URL removed.
    """

    def __init__(self, url: str, secrets: list[str], timeout: float = WEBHOOK_TIMEOUT):
        self.url = url
        self.secrets = secrets
        self.timeout = timeout
        self.status = WebhookStatus()
        self._queue: queue.Queue = queue.Queue(WEBHOOK_QUEUE)
        self._stop = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="rtdash-webhook", daemon=True)
        self._thread.start()

    def send(self, event: dict) -> None:
        """Queue ``event`` for delivery (never blocks)."""
        try:
            self._queue.put_nowait(payload(event))
        except queue.Full:
            self.status.dropped += 1
            log.warning("alert webhook of %s: queue full, an event was dropped", event["rule"])

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self._queue.get()
            if body is None:
                return
            self._deliver(body)

    def _deliver(self, body: dict) -> None:
        delay = WEBHOOK_BACKOFF
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                answer = self._session.post(self.url, json=body, timeout=self.timeout)
                if 200 <= answer.status_code < 300:
                    self.status.delivered += 1
                    return
                error = f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            error = redact(error, self.secrets)[:300]
            self.status.failures += 1
            self.status.last_error, self.status.last_error_time = error, pd.Timestamp.now(tz="UTC")
            if attempt == WEBHOOK_ATTEMPTS:
                break
            log.warning(
                "alert webhook of %s failed (%s); attempt %d of %d in %s",
                body["rule"],
                error,
                attempt + 1,
                WEBHOOK_ATTEMPTS,
                format_duration(delay),
            )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, WEBHOOK_BACKOFF_MAX)
        self.status.given_up += 1
        log.error("alert webhook of %s: %s not delivered after %d attempts", body["rule"], body["state"], attempt)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._session.close()


def payload(event: dict) -> dict:
    """The JSON a webhook receives: rule, series, value, time, state (and more), with Slack's ``text``."""
    keys = ("rule", "series", "value", "level", "time", "state", "severity", "condition")
    return {**{key: event.get(key) for key in keys}, "text": event_text(event)}


class Alerts:
    """The rules of one runtime: evaluated after each fetch, their firings recorded, posted and shown.

    ``evaluations`` counts rule evaluations since start: one per rule per fetch of its source, however many sessions
    are open (tests and the metrics check it).
    """

    def __init__(self, runtime, rules: list[Rule]):
        self.runtime = runtime
        self.rules = list(rules)
        self.secrets = runtime.settings.secrets
        self.states = {rule.name: RuleState() for rule in self.rules}
        self.evaluations = 0
        self.recent: deque[dict] = deque(maxlen=RECENT)  # newest last
        posts = runtime.settings.role != "viewer"  # a viewer shows the collector's firings; the collector posts them
        self.webhooks = {r.name: Webhook(r.webhook, self.secrets) for r in self.rules if r.webhook and posts}
        self._lock = threading.RLock()
        self._listeners: dict[int, Callable[[dict], None]] = {}
        self._ids = itertools.count()
        self._started = time.monotonic()
        self._records: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscriptions: list = []
        self._newest: pd.Timestamp | None = None  # a viewer: the newest stored firing it has seen

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> Alerts:
        """Evaluate after every fetch (or, in a viewer, follow the stored firings)."""
        if not self.rules:
            return self
        self._load_recent()
        if self.runtime.settings.role == "viewer":
            self._spawn(self._follow, "rtdash-alerts-follow")
            return self
        self._spawn(self._record, "rtdash-alerts-store")
        for kind, poller in self.runtime.pollers.items():
            if any(rule.kind == kind and rule.condition != "stale" for rule in self.rules):
                self._subscriptions.append(poller.subscribe(lambda df, kind=kind: self.evaluate(kind, df), direct=True))
            if any(rule.kind == kind and rule.condition == "stale" for rule in self.rules):
                poller.status.param.watch(lambda event, kind=kind: self.check_stale(kind), ["last_attempt"])
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop evaluating; the firings still queued are stored (5 s at most); the webhooks stop after the POST under
        way (events not delivered yet are dropped)."""
        for subscription in self._subscriptions:
            subscription.cancel()
        self._stop.set()
        self._records.put(None)
        for thread in self._threads:
            thread.join(5)
        for webhook in self.webhooks.values():
            webhook.stop()

    # -- evaluation: on the poller's thread, once per fetch ----------------------------------------------------------

    def evaluate(self, kind: str, df: pd.DataFrame) -> None:
        """Evaluate every value rule of ``kind`` on the live rows of one fetch.  Rows of the provider's history (the
        filler's, handed to subscribers too) are not a fetch: they are not evaluated, nor counted."""
        if len(df):
            df = df[~df["source"].map(is_history).astype(bool)]
        if not len(df):
            return
        key = SERIES[kind]
        for rule in self.rules:
            if rule.kind != kind or rule.condition == "stale":
                continue
            with self._lock:
                self.evaluations += 1
                rows = df.loc[df[key] == rule.series, ["time", rule.metric]].dropna()
                if len(rows):
                    rows = rows.sort_values("time", kind="stable")
                    self._step(rule, list(zip(rows["time"], rows[rule.metric].astype(float), strict=True)))

    def check_stale(self, kind: str) -> None:
        """After each fetch attempt of ``kind`` (success or failure): its staleness rules."""
        status = self.runtime.pollers[kind].status
        now = pd.Timestamp.now(tz="UTC")
        for rule in self.rules:
            if rule.kind != kind or rule.condition != "stale":
                continue
            with self._lock:
                self.evaluations += 1
                if status.last_success is not None:
                    age = (now - pd.Timestamp(status.last_success)).total_seconds()
                else:
                    age = time.monotonic() - self._started
                state = self.states[rule.name]
                state.value = round(age, 1)
                if not state.firing and age > rule.after and self._cooled(rule, state):
                    self._change(rule, state, "firing", age, now)
                elif state.firing and age <= rule.after:
                    self._change(rule, state, "resolved", age, now)

    def _step(self, rule: Rule, points: list[tuple[pd.Timestamp, float]]) -> None:
        state = self.states[rule.name]
        when, value = points[-1]
        state.value = value
        h = rule.hysteresis
        if rule.condition == "change":
            state.points.extend(points)
            while state.points and (when - state.points[0][0]).total_seconds() > rule.window:
                state.points.popleft()
            # The largest move to the latest value from any value in the window (a rise from its low, a fall from
            # its high), in percent of that value.
            change = max((abs(value - v) / abs(v) * 100 for _, v in state.points if v), default=0.0)
            if not state.firing and change > rule.level and self._cooled(rule, state):
                self._change(rule, state, "firing", value, when)
            elif state.firing and change < rule.level - h:
                self._change(rule, state, "resolved", value, when)
        elif rule.condition == "crosses":
            side = 1 if value > rule.level + h else -1 if value < rule.level - h else state.side
            if state.side and side != state.side and self._cooled(rule, state):
                self._change(rule, state, "fired", value, when)
            state.side = side
        else:
            beyond = value > rule.level if rule.condition == "above" else value < rule.level
            back = value < rule.level - h if rule.condition == "above" else value > rule.level + h
            if not state.firing and beyond and self._cooled(rule, state):
                self._change(rule, state, "firing", value, when)
            elif state.firing and back:
                self._change(rule, state, "resolved", value, when)

    @staticmethod
    def _cooled(rule: Rule, state: RuleState) -> bool:
        return time.monotonic() - state.last_fired >= rule.cooldown

    def _change(self, rule: Rule, state: RuleState, what: str, value: float, when: pd.Timestamp) -> None:
        if what in ("firing", "fired"):
            state.last_fired = time.monotonic()
            state.fired += 1
        state.firing = what == "firing"
        state.since = pd.Timestamp(when) if state.firing else None
        state.since_value = float(value) if state.firing else None
        event = rule.event(what, float(value), when)
        log.warning("alert %s", event_text(event))
        self._records.put(event)
        webhook = self.webhooks.get(rule.name)
        if webhook is not None:
            webhook.send(event)
        self._publish(event)

    # -- what the pages and the store get ----------------------------------------------------------------------------

    def _publish(self, event: dict) -> None:
        with self._lock:
            self.recent.append(event)
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a page that cannot take it must not stop the others
                log.debug("an alert listener failed", exc_info=True)

    def listen(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every firing and resolution from now on; returns the function that stops it."""
        with self._lock:
            key = next(self._ids)
            self._listeners[key] = callback
        return lambda: self._listeners.pop(key, None)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def recent_events(self, n: int = RECENT) -> list[dict]:
        """The last ``n`` firings and resolutions, newest first (a copy: the pollers' thread adds to them)."""
        with self._lock:
            return list(self.recent)[-n:][::-1]

    def version(self) -> tuple:
        """Changes when what the Alerts list shows changes (an event, a webhook's failure or delivery)."""
        hooks = tuple((h.status.failures, h.status.delivered, h.status.given_up) for h in self.webhooks.values())
        return len(self.recent), self.recent[-1]["time"] if self.recent else None, hooks

    def firing(self) -> list[dict]:
        """The rules firing now: name, series, severity, condition, since when and the value they fired with."""
        with self._lock:
            return [
                {
                    "rule": rule.name,
                    "series": rule.target,
                    "severity": rule.severity,
                    "condition": rule.describe(),
                    "since": self.states[rule.name].since.isoformat() if self.states[rule.name].since else None,
                    "value": self.states[rule.name].since_value,
                }
                for rule in self.rules
                if self.states[rule.name].firing
            ]

    def health(self) -> dict:
        """For ``/health``: the rules firing, the counts, and each webhook's failures (never a URL)."""
        return {
            "rules": len(self.rules),
            "firing": [item["rule"] for item in self.firing()],
            "evaluations": self.evaluations,
            "webhooks": {name: hook.status.snapshot() for name, hook in self.webhooks.items()},
        }

    def _record(self) -> None:
        """The store's thread: each firing and resolution written to the ``alerts`` table, retried a few times."""
        while True:
            event = self._records.get()
            if event is None:
                return
            store = self.runtime.store
            if store is None:
                continue
            for attempt in range(5):
                try:
                    store.write_alert(event)
                    break
                except Exception as exc:
                    if attempt == 4 or self._stop.wait(0.5 * 2**attempt):
                        log.warning("alert %s not stored: %s", event["rule"], redact(str(exc), self.secrets)[:300])
                        break

    def _load_recent(self) -> None:
        """The firings stored in the last day: the list of a restarted process or a viewer starts with them."""
        store = self.runtime.store
        if store is None:
            return
        try:
            stored = store.alerts(start=pd.Timestamp.now(tz="UTC") - pd.Timedelta("1D"))
        except Exception as exc:
            log.warning("stored alerts cannot be read: %s", redact(str(exc), self.secrets)[:300])
            return
        self._apply(stored, notify=False)

    def _apply(self, stored: pd.DataFrame, notify: bool) -> None:
        """Firings read from the store (a viewer, or a restart): their states taken over, shown to the pages."""
        names = {rule.name: rule for rule in self.rules}
        for row in stored.itertuples(index=False):
            rule = names.get(row.rule)
            if rule is None:
                continue
            when = pd.Timestamp(row.time)
            self._newest = max(self._newest, when) if self._newest is not None else when
            state = self.states[rule.name]
            state.firing = row.state == "firing"
            state.since = when if state.firing else None
            state.value = None if pd.isna(row.value) else float(row.value)
            state.since_value = state.value if state.firing else None
            if row.state in ("firing", "fired"):
                state.fired += notify  # a viewer counts what it is told of, not what happened before it started
            event = rule.event(row.state, state.value, when)
            if notify:
                log.warning("alert %s (from the collector)", event_text(event))
                self._publish(event)
            else:
                with self._lock:
                    self.recent.append(event)

    def _follow(self) -> None:
        """A viewer's thread: the collector's firings, read from the store every ``FOLLOW_EVERY`` seconds."""
        while not self._stop.wait(FOLLOW_EVERY):
            store = self.runtime.store
            if store is None:
                return
            try:
                start = self._newest + pd.Timedelta("1us") if self._newest is not None else None
                stored = store.alerts(start=start or pd.Timestamp.now(tz="UTC") - pd.Timedelta("1D"))
            except Exception as exc:
                log.debug("stored alerts cannot be read: %s", redact(str(exc), self.secrets))
                continue
            self._apply(stored, notify=True)
