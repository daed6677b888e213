"""Fixtures for every test: no internet, a fake provider API, served apps and a real headless Chromium."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from rtdash.config import Settings
from tests.helpers import ServedApp, close_quietly, fake_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock: socket.socket, address) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise AssertionError(f"a test tried to reach {address!r}: tests must stay on 127.0.0.1")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def no_internet():
    """Any socket of this test process to a non-loopback address fails the test."""
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(autouse=True)
def _reset_runtimes():
    """Every test starts without shared pollers and stops the ones it made."""
    from rtdash.stream import stop_all

    stop_all()
    yield
    stop_all()
    logger = logging.getLogger("rtdash")  # undo setup_logging (create_app calls it), so that caplog sees records
    logger.handlers.clear()
    logger.propagate = True


@pytest.fixture
def fake_api():
    from tests.fakeapi import FakeAPI

    with FakeAPI() as api:
        yield api


@pytest.fixture(scope="module")
def module_api():
    """A fake API for a module's servers that are module-scoped too."""
    from tests.fakeapi import FakeAPI

    with FakeAPI() as api:
        yield api


@pytest.fixture(scope="module")
def module_apps(module_api, tmp_path_factory):
    """``get(env)``: one ``panel serve realtime_dashboard.py`` per set of settings, against ``module_api``, shared by
    the module's tests that need no fault at its start (a ``panel serve`` costs about 5 s of CPU before its first
    page); they are stopped at the module's end."""
    apps: dict[tuple, ServedApp] = {}

    def get(env: dict[str, str]) -> ServedApp:
        key = tuple(sorted(env.items()))
        if key not in apps:
            apps[key] = ServedApp(env=fake_env(module_api.url, **env), cwd=tmp_path_factory.mktemp("served"))
            apps[key].wait_ready()
        return apps[key]

    yield get
    for app in apps.values():
        app.stop()


@pytest.fixture
def make_settings(fake_api):
    """``make_settings(RTDASH_X="...", ...)``: Settings pointing at the fake API, from environment-style strings."""

    def make(**env: str) -> Settings:
        return Settings.load(environ=fake_env(fake_api.url, **env), dotenv=None)

    return make


@pytest.fixture
def serve(fake_api, tmp_path):
    """``serve(env={...}, args=[...])`` starts ``panel serve realtime_dashboard.py`` against the fake API."""
    apps: list[ServedApp] = []

    def start(env: dict[str, str] | None = None, **kwargs) -> ServedApp:
        app = ServedApp(env=fake_env(fake_api.url, **(env or {})), cwd=kwargs.pop("cwd", tmp_path), **kwargs)
        apps.append(app)
        return app.wait_ready()

    yield start
    for app in apps:
        app.stop()


# Playwright's ``expect`` retries for 5 s by default: too short for a page on a busy 2-core machine (a History tab
# that reads the store when first shown, beside two busy loops, drew its range buttons 5-6 s after the click).  The
# assertion is the same; only a failure takes longer to report.
EXPECT_TIMEOUT_MS = 30_000


@contextlib.contextmanager
def _chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _SharedChromium:
    """One headless Chromium for the browser tests that run one after the other in this process: starting
    Playwright's driver and Chromium, and stopping them, took about 3 s of a busy 2-core machine per test.

    Each test still has contexts of its own (``page``: a fresh context, cookies and cache included).  Playwright's
    sync API keeps an asyncio loop marked as running in the main thread while it is open, which would break a test
    that runs a loop of its own: ``_chromium_only_for_browser_tests`` closes the browser before any test that does
    not ask for it, unless a module-scoped fixture holds it (``module_browser``)."""

    def __init__(self) -> None:
        self._open: contextlib.AbstractContextManager | None = None
        self.browser = None
        self.holders = 0

    def get(self):
        if self.browser is not None and not self.browser.is_connected():  # crashed in an earlier test
            self.close()
        if self.browser is None:
            self._open = _chromium()
            self.browser = self._open.__enter__()
        return self.browser

    def close(self) -> None:
        opened, self._open, self.browser = self._open, None, None
        if opened is not None:
            with contextlib.suppress(Exception):  # already gone (a crash, Ctrl+C reaching the driver)
                opened.__exit__(None, None, None)


_shared_chromium = _SharedChromium()
_BROWSER_FIXTURES = {"browser", "module_browser"}


@pytest.fixture(autouse=True, scope="session")
def _chromium_closed_at_the_end():
    yield
    _shared_chromium.close()


@pytest.fixture(autouse=True)
def _chromium_only_for_browser_tests(request):
    """Autouse fixtures are set up before the others of their scope: the shared Chromium is closed before a test
    without a browser starts (see ``_SharedChromium``)."""
    if not _BROWSER_FIXTURES & set(request.fixturenames) and not _shared_chromium.holders:
        _shared_chromium.close()
    yield


@pytest.fixture
def browser():
    """A real headless Debian Chromium, shared with the browser tests before and after this one in this process
    (``_SharedChromium``); the contexts the test opened are closed after it."""
    browser = _shared_chromium.get()
    before = list(browser.contexts)  # a module_browser's, kept
    yield browser
    for context in browser.contexts:
        if context not in before:
            close_quietly(context)


@pytest.fixture(scope="module")
def module_browser():
    """The shared Chromium, held for a module whose served apps are module-scoped too (the fault suite)."""
    browser = _shared_chromium.get()
    _shared_chromium.holders += 1
    yield browser
    _shared_chromium.holders -= 1
    for context in browser.contexts:
        close_quietly(context)


@pytest.fixture
def page(browser):
    """A fresh page; ``page.console_errors`` collects console errors and uncaught page errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    yield page
    context.close()


# The modules that take longest (README, "Development"), run first: with ``-n 2 --dist loadfile
# --no-loadscope-reorder`` (``make test``) each xdist worker starts on a long one, the other modules with a browser,
# server or slow test come next and the short ones fill in at the end, instead of one long module running alone last.
# (Without ``--no-loadscope-reorder``, xdist runs the modules with the most tests first: the quick unit modules, with
# their poll-interval waits side by side, for the run's first two minutes, and the Jupyter tests five minutes in.)
FIRST = ("test_jupyter.py", "ui/test_live.py", "test_faults.py", "ui/test_refresh.py", "test_load_short.py")
HEAVY = ("ui", "slow", "postgres")  # markers of the tests that take seconds rather than milliseconds


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the PostgreSQL server (directly, through ``pg_url`` or a ``postgresql`` store) is marked
    ``postgres``, so that ``-m "not postgres"`` (``make test-fast``) leaves them all out; then the modules are put in
    the order to run them: ``FIRST``, then the modules with a test marked ``HEAVY``, then the others."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "postgres_server" in getattr(item, "fixturenames", ()) or "postgresql" in params.values():
            item.add_marker(pytest.mark.postgres)
    module = {item: item.nodeid.split("::")[0].removeprefix("tests/") for item in items}
    heavy = {module[item] for item in items if any(item.get_closest_marker(name) for name in HEAVY)}
    rank = {name: k for k, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(module[item], len(FIRST) + (module[item] not in heavy)))


def pytest_configure(config) -> None:
    """A run ended with SIGTERM (a CI timeout, ``kill``) stops like one ended with Ctrl+C: the fixtures' teardowns
    still stop the servers, kernels and browsers they started, instead of leaving them running.

    Under xdist (``make test``) the controller passes the signal on to its workers, so that their teardowns start at
    once, and gives them ``WORKER_EXIT`` seconds before it kills them (xdist's own 10 s is shorter than a JupyterLab's
    teardown).  A worker takes the first signal only: execnet sends it a SIGINT of its own 5 s after the controller
    asks it to exit, which would otherwise cut its teardown short.

    Playwright's ``expect`` waits ``EXPECT_TIMEOUT_MS`` for its condition, in every test."""
    with contextlib.suppress(ImportError):  # the browser tests' package (not needed by `make test-fast`)
        from playwright.sync_api import expect

        expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    worker = hasattr(config, "workerinput")
    controller = not worker and bool(getattr(config.option, "numprocesses", None))
    if controller:
        from xdist.workermanage import NodeManager

        NodeManager.EXIT_TIMEOUT = WORKER_EXIT

    def interrupt(signum, frame):
        if controller:
            for pid in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if worker:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    if worker:
        signal.signal(signal.SIGINT, interrupt)


WORKER_EXIT = 60  # seconds


def _children() -> list[int]:
    """The processes this one started (the xdist controller's are its workers), from ``/proc``."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(entry.name))
    return found
