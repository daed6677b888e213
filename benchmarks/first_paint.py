"""How fast the first chart appears: ``python -m benchmarks.first_paint [--pages 5] [--cold 2] [--apps ...]``.

Each app is served by its real command (``panel serve``, rtdash with ``--plugins rtdash.server`` as its deployment
docs serve it; Dash's own server) against the local imitation API (``tests/fakeapi.py``), price and weather every
1 s, and opened in headless Chromium (``/usr/bin/chromium``):

* **cold** — the first page, opened as soon as the server answers ``/liveness`` (a new server each time);
* **warm** — first visits: a fresh browser context each (no cache), one after another, after the last cold page;
* **repeat** — the same context visits again (the browser's cache and connections kept), one after another.

Per page, in ms from navigation start: the HTML's first byte (``responseStart``) and its end (``responseEnd``:
Playwright's ``commit``), DOMContentLoaded, the load event, the websocket open and its first message, and the first
chart with data painted (the probe of :mod:`benchmarks.run`: a BokehJS data source with data in a page with a
canvas, or a Plotly graph with data, then one animation frame).  Bytes of the page's resources from the Resource
Timing API: on the wire (``transferSize``: compressed, 0 when served from the cache) and decoded.  Server time per
session: ``responseStart − requestStart`` of the page (the session is built inside the page's request) and, for
rtdash, ``rtdash_session_build_seconds`` from ``/metrics`` (the time in ``create_app``).

Prints a table per app and the issue-16 goals, MET or MISSED with the figure, and for a missed one where its time
went (:func:`where`); ``--json`` also writes the figures.
Benchmarks are measurements, never assertions.  The machine's load changes every figure: medians are printed, and
the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.run import APPS, CHROMIUM, CHROMIUM_ARGS, PROBE_JS, Served, machine
from tests.fakeapi import FakeAPI

GOALS = {"warm": 1200.0, "repeat": 600.0, "cold": 2500.0, "session_ms": 100.0}  # issue 16, ms
PAINT_TIMEOUT = 60.0

# Records when the page's websocket opened and brought its first message, and how many bytes it brought until then.
WS_JS = r"""
(() => {
  const W = window.__ws = {open: null, first: null, bytes: 0};
  const Native = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener('open', () => { if (W.open === null) W.open = performance.now(); });
    ws.addEventListener('message', (e) => {
      if (W.first === null) W.first = performance.now();
      W.bytes += typeof e.data === 'string' ? e.data.length : (e.data.byteLength || e.data.size || 0);
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""

# Navigation and resource timing, read after the first chart is painted.
TIMING_JS = r"""
() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource').map((r) => ({
    name: r.name, type: r.initiatorType, transfer: r.transferSize, encoded: r.encodedBodySize,
    decoded: r.decodedBodySize, end: r.responseEnd}));
  return {
    request: nav.requestStart, first_byte: nav.responseStart, html: nav.responseEnd,
    dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd || null,
    html_transfer: nav.transferSize, html_decoded: nav.decodedBodySize,
    ws_open: window.__ws.open, ws_first: window.__ws.first, ws_bytes: window.__ws.bytes,
    painted: window.__probe.first, resources: res,
  };
}
"""


async def visit(context, url: str) -> dict[str, Any]:
    """Open ``url`` in a new page of ``context``; the page's timings once its first chart with data is painted."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(url, wait_until="commit", timeout=120_000)
        await page.wait_for_function("window.__probe && window.__probe.first > 0", timeout=PAINT_TIMEOUT * 1000)
        timing = await page.evaluate(TIMING_JS)
        timing["errors"] = errors[:3]
        return timing
    finally:
        with contextlib.suppress(Exception):
            await page.close()


async def new_context(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    await context.add_init_script(PROBE_JS)
    await context.add_init_script(WS_JS)
    return context


def session_build(served: Served) -> tuple[float, int]:
    """rtdash's ``rtdash_session_build_seconds`` sum and count from ``/metrics`` ((0, 0) where there is none)."""
    try:
        text = requests.get(served.app.url + "/metrics", timeout=5).text
    except requests.RequestException:
        return 0.0, 0
    total = re.search(r"^rtdash_session_build_seconds_sum\S* (\S+)$", text, re.M)
    count = re.search(r"^rtdash_session_build_seconds_count\S* (\S+)$", text, re.M)
    return (float(total.group(1)), int(float(count.group(1)))) if total and count else (0.0, 0)


async def measure_app(name: str, browser, pages: int, colds: int, env: dict[str, str], log) -> dict[str, Any]:
    spec = APPS[name]
    out: dict[str, Any] = {"app": name, "cold": [], "warm": [], "repeat": []}
    with FakeAPI() as api:
        for i in range(max(colds, 1)):
            t0 = time.monotonic()
            served = await asyncio.to_thread(Served, spec, api, env)
            started = time.monotonic() - t0
            try:
                context = await new_context(browser)
                try:
                    out["cold"].append({**await visit(context, served.url), "server_start_s": started})
                finally:
                    await context.close()
                log(f"  {name}: cold page {i + 1}: {out['cold'][-1]['painted']:.0f} ms (server up in {started:.1f} s)")
                if i < max(colds, 1) - 1:
                    continue
                await asyncio.sleep(3)  # the first page's session is gone before the warm pages start
                before = session_build(served)
                for _ in range(pages):
                    context = await new_context(browser)
                    try:
                        out["warm"].append(await visit(context, served.url))
                    finally:
                        await context.close()
                after = session_build(served)
                if after[1] > before[1]:
                    out["session_build_ms"] = 1000 * (after[0] - before[0]) / (after[1] - before[1])
                context = await new_context(browser)
                try:
                    await visit(context, served.url)  # fills the cache
                    for _ in range(pages):
                        out["repeat"].append(await visit(context, served.url))
                finally:
                    await context.close()
            finally:
                await asyncio.to_thread(served.stop)
    return out


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Medians per kind of visit, and the bytes of a warm first visit."""
    rows = {}
    for kind in ("cold", "warm", "repeat"):
        visits = result[kind]
        if not visits:
            continue
        rows[kind] = {
            key: median(v[key] for v in visits)
            for key in ("first_byte", "html", "dcl", "load", "ws_open", "ws_first", "painted")
        }
        rows[kind]["server_ms"] = median(v["first_byte"] - v["request"] for v in visits)
        rows[kind]["transfer"] = median(v["html_transfer"] + sum(r["transfer"] for r in v["resources"]) for v in visits)
        rows[kind]["decoded"] = median(v["html_decoded"] + sum(r["decoded"] for r in v["resources"]) for v in visits)
        rows[kind]["ws_bytes"] = median(v["ws_bytes"] for v in visits)
        rows[kind]["n"] = len(visits)
        rows[kind]["all_painted"] = [round(v["painted"]) for v in visits]
    warm = result["warm"][0] if result["warm"] else None
    if warm is not None:
        biggest = sorted(warm["resources"], key=lambda r: -r["decoded"])[:8]
        rows["biggest"] = [(r["name"].split("?")[0].rsplit("/", 2)[-1], r["decoded"], r["transfer"]) for r in biggest]
        rows["js_css_decoded"] = sum(r["decoded"] for r in warm["resources"] if re.search(r"\.(js|css)\b", r["name"]))
    return rows


def report(results: dict[str, dict]) -> str:
    lines = []
    labels = [
        ("first_byte", "HTML first byte"),
        ("html", "HTML arrived (commit)"),
        ("dcl", "DOMContentLoaded"),
        ("load", "load event"),
        ("ws_open", "websocket open"),
        ("ws_first", "websocket first message"),
        ("painted", "first chart with data painted"),
        ("server_ms", "server time of the page request"),
    ]
    for name, result in results.items():
        s = summary(result)
        kinds = [k for k in ("cold", "warm", "repeat") if k in s]
        counts = ", ".join(f"{k} n={s[k]['n']}" for k in kinds)
        lines.append(f"\n{name}: ms from navigation start, medians ({counts})")
        lines.append("| step | " + " | ".join(kinds) + " |")
        lines.append("|---|" + "---|" * len(kinds))
        for key, label in labels:
            lines.append(f"| {label} | " + " | ".join(_ms(s[k][key]) for k in kinds) + " |")
        for key, label in (("transfer", "bytes on the wire (HTTP)"), ("decoded", "bytes decoded (HTTP)")):
            lines.append(f"| {label} | " + " | ".join(_kb(s[k][key]) for k in kinds) + " |")
        lines.append("| websocket bytes until painted | " + " | ".join(_kb(s[k]["ws_bytes"]) for k in kinds) + " |")
        for k in kinds:
            lines.append(f"  {k} pages painted at (ms): {s[k]['all_painted']}")
        if "session_build_ms" in result:
            lines.append(f"  session build (create_app, /metrics): {result['session_build_ms']:.0f} ms per session")
        if s.get("biggest"):
            lines.append(f"  JS and CSS decoded on a first visit: {_kb(s['js_css_decoded'])}; the biggest resources:")
            lines += [f"    {n}: {_kb(d)} decoded, {_kb(t)} on the wire" for n, d, t in s["biggest"]]
        errors = sorted({e for k in kinds for v in result[k] for e in v.get("errors", [])})
        if errors:
            lines.append(f"  page errors: {errors[:3]}")
    return "\n".join(lines)


def goals(results: dict[str, dict]) -> list[str]:
    if "rtdash" not in results:
        return []
    s, result = summary(results["rtdash"]), results["rtdash"]
    checks = [
        ("first chart with data, warm first visit", s.get("warm", {}).get("painted"), GOALS["warm"]),
        ("first chart with data, repeat visit", s.get("repeat", {}).get("painted"), GOALS["repeat"]),
        ("first chart with data, cold (first page after start)", s.get("cold", {}).get("painted"), GOALS["cold"]),
        ("server time per new session (create_app)", result.get("session_build_ms"), GOALS["session_ms"]),
    ]
    reasons = [where(s.get(kind)) for kind in ("warm", "repeat", "cold")]
    reasons.append(f"the page request took {_ms(s['warm']['server_ms'])} ms in all" if "warm" in s else "")
    lines = []
    for (label, value, goal), reason in zip(checks, reasons, strict=True):
        status = "?" if value is None else ("MET" if value <= goal else "MISSED")
        lines.append(f"{status:>6}  {label} <= {goal:.0f} ms: {_ms(value)} ms")
        if status == "MISSED" and reason:
            lines.append(f"        where the time went: {reason}")
    return lines


def where(row: dict[str, Any] | None) -> str:
    """The parts of a visit's time to its first chart, from its medians: the server's answer to the page request,
    the page's JavaScript and CSS (fetched, parsed and run until DOMContentLoaded), the websocket's opening, and the
    document's arrival, build and first paint."""
    if not row or row.get("painted") is None:
        return ""
    parts = [
        ("page request", row["first_byte"]),
        (f"JavaScript and CSS until DOMContentLoaded ({_kb(row['decoded'])} decoded)", row["dcl"] - row["first_byte"]),
        ("websocket open and first message", row["ws_first"] - row["dcl"]),
        (f"document ({_kb(row['ws_bytes'])}) sent, built and painted", row["painted"] - row["ws_first"]),
    ]
    return "; ".join(f"{label} {_ms(ms)} ms" for label, ms in parts)


def _ms(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _kb(value) -> str:
    return "–" if value is None else f"{value / 1000:,.0f} KB"


async def run(args, log) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    env = {
        "RTDASH_PRICE_INTERVAL": "1s",
        "RTDASH_WEATHER_INTERVAL": "1s",
        "RTDASH_BACKLOG": "1000",
        **dict(item.split("=", 1) for item in args.env),
    }
    results = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for name in args.apps.split(","):
                log(f"{name} ...")
                results[name] = await measure_app(name, browser, args.pages, args.cold, env, log)
        finally:
            await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_paint", description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=5, help="warm first visits, and repeat visits (5)")
    parser.add_argument("--cold", type=int, default=2, help="cold starts: a new server each (2)")
    parser.add_argument("--apps", default="rtdash,tutorial,dash", help="comma-separated, of rtdash, tutorial, dash")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the servers (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    load0 = os.getloadavg()
    results = asyncio.run(run(args, log))
    load1 = os.getloadavg()
    info = machine()
    versions = info["versions"]
    print(
        f"{info['date']}, {info['nproc']} CPUs, Python {info['python']}, panel {versions['panel']}, "
        f"bokeh {versions['bokeh']}; load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end"
    )
    print(report(results))
    print()
    print("\n".join(goals(results)))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
