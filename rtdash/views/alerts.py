"""Alerts in the page: the list of rules firing now and recent firings, a notification in every open page when a
rule fires or resolves, and the rules' levels on the charts (live and History).

The evaluation happens once per fetch in the pollers' path (:mod:`rtdash.alerts`); a page only listens: each
session's :class:`AlertsView` gets every firing and resolution on its own document's next tick, shows a Panel
notification (``pn.state.notifications``, on with ``pn.extension(notifications=True)``) and redraws its list.
Rule names, series and values reach the page as escaped text only.
"""

from __future__ import annotations

import html

import holoviews as hv
import pandas as pd
import panel as pn
import param
from bokeh.models import Label, Span

from ..alerts import Alerts, Rule, event_text, reading
from ..stream.poller import current_dispatch
from . import Text

SHOWN_RECENT = 10
REFRESH_MS = 1000  # how often a page looks for a change the events did not bring (a webhook failing)
COLOURS = {"info": "#2563eb", "warning": "#d97706", "critical": "#dc2626"}
NOTIFY = {"info": "info", "warning": "warning", "critical": "error"}
NOTIFY_MS = {"firing": 15_000, "fired": 15_000, "resolved": 8_000}
ALERTS_CSS = """
.alerts {font: 13px/1.4 system-ui, sans-serif; color: #1f2937; border: 1px solid #e5e7eb; border-radius: 6px;
         padding: 6px 12px}
.alerts .head {display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: baseline}
.alerts .title {font-weight: 600}
.alerts .quiet {color: #4b5563}
.alerts .firing {display: inline-flex; gap: 6px; align-items: baseline; padding: 1px 10px; border-radius: 12px;
                 border: 1px solid; overflow-wrap: anywhere}
.alerts .firing.info {color: #1e3a8a; background: #eff6ff; border-color: #bfdbfe}
.alerts .firing.warning {color: #78350f; background: #fef3c7; border-color: #fcd34d}
.alerts .firing.critical {color: #7f1d1d; background: #fee2e2; border-color: #fca5a5}
.alerts .hook {color: #7f1d1d}
.alerts details {margin-top: 2px}
.alerts summary {cursor: pointer; color: #374151}
.alerts table {border-collapse: collapse; margin: 4px 0}
.alerts td, .alerts th {padding: 1px 10px 1px 0; text-align: left; font-variant-numeric: tabular-nums}
.alerts th {color: #6b7280; font-weight: 500}
"""


def _clock(iso: str | None) -> str:
    if not iso:
        return ""
    ts = pd.Timestamp(iso)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6g}"


def alerts_html(alerts) -> str:
    """The Alerts list: the rules firing now (or that none is), webhook failures, and recent firings, folded."""
    e = html.escape
    firing = alerts.firing()
    if firing:
        items = "".join(
            f'<span class="firing {e(item["severity"])}" data-rule="{e(item["rule"])}"><b>{e(item["rule"])}</b>'
            f"{e(reading(item))} at {e(_clock(item['since']))} ({e(item['condition'])})</span>"
            for item in firing
        )
    else:
        items = f'<span class="quiet">no rule firing ({len(alerts.rules)} rules watched)</span>'
    hooks = [
        f"{name}: {hook.status.last_error} ({hook.status.failures} failed attempts)"
        for name, hook in alerts.webhooks.items()
        if hook.status.failures and hook.status.last_error
    ]
    hook_line = "".join(f'<div class="hook">webhook failing · {e(line)}</div>' for line in hooks)
    recent = alerts.recent_events(SHOWN_RECENT)
    rows = "".join(
        f"<tr><td>{e(_clock(event['time']))}</td><td>{e(event['rule'])}</td><td>{e(event['state'])}</td>"
        f"<td>{e(event['series'])}</td><td>{e(_value(event['value']))}</td></tr>"
        for event in recent
    )
    table = (
        f"<details><summary>Recent firings and resolutions ({len(recent)})</summary><table>"
        "<tr><th>Time</th><th>Rule</th><th>State</th><th>Series</th><th>Value</th></tr>"
        f"{rows}</table></details>"
        if recent
        else ""
    )
    return (
        f'<div class="alerts" role="status"><div class="head"><span class="title">Alerts</span>{items}</div>'
        f"{hook_line}{table}</div>"
    )


class AlertsView(pn.viewable.Viewer):
    """One session's Alerts list and notifications; listens to the runtime's alerts until the session ends."""

    alerts = param.ClassSelector(class_=Alerts, precedence=-1, doc="The runtime's alerts (runtime.alerts).")

    def __init__(self, **params):
        super().__init__(**params)
        self._pane = Text(
            alerts_html(self.alerts), stylesheets=[ALERTS_CSS], sizing_mode="stretch_width", margin=(0, 10, 6, 10)
        )
        self._shown = self.alerts.version()
        self._notifications = pn.state.notifications  # this session's (None without notifications=True)
        self._dispatch, doc = current_dispatch()
        self._cancel = self.alerts.listen(self._heard)
        if doc is not None:
            pn.state.on_session_destroyed(lambda _context: self._cancel())
            # Webhook failures come between events, and Panel drops changes made before the page is ready: the list
            # is looked at again every REFRESH_MS once the page is ready (redrawn only when it changed).
            pn.state.onload(lambda: doc.add_periodic_callback(self.refresh, REFRESH_MS))

    def _heard(self, event: dict) -> None:
        """On the pollers' thread: show ``event`` on this session's own loop."""
        if self._dispatch is None:
            self.show(event)
        else:
            self._dispatch(lambda: self.show(event))

    def show(self, event: dict) -> None:
        """A notification of ``event`` (escaped: Notyf shows its message as HTML) and the list redrawn."""
        if self._notifications is not None:
            level = "success" if event["state"] == "resolved" else NOTIFY.get(event["severity"], "warning")
            text = html.escape(event_text(event))
            getattr(self._notifications, level)(text, duration=NOTIFY_MS.get(event["state"], 10_000))
        self.refresh()

    def refresh(self) -> None:
        """Redraw the list if what it shows has changed."""
        version = self.alerts.version()
        if version != self._shown:
            self._shown = version
            self._pane.object = alerts_html(self.alerts)

    def __panel__(self) -> pn.viewable.Viewable:
        return self._pane


def draw_levels(figure, rules: list[Rule]) -> None:
    """The levels of ``rules`` on a live chart's Bokeh ``figure``: a dashed line in the severity's colour, named."""
    for rule in rules:
        if rule.line is None:
            continue
        colour = COLOURS.get(rule.severity, COLOURS["warning"])
        figure.add_layout(
            Span(
                location=rule.line,
                dimension="width",
                line_color=colour,
                line_dash="dashed",
                line_width=1.5,
                tags=["alert", rule.name],
            )
        )
        figure.add_layout(
            Label(
                x=6,
                x_units="screen",
                y=rule.line,
                y_offset=3,
                text=rule.name,
                text_color=colour,
                text_font_size="11px",
                tags=["alert", rule.name],
            )
        )


def chart_rules(rules: list[Rule], kind: str, metric: str, series: list[str]) -> list[Rule]:
    """The rules whose level belongs on a chart of ``metric`` of ``series``."""
    return [r for r in rules if r.line is not None and r.kind == kind and r.metric == metric and r.series in series]


def history_overlay(rules: list[Rule], firings: pd.DataFrame | None, metric: str, epoch_ms: bool = False) -> hv.Overlay:
    """For the History chart: each rule's level as a dashed line, and its firings as marks at their time and value
    (times as naive UTC, or epoch milliseconds for "every point")."""
    layers = [
        hv.HLine(rule.line, label=rule.name).opts(
            color=COLOURS.get(rule.severity, COLOURS["warning"]), line_dash="dashed", line_width=1.5
        )
        for rule in rules
    ]
    marks = firings[firings["state"].isin(["firing", "fired"])] if firings is not None else None
    if marks is not None and len(marks):
        times = marks["time"].dt.tz_convert("UTC").dt.tz_localize(None)
        if epoch_ms:
            times = times.to_numpy("datetime64[ns]").astype("int64") / 1e6
        data = pd.DataFrame({"time": times, metric: marks["value"].to_numpy(float), "rule": marks["rule"].to_numpy()})
        layers.append(
            hv.Points(data, ["time", metric], ["rule"]).opts(
                marker="triangle", size=12, color=COLOURS["critical"], line_color="white", tools=["hover"]
            )
        )
    return hv.Overlay(layers)
