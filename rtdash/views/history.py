"""Placeholder until the HistoryView lands (being written now)."""

from __future__ import annotations

import panel as pn
import param


class HistoryView(pn.viewable.Viewer):
    runtime = param.Parameter(precedence=-1)

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.pane.Markdown("Not built yet.")
