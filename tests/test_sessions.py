"""Sessions (issue 13, item 6): only a token the server issued for a page opens a session, login or not; sessions are
capped per client address and per process, with a refusal the user can read; log lines and error replies are
bounded and hold no traceback nor server path.

A session is opened as a browser opens it (the page, then its websocket) by :func:`tests.helpers.bokeh_exchange`;
a forged token is one a client makes itself, as ``bokeh.util.token`` would."""

from __future__ import annotations

import gc
import json
import re
import sys
import weakref

import panel as pn
import pytest
import requests

from rtdash import server as server_module
from rtdash.app import create_app
from tests.helpers import SCRIPT, PanelServer, bokeh_exchange, free_port, wait_until
from tests.test_auth import APP, page_token
from tests.test_embedding import fresh_token

pytestmark = [pytest.mark.slow]

SECRET_KEY = "test-bokeh-secret-key-" + "k" * 32
HOLD = ["--unused-session-lifetime", "120000"]  # a page's session stays without its websocket while a test counts


def health(app) -> dict:
    return requests.get(app.url + "/health", timeout=30).json()


def metric(app, name: str, **labels: str) -> float:
    """A value of ``/metrics``; 0 when the series is absent."""
    text = requests.get(app.url + "/metrics", timeout=30).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{name}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if wanted else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def open_page(app, **headers: str) -> str:
    """GET the page (the server creates its session) and return its token."""
    response = requests.get(app.url + APP, headers=headers, timeout=60)
    assert response.status_code == 200, response.status_code
    return page_token(response.text)


def document(app, token: str) -> str | None:
    """The document the session of ``token`` holds (PULL-DOC-REPLY's content), or None when refused."""
    return bokeh_exchange(app.url + APP, token, ("PULL-DOC-REQ", "{}")).reply("PULL-DOC-REPLY")


def refusals(app) -> list[str]:
    return [line for line in app.output().splitlines() if "session refused" in line]


# -- only issued tokens open a session -------------------------------------------------------------------------------


@pytest.fixture
def plain_app(module_apps):
    """The module's ``panel serve`` on the default settings, shared by the tests that change none."""
    return module_apps({})


def test_a_forged_token_opens_no_session_on_plain_panel_serve(plain_app):
    app = plain_app
    # No session left by another test (plain ``panel serve`` answers /health once a first session set it up).
    wait_until(
        lambda: (r := requests.get(app.url + "/health", timeout=30)).status_code == 404 or r.json()["sessions"] == 0, 60
    )
    before, counted = len(refusals(app)), metric(app, "rtdash_sessions_refused_total", reason="token")
    exchange = bokeh_exchange(app.url + APP, fresh_token(), ("PULL-DOC-REQ", "{}"))
    assert exchange.reply("PULL-DOC-REPLY") is None, "the forged token got the dashboard"
    assert exchange.close_code == 1008 and "refused" in (exchange.close_reason or ""), exchange.close_code
    lines = wait_until(lambda: refusals(app)[before:], 30, message="a refusal in the log")
    assert len(lines) == 1 and "BOKEH_SIGN_SESSIONS=true" in lines[0] and "BOKEH_SECRET_KEY" in lines[0], lines
    assert health(app)["sessions"] == 0
    assert metric(app, "rtdash_sessions_refused_total", reason="token") == counted + 1

    page = document(app, open_page(app))  # a page's own token still opens the dashboard
    assert page is not None and "Live" in page
    assert health(app)["sessions"] == 1
    assert "Traceback" not in app.output()


def test_a_late_websocket_of_a_served_page_still_opens_its_session(plain_app):
    """The page's session was discarded before its websocket came (Bokeh's unused-session lifetime, 1 s here): the
    websocket rebuilds it, because this process issued that token for a page."""
    app = plain_app
    refused = len(refusals(app))
    token = open_page(app)
    wait_until(lambda: health(app)["sessions"] == 0, 60, message="the page's unused session to be discarded")
    page = document(app, token)
    assert page is not None and "Live" in page
    assert len(refusals(app)) == refused


def test_signed_sessions_on_panel_serve(serve):
    app = serve(env={"BOKEH_SIGN_SESSIONS": "true", "BOKEH_SECRET_KEY": SECRET_KEY})
    page = document(app, fresh_token(SECRET_KEY))  # signed with the key: as another process of the same deployment
    assert page is not None and "Live" in page
    assert document(app, fresh_token()) is None
    assert document(app, fresh_token("another-key-" + "z" * 32)) is None
    assert health(app)["sessions"] == 1


def test_python_script_signs_its_sessions(serve):
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--port", str(port), "--address", "127.0.0.1"]
    app = serve(command=command, port=port)
    assert document(app, fresh_token()) is None
    assert document(app, fresh_token(SECRET_KEY)) is None, "a key of its own, generated at start"
    page = document(app, open_page(app))
    assert page is not None and "Live" in page
    assert health(app)["sessions"] == 1


# -- caps ------------------------------------------------------------------------------------------------------------


def test_sessions_per_client_address_are_capped(serve):
    app = serve(env={"RTDASH_MAX_SESSIONS_PER_CLIENT": "2"}, serve_args=[*HOLD, "--use-xheaders"])
    alice, bob = {"X-Real-IP": "10.0.0.1"}, {"X-Real-IP": "10.0.0.2"}
    open_page(app, **alice)
    open_page(app, **alice)
    assert health(app)["sessions"] == 2
    refused = document(app, open_page(app, **alice))
    assert refused is not None and "Too many open sessions from your address (2)" in refused
    assert "Live" not in refused
    assert health(app)["sessions"] == 2
    open_page(app, **bob)  # another address still gets in
    assert health(app)["sessions"] == 3
    open_page(app, **alice)
    assert metric(app, "rtdash_sessions_refused_total", reason="client_limit") == 2
    lines = refusals(app)
    assert 1 <= len(lines) <= 2 and "10.0.0.1" in lines[0] and "RTDASH_MAX_SESSIONS_PER_CLIENT=2" in lines[0], lines


def test_sessions_per_process_are_capped(serve):
    app = serve(env={"RTDASH_MAX_SESSIONS": "2"}, serve_args=HOLD)
    open_page(app)
    open_page(app)
    refused = document(app, open_page(app))
    assert refused is not None and "as many sessions as it can (2)" in refused and "Live" not in refused
    assert health(app)["sessions"] == 2
    assert metric(app, "rtdash_sessions_refused_total", reason="total_limit") == 1
    assert "RTDASH_MAX_SESSIONS=2" in refusals(app)[0]


# -- bounded log lines and error replies -----------------------------------------------------------------------------

HUGE = 15_000_000


def test_a_huge_malformed_message_gives_a_bounded_log_line_and_an_error_reply_without_traceback(plain_app):
    app = plain_app
    token = open_page(app)
    patch = {"events": [{"kind": "ModelChanged", "model": {"id": "p-nowhere"}, "attr": "name", "new": "x" * HUGE}]}
    exchange = bokeh_exchange(app.url + APP, token, ("PATCH-DOC", json.dumps(patch)))
    error = exchange.reply("ERROR")
    assert error is not None, [header for header, _ in exchange.messages]
    reply = json.loads(error)
    assert not reply.get("traceback"), reply
    assert "PATCH-DOC" in reply["text"] and len(reply["text"]) < 300, reply["text"]
    for leak in ("Traceback", 'File "', "site-packages", "/root", "/usr/"):
        assert leak not in error, leak

    invalid = bokeh_exchange(app.url + APP, token, ("PATCH-DOC", "{" + "x" * HUGE))  # not even JSON
    assert invalid.reply("ERROR") is None and invalid.close_code is not None
    output = wait_until(lambda: "more characters" in (o := app.output()) and o, 30, message="a bounded line")
    longest = max(len(line) for line in output.splitlines())
    assert longest < 20_000, longest  # a message bounded at 2,000 characters, a traceback at 10,000
    assert len(output) < 200_000, len(output)


def test_an_open_session_is_out_of_the_collectors_scans_and_back_in_them_once_it_ends(make_settings, monkeypatch):
    """rtdash.server's ``_Collector``: a built session's objects go to the collector's permanent generation, which
    its collections skip (``gc.get_objects`` does not list them); when the session ends they come back, so that
    what the ended session leaves can be reclaimed, and they are frozen again only after a full collection."""
    settings = make_settings(RTDASH_PRICE_INTERVAL="1h", RTDASH_WEATHER_INTERVAL="1h")
    documents = []

    def app():
        view = create_app(settings)
        documents.append(weakref.ref(pn.state.curdoc))
        return view

    lifetime = (server_module.FREEZE_AFTER + 5) * 1000  # the page's session (no websocket) ends after its freeze
    server = PanelServer(app, unused_session_lifetime_milliseconds=lifetime, check_unused_sessions_milliseconds=250)
    try:
        server.new_session()
        (document,) = documents

        def listed() -> bool:
            return any(o is document() for o in gc.get_objects())

        wait_until(lambda: not listed(), timeout=60, interval=1.0, message="the open session to be frozen")
        assert document().session_context is not None  # still open
        monkeypatch.setattr(server_module, "FREEZE_AFTER", 120.0)  # the next freeze waits while the test looks
        full = gc.get_stats()[2]["collections"]
        wait_until(listed, timeout=60, interval=1.0, message="the ended session's objects back in the scans")
        assert document().session_context is None  # it ended
        server.on_loop(server_module.collector._freeze)  # the freeze due FREEZE_AFTER after the end, now
        assert not listed()
        assert gc.get_stats()[2]["collections"] > full  # after a full collection
    finally:
        server.stop()
        gc.unfreeze()
