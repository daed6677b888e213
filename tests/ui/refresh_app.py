"""The Refresh tab alone, served by tests/ui/test_refresh.py: ``panel serve tests/ui/refresh_app.py``."""

import panel as pn

from rtdash.config import Settings
from rtdash.stream import get_runtime
from rtdash.views.refresh import RefreshView

pn.extension("tabulator")

RefreshView(runtime=get_runtime(Settings.load())).servable(title="rtdash · Refresh")
