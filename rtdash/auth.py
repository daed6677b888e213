"""Hardening of Panel's ``--basic-auth``: failed logins are rate limited, and ``/logout`` revokes the login.

Panel's :class:`~panel.auth.BasicLoginHandler` answers every attempt and its :class:`~panel.auth.LogoutHandler`
only asks the browser to drop the signed ``user`` cookie: a copy of it stays valid for ``--oauth-expiry-days``.
:func:`routes` serves ``/login`` and ``/logout`` with the subclasses below; Bokeh puts a plugin's routes before the
auth provider's, so they answer in its place.

* :class:`LoginHandler` counts failures per client address and per user name (:class:`LoginLimiter`); past
  ``FAILURES_ALLOWED`` in ``WINDOW`` seconds it answers 429 with ``Retry-After`` without checking the password.
* Every login also gets a signed ``rtdash_login`` cookie holding a random nonce and the user; :class:`LogoutHandler`
  adds that nonce to :data:`revoked`, and :func:`protect` wraps the provider's ``get_user`` so that a ``user`` cookie
  counts only together with an unrevoked nonce for the same user (page, websocket, ``/metrics`` alike).

The revocations live in the process: with ``--num-procs`` a logout revokes the login in the process that served
it only.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import panel as pn
from panel.auth import BasicLoginHandler
from panel.auth import LogoutHandler as PanelLogoutHandler

FAILURES_ALLOWED = 5  # failed logins per client address and per user name in WINDOW, answered normally
WINDOW = 60.0  # seconds
MAX_ENTRIES = 10_000  # addresses and user names followed at once; the least recently seen is dropped first
MAX_REVOKED = 100_000  # revoked logins remembered; the oldest is dropped first (its cookie has likely expired)
LOGIN_COOKIE = "rtdash_login"


class LoginLimiter:
    """Failed logins per key (``ip:...`` and ``user:...``) in a sliding window, in a table of bounded size."""

    def __init__(
        self,
        allowed: int = FAILURES_ALLOWED,
        window: float = WINDOW,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed, self.window, self.max_entries, self.clock = allowed, window, max_entries, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str, user: str) -> int:
        """Seconds until an attempt of ``user`` from ``client`` is answered again; 0 when it is now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in (f"ip:{client}", f"user:{user}"):
                times = self._failures.get(key)
                if times is not None and len(times) >= self.allowed:
                    wait = max(wait, times[0] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def record(self, client: str, user: str, ok: bool) -> None:
        """Count a failure of ``user`` from ``client``, or forget both after a success."""
        now = self.clock()
        with self._lock:
            for key in (f"ip:{client}", f"user:{user}"):
                if ok:
                    self._failures.pop(key, None)
                    continue
                times = self._failures.pop(key, None) or deque(maxlen=self.allowed)
                times.append(now)
                self._failures[key] = times  # now the most recently seen
            # Drop entries whose last failure left the window, then the least recently seen beyond the cap, so
            # that rotating user names or addresses cannot grow the table.
            while self._failures:
                key, times = next(iter(self._failures.items()))
                if times[-1] + self.window > now and len(self._failures) <= self.max_entries:
                    break
                del self._failures[key]


limiter = LoginLimiter()
served: list[bool] = []  # non-empty once routes() gave this process's server the handlers below
revoked: OrderedDict[str, None] = OrderedDict()  # nonces of logged-out logins, oldest first


def _login_valid(handler, user: str) -> bool:
    value = handler.get_secure_cookie(LOGIN_COOKIE, max_age_days=pn.config.oauth_expiry)
    nonce, _, owner = (value or b"").decode("utf-8", "replace").partition(":")
    return bool(nonce) and owner == user and nonce not in revoked


class _Revocable:
    """The server's auth provider, with ``get_user`` refusing a ``user`` cookie whose login was revoked (or that
    comes without its login nonce).  Everything else is the provider's."""

    def __init__(self, provider) -> None:
        self._provider = provider

    def __getattr__(self, name: str):
        return getattr(self._provider, name)

    @property
    def get_user(self):
        inner = self._provider.get_user

        def get_user(handler):
            user = handler.get_secure_cookie("user", max_age_days=pn.config.oauth_expiry)
            if user and not _login_valid(handler, user.decode("utf-8", "replace")):
                return None
            return inner(handler)

        return get_user


def protect(app) -> None:
    """Make ``app`` (a Bokeh Tornado application with basic auth) check logins against :data:`revoked`.

    Panel offers no hook in ``BasicAuthProvider.get_user``, the one place every route asks for the user, and the
    provider is built by ``panel serve`` before any plugin loads; wrapping the application's provider is the
    smallest change that covers the page, the websocket and ``/metrics`` alike.  Only when :func:`routes` serves
    the login (Panel's own login issues no nonce).  Idempotent."""
    if not served:
        return
    provider = getattr(app, "auth_provider", None)
    if provider is not None and provider.get_user is not None and not isinstance(provider, _Revocable):
        app.auth_provider = _Revocable(provider)


class LoginHandler(BasicLoginHandler):
    """Panel's basic login, refusing with 429 a client or user past its failures, and issuing a login nonce."""

    def prepare(self) -> None:
        protect(self.application)

    def post(self) -> None:
        wait = limiter.retry_after(self.request.remote_ip, self.get_argument("username", ""))
        if wait:
            self.set_status(429)
            self.set_header("Retry-After", str(wait))
            self.write(f"Too many failed logins: try again in {wait} s.\n")
            return
        super().post()

    def _validate(self, username: str, password: str) -> bool:
        ok = bool(super()._validate(username, password))
        limiter.record(self.request.remote_ip, username, ok)
        return ok

    def set_current_user(self, user: str) -> None:
        super().set_current_user(user)
        if user:
            self.set_secure_cookie(
                LOGIN_COOKIE,
                f"{secrets.token_urlsafe(16)}:{user}",
                expires_days=pn.config.oauth_expiry,
                httponly=True,
                path=pn.config.cookie_path,
            )


class LogoutHandler(PanelLogoutHandler):
    """Panel's logout, which also revokes the login's nonce, so that a kept copy of the cookies no longer works."""

    def prepare(self) -> None:
        protect(self.application)

    def get(self) -> None:
        value = self.get_secure_cookie(LOGIN_COOKIE, max_age_days=pn.config.oauth_expiry)
        nonce = (value or b"").decode("utf-8", "replace").partition(":")[0]
        if nonce:
            revoked[nonce] = None
            while len(revoked) > MAX_REVOKED:
                revoked.popitem(last=False)
        self.clear_cookie(LOGIN_COOKIE, path=pn.config.cookie_path)
        super().get()


def login_required(app) -> bool:
    """Whether ``app`` (a Bokeh Tornado application) serves its pages behind a login (basic auth or OAuth)."""
    provider = getattr(app, "auth_provider", None)
    return provider is not None and bool(provider.get_user or provider.get_user_async)


async def logged_in_user(handler) -> str | None:
    """The user logged in on ``handler``'s request, as the pages see them (logouts included); ``None`` for nobody
    or Panel's guest."""
    provider = handler.application.auth_provider
    if provider.get_user is not None:
        user = provider.get_user(handler)
    else:
        user = await provider.get_user_async(handler)
    if isinstance(user, bytes):
        user = user.decode("utf-8", "replace")
    return str(user) if user and user != "guest" else None


def routes(login: str = "/login", logout: str = "/logout") -> list[tuple[str, type, dict]]:
    """The routes that replace Panel's login and logout pages (``panel serve``'s default endpoints)."""
    served.append(True)
    return [(login, LoginHandler, {}), (logout, LogoutHandler, {})]
