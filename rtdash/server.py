"""What a server needs beyond the page: ``/health``, ``/metrics``, the embedding policy and the websocket origins.

The same handlers are reached three ways:

* ``panel serve realtime_dashboard.py --plugins rtdash.server`` — Panel's server plugins: the module's ``ROUTES``
  are served from startup in every process (what a load balancer and ``--num-procs`` need);
* ``python realtime_dashboard.py`` — ``pn.serve(..., extra_patterns=routes())``;
* plain ``panel serve realtime_dashboard.py`` — ``create_app`` calls :func:`on_session` for every session, which
  adds the routes to the running Tornado application (``Application.add_handlers``) the first time a session
  starts in the process, so no flag is needed; ``/health`` then answers from the first page view on.

:func:`on_session` also sets the ``Content-Security-Policy: frame-ancestors`` header of the page
(``RTDASH_FRAME_ANCESTORS``), the websocket origins (``RTDASH_ALLOWED_ORIGINS``) and counts the session.
:func:`admit`, called before, refuses a session whose token no page was served with, and those over the caps
(``RTDASH_MAX_SESSIONS``, ``RTDASH_MAX_SESSIONS_PER_CLIENT``).  Importing this module also makes Bokeh's ERROR
replies to a client hold no traceback (:func:`_short_error`), and the changes sent to a page cost what they hold,
not what the page's document holds (:class:`_SyncedModels`).

With ``--plugins rtdash.server`` (and ``python realtime_dashboard.py``) the Live tab's charts are drawn before the
server listens (:func:`warm_up`), so the first page of a process does not wait for them; :func:`install` also
compresses the page and its JavaScript, CSS and JSON (gzip, :class:`_Compressed`) and turns Bokeh's checks of each
served document off (:func:`skip_document_validation`).

``/health`` is open (a load balancer cannot log in); it holds states, times, counts and the providers' error
messages with keys removed — never a key, a price or a password.  ``/metrics`` is open when the server has no
login; with ``--basic-auth`` or OAuth it needs a logged-in user or ``Authorization: Bearer $RTDASH_METRICS_TOKEN``.

Metrics are correct under ``--num-procs`` when ``PROMETHEUS_MULTIPROC_DIR`` names an empty directory shared by the
processes (prometheus_client's multiprocess mode): each process writes its values there and a scrape, whichever
process answers it, adds them up.  Without it every process reports only itself.
"""

from __future__ import annotations

import faulthandler
import gc
import hmac
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import panel as pn
import tornado.web
import tornado.websocket
from bokeh.core.serialization import Ref, Serializer
from bokeh.model import Model
from bokeh.server.connection import ServerConnection
from panel.io.resources import LOCAL_DIST
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from tornado.ioloop import IOLoop

from . import auth
from .config import Settings, SettingsError
from .export import ExportHandler
from .logs import setup_logging
from .sources import redact

log = logging.getLogger("rtdash.server")

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # read once, as prometheus_client does at import
SYNC_EVERY = 1.0  # seconds between copies of the counters into the metrics (each process, its own thread)
FREEZE_AFTER = 5.0  # seconds after a session was built (or one ended) before the collector is told to skip them
STORE_UNUSABLE = ("down", "closed")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")

# -- metrics ---------------------------------------------------------------------------------------------------------

FETCHES = Counter("rtdash_fetches", "Fetches attempted from a provider.", ["kind", "provider"])
FAILURES = Counter("rtdash_fetch_failures", "Fetches that failed (error, timeout, bad answer).", ["kind", "provider"])
LATENCY = Histogram(
    "rtdash_fetch_duration_seconds",
    "Time from the start of a fetch to its answer or failure.",
    ["kind", "provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ROWS_FETCHED = Counter("rtdash_rows_fetched", "Rows received from providers.", ["kind", "provider"])
ROWS_REJECTED = Counter(
    "rtdash_rows_rejected",
    "Rows refused: a value not finite or outside its metric's physical range, or in a unit not asked for.",
    ["kind", "provider", "reason"],
)
ROWS_FILLED = Counter(
    "rtdash_history_rows_filled",
    "Rows fetched from a provider's own history (the recent past at start, holes after an outage).",
    ["kind", "provider"],
)
UPDATES = Counter("rtdash_updates_pushed", "New rows handed to a session (or the store writer).", ["kind"])
SOURCE_UP = Gauge(
    "rtdash_source_up", "1 while the source's last fetch succeeded.", ["kind"], multiprocess_mode="livemax"
)
SUBSCRIBERS = Gauge("rtdash_subscribers", "Subscribers of a source's stream.", ["kind"], multiprocess_mode="livesum")
SESSIONS = Gauge("rtdash_sessions", "Dashboard sessions open.", multiprocess_mode="livesum")
SESSIONS_REFUSED = Counter(
    "rtdash_sessions_refused", "Sessions refused: a token no page was served with, or a cap reached.", ["reason"]
)
SESSION_BUILD = Histogram(
    "rtdash_session_build_seconds",
    "Time create_app took to build a session's dashboard (server time per new page, before its HTML is sent).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STORE_WRITTEN = Counter("rtdash_store_rows_written", "Rows inserted into the history store.")
STORE_DROPPED = Counter("rtdash_store_rows_dropped", "Rows lost because the store's buffer was full.")
STORE_BUFFERED = Gauge(
    "rtdash_store_rows_buffered", "Rows waiting in memory for the store.", multiprocess_mode="livesum"
)
STORE_UP = Gauge("rtdash_store_up", "1 while the history store accepts writes.", multiprocess_mode="livemin")
ALERT_FIRING = Gauge("rtdash_alert_firing", "1 while an alert rule fires.", ["rule"], multiprocess_mode="livemax")
ALERT_FIRED = Counter("rtdash_alert_fired", "Times an alert rule fired (a crossing counts once).", ["rule"])
ALERT_EVALUATIONS = Counter(
    "rtdash_alert_evaluations", "Alert rule evaluations: one per rule per fetch of its source, however many sessions."
)
ALERT_WEBHOOK_FAILURES = Counter("rtdash_alert_webhook_failures", "Failed webhook POSTs of a rule.", ["rule"])


class _Sampler:
    """Copies the pollers' and the writer's counters into the metrics, as deltas, so they add up across processes.

    Runs after every fetch (the latency is observed then), every ``SYNC_EVERY`` seconds on its own thread (for
    other processes' scrapes), and before a scrape of this process.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._seen: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
        self._runtimes: weakref.WeakSet = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, runtime) -> None:
        """Start following ``runtime`` (idempotent)."""
        with self._lock:
            if runtime in self._runtimes:
                return
            self._runtimes.add(runtime)
            for poller in runtime.pollers.values():
                self._seen[poller] = {"fetches": 0, "errors": 0, "rows": 0, "updates": 0, "filled": 0}
                poller.status.param.watch(lambda event, poller=poller: self._fetched(poller), ["fetches"])
            writer = getattr(runtime, "writer", None)
            if writer is not None:
                self._seen[writer] = {"written": 0, "dropped": 0}
            self._ensure_thread()
        self.sync()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="rtdash-metrics", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(SYNC_EVERY)
            try:
                self.sync()
            except Exception:  # pragma: no cover - metrics must never take the server down
                log.debug("metrics sync failed", exc_info=True)

    def _fetched(self, poller) -> None:
        """On the poller's worker thread, right after a fetch ended."""
        status = poller.status
        duration = getattr(status, "last_duration", None)
        if duration is None:  # the poller records when its fetch started, not how long it took
            duration = max(time.monotonic() - poller._inflight_since, 0.0)
        LATENCY.labels(poller.kind, status.provider).observe(duration)
        self.sync_poller(poller)

    def sync(self) -> None:
        with self._lock:  # a stopped runtime still referenced somewhere is not followed: its state is not the server's
            runtimes = [runtime for runtime in self._runtimes if not getattr(runtime, "stopped", False)]
        subscribers: dict[str, int] = {}
        up: dict[str, int] = {}
        for runtime in runtimes:
            for kind, poller in runtime.pollers.items():
                self.sync_poller(poller)
                subscribers[kind] = subscribers.get(kind, 0) + poller.subscriber_count
                up[kind] = max(up.get(kind, 0), int(poller.status.state == "ok"))
            self.sync_writer(getattr(runtime, "writer", None))
            self.sync_alerts(getattr(runtime, "alerts", None))
        for kind, count in subscribers.items():
            SUBSCRIBERS.labels(kind).set(count)
            SOURCE_UP.labels(kind).set(up[kind])
        SESSIONS.set(len(_sessions))

    def sync_poller(self, poller) -> None:
        status = poller.status
        with self._lock:
            seen = self._seen.get(poller)
            if seen is None:
                return
            now = {
                "fetches": status.fetches,
                "errors": status.errors,
                "rows": status.rows,
                "updates": poller.updates,
                "filled": status.filled,
            }
            delta = {name: now[name] - seen[name] for name in now}
            seen.update(now)
        labels = (poller.kind, status.provider)
        for name, metric in (("fetches", FETCHES), ("errors", FAILURES), ("rows", ROWS_FETCHED)):
            if delta[name] > 0:
                metric.labels(*labels).inc(delta[name])
        if delta["updates"] > 0:
            UPDATES.labels(poller.kind).inc(delta["updates"])
        if delta["filled"] > 0:
            ROWS_FILLED.labels(poller.kind, poller.source.history_provider.label).inc(delta["filled"])
        with self._lock:  # rows refused, by reason: only a live provider refuses rows, hence its label
            counts = dict(status.rejected)
            rejected = {reason: n - seen.get(f"rejected:{reason}", 0) for reason, n in counts.items()}
            seen.update({f"rejected:{reason}": n for reason, n in counts.items()})
        for reason, n in rejected.items():
            if n > 0:
                ROWS_REJECTED.labels(poller.kind, poller.source.label, reason).inc(n)

    def sync_alerts(self, alerts) -> None:
        """The alert rules' states and counts (rtdash.alerts) into their metrics."""
        if alerts is None or not alerts.rules:
            return
        with self._lock:
            seen = self._seen.setdefault(alerts, {"evaluations": 0})
            now = {"evaluations": alerts.evaluations}
            for rule in alerts.rules:
                now[f"fired:{rule.name}"] = alerts.states[rule.name].fired
                hook = alerts.webhooks.get(rule.name)
                now[f"webhook:{rule.name}"] = hook.status.failures if hook is not None else 0
            delta = {name: value - seen.get(name, 0) for name, value in now.items()}
            seen.update(now)
        if delta["evaluations"] > 0:
            ALERT_EVALUATIONS.inc(delta["evaluations"])
        for rule in alerts.rules:
            ALERT_FIRING.labels(rule.name).set(int(alerts.states[rule.name].firing))
            if delta[f"fired:{rule.name}"] > 0:
                ALERT_FIRED.labels(rule.name).inc(delta[f"fired:{rule.name}"])
            else:
                ALERT_FIRED.labels(rule.name)  # shown as 0 before the first firing
            if delta[f"webhook:{rule.name}"] > 0:
                ALERT_WEBHOOK_FAILURES.labels(rule.name).inc(delta[f"webhook:{rule.name}"])

    def sync_writer(self, writer) -> None:
        if writer is None:
            return
        status = writer.status
        with self._lock:
            seen = self._seen.setdefault(writer, {"written": 0, "dropped": 0})
            written, dropped = status.written - seen["written"], status.dropped - seen["dropped"]
            seen.update(written=status.written, dropped=status.dropped)
        if written > 0:
            STORE_WRITTEN.inc(written)
        if dropped > 0:
            STORE_DROPPED.inc(dropped)
        STORE_BUFFERED.set(status.buffered)
        STORE_UP.set(int(status.state not in STORE_UNUSABLE))


sampler = _Sampler()
_sessions: dict[int, str] = {}  # the sessions open in this process: id of the document -> the client's address


def generate_latest() -> bytes:
    """The metrics text of this server: every process's values added up in multiprocess mode, else this process's."""
    for runtime in runtimes():
        sampler.watch(runtime)
    sampler.sync()
    if not MULTIPROCESS_DIR:
        return _generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    _forget_dead_processes(MULTIPROCESS_DIR)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return _generate_latest(registry)


def _forget_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that are gone (a worker that crashed and was restarted)."""
    from prometheus_client import multiprocess

    pids = set()
    for name in os.listdir(path):
        match = re.match(r"gauge_live\w+?_(\d+)\.db$", name)
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, someone else's
            pass


# -- health ----------------------------------------------------------------------------------------------------------


def runtimes() -> list:
    """The runtimes (shared pollers) of this process, oldest first."""
    from .stream import runtime as runtime_module

    with runtime_module._lock:
        return list(runtime_module._runtimes.values())


def _clean(value: Any, secrets: list[str]) -> Any:
    """``value`` with keys and URL passwords removed from every string in it (also in dicts and lists)."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", redact(value, secrets))
    if isinstance(value, dict):
        return {key: _clean(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item, secrets) for item in value]
    return value


def store_health(runtime) -> dict[str, Any]:
    """The history store's state for ``runtime``: ``none`` when it keeps no history."""
    secrets = runtime.settings.secrets
    error = getattr(runtime, "store_error", None)
    if error:
        return {"state": "down", "last_error": _clean(str(error), secrets)}
    writer = getattr(runtime, "writer", None)
    if writer is not None:
        snap = writer.status.snapshot()
        keep = ("backend", "state", "buffered", "capacity", "written", "dropped", "last_write", "last_error")
        return {name: _clean(snap.get(name), secrets) for name in (*keep, "down_since") if name in snap}
    follower = getattr(runtime, "follower", None)
    if follower is not None:  # a viewer: it follows what the collector stores
        snap = follower.status.snapshot()
        keep = ("state", "rows", "last_rows", "last_error")
        return {"backend": "postgresql", "role": "viewer", **{name: _clean(snap[name], secrets) for name in keep}}
    store = getattr(runtime, "store", None)
    if store is not None:
        return {"backend": getattr(store, "backend", None), "state": "read-only"}
    return {"state": "none"}


def health() -> tuple[int, dict[str, Any]]:
    """``(http_status, body)`` of ``/health``: 200 while serving, 503 when a history store is unusable.

    ``status`` is ``degraded`` while a source fails or serves simulated rows (chosen, or the offline fallback), and
    ``detail`` says which and why: the badges and the banner say the same.
    """
    from .config import env_name

    body: dict[str, Any] = {"status": "ok", "pid": os.getpid(), "sessions": len(_sessions), "sources": {}}
    found = runtimes()
    if not found:
        body["status"] = "starting"
        body["detail"] = "no session yet: the sources start with the first one"
    unusable = False
    degraded: list[str] = []
    for index, runtime in enumerate(found):
        secrets = runtime.settings.secrets
        suffix = f"-{index + 1}" if index else ""
        for kind, poller in runtime.pollers.items():
            snap = poller.status.snapshot()
            source = {
                name: _clean(snap.get(name), secrets)
                for name in (
                    "provider",
                    "state",
                    "simulated",
                    "last_success",
                    "last_error",
                    "last_error_time",
                    "failures",
                    "next_retry",
                    "fetches",
                    "errors",
                    "rows",
                    "interval",
                )
            }
            source["filled"] = snap.get("filled", 0)
            source["history"] = _clean(snap.get("history") or {}, secrets)
            source["subscribers"] = poller.subscriber_count
            source["updates"] = poller.updates
            body["sources"][kind + suffix] = source
            if snap["state"] in ("stale", "error"):
                degraded.append(f"{kind}{suffix}: {snap['state']}: {source['last_error']}")
            elif snap["simulated"]:
                reason = snap["fallback_reason"]
                why = f"offline fallback: {reason}" if reason else f"{env_name(kind + '_source')}=simulated"
                degraded.append(f"{kind}{suffix}: simulated ({_clean(why, secrets)})")
        alerts = getattr(runtime, "alerts", None)
        if alerts is not None and alerts.rules:
            body["alerts" + suffix] = _clean(alerts.health(), secrets)
        store = store_health(runtime)
        body["store" + suffix] = store
        if store.get("state") in STORE_UNUSABLE:
            unusable = True
    body.setdefault("store", {"state": "none"})
    states = {source["state"] for source in body["sources"].values()}
    if degraded:
        body["detail"] = "; ".join(degraded)
    if unusable:
        body["status"] = "unavailable"
    elif degraded:
        body["status"] = "degraded"
    elif "starting" in states:
        body["status"] = "starting"
    return (503 if unusable else 200), body


# -- handlers --------------------------------------------------------------------------------------------------------


def _auth_configured(app: tornado.web.Application) -> bool:
    provider = getattr(app, "auth_provider", None)
    return provider is not None and bool(provider.get_user or provider.get_user_async)


class HealthHandler(tornado.web.RequestHandler):
    """``GET /health``: JSON, 200 while serving, 503 when the history store is unusable.  Open to all."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def get(self) -> None:
        status, body = health()
        self.set_status(status)
        self.write(json.dumps(body))

    def head(self) -> None:
        status, _ = health()
        self.set_status(status)


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: Prometheus text; behind the login when the server has one (or a bearer token)."""

    async def get(self) -> None:
        if _auth_configured(self.application) and not await self._allowed():
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="rtdash metrics"')
            self.write("log in, or send Authorization: Bearer $RTDASH_METRICS_TOKEN\n")
            return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.write(generate_latest())

    async def _allowed(self) -> bool:
        token = _metrics_token()
        header = self.request.headers.get("Authorization", "")
        if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            return True
        provider = self.application.auth_provider
        if provider.get_user is not None:
            user = provider.get_user(self)
        else:
            user = await provider.get_user_async(self)
        return bool(user) and user != "guest"


ROUTES: list[tuple[str, type, dict]] = [
    (r"/health", HealthHandler, {}),
    (r"/metrics", MetricsHandler, {}),
    (r"/export/([^/]*)", ExportHandler, {}),  # History's downloads (rtdash.export)
]


def routes() -> list[tuple[str, type, dict]]:
    """A fresh copy of ``ROUTES`` for ``pn.serve(extra_patterns=...)`` (Bokeh appends to the list it is given)."""
    return [(path, handler, dict(kwargs)) for path, handler, kwargs in ROUTES]


# -- embedding and origins -------------------------------------------------------------------------------------------


def frame_ancestors_header(settings: Settings) -> str:
    """The ``Content-Security-Policy`` value that lets only ``RTDASH_FRAME_ANCESTORS`` frame the dashboard."""
    return "frame-ancestors " + " ".join(settings.frame_ancestors)


class _FrameAncestors(tornado.web.OutputTransform):
    """Adds the frame-ancestors policy to every HTML response of the application (login and logout pages too)."""

    policy: str | None = None

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        if self.policy and "Content-Security-Policy" not in headers:
            if headers.get("Content-Type", "").startswith("text/html"):
                headers["Content-Security-Policy"] = self.policy
        return status_code, headers, chunk


class _Compressed(tornado.web.GZipContentEncoding):
    """gzip for the page and its JavaScript, CSS and JSON, when the browser accepts it: Tornado's
    ``compress_response``, which ``panel serve`` does not offer.  The Live tab's 3.5 MB of JavaScript and CSS travel
    as 0.9 MB, once per browser (then cached), for about 80 ms of a core.  Not for exports: a CSV of millions of rows
    would cost the server's event loop seconds of CPU (and a proxy may compress it instead)."""

    COMPRESSED = frozenset({"text/html", "text/css", "text/javascript", "application/javascript", "application/json"})

    def _compressible_type(self, ctype: str) -> bool:
        return ctype in self.COMPRESSED


def allow_websocket_origins(origins: Iterable[str]) -> None:
    """Accept websocket connections from pages of ``origins`` (host[:port] patterns), as ``BOKEH_ALLOW_WS_ORIGIN``
    would: the list replaces ``--allow-websocket-origin``'s.  Pages of the server's own origin (the request's
    ``Host``) are always accepted, by Tornado.  Process-wide."""
    from bokeh.settings import settings as bokeh_settings

    origins = sorted({re.sub(r"^https?://", "", origin).rstrip("/").lower() for origin in origins})
    if origins and bokeh_settings.allowed_ws_origin() != origins:
        bokeh_settings.allowed_ws_origin.set_value(origins)
        log.info("websocket connections accepted from %s", ", ".join(origins))


def _request_handler() -> tornado.web.RequestHandler | None:
    """The Tornado handler answering the request that is creating the current session, if there is one.

    Bokeh creates a session inside the page request (``DocHandler.get``), so the handler is a caller of this
    code; none exists for a session created without a request (``--warm``, a test).
    """
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, tornado.web.RequestHandler):
            return candidate
        frame = frame.f_back
    return None


_installed: weakref.WeakSet = weakref.WeakSet()


def _has_routes(app: tornado.web.Application) -> bool:
    def targets(router) -> Iterable:
        for rule in getattr(router, "rules", []):
            yield rule.target
            yield from targets(rule.target)

    return any(target is HealthHandler for target in targets(app.default_router))


def install(app: tornado.web.Application, settings: Settings) -> None:
    """Serve ``/health`` and ``/metrics``, the frame-ancestors header and compressed replies from ``app``, without
    Bokeh's document checks (once per application)."""
    if app in _installed:
        return
    _installed.add(app)
    auth.protect(app)  # a kept login cookie is checked against the logouts (rtdash.auth)
    if not _has_routes(app):
        prefix = getattr(app, "prefix", "") or ""
        app.add_handlers(r".*", [(prefix + path, handler, kwargs) for path, handler, kwargs in routes()])
        log.info("serving %s/health and %s/metrics", prefix, prefix)
    _FrameAncestors.policy = frame_ancestors_header(settings)
    if _FrameAncestors not in app.transforms:
        app.add_transform(_FrameAncestors)
    if _Compressed not in app.transforms:
        app.add_transform(_Compressed)
    skip_document_validation()
    dump_stacks_on_sigusr1()


def dump_stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` writes the stack of every thread of the server to its standard error, without stopping
    it: what a server that answers but no longer updates is waiting for.  Not where the signal is already taken."""
    if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def skip_document_validation() -> None:
    """Serve documents without Bokeh's checks of their models (missing renderers, columns of unequal length...),
    unless ``BOKEH_VALIDATE_DOC`` says otherwise.  Bokeh runs them three times per page, walking every model:
    about a fifth of the page request's time (BENCHMARKS.md, session 9).  The tests run them over every tab's
    models instead (tests/views/test_models.py).  Process-wide; a notebook kernel keeps them."""
    from bokeh.settings import settings as bokeh_settings

    if "BOKEH_VALIDATE_DOC" not in os.environ:
        bokeh_settings.perform_document_validation.set_value(False)


def on_session(runtime) -> None:
    """Per session, from ``create_app``: count the session, follow the runtime's counters for the metrics, make
    sure this process serves ``/health`` and ``/metrics``, set the page's frame-ancestors policy and the websocket
    origins.  Does nothing more than count outside a server (a notebook, a test)."""
    settings = runtime.settings
    sampler.watch(runtime)
    if settings.allowed_origins:
        allow_websocket_origins(settings.allowed_origins)
    doc = pn.state.curdoc
    if doc is None or getattr(doc, "session_context", None) is None:
        return
    handler = _request_handler()
    key = id(doc)
    if key not in _sessions:
        _sessions[key] = handler.request.remote_ip if handler is not None else ""
        SESSIONS.set(len(_sessions))
        pn.state.on_session_destroyed(lambda _context: _session_ended(key))
        pn.state.on_session_destroyed(lambda _context: _forget_views(doc))
        collector.session_built()
    if handler is not None:
        install(handler.application, settings)
        local_stylesheets()
        # A session is created by the page request, or by a websocket that outlived its page's session (or
        # reached another --num-procs process): only the page has headers to set.
        if not isinstance(handler, tornado.websocket.WebSocketHandler):
            handler.set_header("Content-Security-Policy", frame_ancestors_header(settings))


def local_stylesheets() -> None:
    """Point the server session's stylesheets at the server's own copies from its start, as its page would (the
    dashboard's, and the one-line error page of a bad setting or a refused session); nothing outside a server.

    Panel does that when it renders a session's page (``server_html_page_for_session`` sets the document's
    ``dist_url``), after the session was built.  A session made by a websocket, whose page's unused session was
    discarded meanwhile (a page that took longer than ``--unused-session-lifetime`` to load, on a busy machine) or
    came from another process, never had a page, and its components asked cdn.holoviz.org for their CSS: unstyled,
    and "Failed to load resource" offline.  Set for every session, so that nothing made before the page is rendered
    depends on it either (the page sets the same address again).
    """
    doc, handler = pn.state.curdoc, _request_handler()
    if doc is None or getattr(doc, "session_context", None) is None or handler is None:
        return
    resources = getattr(handler.application, "resources", None)
    if resources is None or resources().mode != "server":
        return
    rel_path = pn.state.rel_path
    doc._template_variables.setdefault("dist_url", f"{rel_path}/{LOCAL_DIST}" if rel_path else LOCAL_DIST)
    doc._template_variables.setdefault("theme_name", pn.config.theme)


def _forget_views(doc) -> None:
    """Drop what Panel still lists of an ended session's document (``pn.state._views``, root id -> (viewable, root,
    document, comm)).  Panel renders its notification area (on with alert rules) with ``get_root`` rather than
    ``server_doc``, so the area's own clean-up finds no document of its own and leaves its entry: every closed
    session's document stayed in memory, ~3.5 MB each (no upstream report found)."""
    for ref, view in list(pn.state._views.items()):
        if view[2] is doc:
            pn.state._views.pop(ref, None)


def _session_ended(key: int) -> None:
    _sessions.pop(key, None)
    SESSIONS.set(len(_sessions))
    collector.session_ended()


class _Collector:
    """Keeps the open sessions out of the garbage collector's full collections, and lets it reclaim an ended one.

    A session holds ~25,000 objects the cyclic collector tracks (its Bokeh models, Panel's objects), and they live
    as long as the session.  A full collection scans every tracked object: at 50 sessions one took 0.8-1.0 s, and
    at 100 up to 2 s, every 10-40 s while updates went on -- the server's loop stood still meanwhile, and every
    viewer's update waited (BENCHMARKS.md).  So ``FREEZE_AFTER`` seconds after sessions were built, what the
    process holds goes to the collector's permanent generation (``gc.freeze``), which its collections skip: they
    then scan what came since.  When a session ends, everything goes back (``gc.unfreeze``) so that the ended
    session's cycles can be reclaimed, and the next freeze comes after a full collection (the one Panel makes after
    a session's end, or its own if Panel's has not run yet: one pause, as before).  A server only: a notebook's
    kernel has no session and is left alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduled: IOLoop | None = None  # the loop a freeze is due on
        self._full = None  # after a session ended: the count of full collections then, until the next freeze

    def session_built(self) -> None:
        self._schedule()

    def session_ended(self) -> None:
        with self._lock:
            if self._full is None:
                self._full = _full_collections()
        gc.unfreeze()
        self._schedule()

    def _schedule(self) -> None:
        loop = IOLoop.current(instance=False)
        with self._lock:
            if loop is None or self._scheduled is loop:  # one freeze due at a time (on a loop that runs)
                return
            self._scheduled = loop
        loop.call_later(FREEZE_AFTER, self._freeze)

    def _freeze(self) -> None:
        with self._lock:
            self._scheduled, full, self._full = None, self._full, None
        if full is not None and _full_collections() == full:  # an ended session's cycles are not kept
            gc.collect()
        else:
            gc.collect(1)  # nor the young garbage
        gc.freeze()


def _full_collections() -> int:
    return gc.get_stats()[2]["collections"]


collector = _Collector()


# -- admission: who may open a session -------------------------------------------------------------------------------

MAX_ISSUED = 100_000  # page tokens remembered per process; the oldest is forgotten first
REFUSAL_LOG_EVERY = 10.0  # seconds: at most one log line per reason; the next one says how many it left out

_issued: OrderedDict[str, float] = OrderedDict()  # session ids of the pages this process served -> valid until
_refusal_lines: dict[str, tuple[float, int]] = {}  # reason -> (time of its last log line, refusals left out since)


def admit(settings: Settings) -> str | None:
    """Per session, before ``create_app`` builds anything: None to build the dashboard, else the one line to show
    the user in its place (the refusal is logged and counted in ``rtdash_sessions_refused_total{reason}``).

    * ``token`` — a websocket asks for a session that no page of this process was served with, on a server that
      does not sign sessions.  Bokeh creates the session of whatever token a websocket brings, and an unsigned token
      is one anybody can make: 200 of them, without loading the page, took a process from 363 MB to 1.5 GB (issue
      13).  With ``BOKEH_SIGN_SESSIONS`` Bokeh has checked the token's signature before this runs; without it, the
      tokens of the pages this process served are accepted for as long as Bokeh lets a token open a session
      (``--session-token-expiration``), so a websocket that comes after its page's unused session was discarded
      still gets one.  The websocket is closed (1008) as soon as Bokeh has made the session, which costs a small
      document and no poller (Bokeh then logs that it could not send its ACK).
    * ``total_limit``, ``client_limit`` — ``RTDASH_MAX_SESSIONS`` sessions are open in this process, or
      ``RTDASH_MAX_SESSIONS_PER_CLIENT`` from the client's address (``request.remote_ip``: the proxy's own address
      unless ``--use-xheaders`` takes the client's from its ``X-Real-IP``/``X-Forwarded-For``).

    Everything is admitted outside a server's request (a notebook, ``--warm``, a test).
    """
    doc = pn.state.curdoc
    handler = _request_handler()
    if handler is None or doc is None or getattr(doc, "session_context", None) is None:
        return None
    app = handler.application
    install(app, settings)  # /health answers (and counts this refusal) even when the first session is refused
    session_id, client = doc.session_context.id, handler.request.remote_ip or "?"
    if not isinstance(handler, tornado.websocket.WebSocketHandler):
        _issue(session_id, app.session_token_expiration)
    elif not app.sign_sessions and not _was_issued(session_id):
        _refused(
            "token",
            f"a websocket from {client} brought a token that no page of this process was served with, and sessions "
            "are not signed; with --num-procs or several processes behind a balancer, where a page's websocket may "
            "reach another process, set BOKEH_SIGN_SESSIONS=true and the same BOKEH_SECRET_KEY (`panel secret`) "
            "for all of them",
        )
        IOLoop.current().add_callback(handler.close, 1008, "session refused: load the page")
        return "Session refused: open the dashboard's page to start a session."
    if len(_sessions) >= settings.max_sessions:
        _refused(
            "total_limit",
            f"{len(_sessions)} sessions are open in this process (RTDASH_MAX_SESSIONS={settings.max_sessions})",
        )
        return f"The dashboard is serving as many sessions as it can ({settings.max_sessions}): try again later."
    from_client = sum(1 for address in _sessions.values() if address == client)
    if from_client >= settings.max_sessions_per_client:
        _refused(
            "client_limit",
            f"{from_client} sessions are open from {client} "
            f"(RTDASH_MAX_SESSIONS_PER_CLIENT={settings.max_sessions_per_client})",
        )
        return (
            f"Too many open sessions from your address ({settings.max_sessions_per_client}): close a tab of the "
            "dashboard, then reload this page."
        )
    return None


def _issue(session_id: str, lifetime: float) -> None:
    """Remember that this process served a page with ``session_id``, for ``lifetime`` seconds."""
    now = time.monotonic()
    _issued[session_id] = now + lifetime
    _issued.move_to_end(session_id)
    while _issued and (len(_issued) > MAX_ISSUED or next(iter(_issued.values())) < now):
        _issued.popitem(last=False)


def _was_issued(session_id: str) -> bool:
    return _issued.get(session_id, 0.0) >= time.monotonic()


def _refused(reason: str, line: str) -> None:
    """Count a refused session and log ``line``; or, when ``reason`` had a line in the last ``REFUSAL_LOG_EVERY``
    seconds, count it for the next line instead (a flood of refusals is a line every 10 s, not one each)."""
    SESSIONS_REFUSED.labels(reason).inc()
    now = time.monotonic()
    last, left_out = _refusal_lines.get(reason, (-math.inf, 0))
    if now - last < REFUSAL_LOG_EVERY:
        _refusal_lines[reason] = (last, left_out + 1)
        return
    _refusal_lines[reason] = (now, 0)
    more = f" ({left_out} more refused for this reason since the last line)" if left_out else ""
    log.warning("session refused: %s%s", line, more)


# -- error replies to clients ----------------------------------------------------------------------------------------

_bokeh_error = ServerConnection.error


def _short_error(self: ServerConnection, message, text: str):
    """Bokeh's ERROR reply to a message the server failed to handle, holding the error's type and no traceback.

    ``bokeh.protocol.messages.error.error.create`` puts the server's traceback (``sys.exc_info()``, with its files'
    paths) in every ERROR reply, and ``ProtocolHandler.handle`` (bokeh/server/protocol_handler.py) gives the
    exception's ``repr`` as its text, which may quote the client's own message.  The client needs to know that its
    message failed; the server's log has the rest (bounded, :mod:`rtdash.logs`).  Bokeh 3.9 offers no setting for
    this, hence the replacement of ``ServerConnection.error``, the one place the server makes an ERROR reply.
    """
    error = sys.exc_info()[1]
    kind = type(error).__name__ if error is not None else "Error"
    reply = _bokeh_error(self, message, f"{kind}: the server could not handle this {message.msgtype} message")
    reply.content["traceback"] = None
    return reply


ServerConnection.error = _short_error


# -- changes sent to pages -------------------------------------------------------------------------------------------


class _SyncedModels(Serializer):
    """The ``Serializer`` of Bokeh's ``patch_doc.create`` (bokeh/protocol/messages/patch_doc.py, 3.9.2), which refers
    to a model the page already has by its id: such a model is looked up when it is met.

    Bokeh's ``create`` hands its serializer every model of the document the page already has
    (``synced_references``), and Bokeh's serializer makes a reference (``{"id": ...}``) for each of them before it
    encodes anything: every change sent to a page cost a dict per model of its document, ~1,000 for a session of the
    dashboard, for a message that streams one point, and those dicts made most of the garbage collector's work
    besides.  This one keeps the set and makes a reference for a model of it only when the message holds the model;
    what ``has_ref`` and ``get_ref`` answer is Bokeh's, and so are the message and the document's bookkeeping of new
    models.  ``create`` is the one user of the name swapped below (no upstream report found).
    """

    def __init__(self, *, references: set = frozenset(), **kwargs):
        super().__init__(**kwargs)
        self._synced = references

    def has_ref(self, obj: Any) -> bool:
        return super().has_ref(obj) or (isinstance(obj, Model) and obj in self._synced)

    def get_ref(self, obj: Any) -> Ref | None:
        ref = super().get_ref(obj)
        return obj.ref if ref is None and isinstance(obj, Model) and obj in self._synced else ref


bokeh_patch_doc = importlib.import_module("bokeh.protocol.messages.patch_doc")  # the module, not its class
bokeh_patch_doc.Serializer = _SyncedModels


# -- shutdown --------------------------------------------------------------------------------------------------------


def stop_loop_on_signals() -> None:
    """Make SIGTERM (``kill``, ``docker stop``, systemd) and SIGINT (Ctrl+C) stop the main thread's event loop, so
    that what follows ``loop.start()`` runs: ``python realtime_dashboard.py`` then stops the runtimes (rows written,
    store closed) and exits 0, where Python's default for SIGTERM ends the process at once, mid-write.
    ``panel serve`` does not need it (Bokeh stops its loop on both).  Only in the main thread, where signals arrive."""
    from tornado.ioloop import IOLoop

    if threading.current_thread() is not threading.main_thread():
        return
    loop = IOLoop.current().asyncio_loop  # the loop pn.serve(...) serves from when it is given none
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)


# -- process settings (the plugin runs before any session) -----------------------------------------------------------

_process_settings: list[Settings | None] = []


def _settings_from_env() -> Settings | None:
    if not _process_settings:
        try:
            _process_settings.append(Settings.load())
        except SettingsError as exc:  # the app shows it on the page; the endpoints still answer
            log.debug("settings are invalid (the page and the log say so once): %s", exc)
            _process_settings.append(None)
    return _process_settings[0]


def warm_up(settings: Settings) -> None:
    """Import the charts' libraries and draw the Live tab's charts before the server listens, so that the first
    page of the process does not wait for them (rtdash.views.live.warm_up; about 2 s on 2 cores).  Done in the
    main thread, before ``--num-procs`` forks its processes, which inherit the result; a failure is logged and
    leaves the work to the first session.

    Plain ``panel serve`` (no ``--plugins rtdash.server``) imports this module in its first session, which then
    waits for the warm-up: the charts' spare copies are left to the event loop, after that session.
    """
    start = time.monotonic()
    try:
        from .views.live import warm_up as draw  # HoloViews and hvPlot: imported here, not with this module

        draw(settings, spares_now=pn.state.curdoc is None)
    except Exception:  # pragma: no cover - the first session draws the charts itself
        log.warning("warm-up failed: the first page will draw the charts", exc_info=True)
    else:
        log.debug("warm-up: the Live charts drawn in %.2f s", time.monotonic() - start)


def _metrics_token() -> str | None:
    for runtime in runtimes():
        if runtime.settings.metrics_token:
            return runtime.settings.metrics_token
    settings = _settings_from_env()
    return settings.metrics_token if settings is not None else None


def _plugin_loaded() -> None:
    """``--plugins rtdash.server``: the origins must be known before the first websocket of any process."""
    settings = _settings_from_env()
    if settings is not None:
        setup_logging(settings)  # every line bounded and redacted from the start, before any session
        warm_up(settings)
        if settings.allowed_origins:
            allow_websocket_origins(settings.allowed_origins)
    if pn.config.basic_auth:  # set by --basic-auth before plugins load: rate-limited login, revoking logout
        ROUTES.extend(auth.routes())
    if MULTIPROCESS_DIR is None:
        log.debug("PROMETHEUS_MULTIPROC_DIR is not set: /metrics reports the process that answers only")


if __name__ in ("rtdash.server",) and "panel.command.serve" in sys.modules:
    _plugin_loaded()
