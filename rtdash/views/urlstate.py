"""Shareable views: the page's URL carries what is shown, and opening the link shows it again.

    ?tab=history&metric=temperature&cities=Fresno,Sacramento&range=7d
    ?tab=history&metric=price&asset=ETH&from=2026-01-01T00:00&to=2026-01-02T00:00
    ?tab=refresh&map=humidity

=========  =====================================================================================================
``tab``    the open tab: ``live``, ``refresh`` or ``history``
``metric`` the History metric: ``price``, ``temperature``, ``humidity`` or ``wind_speed``
``asset``  the History asset (with ``metric=price``); ``assets`` is accepted too
``cities`` the History cities, comma-separated (with a weather metric)
``range``  the History range: ``1h``, ``1d``, ``7d`` or ``all``; or ``from`` and ``to``, UTC times, for a custom one
``map``    the Refresh map's metric
=========  =====================================================================================================

A value that is not one of these (a typo, an unknown city, a hostile string) is ignored and named in a notice on
the page, escaped and shortened; it never reaches a widget, and never raises.  Other query parameters are left
alone.

The link is read from ``pn.state.location`` (the page request's query).  The address bar is written by
:class:`AddressBar`, a hidden input whose browser-side callback calls ``history.replaceState`` on every
change: ``pn.state.location`` defers its writes until the whole page is idle, which a map whose tiles cannot be
reached (an offline intranet) never is.  ``replaceState`` keeps one history entry per page, not one per click.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pandas as pd
import panel as pn
import param

from . import Text

RANGES = {"1h": "Last hour", "1d": "Last day", "7d": "Last week", "all": "All"}
SPAN_SLUGS = {span: slug for slug, span in RANGES.items()}
KEYS = ("tab", "metric", "asset", "cities", "range", "from", "to", "map")
ALIASES = {"assets": "asset"}
SHOWN = 60  # characters of a rejected value shown in the notice
EARLIEST, LATEST = pd.Timestamp("2000-01-01", tz="UTC"), pd.Timestamp("2100-01-01", tz="UTC")
NOTICE_CSS = """
.notice {font: 14px/1.4 system-ui, sans-serif; color: #78350f; background: #fef3c7; border: 1px solid #fcd34d;
         border-radius: 6px; padding: 8px 14px; overflow-wrap: anywhere}
"""


def _shown(value: str) -> str:
    value = value if len(value) <= SHOWN else value[: SHOWN - 1] + "…"
    return repr(value)


def _choice(value: str, choices: list[str]) -> str | None:
    """The choice ``value`` names, ignoring case; None when it names none."""
    folded = {str(choice).casefold(): choice for choice in choices}
    return folded.get(value.strip().casefold())


def _time(value: str) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if ts is pd.NaT:
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts if EARLIEST <= ts <= LATEST else None


class AddressBar(pn.viewable.Viewer):
    """Shows ``search`` in the browser's address bar (``history.replaceState``) on every change.

    Built from Bokeh's own models (a hidden input with a ``CustomJS`` callback) rather than a custom component, so
    that any Bokeh client — not only a browser — can open a session of the app.
    """

    search = param.String(default="", doc="The query string, with its leading '?'.")

    _js = """
const search = cb_obj.value
if (search && search !== window.location.search) {
  window.history.replaceState(window.history.state, "", window.location.pathname + search + window.location.hash)
}
"""

    def __init__(self, **params):
        super().__init__(**params)
        # Empty until the page is drawn, then set: a change is what runs the callback in the browser.
        self._input = pn.widgets.TextInput(value="", visible=False, margin=0)
        self._input.jscallback(value=self._js)
        self._loaded = pn.state.curdoc is None or pn.state.curdoc.session_context is None
        if not self._loaded:
            pn.state.onload(self._on_load)

    def _on_load(self) -> None:
        self._loaded = True
        self._push()

    @param.depends("search", watch=True)
    def _push(self) -> None:
        if self._loaded:
            self._input.value = self.search

    def __panel__(self) -> pn.viewable.Viewable:
        return self._input


class UrlState(param.Parameterized):
    """Keeps the query string of the page and the view in step; see the module's docstring."""

    problems = param.List(default=[], item_type=str, doc="What the link asked for that was ignored, and why.")

    def __init__(self, tabs: pn.Tabs, history: Any = None, refresh: Any = None, location: Any = None, **params):
        super().__init__(**params)
        self.tabs, self.history, self.refresh = tabs, history, refresh
        self.location = location if location is not None else pn.state.location
        self.notice = Text("", visible=False, sizing_mode="stretch_width", stylesheets=[NOTICE_CSS])
        self.bar = AddressBar()
        self.search = ""
        if self.location is None:  # not served: a notebook, a script
            return
        self.search = self.location.search or ""
        self.apply(self.search)
        tabs.param.watch(self._write, ["active"])
        for view, names in ((history, ["metric", "asset", "cities", "span", "custom"]), (refresh, ["metric"])):
            if view is not None:
                view.param.watch(self._write, names)
        self._write()  # the address bar shows the whole view, without what was ignored

    @property
    def panel(self) -> pn.viewable.Viewable:
        """What goes on the page: the notice (hidden unless something was ignored) and the address bar writer."""
        return pn.Column(self.notice, self.bar, sizing_mode="stretch_width", margin=0)

    # -- the link -> the view ----------------------------------------------------------------------------------------

    @property
    def tab_names(self) -> list[str]:
        return [str(name).casefold() for name in self.tabs._names]

    def apply(self, search: str) -> list[str]:
        """Show what the query ``search`` asks for; what cannot be shown is listed in ``problems`` and the notice."""
        query: dict[str, str] = {}
        for key, value in parse_qsl(search.lstrip("?"), keep_blank_values=True):
            key = ALIASES.get(key, key)
            if key in KEYS:
                query[key] = value  # the last one wins, as in most servers
        problems: list[str] = []

        def reject(key: str, value: str, expected: str) -> None:
            problems.append(f"{key}={_shown(value)} (expected {expected})")

        history, changes = self.history, {}
        if history is not None:
            if "metric" in query:
                metric = _choice(query["metric"], list(history.param.metric.objects))
                if metric is None:
                    reject("metric", query["metric"], ", ".join(history.param.metric.objects))
                else:
                    changes["metric"] = metric
            if "asset" in query:
                asset = _choice(query["asset"], list(history.param.asset.objects))
                if asset is None:
                    reject("asset", query["asset"], "one of " + ", ".join(history.param.asset.objects))
                else:
                    changes["asset"] = asset
            if "cities" in query:
                wanted = [name for name in query["cities"].split(",") if name.strip()]
                known = list(history.param.cities.objects)
                cities = [c for c in (_choice(name, known) for name in wanted) if c is not None]
                unknown = [name for name in wanted if _choice(name, known) is None]
                if unknown or not cities:
                    reject("cities", ",".join(unknown) or query["cities"], "cities among " + ", ".join(known))
                if cities:
                    changes["cities"] = list(dict.fromkeys(cities))
            self._apply_range(query, changes, reject)
        elif any(key in query for key in ("metric", "asset", "cities", "range", "from", "to")):
            problems.append("the History tab is not part of this dashboard")
        if "map" in query:
            if self.refresh is None:
                reject("map", query["map"], "no map in this dashboard")
            else:
                metric = _choice(query["map"], list(self.refresh.param.metric.objects))
                if metric is None:
                    reject("map", query["map"], ", ".join(self.refresh.param.metric.objects))
                else:
                    self.refresh.metric = metric
        if changes:
            history.param.update(**changes)
        if "tab" in query:
            names = self.tab_names
            tab = query["tab"].strip().casefold()
            if tab in names:
                self.tabs.active = names.index(tab)
            else:
                reject("tab", query["tab"], ", ".join(names))
        self.problems = problems
        self._show_problems()
        return problems

    def _apply_range(self, query: dict[str, str], changes: dict, reject: Callable[[str, str, str], None]) -> None:
        if "from" in query or "to" in query:
            start, end = _time(query.get("from", "")), _time(query.get("to", ""))
            if start is None or end is None or start >= end:
                shown = f"{query.get('from', '')}..{query.get('to', '')}"
                reject("from/to", shown, "two UTC times, from before to, e.g. from=2026-01-01T00:00&to=2026-01-02")
            else:
                changes.update(span="Custom", custom=(start, end))
                return
        if "range" in query:
            span = RANGES.get(query["range"].strip().lower())
            if span is None:
                reject("range", query["range"], ", ".join(RANGES) + ", or from and to")
            else:
                changes["span"] = span

    def _show_problems(self) -> None:
        if not self.problems:
            self.notice.param.update(object="", visible=False)
            return
        items = "; ".join(html.escape(problem) for problem in self.problems)
        text = f'<div class="notice" role="status">Ignored from the link: {items}.</div>'
        self.notice.param.update(object=text, visible=True)

    # -- the view -> the link ----------------------------------------------------------------------------------------

    def query(self) -> dict[str, str]:
        """The query parameters that reproduce what is shown now."""
        out: dict[str, str] = {}
        names = self.tab_names
        if 0 <= self.tabs.active < len(names):
            out["tab"] = names[self.tabs.active]
        history = self.history
        if history is not None:
            out["metric"] = history.metric
            if history.metric == "price":
                if history.asset:
                    out["asset"] = history.asset
            elif history.cities:
                out["cities"] = ",".join(history.cities)
            if history.span == "Custom" and history.custom:
                start, end = (pd.Timestamp(t) for t in history.custom)
                out["from"], out["to"] = start.isoformat(), end.isoformat()
            elif history.span in SPAN_SLUGS:
                out["range"] = SPAN_SLUGS[history.span]
        if self.refresh is not None:
            out["map"] = self.refresh.metric
        return out

    def _write(self, *events) -> None:
        others = [(k, v) for k, v in parse_qsl(self.search.lstrip("?"), keep_blank_values=True)]
        others = [(k, v) for k, v in others if k not in KEYS and k not in ALIASES]
        self.search = "?" + urlencode([*self.query().items(), *others])
        self.bar.search = self.search


def sync_url(tabs: pn.Tabs, history: Any = None, refresh: Any = None) -> pn.viewable.Viewable:
    """Keep the page's URL and the view in step; returns what to place on the page (a notice, hidden unless a value
    of the link was ignored, and the address bar writer)::

        url = sync_url(tabs, history=history_view, refresh=refresh_view)
    """
    return UrlState(tabs, history=history, refresh=refresh).panel  # the watchers it sets keep it alive
