"""Login with Panel's own mechanisms: ``--basic-auth`` and a generic OAuth provider configured from the environment.

Without a login the page, the websocket (and with it every download, which travels over it), Bokeh's per-app
routes and ``/metrics`` are refused; ``/health`` stays open for load balancers by design.  A logged-in user gets a
working session; logging out ends it.  The OAuth provider is a tiny local one served by the test.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import ServedApp, fake_env, free_port, wait_until

pytestmark = [pytest.mark.slow]

USER, PASSWORD = "alice", "wonderland-7Q"
COOKIE_SECRET = "test-cookie-secret-" + "x" * 32
METRICS_TOKEN = "mt-secret-0a1b2c3d4e"
APP = "/realtime_dashboard"


def ws_upgrade(url: str, token: str | None = None, cookies=None, origin: str | None = None) -> requests.Response:
    """The websocket handshake of a Bokeh client, sent as plain HTTP: 101 when accepted."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode(),
        "Origin": origin or f"http://{urlsplit(url).netloc}",
        "Sec-WebSocket-Protocol": "bokeh" + (f", {token}" if token else ""),
    }
    return requests.get(url + APP + "/ws", headers=headers, cookies=cookies, timeout=10, stream=True)


def page_token(html: str) -> str:
    match = re.search(r'"token":\s*"([^"]+)"', html) or re.search(r"token=([\w.-]+)", html)
    assert match, html[:2000]
    return match.group(1)


def tab(page, name: str):
    """A tab header of the dashboard (Bokeh draws them in its shadow DOM, without an ARIA role)."""
    return page.locator(".bk-tab").filter(has_text=re.compile(f"^{name}$"))


def assert_refused_without_login(app: ServedApp, token: str | None = None) -> None:
    page = requests.get(app.url + APP, allow_redirects=False, timeout=10)
    assert page.status_code in (302, 303) and "/login" in page.headers["Location"], page.status_code
    for path in (APP + "/autoload.js?bokeh-autoload-element=x", APP + "/metadata"):
        response = requests.get(app.url + path, allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303, 401, 403), (path, response.status_code)
    assert ws_upgrade(app.url).status_code == 403
    if token:  # a token lifted from a logged-in page is not enough without the login cookie
        assert ws_upgrade(app.url, token).status_code == 403
    metrics = requests.get(app.url + "/metrics", timeout=10)
    assert metrics.status_code == 401 and "rtdash_" not in metrics.text
    health = requests.get(app.url + "/health", timeout=10)
    assert health.status_code == 200 and "sources" in health.json()  # open by design, holds no data nor key


# -- basic auth ------------------------------------------------------------------------------------------------------


@pytest.fixture
def basic_app(serve, tmp_path):
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({USER: PASSWORD}))
    return serve(
        env={"RTDASH_METRICS_TOKEN": METRICS_TOKEN},
        serve_args=["--basic-auth", str(credentials), "--cookie-secret", COOKIE_SECRET, "--plugins", "rtdash.server"],
    )


def login(app: ServedApp, password: str = PASSWORD) -> requests.Session:
    session = requests.Session()
    session.get(app.url + "/login", timeout=10)
    session.post(app.url + "/login", data={"username": USER, "password": password}, timeout=30)
    return session


def test_basic_auth_refuses_everything_without_a_login(basic_app):
    assert_refused_without_login(basic_app)
    wrong = login(basic_app, password="not-it")
    assert "user" not in wrong.cookies
    assert wrong.get(basic_app.url + APP, allow_redirects=False, timeout=10).status_code in (302, 303)

    session = login(basic_app)
    page = session.get(basic_app.url + APP, allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.status_code
    token = page_token(page.text)
    accepted = ws_upgrade(basic_app.url, token, cookies=session.cookies)
    assert accepted.status_code == 101
    accepted.close()
    assert_refused_without_login(basic_app, token)

    assert session.get(basic_app.url + "/metrics", timeout=10).status_code == 200
    bearer = requests.get(basic_app.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert bearer.status_code == 200 and "rtdash_sessions" in bearer.text
    wrong_bearer = requests.get(basic_app.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong_bearer.status_code == 401


@pytest.mark.ui
def test_basic_auth_login_session_and_logout_in_the_browser(basic_app, page):
    page.goto(basic_app.url + APP)
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(tab(page, "Live")).to_be_visible(timeout=30_000)  # drawn from the websocket
    tab(page, "History").click()
    expect(tab(page, "History")).to_have_class(re.compile("bk-active"))
    assert "Traceback" not in page.content()

    page.goto(basic_app.url + "/logout")
    page.goto(basic_app.url + APP)
    expect(page).to_have_url(re.compile(r"/login"))
    assert requests.get(basic_app.url + APP, cookies={}, allow_redirects=False, timeout=10).status_code in (302, 303)


# -- generic OAuth against a local provider --------------------------------------------------------------------------


class OAuthProvider:
    """A minimal OAuth2 authorization-code provider: approves every request for one user, on 127.0.0.1."""

    def __init__(self, email: str = "alice@example.com"):
        self.email = email
        self.codes: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if url.path == "/authorize":
                    code = secrets.token_urlsafe(8)
                    provider.codes[code] = query["client_id"]
                    target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                elif url.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if token in provider.tokens:
                        self._json(200, {"email": provider.email, "name": "Alice"})
                    else:
                        self._json(401, {"error": "invalid_token"})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                provider.token_requests.append(form)
                if urlsplit(self.path).path != "/token" or form.get("code") not in provider.codes:
                    self._json(400, {"error": "invalid_grant"})
                    return
                if form.get("client_secret") != "rtdash-client-secret":
                    self._json(401, {"error": "invalid_client"})
                    return
                del provider.codes[form["code"]]
                token = secrets.token_urlsafe(16)
                provider.tokens.add(token)
                self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OAuthProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def oauth_app(fake_api, tmp_path):
    from cryptography.fernet import Fernet

    with OAuthProvider() as provider:
        port = free_port()
        env = fake_env(
            fake_api.url,
            PANEL_OAUTH_PROVIDER="generic",
            PANEL_OAUTH_KEY="rtdash",
            PANEL_OAUTH_SECRET="rtdash-client-secret",
            PANEL_OAUTH_AUTHORIZE_URL=provider.url + "/authorize",
            PANEL_OAUTH_TOKEN_URL=provider.url + "/token",
            PANEL_OAUTH_USER_URL=provider.url + "/userinfo",
            PANEL_OAUTH_REDIRECT_URI=f"http://127.0.0.1:{port}/login",
            PANEL_OAUTH_SCOPE="openid,email",
            PANEL_OAUTH_ENCRYPTION=Fernet.generate_key().decode(),
            PANEL_COOKIE_SECRET=COOKIE_SECRET,
        )
        app = ServedApp(env=env, cwd=tmp_path, serve_args=["--plugins", "rtdash.server"], port=port)
        try:
            app.wait_ready()
            app.provider = provider
            yield app
        finally:
            app.stop()


def test_generic_oauth_from_the_environment(oauth_app):
    assert_refused_without_login(oauth_app)
    session = requests.Session()
    page = session.get(oauth_app.url + APP, timeout=30)  # -> /login -> provider -> /login?code -> the page
    assert page.status_code == 200 and page.url.rstrip("/").endswith(APP), (page.url, page.text[:500])
    assert oauth_app.provider.token_requests, "the server exchanged the code for a token"
    token = page_token(page.text)
    accepted = ws_upgrade(oauth_app.url, token, cookies=session.cookies)
    assert accepted.status_code == 101
    accepted.close()
    assert session.get(oauth_app.url + "/metrics", timeout=10).status_code == 200
    assert_refused_without_login(oauth_app, token)

    session.get(oauth_app.url + "/logout", timeout=10)
    assert session.get(oauth_app.url + APP, allow_redirects=False, timeout=10).status_code in (302, 303)


@pytest.mark.ui
def test_generic_oauth_in_the_browser(oauth_app, page):
    page.goto(oauth_app.url + APP)
    expect(tab(page, "Live")).to_be_visible(timeout=30_000)
    expect(page).to_have_url(re.compile(APP))
    page.goto(oauth_app.url + "/logout")
    page.goto(oauth_app.url + APP)
    # Logged out, the provider is asked again (and, approving everything, logs the user straight back in).
    wait_until(lambda: len(oauth_app.provider.token_requests) >= 2, 30)
