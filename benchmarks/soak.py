"""Soak: a fast interval for a long time with sessions continually opening and closing.

    python -m benchmarks.soak                                       # short: 60 s, 20 s warm-up
    python -m benchmarks.soak --duration 1800 --warmup 300          # the issue's run: 30 minutes at 200 ms

Reports the RSS slope after warm-up (goal < 1 MB per hour), whether the open session count (``/health``) returns to
zero once the last session closes, and the upstream calls per interval (goal: one, whatever the churn).  Both
sources poll at the interval, and the live charts keep ``backlog`` points per series: a session's charts, and so the
RSS, grow until ``backlog × interval`` seconds, which the warm-up must cover for the slope to measure a leak, not
the charts filling up (the run warns if it does not).  Prints JSON.  Bounded: it stops after ``--duration`` by
itself, then waits at most ``--drain`` seconds for the sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import numpy as np

from benchmarks.run import APPS, BokehViewer, RecordingAPI, Served, calls_between, traceback_report


async def soak(
    app: str = "rtdash",
    duration: float = 60.0,
    warmup: float = 20.0,
    interval: float = 0.2,
    concurrent: int = 8,
    lifetime: tuple[float, float] = (2.0, 10.0),
    backlog: int = 1000,
    drain: float = 30.0,
    seed: int = 0,
    log=lambda line: None,
) -> dict[str, Any]:
    """Serve ``app``; keep about ``concurrent`` sessions open, each for a random ``lifetime``, for ``duration``."""
    spec = APPS[app]
    rng = random.Random(seed)
    env = {
        "RTDASH_PRICE_INTERVAL": f"{interval}s",
        "RTDASH_WEATHER_INTERVAL": f"{interval}s",
        "RTDASH_BACKLOG": str(backlog),
    }
    if warmup < backlog * interval:
        log(f"warning: the charts fill up until {backlog * interval:.0f} s, after the {warmup:.0f} s warm-up")
    with RecordingAPI() as api:
        # Sessions that close go within a second (as in the tests' server), not Bokeh's 15 s: the soak counts them.
        served = await asyncio.to_thread(Served, spec, api, env, unused_session_lifetime_ms=1000)
        live: set[BokehViewer] = set()
        opened = closed = failed = 0
        samples: list[tuple[float, float]] = []
        try:

            async def visit() -> None:
                nonlocal opened, closed, failed
                viewer = BokehViewer(served.url, lambda v: True)
                try:
                    await asyncio.wait_for(viewer.open(), 60)
                except Exception:
                    failed += 1
                    await viewer.close()
                    return
                opened += 1
                live.add(viewer)
                await asyncio.sleep(rng.uniform(*lifetime))
                live.discard(viewer)
                await viewer.close()
                closed += 1

            t0 = time.time()
            tasks: set[asyncio.Task] = set()
            next_sample = 0.0
            while (now := time.time() - t0) < duration:
                tasks = {t for t in tasks if not t.done()}
                while len(tasks) < concurrent:
                    tasks.add(asyncio.ensure_future(visit()))
                if now >= next_sample:
                    samples.append((now, served.rss() / 2**20))
                    next_sample = now + 5
                    if len(samples) % 12 == 1:
                        log(f"{now:.0f} s: RSS {samples[-1][1]:.1f} MB, {opened} opened, {closed} closed")
                await asyncio.sleep(0.2)
            t1 = time.time()
            await asyncio.gather(*tasks, return_exceptions=True)
            # the sessions are destroyed a little after their websockets close
            sessions_left = None
            deadline = time.monotonic() + drain
            while time.monotonic() < deadline:
                health = served.health()
                sessions_left = None if health is None else health.get("sessions")
                if sessions_left == 0 or health is None:
                    break
                await asyncio.sleep(0.5)
            after = [(t, rss) for t, rss in samples if t >= warmup]
            slope = (
                float(np.polyfit([t for t, _ in after], [r for _, r in after], 1)[0]) * 3600 if len(after) > 2 else None
            )
            result = {
                "app": app,
                "duration_s": t1 - t0,
                "warmup_s": warmup,
                "interval_s": interval,
                "backlog_full_after_s": backlog * interval,
                "sessions_opened": opened,
                "sessions_closed": closed,
                "sessions_failed_to_open": failed,
                "sessions_left": sessions_left,
                "rss_start_mb": samples[0][1] if samples else None,
                "rss_end_mb": served.rss() / 2**20,
                "rss_slope_mb_per_hour": slope,
                "price_calls_per_interval": calls_between(api, "coinbase", t0, t1) / ((t1 - t0) / interval),
                **traceback_report(served.app.output()),
            }
        finally:
            await asyncio.gather(*(v.close() for v in list(live)))
            await asyncio.to_thread(served.stop)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="rtdash", choices=[n for n, s in APPS.items() if s.kind == "bokeh"])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (the full run: 1800)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds left out of the RSS slope (full: 300)")
    parser.add_argument("--interval", type=float, default=0.2, help="price interval, seconds")
    parser.add_argument("--concurrent", type=int, default=8, help="sessions open at a time")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = asyncio.run(soak(args.app, args.duration, args.warmup, args.interval, args.concurrent, log=log))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
