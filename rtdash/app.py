"""The dashboard: a header with the sources' status over the Live, Refresh and History tabs.

``create_app`` builds one session's layout; ``realtime_dashboard.py`` and the notebook both call it.
``serve_main`` is ``python realtime_dashboard.py``: it serves the same app and prints its URL.
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import secrets
import socket
import time
from collections.abc import Sequence

import panel as pn
from bokeh.settings import settings as bokeh_settings

from . import __version__
from .cli import load_settings_or_exit
from .config import Settings, SettingsError
from .logs import setup_logging
from .notebook import extension, in_kernel, log_stream
from .server import SESSION_BUILD, admit, local_stylesheets, on_session, routes, warm_up
from .stream import get_runtime, stop_all
from .views import OutputGuard, when_drawn
from .views.alerts import AlertsView
from .views.history import HistoryView
from .views.live import LiveView
from .views.refresh import RefreshView
from .views.status import StatusView
from .views.urlstate import sync_url

log = logging.getLogger("rtdash")

TITLE = "rtdash · live prices and weather"
APP_PATH = "realtime_dashboard"  # where both ways of serving put the page: panel serve names it after the script
HEADER_CSS = """
:host {border-bottom: 1px solid #e5e7eb; padding-bottom: 4px}
h1 {font: 600 22px/1.2 system-ui, sans-serif; margin: 6px 0; white-space: nowrap}
"""
ERROR_CSS = """
.error {font: 15px/1.4 system-ui, sans-serif; color: #7f1d1d; background: #fee2e2; border: 1px solid #fca5a5;
        border-radius: 6px; padding: 12px 16px; overflow-wrap: anywhere}
"""


def create_app(settings: Settings | None = None, argv: Sequence[str] = ()) -> pn.viewable.Viewable:
    """One session's dashboard for ``settings`` (by default read from the environment, ``.env`` and ``argv``).

    A bad setting gives a page with its one-line error (and one log line) instead of a traceback.
    """
    start = time.perf_counter()
    extension()  # in a notebook: the JavaScript inline, once (rtdash.notebook)
    try:
        settings = settings if settings is not None else Settings.load(argv=argv)
    except SettingsError as exc:
        _log_once(f"rtdash: error: {exc}")
        return error_page(f"rtdash cannot start: {exc}")
    setup_logging(settings, stream=log_stream())
    if settings.rules:
        extension(notifications=True)  # alert rules notify every open page (rtdash.views.alerts)
    refusal = admit(settings)  # a token no page was served with, or a cap reached: one line, no pollers
    if refusal is not None:
        return error_page(refusal)
    runtime = get_runtime(settings)
    on_session(runtime)
    status = StatusView(runtime=runtime)
    # Title left, badges right; on a narrow page (a notebook's output) the badges wrap under the title.
    header = pn.FlexBox(
        pn.pane.HTML(f"<h1>{html.escape(TITLE)}</h1>", margin=(0, 10), align="center"),
        status.badges,
        justify_content="space-between",
        align_items="center",
        flex_wrap="wrap",
        stylesheets=[HEADER_CSS],
        sizing_mode="stretch_width",
    )
    # dynamic: a tab is rendered when it is shown, so the page starts with the Live tab alone (and a map whose
    # tiles cannot load does not hold back the page's "ready" event that live updates wait for).
    # The Refresh tab builds its map and table, the History tab reads the store, when first shown (the link may ask
    # for either): most sessions open neither.  In a notebook the map and table are built at once: a component that
    # a kernel makes after its output was shown takes its stylesheets from cdn.holoviz.org, which an offline
    # JupyterLab cannot reach.
    refresh = RefreshView(runtime=runtime, deferred=not in_kernel())
    history = HistoryView(runtime=runtime, deferred=True)
    # The Live tab's weather charts join its page once the page has drawn the rest, so the price chart comes first
    # (if the Live tab is shown then; else when it is shown).
    # New points and the badges go in one message (on_update).
    live = LiveView(runtime=runtime, on_update=status.refresh, deferred=not in_kernel())
    tabs = pn.Tabs(
        ("Live", live),
        ("Refresh", refresh),
        ("History", history),
        dynamic=True,
        sizing_mode="stretch_width",
    )
    shown = {0: live.show, 1: refresh.show, 2: history.show}  # by the tab's index
    tabs.param.watch(lambda event: event.new in shown and shown[event.new](), "active")
    when_drawn(lambda: tabs.active == 0 and live.show())
    # The URL carries the view (tab, assets, cities, metric, range): a shared link opens the same view.
    url = sync_url(tabs, history=history, refresh=refresh)
    # In a notebook, the guard at the output's top level (not in a tab that can be hidden) tells the kernel when the
    # output is gone, so that its views end their subscriptions (rtdash.views.OutputGuard).
    guard = [OutputGuard()] if in_kernel() else []
    alerts = [AlertsView(alerts=runtime.alerts)] if runtime.alerts.rules else []  # firing now, recent, notifications
    app = pn.Column(header, status.banner, *alerts, url, tabs, *guard, sizing_mode="stretch_width")
    SESSION_BUILD.observe(time.perf_counter() - start)  # rtdash_session_build_seconds in /metrics
    return app


def error_page(message: str) -> pn.pane.HTML:
    """A page of one line saying why there is no dashboard, styled from the server like the dashboard."""
    local_stylesheets()
    return pn.pane.HTML(f'<div class="error" role="alert">{html.escape(message)}</div>', stylesheets=[ERROR_CSS])


@functools.cache
def _log_once(message: str) -> None:
    """Log ``message`` the first time only: a bad setting is one line in the log, not one per page view."""
    log.error("%s", message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_main(argv: Sequence[str] | None = None) -> None:
    """``python realtime_dashboard.py [--port N] [--address HOST] [--show] [--setting value ...]``."""
    parser = argparse.ArgumentParser(
        prog="realtime_dashboard.py",
        description=f"Serve the rtdash {__version__} dashboard (the same app as `panel serve realtime_dashboard.py`).",
        epilog="Any other --name value is a setting, e.g. --price-interval 5s --assets BTC,ETH (see the README).",
        allow_abbrev=False,
    )
    parser.add_argument("--port", type=int, default=5006, help="port to listen on; 0 picks a free one (5006)")
    parser.add_argument("--address", default="localhost", help="address to listen on (localhost)")
    parser.add_argument("--show", action="store_true", help="open the dashboard in a browser")
    args, rest = parser.parse_known_args(argv)
    settings = load_settings_or_exit(rest)
    setup_logging(settings)
    port = args.port or _free_port()
    origins = sorted({f"{args.address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})
    # Signed sessions: only a token this server issued for a page opens one (Bokeh refuses any other: "Invalid token
    # signature").  The key is BOKEH_SECRET_KEY when set (several processes must share one), else one of its own.
    secret_key = bokeh_settings.secret_key_bytes() or secrets.token_urlsafe(32).encode()
    warm_up(settings)  # the first page then does not wait for the charts to be drawn
    # At the address `panel serve realtime_dashboard.py` uses (its name), with "/" redirecting there.
    server = pn.serve(
        {APP_PATH: lambda: create_app(settings)},
        port=port,
        address=args.address,
        websocket_origin=origins,
        show=args.show,
        start=False,
        title=TITLE,
        verbose=False,  # the line below says where, with the page's path
        liveness=True,
        extra_patterns=routes(),
        sign_sessions=True,
        secret_key=secret_key,
    )
    server.start()
    print(
        f"rtdash: serving the dashboard at http://{args.address}:{server.port}/{APP_PATH} (Ctrl+C to stop)", flush=True
    )
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()
