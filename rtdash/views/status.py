"""The header's status: a badge per source (ok / stale / error, how long ago it updated, the provider's error)
and a banner that cannot be missed while the data is simulated.

The pollers write their ``SourceStatus`` from worker threads, so the view does not watch it: a per-session
periodic callback reads it and updates the panes only when their text changed.  Every message is escaped:
provider messages and city names are shown as text, never as HTML.
"""

from __future__ import annotations

import html

import pandas as pd
import panel as pn
import param

from ..config import env_name
from ..stream import Runtime, SourceStatus

REFRESH_MS = 500  # how often a session re-reads the status; the "ago" text ticks once a second
KIND_LABELS = {"price": "Prices", "weather": "Weather"}
STATE_LABELS = {"starting": "connecting", "ok": "ok", "stale": "stale", "error": "error"}

BADGE_CSS = """
.badge {display: inline-flex; flex-direction: column; gap: 2px; font: 13px/1.3 system-ui, sans-serif;
        padding: 5px 12px; border-radius: 14px; border: 1px solid; max-width: 460px; cursor: help}
.badge .line {white-space: nowrap}
.badge .reason {font-size: 12px; overflow-wrap: anywhere}
.badge.starting {color: #374151; background: #f3f4f6; border-color: #d1d5db}
.badge.ok {color: #14532d; background: #dcfce7; border-color: #86efac}
.badge.stale {color: #78350f; background: #fef3c7; border-color: #fcd34d}
.badge.error {color: #7f1d1d; background: #fee2e2; border-color: #fca5a5}
.dot {font-size: 10px; vertical-align: 1px}
"""
BANNER_CSS = """
.banner {font: 600 15px/1.4 system-ui, sans-serif; color: #fff; background: #b45309; padding: 10px 16px;
         border-radius: 6px; overflow-wrap: anywhere}
"""


def ago(seconds: float) -> str:
    """``4 s``, ``3 min``, ``2 h``, ``5 d``."""
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _clock(value: pd.Timestamp | None) -> str:
    return "never" if value is None else pd.Timestamp(value).strftime("%H:%M:%S UTC")


def badge_html(status: SourceStatus, now: pd.Timestamp) -> str:
    """One source's badge: state, provider, how long ago it updated; the error and details on hover."""
    state = status.state
    kind = KIND_LABELS.get(status.kind, status.kind)
    if status.last_success is not None:
        when = f"updated {ago((now - status.last_success).total_seconds())} ago"
    else:
        when = "no data yet"
    fallback = status.simulated and status.fallback_reason
    provider = f"{status.provider} (offline fallback)" if fallback else status.provider
    line = f"{kind}: {provider} · {STATE_LABELS[state]} · {when}"
    look = "stale" if status.simulated and state == "ok" else state  # simulated data is not a healthy source
    reason = ""
    if state in ("stale", "error") and status.last_error:
        reason = status.last_error
        if status.next_retry is not None:
            reason += f" · retrying in {ago((status.next_retry - now).total_seconds())}"
    elif status.detail:
        reason = f"partly failed: {status.detail}"
    details = [
        f"{kind} from {status.provider}" + (" (simulated)" if status.simulated else ""),
        f"state: {state}",
        f"last success: {_clock(status.last_success)}",
    ]
    if status.last_error:
        details.append(f"last error ({_clock(status.last_error_time)}): {status.last_error}")
    if status.detail:
        details.append(f"series that failed: {status.detail}")
    if status.failures:
        details.append(f"failed fetches in a row: {status.failures}; next try {_clock(status.next_retry)}")
    details.append(f"fetches: {status.fetches}, failed: {status.errors}")
    reason_html = f'<span class="reason">{html.escape(reason)}</span>' if reason else ""
    return (
        f'<div class="badge {look}" data-kind="{html.escape(status.kind)}" data-state="{state}" '
        f'title="{html.escape(chr(10).join(details))}">'
        f'<span class="line"><span class="dot">●</span> {html.escape(line)}</span>{reason_html}</div>'
    )


def banner_text(runtime: Runtime) -> str | None:
    """The simulated-data warning, or None while every source is live."""
    unreachable, chosen = [], []
    for kind, poller in runtime.pollers.items():
        status = poller.status
        if not status.simulated:
            continue
        if status.fallback_reason:
            unreachable.append(status.fallback_reason)
        else:
            chosen.append(f"{env_name(kind + '_source')}=simulated")
    parts = []
    if unreachable:
        parts.append("Offline: showing simulated data — live sources unreachable: " + "; ".join(unreachable))
    if chosen:
        parts.append("Showing simulated data, not live measurements (" + ", ".join(chosen) + ")")
    return " · ".join(parts) or None


class StatusView(pn.viewable.Viewer):
    """Badges per source and the simulated-data banner of one session."""

    runtime = param.ClassSelector(class_=Runtime, precedence=-1, doc="The shared pollers to report on.")

    def __init__(self, **params):
        super().__init__(**params)
        self._badges = {kind: pn.pane.HTML(stylesheets=[BADGE_CSS], margin=(4, 4)) for kind in self.runtime.pollers}
        self.badges = pn.Row(*self._badges.values(), align="center")
        self.banner = pn.pane.HTML(
            stylesheets=[BANNER_CSS], visible=False, sizing_mode="stretch_width", margin=(0, 10, 6, 10)
        )
        self.refresh()
        self._callback = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS)

    def refresh(self) -> None:
        """Re-read every source's status; touch a pane only when its text changed."""
        now = pd.Timestamp.now(tz="UTC")
        for kind, pane in self._badges.items():
            text = badge_html(self.runtime.pollers[kind].status, now)
            if pane.object != text:
                pane.object = text
        text = banner_text(self.runtime)
        banner = f'<div class="banner" role="alert">⚠ {html.escape(text)}</div>' if text else ""
        if self.banner.object != banner:
            self.banner.param.update(object=banner, visible=bool(text))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.badges, self.banner, sizing_mode="stretch_width")
