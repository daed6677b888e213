"""The real command lines: ``panel serve realtime_dashboard.py`` and ``python realtime_dashboard.py``, as subprocesses.

A session is opened as a browser opens it, the page then its websocket, with Bokeh's own client
(:class:`PageSession`): the app runs on the server as for a browser.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin

import requests
from bokeh.client import ClientSession
from bokeh.client.util import websocket_url_for_server_url
from bokeh.model import Model
from bokeh.models import Tabs
from bokeh.util.token import get_session_id

import rtdash.views.live
import rtdash.views.status  # noqa: F401  (defines the page's own components, which the client must know to read it)
from tests.helpers import ROOT, SCRIPT, fake_env, free_port, wait_until
from tests.test_auth import page_token

FAST = {"RTDASH_PRICE_INTERVAL": "500ms", "RTDASH_WEATHER_INTERVAL": "1s", "RTDASH_CITIES": "London,Berlin"}


class PageSession(ClientSession):
    """Bokeh's client session, connecting with the token of a page the server served: a token the client makes
    itself opens no session (``rtdash.server.admit``; Bokeh's own check when sessions are signed)."""

    def __init__(self, token: str, url: str) -> None:
        super().__init__(session_id=get_session_id(token), websocket_url=websocket_url_for_server_url(url))
        self._page_token = token

    @property
    def token(self) -> str:
        return self._page_token


def open_session(url: str) -> list[Model]:
    """Open a session of the app at ``url`` as a browser would, the page then its websocket, and return the models
    of its page.

    On a thread of its own: Bokeh's client runs an event loop, and Playwright may hold this thread's.
    """
    token = page_token(requests.get(url, timeout=60).text)

    def pull() -> list[Model]:
        with PageSession(token, url) as session:
            session.pull()
            return [model for root in session.document.roots for model in root.references()]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(pull).result(timeout=120)


def tab_titles(url: str) -> list[str]:
    return [panel.title for model in open_session(url) if isinstance(model, Tabs) for panel in model.tabs]


def page_texts(url: str) -> list[str]:
    """The text of the page's HTML panes (which Panel sends escaped, HTML inside)."""
    texts = [getattr(model, "text", None) for model in open_session(url)]
    return [html.unescape(html.unescape(text)) for text in texts if text]


def test_panel_serve_answers_and_a_session_opens(module_apps):
    app = module_apps(FAST)
    page = requests.get(f"{app.url}/realtime_dashboard", timeout=30)
    assert page.status_code == 200
    assert "<title>rtdash · live prices and weather</title>" in page.content.decode()
    assert tab_titles(f"{app.url}/realtime_dashboard") == ["Live", "Refresh", "History"]
    # The page's JavaScript travels gzipped once a session has set the server up (rtdash.server._Compressed).
    script = re.search(r'src="([^"]*bokeh\.min\.js[^"]*)"', page.text).group(1)
    js = requests.get(urljoin(page.url, script), headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert js.status_code == 200 and js.headers.get("Content-Encoding") == "gzip"
    assert "Traceback" not in app.output()


def test_sigusr1_writes_every_threads_stack_and_the_server_goes_on(module_apps):
    app = module_apps(FAST)  # the server of the test above: its stacks, and it goes on
    assert tab_titles(f"{app.url}/realtime_dashboard") == ["Live", "Refresh", "History"]
    output = app.stacks()
    assert "Current thread" in output and output.count("(most recent call first)") >= 3, output
    assert app.proc.poll() is None
    assert tab_titles(f"{app.url}/realtime_dashboard") == ["Live", "Refresh", "History"]


def test_python_script_serves_and_prints_its_url(serve):
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--port", str(port), "--address", "127.0.0.1"]
    app = serve(env=FAST, command=command, port=port)
    # The page is where `panel serve realtime_dashboard.py` has it, and "/" leads there too.
    url = f"http://127.0.0.1:{port}/realtime_dashboard"
    wait_until(lambda: url in app.output(), 30, message=f"{url} in the output")
    assert requests.get(url, timeout=30).status_code == 200
    root = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
    assert root.status_code == 200 and root.url == url, root.url
    assert tab_titles(url) == ["Live", "Refresh", "History"]
    # One line says where: the script's own, no second "serving"/"running at" line from Panel or Bokeh.
    lines = [line for line in app.output().splitlines() if "http://" in line]
    assert lines == [f"rtdash: serving the dashboard at {url} (Ctrl+C to stop)"], lines
    assert "Traceback" not in app.output()


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RTDASH_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_python_script_with_a_bad_setting_exits_2_with_one_line(fake_api):
    result = run_script("--price-interval", "soon", **fake_env(fake_api.url))
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "rtdash: error: RTDASH_PRICE_INTERVAL='soon' is invalid: expected a positive duration such as 500ms, 5s, "
        "2min, 90d (a bare number means seconds)"
    ]


def test_python_script_bad_setting_in_the_environment(fake_api):
    result = run_script(**fake_env(fake_api.url, RTDASH_UNITS="kelvin"))
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("rtdash: error: RTDASH_UNITS='kelvin' is invalid: expected one of metric, imperial")


def test_panel_serve_with_a_bad_setting_shows_one_line_and_logs_one_line(serve):
    app = serve(env={"RTDASH_BACKLOG": "lots"})
    assert requests.get(f"{app.url}/realtime_dashboard", timeout=30).status_code == 200
    texts = page_texts(f"{app.url}/realtime_dashboard")
    message = "RTDASH_BACKLOG='lots' is invalid: expected a whole number of at least 1"
    assert any(f">rtdash cannot start: {message}<" in text for text in texts), texts
    assert texts == page_texts(f"{app.url}/realtime_dashboard")  # a second page view
    output = wait_until(lambda: "RTDASH_BACKLOG" in app.output() and app.output(), 10, message="the log line")
    lines = [line for line in output.splitlines() if "RTDASH_BACKLOG" in line]
    assert len(lines) == 1
    assert lines[0].endswith("rtdash: error: RTDASH_BACKLOG='lots' is invalid: expected a whole number of at least 1")
    assert "Traceback" not in output
