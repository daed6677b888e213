"""Basic auth hardening: failed logins are rate limited per client and per user, and ``/logout`` revokes the cookie.

The served tests run the real ``panel serve --basic-auth ... --plugins rtdash.server`` (the fixture of
``tests/test_auth.py``); the limiter's table bound and per-user keys are checked on the class itself, with a clock
the test advances.
"""

from __future__ import annotations

import pytest
import requests

from rtdash.auth import FAILURES_ALLOWED, LoginLimiter
from tests import test_auth
from tests.test_auth import APP, PASSWORD, USER, login, page_token, ws_upgrade

basic_app = test_auth.basic_app  # the served app with --basic-auth, as tests/test_auth.py starts it

pytestmark = [pytest.mark.slow]


def attempt(app, password: str, user: str = USER) -> requests.Response:
    return requests.post(
        app.url + "/login", data={"username": user, "password": password}, allow_redirects=False, timeout=30
    )


def test_failed_logins_are_refused_with_429_after_a_few(basic_app):
    for _ in range(FAILURES_ALLOWED - 1):
        assert attempt(basic_app, "wrong").status_code in (302, 303)
    # A success resets the count: as many failures again are answered normally.
    assert attempt(basic_app, PASSWORD).status_code in (302, 303)
    answers = [attempt(basic_app, "wrong") for _ in range(FAILURES_ALLOWED)]
    assert all(a.status_code in (302, 303) and "error=" in a.headers["Location"] for a in answers)

    refused = attempt(basic_app, "wrong")
    assert refused.status_code == 429, refused.status_code
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The password is not checked while refused: the right one is refused too, and sets no cookie.
    right = attempt(basic_app, PASSWORD)
    assert right.status_code == 429 and "user" not in right.cookies
    # Another user name from the same client is refused too (the client's count).
    assert attempt(basic_app, "x", user="mallory").status_code == 429


def test_logout_revokes_the_login_cookie(basic_app):
    session = login(basic_app)
    page = session.get(basic_app.url + APP, allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.status_code
    token = page_token(page.text)
    before = requests.utils.dict_from_cookiejar(session.cookies)

    assert session.get(basic_app.url + "/logout", timeout=10).status_code == 200
    replay = requests.get(basic_app.url + APP, cookies=before, allow_redirects=False, timeout=10)
    assert replay.status_code in (302, 303) and "/login" in replay.headers["Location"], replay.status_code
    assert ws_upgrade(basic_app.url, token, cookies=before).status_code == 403
    assert requests.get(basic_app.url + "/metrics", cookies=before, timeout=10).status_code == 401
    # Only the user cookie, without the login's nonce, is not enough either.
    alone = {"user": before["user"]}
    assert requests.get(basic_app.url + APP, cookies=alone, allow_redirects=False, timeout=10).status_code in (302, 303)

    again = login(basic_app)  # logging in again works
    assert again.get(basic_app.url + APP, allow_redirects=False, timeout=30).status_code == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_per_user_and_client_and_forgets_after_the_window():
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for n in range(FAILURES_ALLOWED):
        assert limiter.retry_after("10.0.0.1", "alice") == 0
        limiter.record(f"10.0.0.{n}", "alice", ok=False)  # one user from many clients
    assert limiter.retry_after("10.0.0.99", "alice") > 0
    assert limiter.retry_after("10.0.0.99", "bob") == 0
    clock.now += limiter.window + 1
    assert limiter.retry_after("10.0.0.99", "alice") == 0


def test_limiter_table_is_bounded_under_rotating_user_names():
    clock = Clock()
    limiter = LoginLimiter(clock=clock, max_entries=100)
    for n in range(5000):
        limiter.record(f"10.1.{n // 250}.{n % 250}", f"user{n}", ok=False)
        clock.now += 0.001
    assert len(limiter) <= 100
