"""The header's status: a badge per source (ok / simulated / stale / error, how long ago it updated, the provider's
error; on hover, what the provider's history filled and what is missing), a banner that cannot be missed while the
data is simulated, and a notice while history is off.

The pollers write their ``SourceStatus`` from worker threads, so the view does not watch it: a per-session
periodic callback reads it and sends the badges only the fields that changed (a new success once per fetch); the
page counts the seconds since the last update itself.  Provider messages and city names are shown as text, never as
HTML.
"""

from __future__ import annotations

import html
import weakref
from typing import ClassVar

import pandas as pd
import panel as pn
import param
from panel.custom import JSComponent

from ..config import env_name
from ..sources import redact
from ..stream import Runtime, SourceStatus
from . import OutputLifetime, Text, one_message

REFRESH_MS = 500  # how often a session re-reads the status (the page ticks the "ago" text itself)
KIND_LABELS = {"price": "Prices", "weather": "Weather"}
STATE_WORDS = {"starting": "connecting", "ok": "ok", "stale": "stale", "error": "error"}

BADGE_CSS = """
.badge {display: inline-flex; flex-direction: column; gap: 2px; font: 13px/1.3 system-ui, sans-serif;
        padding: 5px 12px; border-radius: 14px; border: 1px solid; max-width: 460px; cursor: help}
.badge .line {overflow-wrap: anywhere}  /* a long line wraps inside the pill, never past its edge */
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
.notice {font: 14px/1.4 system-ui, sans-serif; color: #1f2937; background: #f3f4f6; border: 1px solid #d1d5db;
         padding: 6px 16px; border-radius: 6px; overflow-wrap: anywhere}
.banner + .notice, .notice + .banner {margin-top: 6px}
"""


def _ms(value: pd.Timestamp | None) -> float | None:
    return None if value is None else pd.Timestamp(value).value / 1e6


def state_word(status: SourceStatus) -> str:
    """The state a badge and the notebook's summary say: simulated rows that arrive as they should are "simulated",
    never "ok" (``/health`` calls them degraded)."""
    if status.simulated and status.state == "ok":
        return "simulated"
    return STATE_WORDS.get(status.state, status.state)


def badge_fields(status: SourceStatus) -> dict:
    """What one source's badge shows, as the page's badge component takes it (times in ms since the epoch)."""
    return {
        "kind": status.kind,
        "label": KIND_LABELS.get(status.kind, status.kind),
        "provider": status.provider,
        "source_state": status.state,
        "word": state_word(status),
        "simulated": status.simulated,
        "fallback": bool(status.simulated and status.fallback_reason),
        "last_success": _ms(status.last_success),
        "last_error": status.last_error or "",
        "last_error_time": _ms(status.last_error_time),
        "detail": status.detail or "",
        "failures": status.failures,
        "next_retry": _ms(status.next_retry),
        "history": history_line(status),
    }


def history_line(status: SourceStatus) -> str:
    """What the provider's history did, in a line for the badge's hover: rows filled, requests within the budget,
    the ranges still missing (or why the provider cannot fill gaps)."""
    h = status.history or {}
    state = h.get("state")
    if not state or state == "idle":
        return ""
    if state in ("off", "unavailable"):
        return f"provider history: {h.get('message') or state}"
    text = (
        f"provider history ({h.get('resolution') or '?'} steps): {status.filled:,} rows filled in "
        f"{h.get('requests', 0):,} requests; {h.get('calls_last_hour', 0)} of {h.get('budget_per_hour', 0)} calls "
        "an hour spent"
    )
    if state == "filling":
        text += "; filling now"
    missing = h.get("missing") or []
    if missing:

        def when(iso: str) -> str:
            return iso[:16].replace("T", " ")

        shown = "; ".join(
            f"{m['series']} {when(m['start'])} to {when(m['end'])} UTC ({m['reason']})" for m in missing[-3:]
        )
        text += f"; still missing: {shown}"
    return text


class StatusBadge(JSComponent):
    """One source's badge: state, provider and how long ago it updated; the error and details on hover.

    The server sends what changed (once per fetch at most); the page counts the seconds itself.  The page's clock
    is corrected by what it learns from updates as they arrive, so a browser whose clock is off still says
    "updated 1 s ago".  Every text is set as text, never as HTML.
    """

    kind = param.String()
    label = param.String()
    provider = param.String()
    source_state = param.String(default="starting", doc="starting, ok, stale or error")
    word = param.String(default="connecting", doc="The state as the badge says it (state_word).")
    simulated = param.Boolean(default=False)
    fallback = param.Boolean(default=False, doc="Simulated because the live source could not be reached.")
    last_success = param.Number(default=None, allow_None=True)
    last_error = param.String(default="")
    last_error_time = param.Number(default=None, allow_None=True)
    detail = param.String(default="")
    failures = param.Integer(default=0)
    next_retry = param.Number(default=None, allow_None=True)
    history = param.String(default="", doc="What the provider's history filled and what is missing (history_line).")

    _stylesheets: ClassVar[list[str]] = [BADGE_CSS]

    def _get_model(self, doc, root=None, parent=None, comm=None):
        """Panel's model of the badge, on which a changed field is found at once (a new success: once per fetch and
        session).

        Panel's ``ReactiveESM._update_model`` looks every changed parameter up on the component's outer model
        (``freeze_doc``: ``getattr(model, name, None)``, to find any Bokeh model among the values), but the badge's
        fields live on its ``data`` model.  Bokeh answers a missing attribute with an ``AttributeError`` whose text
        names the closest properties (``difflib``): a third of what a badge update cost (0.56 ms, timed alone).  A
        plain attribute of each field's name on the outer model, None (no Bokeh model in it), makes that lookup a
        dict hit; Bokeh neither serializes nor validates it (no upstream report found).
        """
        model = super()._get_model(doc, root, parent, comm)
        properties = model.properties()
        for name in self.param:
            if name not in JSComponent.param and name not in properties:
                object.__setattr__(model, name, None)
        return model

    _esm = """
// 4 s, 3 min, 2 h, 5 d
export function ago(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000))
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "min"]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)} ${unit}`
  }
  return `${seconds} s`
}

const clock = (ms) => ms == null ? "never" : new Date(ms).toISOString().slice(11, 19) + " UTC"

export function render({ model, el }) {
  const badge = Object.assign(document.createElement("div"), {className: "badge"})
  const line = Object.assign(document.createElement("span"), {className: "line"})
  const dot = Object.assign(document.createElement("span"), {className: "dot", textContent: "\u25cf"})
  const text = document.createTextNode("")
  line.append(dot, text)
  const reason = Object.assign(document.createElement("span"), {className: "reason"})
  badge.append(line, reason)
  let skew = null  // how far this browser's clock is ahead of the server's, at most

  function draw() {
    const now = Date.now() - (skew ?? 0)
    const state = model.source_state
    const when = model.last_success == null ? "no data yet" : `updated ${ago(now - model.last_success)} ago`
    const provider = model.provider + (model.fallback ? " (offline fallback)" : "")
    text.data = ` ${model.label}: ${provider} \u00b7 ${model.word} \u00b7 ${when}`
    let why = ""
    if ((state === "stale" || state === "error") && model.last_error) {
      why = model.last_error
      if (model.next_retry != null) why += ` \u00b7 retrying in ${ago(model.next_retry - now)}`
    } else if (model.detail) {
      why = `partly failed: ${model.detail}`
    }
    reason.textContent = why
    reason.hidden = !why
    const details = [
      `${model.label} from ${model.provider}` + (model.simulated ? " (simulated)" : ""),
      `state: ${state}`,
      `last success: ${clock(model.last_success)}`,
    ]
    if (model.last_error) details.push(`last error (${clock(model.last_error_time)}): ${model.last_error}`)
    if (model.detail) details.push(`series that failed: ${model.detail}`)
    if (model.failures) details.push(`failed fetches in a row: ${model.failures}; next try ${clock(model.next_retry)}`)
    if (model.history) details.push(model.history)
    badge.title = details.join("\\n")
    badge.className = `badge ${model.simulated && state === "ok" ? "stale" : state}`  // simulated is not healthy
    badge.dataset.kind = model.kind
    badge.dataset.state = state
  }

  model.on("last_success", () => {
    if (model.last_success != null) {  // a new success was just reported: the server's clock said last_success
      const ahead = Date.now() - model.last_success
      skew = skew === null ? ahead : Math.min(skew, ahead)
    }
    draw()
  })
  for (const name of ["provider", "source_state", "word", "simulated", "fallback", "last_error", "last_error_time",
                      "detail", "failures", "next_retry", "history"]) {
    model.on(name, draw)
  }
  const timer = setInterval(draw, 1000)
  model.on("remove", () => clearInterval(timer))
  draw()
  return badge
}
"""


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


def history_notice(runtime: Runtime) -> tuple[str, bool] | None:
    """Why history is off and how to turn it on, and whether that is an error (not a choice); None while it is kept.

    The store is opened once, when the sources start: whatever the fix, it takes a restart.
    """
    if runtime.store is not None:
        return None
    if runtime.store_error:
        error = redact(runtime.store_error, runtime.settings.secrets)
        return f"History is off: {error}. Fix that or set RTDASH_STORE to another path, then restart rtdash.", True
    return (
        "History is off: RTDASH_STORE is none. To keep history, set RTDASH_STORE to a file path or a postgresql:// "
        "URL and restart rtdash.",
        False,
    )


def summary(runtime: Runtime) -> str:
    """One plain line per source (what the badges say), the simulated-data warning and the history notice, for a
    notebook cell."""
    lines = []
    for kind, poller in runtime.pollers.items():
        status = poller.status
        label = f"{KIND_LABELS.get(kind, kind)} from {status.provider or '?'}"
        if status.state == "starting":
            state = "first fetch in flight"
        elif status.last_success is not None:
            state = f"{state_word(status)}, last update {pd.Timestamp(status.last_success):%H:%M:%S} UTC"
        else:
            state = state_word(status)
        if status.simulated and status.state != "ok":  # ok and simulated says "simulated" already
            state += " (simulated data)"
        if status.last_error and status.state != "ok":
            state += f": {status.last_error}"
        lines.append(f"{label}: {state}")
        if history_line(status):
            lines.append(f"  {history_line(status)}")
    text, notice = banner_text(runtime), history_notice(runtime)
    return "\n".join([*lines, *([f"⚠ {text}"] if text else []), *([notice[0]] if notice else [])])


_SNAPSHOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # runtime: (version, snapshot)


def status_snapshot(runtime: Runtime) -> tuple[dict[str, dict], str]:
    """Every badge's fields and the banners' HTML (empty while live with history), worked out once for all sessions
    of a runtime and again only when a source made an attempt or changed its state."""
    version = tuple(
        (s.last_attempt, s.state, s.provider, s.simulated, s.filled, s.history.get("state"), s.history.get("last_fill"))
        for s in (p.status for p in runtime.pollers.values())
    )
    known, snapshot = _SNAPSHOTS.get(runtime, (None, None))
    if version != known:
        fields = {kind: badge_fields(poller.status) for kind, poller in runtime.pollers.items()}
        text = banner_text(runtime)
        banner = f'<div class="banner" role="alert">⚠ {html.escape(text)}</div>' if text else ""
        notice = history_notice(runtime)
        if notice and notice[1]:  # history lost by an error: as loud as simulated data
            banner += f'<div class="banner" role="alert">⚠ {html.escape(notice[0])}</div>'
        elif notice:  # history off by choice: said, quietly
            banner += f'<div class="notice" role="status">{html.escape(notice[0])}</div>'
        snapshot = (fields, banner)
        _SNAPSHOTS[runtime] = (version, snapshot)
    return snapshot


class StatusView(pn.viewable.Viewer):
    """Badges per source, the simulated-data banner and the history notice of one session."""

    runtime = param.ClassSelector(class_=Runtime, precedence=-1, doc="The shared pollers to report on.")

    def __init__(self, **params):
        super().__init__(**params)
        fields, banner = self._shown = status_snapshot(self.runtime)
        self._badges = {kind: StatusBadge(margin=(4, 4), **fields[kind]) for kind in self.runtime.pollers}
        # A FlexBox: at a notebook's width the badges wrap onto a second line instead of being clipped.
        self.badges = pn.FlexBox(*self._badges.values(), flex_wrap="wrap", align_items="center", align="center")
        self.banner = Text(
            banner, stylesheets=[BANNER_CSS], visible=bool(banner), sizing_mode="stretch_width", margin=(0, 10, 6, 10)
        )
        # Changes wait until the page is ready: Panel drops the model changes made after a page pulled its document
        # but before it said it was ready (it expects to send the document whole later), so a state that changed once
        # in that window (starting → ok) would never reach the page.
        self._ready = False
        self._outputs: OutputLifetime | None = None  # in a notebook: the outputs showing the badges
        pn.state.onload(self._start)

    def _start(self) -> None:
        self._ready = True
        self.refresh()
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            doc.add_periodic_callback(self.refresh, REFRESH_MS)  # Bokeh's own: lighter than Panel's
        else:
            # A notebook has no session to end the callback with: it ends with the last output showing the status.
            callback = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS)
            self._outputs = OutputLifetime([self.badges, self.banner], callback.stop)

    def refresh(self) -> None:
        """Re-read every source's status; send only what changed (in the caller's message, if it is making one)."""
        if self._outputs is not None and not self._outputs.check():
            return  # every output showing the status is gone (its periodic callback just stopped)
        snapshot = status_snapshot(self.runtime)
        if not self._ready or snapshot is self._shown:
            return
        self._shown = fields, banner = snapshot
        with one_message():
            for kind, badge in self._badges.items():
                changed = {name: value for name, value in fields[kind].items() if getattr(badge, name) != value}
                # A new success, once per fetch, is one field: set alone, as param's update() first reads every
                # value (0.37 ms against 0.23 per update).
                if len(changed) == 1:
                    setattr(badge, *changed.popitem())
                elif changed:
                    badge.param.update(changed)
            if self.banner.object != banner:
                self.banner.param.update(object=banner, visible=bool(banner))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.badges, self.banner, sizing_mode="stretch_width")
