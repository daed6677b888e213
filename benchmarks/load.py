"""Load: many concurrent sessions for a while at a fixed interval; missed updates, p95 latency, CPU and RSS.

    python -m benchmarks.load                                    # short: 20 sessions, 30 s
    python -m benchmarks.load --sessions 50 --duration 300       # the issue's run: 50 sessions, 5 minutes, 1 s

The sessions are lightweight Bokeh websocket clients (see ``benchmarks/run.py``) of the served app, against the
local imitation API.  Prints JSON.  Bounded: it stops after ``--duration`` (plus the sessions' opening) by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.run import (
    APPS,
    BokehViewer,
    RecordingAPI,
    Served,
    calls_between,
    traceback_report,
    window_stats,
)


async def load(
    app: str = "rtdash",
    sessions: int = 20,
    duration: float = 30.0,
    interval: float = 1.0,
    weather_interval: float | None = None,
    sample_every: float = 5.0,
    settle: float = 60.0,
    log=lambda line: None,
) -> dict[str, Any]:
    """Serve ``app``, open ``sessions`` sessions, wait (at most ``settle`` s) until each has had an update, then
    hold them for ``duration`` seconds; the figures."""
    spec = APPS[app]
    if spec.kind != "bokeh":
        raise ValueError(f"load drives Bokeh sessions: {app!r} is not a Panel app")
    # the price at the interval; weather ten times slower unless told (the full run's ramp: twice as slow)
    weather = 10 * interval if weather_interval is None else weather_interval
    env = {"RTDASH_PRICE_INTERVAL": f"{interval}s", "RTDASH_WEATHER_INTERVAL": f"{weather}s"}
    with RecordingAPI() as api:
        served = await asyncio.to_thread(Served, spec, api, env)
        viewers: list[BokehViewer] = []
        try:
            rss_start = served.rss()
            keep = lambda v: api.served_at(v) is not None  # noqa: E731
            opened_at = time.monotonic()
            for start in range(0, sessions, 5):
                chunk = [BokehViewer(served.url, keep) for _ in range(min(5, sessions - start))]
                opened = await asyncio.gather(*(asyncio.wait_for(v.open(), 60) for v in chunk), return_exceptions=True)
                viewers += [v for v in opened if isinstance(v, BokehViewer)]
                if len(viewers) < start + len(chunk):
                    log(f"only {len(viewers)} of {start + len(chunk)} sessions opened within 60 s each; stopping there")
                    break
            log(f"{len(viewers)} sessions open in {time.monotonic() - opened_at:.1f} s")
            settle_deadline = time.monotonic() + settle
            while time.monotonic() < settle_deadline and not all(v.arrivals.items for v in viewers):
                await asyncio.sleep(0.2)  # until a first update has reached every session
            settle_s = time.monotonic() - opened_at
            samples = []
            cpu0, t0 = served.cpu(), time.time()
            while time.time() - t0 < duration:
                await asyncio.sleep(min(sample_every, duration - (time.time() - t0)))
                samples.append({"t": time.time() - t0, "rss_mb": served.rss() / 2**20, "cpu_s": served.cpu() - cpu0})
                log(f"{samples[-1]['t']:.0f} s: RSS {samples[-1]['rss_mb']:.0f} MB, CPU {samples[-1]['cpu_s']:.1f} s")
            cpu1, t1 = served.cpu(), time.time()
            stats = window_stats(viewers, api, t0, t1 - 1.0, interval)
            broken = [v.error for v in viewers if v.error]
            health = served.health()
            result = {
                "app": app,
                "sessions": sessions,
                "sessions_opened": len(viewers),
                "duration_s": t1 - t0,
                "interval_s": interval,
                "missed_pct": stats["missed_pct"],
                "p50_ms": stats["p50_ms"],
                "p95_ms": stats["p95_ms"],
                "latency_samples": stats["samples"],
                "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "rss_start_mb": rss_start / 2**20,
                "rss_end_mb": served.rss() / 2**20,
                "rss_max_mb": max(s["rss_mb"] for s in samples),
                "price_calls_per_interval": calls_between(api, "coinbase", t0, t1) / ((t1 - t0) / interval),
                "settle_s": settle_s,
                "sessions_without_updates": sum(1 for v in viewers if not v.arrivals.items),
                "broken_sessions": len(broken),
                "health_sessions": None if health is None else health.get("sessions"),
                **traceback_report(served.app.output()),
                "samples": samples,
            }
        finally:
            await asyncio.gather(*(v.close() for v in viewers))
            await asyncio.to_thread(served.stop)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="rtdash", choices=[n for n, s in APPS.items() if s.kind == "bokeh"])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (the full run: 300)")
    parser.add_argument("--interval", type=float, default=1.0, help="price interval, seconds")
    parser.add_argument("--weather-interval", type=float, help="seconds (default: ten price intervals)")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = asyncio.run(load(args.app, args.sessions, args.duration, args.interval, args.weather_interval, log=log))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
