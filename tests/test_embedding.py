"""Embedding: ``RTDASH_FRAME_ANCESTORS`` decides which pages may frame the dashboard (CSP ``frame-ancestors``), and
``RTDASH_ALLOWED_ORIGINS`` which origins may open its websocket."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import bokeh_exchange, wait_until
from tests.test_auth import APP, page_token, tab, ws_upgrade

pytestmark = [pytest.mark.slow]

PORTAL = b"""<html><body><h1>Intranet</h1><iframe id="dash" width="1200" height="800"></iframe>
<script>document.getElementById("dash").src = new URLSearchParams(location.search).get("src");</script>
</body></html>"""


class Portal:
    """A page of another origin on 127.0.0.1 that frames ``?src=``, as an intranet portal would the dashboard."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(PORTAL)))
                self.end_headers()
                self.wfile.write(PORTAL)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def framing(self, url: str) -> str:
        return f"{self.origin}/?src={quote(url, safe='')}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def portals():
    made = [Portal(), Portal()]
    yield made
    for portal in made:
        portal.close()


def test_the_page_carries_the_policy(serve):
    default = serve()
    assert requests.get(default.url + APP, timeout=30).headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    custom = serve(env={"RTDASH_FRAME_ANCESTORS": "self, https://intranet.example.com"})
    policy = requests.get(custom.url + APP, timeout=30).headers["Content-Security-Policy"]
    assert policy == "frame-ancestors 'self' https://intranet.example.com"


@pytest.mark.ui
def test_only_the_named_portal_can_frame_the_dashboard(serve, page, portals):
    allowed, other = portals
    app = serve(env={"RTDASH_FRAME_ANCESTORS": allowed.origin})

    page.goto(allowed.framing(app.url + APP))
    expect(tab(page.frame_locator("#dash"), "Live")).to_be_visible(timeout=30_000)

    page.console_errors.clear()
    page.goto(other.framing(app.url + APP))
    wait_until(lambda: any("frame-ancestors" in error for error in page.console_errors), 30)
    expect(tab(page.frame_locator("#dash"), "Live")).to_have_count(0)


def test_allowed_origins_decide_who_opens_the_websocket(serve):
    app = serve(
        env={"RTDASH_ALLOWED_ORIGINS": "intranet.example.com, https://dash.example.com"},
        serve_args=["--allow-websocket-origin", "cli.example.com"],
    )
    token = page_token(requests.get(app.url + APP, timeout=30).text)  # the first session sets the origins

    def handshake(origin: str) -> int:
        response = ws_upgrade(app.url, token, origin=origin)
        response.close()
        return response.status_code

    assert handshake("http://intranet.example.com") == 101
    assert handshake("https://dash.example.com") == 101
    assert handshake("https://evil.example.com") == 403
    assert handshake("http://cli.example.com") == 403, "the list replaces --allow-websocket-origin's"
    assert handshake(app.url) == 101, "a page of the server's own origin is always accepted (Tornado)"
    assert re.search(r"Refusing websocket connection from Origin 'https://evil\.example\.com'", app.output())


def fresh_token(secret_key: str | None = None) -> str:
    """A token for a session that does not exist yet: the websocket creates it, no page is asked for first.  Signed
    with ``secret_key`` when one is given (as every process sharing that ``BOKEH_SECRET_KEY`` signs its pages' tokens),
    else unsigned: one anybody can make."""
    from bokeh.util.token import generate_jwt_token, generate_session_id

    signed = secret_key is not None
    session_id = generate_session_id(secret_key=secret_key, signed=signed)
    return generate_jwt_token(session_id, secret_key=secret_key, signed=signed)


@pytest.mark.parametrize("plugin", [True, False], ids=["plugin", "plain"])
def test_only_the_plugin_sets_the_origins_before_any_session(serve, plugin):
    """What ``--num-procs`` needs: a websocket can reach a process that has not served a page yet, with the token of a
    page another process served (signed with the key they share)."""
    key = "test-bokeh-secret-key-" + "k" * 32
    app = serve(
        env={"RTDASH_ALLOWED_ORIGINS": "intranet.example.com", "BOKEH_SIGN_SESSIONS": "true", "BOKEH_SECRET_KEY": key},
        serve_args=["--plugins", "rtdash.server"] if plugin else [],
    )
    response = ws_upgrade(app.url, fresh_token(key), origin="http://intranet.example.com")
    response.close()
    assert response.status_code == (101 if plugin else 403)
    if plugin:
        exchange = bokeh_exchange(
            app.url + APP, fresh_token(key), ("PULL-DOC-REQ", "{}"), origin="http://intranet.example.com"
        )
        assert "Live" in (exchange.reply("PULL-DOC-REPLY") or ""), "the session opened"
