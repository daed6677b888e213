"""rtdash side by side with the tutorial pattern and Dash: ``python -m benchmarks.run [--quick]``.

All three apps are served on this machine against the local imitation API (``tests/fakeapi.py``) with the same
intervals, and measured in one run: upstream calls per interval vs viewers, marginal server CPU per viewer per update,
bytes per viewer per new row (Chromium DevTools), fetch-to-pixel latency, viewers held at 1 Hz, memory per viewer and
RSS after the viewers leave, and time to first render.  Prints a table and writes JSON (``--json``).

Viewers are of two kinds: real Chromium pages (Playwright, async) with a probe that records when each new value is
painted, and lightweight clients that speak the server's own protocol without a browser: for Panel apps a Bokeh
websocket session (the page's GET, then ``PULL-DOC-REQ`` and every ``PATCH-DOC`` read and decoded), for Dash the
``/_dash-update-component`` POST that the page's ``dcc.Interval`` makes, with the store sent back each time.
Benchmarks are measurements, never assertions: goals rtdash misses are printed as MISSED, with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tests.fakeapi import FakeAPI
from tests.helpers import ServedApp, fake_env, free_port

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")
OPEN_TIMEOUT = 60.0  # seconds a new session may take to open before the server counts as saturated
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- the apps -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSpec:
    name: str
    kind: str  # "bokeh" (panel serve) or "dash"
    script: Path

    @property
    def route(self) -> str:
        return "/" if self.kind == "dash" else "/" + self.script.stem


APPS = {
    "rtdash": AppSpec("rtdash", "bokeh", ROOT / "realtime_dashboard.py"),
    "tutorial": AppSpec("tutorial", "bokeh", ROOT / "benchmarks" / "baselines" / "tutorial.py"),
    "dash": AppSpec("dash", "dash", ROOT / "benchmarks" / "baselines" / "dash_app.py"),
}

# Seeds rtdash's shared price poller with synthetic history before the real script runs, so that bytes per row are
# measured with a full backlog (the baselines take BENCH_PREFILL for the same).  Written to a temporary directory.
RTDASH_PREFILL_WRAPPER = """\
import numpy as _np
import pandas as _pd
from rtdash.sources.base import tidy as _tidy
from rtdash.stream import runtime as _runtime

if not getattr(_runtime.Runtime, "_bench_prefilled", False):
    _init = _runtime.Runtime.__init__

    def _prefilled(self, settings, *args, **kwargs):
        _init(self, settings, *args, **kwargs)
        n = {rows}
        times = _pd.date_range(end=_pd.Timestamp.now(tz="UTC"), periods=n,
                               freq=_pd.Timedelta(seconds=settings.price_interval))
        prices = 65000 + _np.random.default_rng(0).normal(0, 50, n).cumsum()
        for asset in settings.assets:
            frame = _pd.DataFrame({{"time": times, "asset": asset, "quote": settings.quote, "price": prices,
                                   "source": "coinbase"}})
            self.price.seed(_tidy(frame, "price"))

    _runtime.Runtime.__init__ = _prefilled
    _runtime.Runtime._bench_prefilled = True

__file__ = {script!r}
exec(compile(open({script!r}).read(), {script!r}, "exec"))
"""


class RecordingAPI(FakeAPI):
    """The fake API, remembering when each price it answered was served (the stamp fetch-to-pixel starts from)."""

    def __init__(self) -> None:
        super().__init__()
        self.served: dict[float, float] = {}

    def _coinbase(self, path, query, headers):
        response = super()._coinbase(path, query, headers)
        if response.status == 200:
            with contextlib.suppress(ValueError, KeyError):
                self.served[price_key(json.loads(response.body)["data"]["amount"])] = time.time()
        return response

    def served_at(self, value: float) -> float | None:
        return self.served.get(price_key(value))


def price_key(value: Any) -> float:
    return round(float(value), 4)


# Every viewer of a benchmark comes from 127.0.0.1, and the benchmarks measure past rtdash's session caps.
UNCAPPED = {"RTDASH_MAX_SESSIONS": "100000", "RTDASH_MAX_SESSIONS_PER_CLIENT": "100000"}
# How long Bokeh keeps a session no websocket is connected to: its default, as the README serves the apps.  The
# tests' server discards it after 1 s (so that closed sessions go fast); until session 22 the benchmarks served with
# that too, and on a loaded server a page whose websocket came more than a second after its page had its session
# discarded and built again by the websocket (twice the cost), each discard unfreezing the collector (BENCHMARKS.md).
UNUSED_SESSION_LIFETIME_MS = 15_000


class Served:
    """One app served in its own process (Panel apps with Bokeh's ``unused_session_lifetime_ms``, unless told)."""

    def __init__(
        self,
        spec: AppSpec,
        api: FakeAPI,
        env: dict[str, str],
        prefill: int = 0,
        unused_session_lifetime_ms: int = UNUSED_SESSION_LIFETIME_MS,
    ):
        self.spec = spec
        env = fake_env(api.url, **{**UNCAPPED, **env})
        self._tmp = tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-")
        if spec.kind == "dash":
            port = free_port()
            env["BENCH_PREFILL"] = str(prefill)
            command = [sys.executable, str(spec.script), "--port", str(port)]
            self.app = ServedApp(env=env, command=command, cwd=self._tmp.name)
            self.app.port, self.app.url = port, f"http://127.0.0.1:{port}"
            self.app.wait_ready(path="/")
        else:
            script = spec.script
            if prefill and spec.name == "rtdash":
                script = Path(self._tmp.name) / spec.script.name
                script.write_text(RTDASH_PREFILL_WRAPPER.format(rows=prefill, script=str(spec.script)))
            elif prefill:
                env["BENCH_PREFILL"] = str(prefill)
            # rtdash's /health and /metrics from startup, the way its docs serve it
            serve_args = ["--plugins", "rtdash.server"] if spec.name == "rtdash" else []
            self.app = ServedApp(
                script,
                env=env,
                cwd=self._tmp.name,
                serve_args=serve_args,
                unused_session_lifetime_ms=unused_session_lifetime_ms,
            )
            self.app.wait_ready()
        self.url = self.app.url.rstrip("/") + spec.route
        self.pid = self.app.proc.pid

    def cpu(self) -> float:
        """Seconds of CPU (user + system, all threads) the server process has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE_SIZE

    def health(self) -> dict[str, Any] | None:
        """rtdash's ``/health`` JSON, or None where there is none (the baselines)."""
        try:
            response = requests.get(self.app.url + "/health", timeout=5)
            return response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None
        except (requests.RequestException, ValueError):
            return None

    def stop(self) -> None:
        self.app.stop()
        self._tmp.cleanup()


# -- lightweight viewers --------------------------------------------------------------------------------------------


@dataclass
class Arrivals:
    """Values a viewer received or painted: (value, wall time)."""

    items: list[tuple[float, float]] = field(default_factory=list)
    bytes: int = 0

    def add(self, values: Iterable[float], t: float) -> None:
        self.items.extend((v, t) for v in values)


def _floats(obj: Any, buffers: dict[str, bytes], out: list[float]) -> None:
    """Every float in a Bokeh protocol message's content: plain lists and encoded ndarrays."""
    if isinstance(obj, dict):
        if obj.get("type") == "ndarray" and str(obj.get("dtype", "")).startswith("float"):
            array = obj.get("array")
            raw = None
            data = array.get("data") if isinstance(array, dict) and array.get("type") == "bytes" else array
            if isinstance(data, str):
                raw = base64.b64decode(data)
            elif isinstance(data, dict) and "id" in data:
                raw = buffers.get(data["id"])
            elif isinstance(array, list):
                out.extend(x for x in array if isinstance(x, float))
            if raw is not None:
                out.extend(np.frombuffer(raw, dtype=obj["dtype"]).tolist())
            return
        for value in obj.values():
            _floats(value, buffers, out)
    elif isinstance(obj, list):
        for value in obj:
            if isinstance(value, float):
                out.append(value)
            else:
                _floats(value, buffers, out)


DATA_EVENTS = {"ColumnsStreamed", "ColumnDataChanged", "ColumnsPatched"}  # Bokeh's chart data updates


class BokehViewer:
    """A Bokeh server session without a browser: GET the page, open its websocket, pull the document, read patches."""

    def __init__(self, url: str, keep: Callable[[float], bool]):
        self.url = url
        self.keep = keep
        self.arrivals = Arrivals()
        self._conn = None
        self._task: asyncio.Task | None = None
        self.error: str | None = None
        self.tally = False  # count the bytes of chart data events apart (the bytes phase)
        self.chart_bytes = 0

    async def open(self) -> BokehViewer:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest
        from tornado.websocket import websocket_connect

        client = AsyncHTTPClient(max_clients=1000)
        page = (await client.fetch(self.url, request_timeout=120)).body.decode()
        token = page.split('"token":"', 1)[1].split('"', 1)[0]
        origin = self.url.split("/", 3)
        # The handshake is where the server builds the session: on a loaded 2-core machine that took over tornado's
        # default 20 s (HTTPTimeoutError beside two busy loops), so it gets the page's 120 s.
        request = HTTPRequest(
            self.url.replace("http://", "ws://").rstrip("/") + "/ws",
            headers={"Origin": "/".join(origin[:3])},
            connect_timeout=120,
            request_timeout=120,
        )
        self._conn = await websocket_connect(request, subprotocols=["bokeh", token], max_message_size=1 << 30)
        await self._read_message()  # ACK
        await self._send("PULL-DOC-REQ")
        await self._read_message()  # PULL-DOC-REPLY: the document, which a browser would render now; then it says
        ready = {"type": "event", "name": "document_ready", "values": {"type": "map"}}
        await self._send(
            "PATCH-DOC", {"events": [{"kind": "MessageSent", "msg_type": "bokeh_event", "msg_data": ready}]}
        )
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def _send(self, msgtype: str, content: dict | None = None) -> None:
        header = {"msgid": uuid.uuid4().hex, "msgtype": msgtype}
        for part in (header, {}, content or {}):
            await self._conn.write_message(json.dumps(part))

    async def _read_message(self) -> tuple[dict, Any, dict[str, bytes]] | None:
        frames = []
        for _ in range(3):
            frame = await self._conn.read_message()
            if frame is None:
                return None
            frames.append(frame)
        header = json.loads(frames[0])
        buffers: dict[str, bytes] = {}
        for _ in range(int(header.get("num_buffers") or 0)):
            buffer_header, payload = await self._conn.read_message(), await self._conn.read_message()
            if buffer_header is None or payload is None:
                return None
            frames += [buffer_header, payload]
            buffers[json.loads(buffer_header)["id"]] = payload
        self.arrivals.bytes += sum(len(f) for f in frames)
        return header, frames[2], buffers

    async def _loop(self) -> None:
        try:
            while (message := await self._read_message()) is not None:
                header, content, buffers = message
                if header.get("msgtype") == "PATCH-DOC":
                    t = time.time()
                    values: list[float] = []
                    patch = json.loads(content)
                    _floats(patch, buffers, values)
                    if self.tally:
                        self.chart_bytes += sum(
                            len(json.dumps(event))
                            for event in patch.get("events", [])
                            if event.get("kind") in DATA_EVENTS
                        ) + sum(len(b) for b in buffers.values())
                    self.arrivals.add((v for v in values if self.keep(v)), t)
        except Exception as exc:  # a closed or broken session ends the viewer
            self.error = repr(exc)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)


class DashViewer:
    """What a Dash page's two dcc.Interval do, without a browser: POST each callback on time, the store round-trip."""

    def __init__(self, url: str, price_interval: float, weather_interval: float, keep: Callable[[float], bool]):
        self.url = url.rstrip("/")
        self.intervals = {"price": price_interval, "weather": weather_interval}
        self.keep = keep
        self.arrivals = Arrivals()
        self.store: dict[str, Any] = {}
        self._tasks: list[asyncio.Task] = []
        self.error: str | None = None

    async def open(self) -> DashViewer:
        from tornado.httpclient import AsyncHTTPClient

        client = AsyncHTTPClient(max_clients=1000)
        layout = json.loads((await client.fetch(self.url + "/_dash-layout", request_timeout=60)).body)
        self.store = {
            child["props"]["id"]: child["props"].get("data")
            for child in layout["props"]["children"]
            if child.get("type") == "Store"
        }
        self._tasks = [asyncio.ensure_future(self._tick(kind)) for kind in ("price", "weather")]
        return self

    def _payload(self, kind: str, n: int | None) -> dict:
        outputs = (
            ["price-graph.figure", "price-store.data"]
            if kind == "price"
            else ["temperature-graph.figure", "humidity-graph.figure", "wind_speed-graph.figure", "weather-store.data"]
        )
        changed = [f"{kind}-tick.n_intervals"] if n else []
        return {
            "output": ".." + "...".join(outputs) + "..",
            "outputs": [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in outputs],
            "inputs": [{"id": f"{kind}-tick", "property": "n_intervals", **({"value": n} if n else {})}],
            "changedPropIds": changed,
            "parsedChangedPropsIds": changed,
            "state": [{"id": f"{kind}-store", "property": "data", "value": self.store[f"{kind}-store"]}],
        }

    async def _tick(self, kind: str) -> None:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        client = AsyncHTTPClient(max_clients=1000)
        interval = self.intervals[kind]
        start = time.monotonic()
        for n in itertools.count():
            payload = self._payload(kind, n)
            try:
                response = await client.fetch(
                    self.url + "/_dash-update-component",
                    method="POST",
                    body=json.dumps(payload),
                    headers={"Content-Type": "application/json"},
                    request_timeout=60,
                )
            except (HTTPClientError, OSError) as exc:
                self.error = repr(exc)
            else:
                t = time.time()
                self.arrivals.bytes += len(response.body)
                answer = json.loads(response.body)["response"]
                self.store[f"{kind}-store"] = answer[f"{kind}-store"]["data"]
                if kind == "price" and self.store["price-store"]["price"]:
                    value = self.store["price-store"]["price"][-1]
                    self.arrivals.add([v for v in [value] if self.keep(v)], t)
            # like setInterval: the next tick is due on the clock, a late answer skips the ticks it overran
            await asyncio.sleep(interval - (time.monotonic() - start) % interval)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- browser viewers ------------------------------------------------------------------------------------------------

# Records, on every page, each new last value of every chart's data after the frame that paints it (BokehJS data
# sources and Plotly graphs), and when the first chart with data was painted (ms since navigation start).
PROBE_JS = r"""
(() => {
  const P = window.__probe = {first: null, shown: [], sigs: new Map(), hooked: new WeakSet()};
  const record = (values) => requestAnimationFrame(() => {
    const t = Date.now();
    for (const v of values) P.shown.push([v, t]);
  });
  const finite = (v) => typeof v === 'number' && isFinite(v) && Math.abs(v) < 1e9;
  const check = (key, values) => {
    const sig = values.join(',');
    if (P.sigs.get(key) !== sig) { P.sigs.set(key, sig); record(values); }
  };
  const lastOf = (col) => (col && col.length ? Number(col[col.length - 1]) : NaN);
  const cdsValues = (m) => {
    const data = m.data instanceof Map ? [...m.data.values()] : Object.values(m.data || {});
    return data.map(lastOf).filter(finite);
  };
  const hasCanvas = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') return true;
      if (el.shadowRoot && hasCanvas(el.shadowRoot)) return true;
    }
    return false;
  };
  const scan = () => {
    let data = false;
    for (const doc of (window.Bokeh && window.Bokeh.documents) || []) {
      for (const m of doc._all_models.values()) {
        if (!m.streaming || !('data' in m)) continue;
        if (!P.hooked.has(m)) {
          P.hooked.add(m);
          const cb = () => check(m.id, cdsValues(m));
          m.connect(m.streaming, cb);
          m.connect(m.patching, cb);
          m.connect(m.properties.data.change, cb);
        }
        const values = cdsValues(m);
        data = data || values.length > 0;
        check(m.id, values);
      }
    }
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
      const values = () => (gd.data || []).map((tr) => lastOf(tr.y)).filter(finite);
      if (!gd.__probed && gd.on) { gd.__probed = true; gd.on('plotly_afterplot', () => check(gd.id, values())); }
      data = data || (gd._fullLayout && values().length > 0);
      check(gd.id, values());
    }
    if (P.first === null && data && hasCanvasOrSvg()) {
      P.first = -1;
      requestAnimationFrame(() => { P.first = performance.now(); });
    }
  };
  const hasCanvasOrSvg = () => document.querySelector('.js-plotly-plot .main-svg') !== null || hasCanvas(document);
  setInterval(() => { try { scan(); } catch (e) { P.error = String(e); } }, 100);
})();
"""


class PageViewer:
    """A real Chromium page with the probe, DevTools network counters and the console collected."""

    def __init__(self, browser, url: str, keep: Callable[[float], bool]):
        self.browser = browser
        self.url = url
        self.keep = keep
        self.ws_bytes = 0  # websocket frames received
        self.http_bytes = 0  # HTTP answers received after the page loaded (Dash callbacks)
        self.upload_bytes = 0  # request bodies sent after the page loaded (Dash sends the store up)
        self.console_errors: list[str] = []
        self.arrivals = Arrivals()
        self.loaded = False

    async def open(self) -> PageViewer:
        self.context = await self.browser.new_context(viewport={"width": 1400, "height": 1000})
        await self.context.add_init_script(PROBE_JS)
        self.page = await self.context.new_page()
        self.cdp = await self.context.new_cdp_session(self.page)
        await self.cdp.send("Network.enable")
        self.cdp.on("Network.webSocketFrameReceived", self._ws_frame)
        self.cdp.on("Network.loadingFinished", self._finished)
        self.cdp.on("Network.requestWillBeSent", self._sent)
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        await self.page.goto(self.url, wait_until="load", timeout=120_000)
        self.loaded = True
        return self

    def _ws_frame(self, event: dict) -> None:
        frame = event["response"]
        data = frame.get("payloadData", "")
        self.ws_bytes += len(base64.b64decode(data)) if frame.get("opcode") == 2 else len(data.encode())

    def _finished(self, event: dict) -> None:
        if self.loaded:
            self.http_bytes += int(event.get("encodedDataLength") or 0)

    def _sent(self, event: dict) -> None:
        if self.loaded:
            self.upload_bytes += len((event["request"].get("postData") or "").encode())

    @property
    def bytes(self) -> int:
        return self.ws_bytes + self.http_bytes

    async def first_render(self, timeout: float = 60) -> float:
        await self.page.wait_for_function("window.__probe && window.__probe.first > 0", timeout=timeout * 1000)
        return await self.page.evaluate("window.__probe.first")

    async def drain(self) -> None:
        shown = await self.page.evaluate("window.__probe.shown.splice(0)")
        for value, t in shown:
            if self.keep(value):
                self.arrivals.items.append((value, t / 1000))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.context.close()


# -- statistics -----------------------------------------------------------------------------------------------------


def batched(items: Iterable[Any], n: int) -> Iterable[tuple[Any, ...]]:
    """``itertools.batched`` of Python 3.12."""
    it = iter(items)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(values, q))


def window_stats(viewers: list, api: RecordingAPI, t0: float, t1: float, interval: float) -> dict[str, Any]:
    """Latency (ms) from the API serving a value to the viewer receiving (or painting) it, and missed updates.

    A missed update is a value the API served in the window that never reached the viewer (it had at least a second
    more to arrive, up to when this runs).  Latency counts the values that arrived in the window.  A late update is
    not missed (the latency figures show it), nor are two updates that arrive in one message.  A poller that fetches
    less often than its interval serves fewer values: that shows in the calls per interval, not here.  (Until
    session 4 the due updates were counted from the window's length, so a value served just outside the window, or
    a clock tick that came late, counted as missed for every viewer although every value reached every viewer.)
    """
    latencies: list[float] = []
    served = {value for value, at in api.served.items() if t0 <= at <= t1}
    missed = expected = delivered = 0
    for viewer in viewers:
        seen: set[float] = set()
        for value, t in viewer.arrivals.items:
            at = api.served_at(value)
            if at is None or not t0 <= t <= t1 or value in seen:
                continue
            seen.add(value)
            latencies.append((t - at) * 1000)
        delivered += len(seen)
        got = {price_key(value) for value, _ in viewer.arrivals.items}
        if served:
            expected += len(served)
            missed += len(served - got)
        else:  # nothing served in the window: every update due in it was missed
            expected += max(1, round((t1 - t0) / interval))
            missed += max(1, round((t1 - t0) / interval))
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "samples": len(latencies),
        "delivered": delivered,  # new price values that reached the viewers
        "missed_pct": 100 * missed / expected if expected else None,
    }


TRACEBACK = "Traceback (most recent call last):"


def traceback_report(log: str) -> dict[str, Any]:
    """A server log's tracebacks: how many, the first one's text, and how many of each kind (the exception and the
    frame that raised it); a count alone does not say what broke.  A chained exception counts once per block."""
    blocks = log.split(TRACEBACK)[1:]
    kinds: collections.Counter[str] = collections.Counter()
    for block in blocks:
        where, what = "?", "?"
        for line in block.splitlines()[1:]:
            if line.startswith("  File "):
                where = line.strip()
            elif line and not line.startswith(" "):
                what = line.strip()[:120]
                break
        kinds[f"{what} ({where})"] += 1
    start = log.find(TRACEBACK)
    return {
        "server_tracebacks": len(blocks),
        "server_traceback_first": None if start < 0 else log[max(0, start - 200) : start + 2000],
        "server_traceback_kinds": dict(kinds.most_common()),
    }


def calls_between(api: FakeAPI, provider: str, t0: float, t1: float) -> int:
    return sum(1 for r in api.requests if r.provider == provider and t0 <= r.time < t1)


# -- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    windows: float  # seconds per measuring window
    viewers: tuple[int, ...]  # N for calls, CPU and memory
    pages: tuple[int, ...]  # N of browser pages for latency
    capacity: tuple[int, ...]  # lightweight sessions for the capacity ramp, beyond the sweep
    backlogs: tuple[int, ...]
    ttfr_pages: int
    price_interval: float = 1.0
    weather_interval: float = 2.0


FULL = Plan(windows=15, viewers=(1, 5, 20, 50), pages=(1, 20), capacity=(100, 150, 200), backlogs=(1000, 10000),
            ttfr_pages=3)  # fmt: skip
QUICK = Plan(windows=5, viewers=(1, 5), pages=(1,), capacity=(), backlogs=(1000,), ttfr_pages=1)


class Bench:
    def __init__(self, plan: Plan, log: Callable[[str], None]):
        self.plan = plan
        self.log = log

    async def run_app(self, spec: AppSpec, browser) -> dict[str, Any]:
        plan = self.plan
        out: dict[str, Any] = {"app": spec.name}
        env = {
            "RTDASH_PRICE_INTERVAL": f"{plan.price_interval}s",
            "RTDASH_WEATHER_INTERVAL": f"{plan.weather_interval}s",
            "RTDASH_BACKLOG": "1000",
        }
        logs = []
        for phases in (self._main_phases, self._page_phases):
            with RecordingAPI() as api:
                served = await asyncio.to_thread(Served, spec, api, env)
                try:
                    out.update(await phases(spec, served, api, browser))
                    logs.append(served.app.output())
                finally:
                    await asyncio.to_thread(served.stop)
        out.update(traceback_report("\n".join(logs)))
        out["bytes"] = {}
        for backlog in plan.backlogs:
            out["bytes"][str(backlog)] = await self._bytes_phase(spec, browser, backlog)
        return out

    def keep_for(self, api: RecordingAPI) -> Callable[[float], bool]:
        return lambda v: api.served_at(v) is not None

    async def _open_light(self, spec: AppSpec, served: Served, api: RecordingAPI, n: int) -> list:
        keep = self.keep_for(api)
        if spec.kind == "dash":
            viewers = [
                DashViewer(served.url, self.plan.price_interval, self.plan.weather_interval, keep) for _ in range(n)
            ]
        else:
            viewers = [BokehViewer(served.url, keep) for _ in range(n)]
        opened = []
        for chunk in batched(viewers, 5):  # the way people arrive: a few at a time
            results = await asyncio.gather(
                *(asyncio.wait_for(v.open(), OPEN_TIMEOUT) for v in chunk), return_exceptions=True
            )
            opened += [v for v in results if not isinstance(v, BaseException)]
            failed = [v for v, r in zip(chunk, results, strict=True) if isinstance(r, BaseException)]
            await asyncio.gather(*(v.close() for v in failed))
            if failed:  # the server no longer takes new sessions in time: stop knocking
                break
        return opened

    async def _settle(self, viewers: list, timeout: float = 30) -> bool:
        """Until every viewer has received a new value, or the deadline."""
        marks = [len(v.arrivals.items) for v in viewers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if isinstance(viewers[0], PageViewer):
                await asyncio.gather(*(v.drain() for v in viewers))
            if all(len(v.arrivals.items) > m for v, m in zip(viewers, marks, strict=True)):
                return True
            await asyncio.sleep(0.2)
        return False

    async def _quiet(self, served: Served, timeout: float = 90) -> None:
        """Until no session is left (rtdash's /health) and the server uses under 10 % of a core, or the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = served.health()
            cpu0 = served.cpu()
            await asyncio.sleep(2)
            if (health is None or health.get("sessions") == 0) and served.cpu() - cpu0 < 0.2:
                return
        self.log(f"  {served.spec.name}: the server did not quiet down within {timeout:.0f} s")

    async def _window(self, served: Served, api: RecordingAPI, viewers: list, seconds: float) -> dict[str, Any]:
        plan = self.plan
        bytes0 = sum(v.arrivals.bytes if not isinstance(v, PageViewer) else v.bytes for v in viewers)
        cpu0, t0 = served.cpu(), time.time()
        await asyncio.sleep(seconds)
        cpu1, t1 = served.cpu(), time.time()
        if viewers and isinstance(viewers[0], PageViewer):
            await asyncio.gather(*(v.drain() for v in viewers))
        bytes1 = sum(v.arrivals.bytes if not isinstance(v, PageViewer) else v.bytes for v in viewers)
        price_calls = calls_between(api, "coinbase", t0, t1)
        weather_calls = calls_between(api, "open-meteo", t0, t1)
        result = {
            "viewers": len(viewers),
            "seconds": t1 - t0,
            "cpu_s": cpu1 - cpu0,
            "rss_mb": served.rss() / 2**20,
            "price_calls_per_interval": price_calls / ((t1 - t0) / plan.price_interval),
            "weather_calls_per_interval": weather_calls / ((t1 - t0) / plan.weather_interval),
            "bytes": bytes1 - bytes0,
        }
        # latency is judged a little after the window's end, when late values have had time to arrive
        result.update(window_stats(viewers, api, t0, t1 - 1.0, plan.price_interval))
        result["errors"] = sorted({v.error for v in viewers if getattr(v, "error", None)})[:3]
        return result

    async def _main_phases(self, spec: AppSpec, served: Served, api: RecordingAPI, browser) -> dict[str, Any]:
        plan = self.plan
        out: dict[str, Any] = {}
        keep = self.keep_for(api)
        updates_per_s = 1 / plan.price_interval + 1 / plan.weather_interval

        # time to first render: a warm-up page (imports, first session), then fresh pages one after another
        warm = await PageViewer(browser, served.url, keep).open()
        with contextlib.suppress(Exception):
            await warm.first_render()
        await warm.close()
        ttfr, console = [], []
        for _ in range(plan.ttfr_pages):
            start = time.monotonic()
            page = await PageViewer(browser, served.url, keep).open()
            try:
                ttfr.append(await page.first_render())
            except Exception:
                ttfr.append(math.nan)
                self.log(f"  {spec.name}: no chart with data within 60 s of {time.monotonic() - start:.0f} s")
            console += page.console_errors
            await page.close()
        out["ttfr_ms"] = statistics.median(ttfr) if ttfr else None
        out["console_errors"] = sorted(set(console))[:5]
        self.log(f"  {spec.name}: first render {out['ttfr_ms']:.0f} ms")
        await self._quiet(served)  # the closed pages' sessions are destroyed before the idle baseline

        # idle, then N lightweight viewers: calls, CPU, memory, latency at the client
        idle = await self._window(served, api, [], plan.windows)
        self.log(f"  {spec.name}: idle {idle['cpu_s']:.2f} s CPU, {idle['rss_mb']:.0f} MB")
        sweep = []
        viewers: list = []
        for n in plan.viewers + plan.capacity:
            if n in plan.capacity and not sweep[-1].get("held"):
                break  # the ramp goes on only while the server still holds its viewers
            viewers += await self._open_light(spec, served, api, n - len(viewers))
            if len(viewers) < n:
                self.log(f"  {spec.name}: only {len(viewers)} of {n} sessions opened within {OPEN_TIMEOUT:.0f} s each")
                sweep.append({"viewers": n, "opened": len(viewers), "held": False})
                break
            settled = await self._settle(viewers)
            w = await self._window(served, api, viewers, plan.windows)
            w["settled"] = settled
            extra_cpu = w["cpu_s"] / w["seconds"] - idle["cpu_s"] / idle["seconds"]
            w["cpu_ms_per_viewer_update"] = 1000 * extra_cpu / (n * updates_per_s)
            # a saturated server delivers fewer updates than are due: its CPU per update actually delivered
            w["cpu_ms_per_delivered_row"] = 1000 * extra_cpu * w["seconds"] / w["delivered"] if w["delivered"] else None
            w["mb_per_viewer"] = (w["rss_mb"] - idle["rss_mb"]) / n
            w["held"] = bool(
                settled
                and (w["p95_ms"] or math.inf) <= 1000
                and (w["missed_pct"] or 0) <= 1
                and w["price_calls_per_interval"] >= 0.9  # the poller kept its clock
            )
            sweep.append(w)
            self.log(
                f"  {spec.name}: N={n} price calls/interval {w['price_calls_per_interval']:.2f}, "
                f"CPU/viewer/update {w['cpu_ms_per_viewer_update']:.3f} ms, p95 {w['p95_ms'] or math.nan:.0f} ms, "
                f"missed {w['missed_pct'] or 0:.1f} %, {w['rss_mb']:.0f} MB"
            )
            if n in plan.capacity and not w["held"]:
                break  # more sessions would only queue up behind these
        out["idle"] = idle
        out["sweep"] = sweep
        held = [w["viewers"] for w in sweep if w["held"]]
        first_fail = next((w["viewers"] for w in sweep if not w["held"]), None)
        out["viewers_held"] = max((h for h in held if first_fail is None or h < first_fail), default=0)
        out["viewers_held_capped"] = first_fail is None  # the ramp ended before anything failed
        await asyncio.gather(*(v.close() for v in viewers))
        rss_before = idle["rss_mb"]
        # sessions are destroyed Bokeh's unused-session lifetime (15 s) after their websocket closes, once checked
        closed_at = time.monotonic()
        await self._quiet(served)
        out["quiet_after_close_s"] = time.monotonic() - closed_at
        out["rss_after_close_mb"] = served.rss() / 2**20
        out["sessions_after_close"] = (served.health() or {}).get("sessions")  # rtdash's /health counts them
        out["rss_after_close_pct"] = 100 * (out["rss_after_close_mb"] - rss_before) / rss_before

        return out

    async def _page_phases(self, spec: AppSpec, served: Served, api: RecordingAPI, browser) -> dict[str, Any]:
        """Fetch-to-pixel latency in real pages, on a server of its own (an overloaded sweep leaves a queue)."""
        plan = self.plan
        keep = self.keep_for(api)
        out: dict[str, Any] = {}
        out["pages"] = []
        for n in plan.pages:
            pages = []
            for chunk in batched(range(n), 5):
                pages += await asyncio.gather(*(PageViewer(browser, served.url, keep).open() for _ in chunk))
            settled = await self._settle(pages)
            w = await self._window(served, api, pages, plan.windows)
            w["settled"] = settled
            w["console_errors"] = sorted({e for p in pages for e in p.console_errors})[:5]
            out["pages"].append(w)
            self.log(f"  {spec.name}: {n} pages fetch-to-pixel p50 {w['p50_ms'] or math.nan:.0f} ms "
                     f"p95 {w['p95_ms'] or math.nan:.0f} ms, missed {w['missed_pct'] or 0:.1f} %")  # fmt: skip
            await asyncio.gather(*(p.close() for p in pages))
            await self._quiet(served)
        return out

    async def _bytes_phase(self, spec: AppSpec, browser, backlog: int) -> dict[str, Any]:
        """One page, a full backlog, only the price updating: bytes the page receives per new price row."""
        env = {
            "RTDASH_PRICE_INTERVAL": f"{self.plan.price_interval}s",
            "RTDASH_WEATHER_INTERVAL": "3600s",
            "RTDASH_BACKLOG": str(backlog),
        }
        with RecordingAPI() as api:
            served = await asyncio.to_thread(Served, spec, api, env, backlog)
            try:
                page = await PageViewer(browser, served.url, self.keep_for(api)).open()
                # beside the page, a protocol client that tells the charts' data events from the rest of the traffic
                probe = await BokehViewer(served.url, self.keep_for(api)).open() if spec.kind == "bokeh" else None
                with contextlib.suppress(Exception):
                    await page.first_render(120)
                await asyncio.sleep(3)
                await page.drain()
                rows0, bytes0, up0 = len(page.arrivals.items), page.bytes, page.upload_bytes
                if probe is not None:
                    probe.tally = True
                    probe_rows0 = len({v for v, _ in probe.arrivals.items})
                await asyncio.sleep(self.plan.windows)
                await page.drain()
                rows = len({v for v, _ in page.arrivals.items[rows0:]})
                got = page.bytes - bytes0
                result = {
                    "rows": rows,
                    "bytes": got,
                    "bytes_per_row": got / rows if rows else None,
                    "upload_bytes_per_row": (page.upload_bytes - up0) / rows if rows else None,
                    # Dash sends nothing but the charts: its whole answer is chart data
                    "chart_bytes_per_row": got / rows if rows and spec.kind == "dash" else None,
                }
                if probe is not None:
                    probe_rows = len({v for v, _ in probe.arrivals.items}) - probe_rows0
                    result["chart_bytes_per_row"] = probe.chart_bytes / probe_rows if probe_rows else None
                    await probe.close()
                await page.close()
            finally:
                await asyncio.to_thread(served.stop)
        self.log(f"  {spec.name}: backlog {backlog}: {result['bytes_per_row'] or math.nan:,.0f} B per row")
        return result


# -- goals and the table --------------------------------------------------------------------------------------------


def _get(d: dict | None, *path: Any) -> Any:
    for key in path:
        if d is None:
            return None
        d = d[key] if isinstance(d, list) and isinstance(key, int) and -len(d) <= key < len(d) else (
            d.get(key) if isinstance(d, dict) else None)  # fmt: skip
    return d


def sweep_at(result: dict, n: int) -> dict | None:
    return next((w for w in result.get("sweep", []) if w["viewers"] == n), None)


def pages_at(result: dict, n: int) -> dict | None:
    return next((w for w in result.get("pages", []) if w["viewers"] == n), None)


def goals(results: dict[str, dict]) -> list[dict[str, Any]]:
    """Each of the issue's goals for rtdash: met, missed, or not measured (with why)."""
    rt, tut, dash = results.get("rtdash"), results.get("tutorial"), results.get("dash")
    out = []

    def goal(name: str, met: bool | None, detail: str) -> None:
        out.append({"goal": name, "status": "n/a" if met is None else "met" if met else "MISSED", "detail": detail})

    if rt is None:
        return [{"goal": "all", "status": "n/a", "detail": "rtdash was not measured"}]
    calls = [
        (w["viewers"], w["price_calls_per_interval"], w["weather_calls_per_interval"])
        for w in rt.get("sweep", [])
        if "price_calls_per_interval" in w
    ]
    flat = all(0.8 <= p <= 1.2 and 0.7 <= q <= 1.3 for _, p, q in calls) if calls else None
    goal(
        "1 upstream call per source per interval, flat in N",
        flat,
        ", ".join(f"N={n}: {p:.2f}/{q:.2f}" for n, p, q in calls) + " (price/weather)",
    )
    n_cpu = 5  # the largest N of both plans; per update delivered, since a saturated server delivers fewer
    a, b = (
        _get(sweep_at(rt, n_cpu), "cpu_ms_per_delivered_row"),
        _get(sweep_at(tut or {}, n_cpu), "cpu_ms_per_delivered_row"),
    )
    goal(
        "marginal CPU per viewer per update <= 1/5 of the tutorial's",
        None if a is None or b is None else a <= b / 5,
        f"at N={n_cpu}, per price row delivered: rtdash {_fmt(a, '.1f')} ms, tutorial {_fmt(b, '.1f')} ms",
    )
    for backlog in ("1000", "10000"):
        chart = _get(rt, "bytes", backlog, "chart_bytes_per_row")
        if chart is not None:
            goal(f"chart data <= 600 B per chart per row (backlog {backlog})", chart <= 600, f"{chart:,.0f} B")
        r = _get(rt, "bytes", backlog, "bytes_per_row")
        t = _get(tut, "bytes", backlog, "bytes_per_row")
        d = _get(dash, "bytes", backlog, "bytes_per_row")
        if r is None:
            continue
        ok = r <= 600 and (t is None or r * 5 <= t) and (d is None or r * 25 <= d)
        goal(
            f"page bytes per row <= 600 B, >=5x below tutorial, >=25x below Dash (backlog {backlog})",
            ok,
            f"rtdash {r:,.0f} B, tutorial {_fmt(t, ',.0f')} B, Dash {_fmt(d, ',.0f')} B",
        )
    r1, r10 = _get(rt, "bytes", "1000", "bytes_per_row"), _get(rt, "bytes", "10000", "bytes_per_row")
    if r1 and r10:
        goal("bytes per row flat in backlog (1k vs 10k)", r10 <= 1.2 * r1, f"{r1:,.0f} B vs {r10:,.0f} B")
    at20 = pages_at(rt, 20)
    p95 = _get(at20, "p95_ms")
    if at20 is not None and p95 is None:  # the pages were open, and no new value was painted in the window
        goal("fetch-to-pixel p95 < 300 ms at N=20", False, f"no new value painted, {_fmt(at20['missed_pct'])} % missed")
    else:
        goal("fetch-to-pixel p95 < 300 ms at N=20", None if p95 is None else p95 < 300, f"p95 {_fmt(p95)} ms")
    held = rt.get("viewers_held")
    goal(
        "viewers held at 1 Hz >= 100",
        None if held is None else held >= 100,
        f"{held}{'+ (ramp ended)' if rt.get('viewers_held_capped') else ''}",
    )
    mb = [w["mb_per_viewer"] for w in rt.get("sweep", []) if w["viewers"] >= 20 and "mb_per_viewer" in w]
    goal("memory per viewer <= 10 MB", None if not mb else max(mb) <= 10, ", ".join(f"{m:.2f} MB" for m in mb))
    after = rt.get("rss_after_close_pct")
    goal(
        "RSS within 10 % of the pre-viewer level after viewers close",
        None if after is None else after <= 10,
        f"{after if after is None else round(after, 1)} % above",
    )
    t_r, t_t = rt.get("ttfr_ms"), _get(tut, "ttfr_ms")
    goal(
        "time to first render <= the tutorial's",
        None if t_r is None or t_t is None else t_r <= t_t,
        f"rtdash {t_r if t_r is None else round(t_r)} ms, tutorial {t_t if t_t is None else round(t_t)} ms",
    )
    return out


def _fmt(value: Any, spec: str = ".0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def table(results: dict[str, dict], plan: Plan) -> str:
    names = list(results)
    rows: list[tuple[str, ...]] = []

    def row(label: str, fn: Callable[[dict], str]) -> None:
        rows.append((label, *(fn(results[n]) for n in names)))

    def calls(r: dict, n: int) -> str:
        w = sweep_at(r, n)
        if w is not None and "opened" in w:
            return f"opened {w['opened']} of {n}"
        return (
            f"{_fmt(_get(w, 'price_calls_per_interval'), '.2f')} / {_fmt(_get(w, 'weather_calls_per_interval'), '.2f')}"
        )

    for n in plan.viewers + plan.capacity:
        row(f"price / weather API calls per interval, N={n}", lambda r, n=n: calls(r, n))
    for n in plan.viewers:
        row(f"marginal CPU per viewer per update due / delivered, N={n} (ms)",
            lambda r, n=n: (f"{_fmt(_get(sweep_at(r, n), 'cpu_ms_per_viewer_update'), '.1f')} / "
                            f"{_fmt(_get(sweep_at(r, n), 'cpu_ms_per_delivered_row'), '.1f')}"))  # fmt: skip
    for backlog in plan.backlogs:
        row(f"bytes received per new price row, backlog {backlog}",
            lambda r, b=str(backlog): _fmt(_get(r, "bytes", b, "bytes_per_row"), ",.0f"))  # fmt: skip
        row(f"  of which chart data events, backlog {backlog}",
            lambda r, b=str(backlog): _fmt(_get(r, "bytes", b, "chart_bytes_per_row"), ",.0f"))  # fmt: skip
        row(f"  bytes sent up per row (Dash's store), backlog {backlog}",
            lambda r, b=str(backlog): _fmt(_get(r, "bytes", b, "upload_bytes_per_row"), ",.0f"))  # fmt: skip
    for n in plan.pages:
        row(f"fetch-to-pixel p50 / p95, {n} page(s) (ms)",
            lambda r, n=n: f"{_fmt(_get(pages_at(r, n), 'p50_ms'))} / "
                           f"{_fmt(_get(pages_at(r, n), 'p95_ms'))}")  # fmt: skip
        row(f"  missed updates, {n} page(s) (%)", lambda r, n=n: _fmt(_get(pages_at(r, n), "missed_pct"), ".1f"))
    for n in plan.viewers + plan.capacity:
        row(f"fetch-to-client p95 / missed, N={n} lightweight (ms / %)",
            lambda r, n=n: (f"{_fmt(_get(sweep_at(r, n), 'p95_ms'))} / "
                            f"{_fmt(_get(sweep_at(r, n), 'missed_pct'), '.1f')}"))  # fmt: skip
    row("viewers held at 1 Hz (p95 <= 1 s, <= 1 % missed)",
        lambda r: f"{r.get('viewers_held')}{'+' if r.get('viewers_held_capped') else ''}")  # fmt: skip
    for n in plan.viewers:
        row(f"memory per viewer, N={n} (MB)", lambda r, n=n: _fmt(_get(sweep_at(r, n), "mb_per_viewer"), ".2f"))
    row("RSS idle → after all viewers closed (MB)",
        lambda r: f"{_fmt(_get(r, 'idle', 'rss_mb'))} → {_fmt(r.get('rss_after_close_mb'))}")  # fmt: skip
    row("s until no session left and CPU idle, after close", lambda r: _fmt(r.get("quiet_after_close_s")))
    row("sessions left after all viewers closed (/health)", lambda r: _fmt(r.get("sessions_after_close"), "d"))
    row("time to first render (ms)", lambda r: _fmt(r.get("ttfr_ms")))
    row("tracebacks in the server log", lambda r: _fmt(r.get("server_tracebacks"), "d"))
    widths = [max(len(x[i]) for x in [("figure", *names), *rows]) for i in range(len(names) + 1)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(("figure", *names), widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import bokeh
    import holoviews
    import hvplot
    import pandas
    import panel
    import streamz

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    versions = {m.__name__: m.__version__ for m in (panel, bokeh, holoviews, hvplot, streamz, pandas)}
    try:
        import dash

        versions["dash"] = dash.__version__
    except ImportError:
        versions["dash"] = None
    from playwright._repo_version import version as playwright_version

    versions["playwright"] = playwright_version
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "cpu": model,
        "python": platform.python_version(),
        "versions": versions,
    }


async def run(plan: Plan, apps: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    results: dict[str, dict] = {}
    bench = Bench(plan, log)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for name in apps:
                spec = APPS[name]
                if not spec.script.exists():
                    log(f"{name}: {spec.script} does not exist yet; skipped")
                    continue
                log(f"{name} ...")
                start = time.monotonic()
                try:
                    results[name] = await bench.run_app(spec, browser)
                except Exception as exc:  # one app failing must not lose the others' figures
                    log(f"{name}: failed: {exc!r}")
                    results[name] = {"app": name, "error": repr(exc)}
                results[name]["elapsed_s"] = time.monotonic() - start
        finally:
            await browser.close()
    return {"machine": machine(), "plan": asdict(plan), "results": results, "goals": goals(results)}


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, N up to 20, backlog 1k only (~3 min)")
    parser.add_argument("--apps", default="rtdash,tutorial,dash", help="comma-separated, of rtdash, tutorial, dash")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = sorted(set(apps) - set(APPS))
    if unknown:
        parser.error(f"unknown app(s) {', '.join(unknown)}: valid are {', '.join(APPS)}")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    signal.signal(signal.SIGTERM, _interrupt)  # a killed run still stops the servers it started
    report = asyncio.run(run(plan, apps, log))
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    print()
    print(table(report["results"], plan))
    print()
    for g in report["goals"]:
        print(f"{g['status']:>6}  {g['goal']}: {g['detail']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
