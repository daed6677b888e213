"""Where a closed session's memory goes: what Python still holds (tracemalloc) against the process's RSS.

    python -m benchmarks.memory [--sessions 20] [--rounds 2] [--untraced]

Serves rtdash in this process (a Panel server on its own thread, the fake API beside it), then ``rounds`` times
opens ``sessions`` lightweight sessions, lets them update for a few seconds, closes them and waits until the server
has destroyed every one.  After each round it prints the RSS and the memory Python's allocations still hold
(``tracemalloc``, after a ``gc.collect()``; the objects rtdash.server froze out of the collector's scans are put
back first, and counted), and at the end the object types whose count grew.  A leak shows as
traced memory that grows with each round; memory the allocator keeps for reuse shows as RSS that stays up while
the traced memory falls back.  (tracemalloc slows the server down several times over: the figures are about memory.)

``--untraced`` leaves tracemalloc off and counts the objects the garbage collector tracks instead (every model,
document, frame and container a session holds: ~13,000 per open session), several times faster; what it misses is
memory held by untracked objects alone (bytes or numbers kept in a container that was already there).  The test
suite runs it that way.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.run import PAGE_SIZE, UNCAPPED, BokehViewer, RecordingAPI, batched
from rtdash.views.live import warm_up
from tests.helpers import PanelServer, fake_env


def sessions(server: PanelServer) -> int:
    return server.on_loop(lambda: len(server.server.get_sessions("/")))


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_SIZE / 2**20


def census(settings) -> tuple[float | None, collections.Counter]:
    """Traced MB (None when not tracing) and the garbage collector's objects counted by type, after a full
    collection, with the charts' spare copies all made (the sessions took some, made again a few seconds later:
    counted full every time, not as they happen to be)."""
    warm_up(settings)
    collect_all()
    traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else None
    return traced, collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def collect_all() -> None:
    """A full collection, of the objects rtdash.server froze out of the collector's scans too (put back first, so
    that they are collected, and listed by ``gc.get_objects``)."""
    gc.unfreeze()
    gc.collect()


async def one_round(server: PanelServer, n: int, seconds: float) -> dict[str, Any]:
    viewers: list[BokehViewer] = []
    for chunk in batched(range(n), 5):
        viewers += await asyncio.gather(*(BokehViewer(server.url + "/", lambda v: True).open() for _ in chunk))
    await asyncio.sleep(seconds)
    for _ in range(120):  # and until each has had an update (the client shares this process, and its GIL)
        if all(v.arrivals.items for v in viewers):
            break
        await asyncio.sleep(0.5)
    open_rss = rss_mb()
    open_objects = await asyncio.to_thread(server.on_loop, lambda: (collect_all(), len(gc.get_objects()))[1])
    updated = sum(1 for v in viewers if v.arrivals.items)
    await asyncio.gather(*(v.close() for v in viewers))
    for _ in range(120):  # sessions are destroyed a moment after their websocket closes
        if await asyncio.to_thread(sessions, server) == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # Panel's debounced gc.collect
    return {
        "sessions": n,
        "updated": updated,
        "rss_open_mb": open_rss,
        "objects_open": open_objects,
        "left": await asyncio.to_thread(sessions, server),
    }


async def measure(
    sessions: int, rounds: int, seconds: float, *, traced: bool = True, log=lambda line: None
) -> dict[str, Any]:
    with RecordingAPI() as api:
        env = fake_env(api.url, RTDASH_PRICE_INTERVAL="1s", RTDASH_WEATHER_INTERVAL="2s", **UNCAPPED)
        with mock.patch.dict(os.environ, env):
            from rtdash.app import create_app  # imported before tracing starts: tracing an import is slow
            from rtdash.config import Settings

            settings = Settings.load(argv=[])

            if traced:
                tracemalloc.start(1)
            # A closed session is destroyed within a second or two, not Bokeh's 15-32 s: the rounds wait for it.
            server = PanelServer(
                lambda: create_app(argv=[]),
                check_unused_sessions_milliseconds=500,
                unused_session_lifetime_milliseconds=1000,
            )
            try:
                await one_round(server, 2, 3)  # warm: imports, the chart templates, the first session's caches
                traced0, counts0 = server.on_loop(lambda: census(settings))
                steps = [{"round": 0, "rss_mb": rss_mb(), "traced_mb": traced0, "objects": counts0.total()}]
                log(f"after warm-up: RSS {steps[0]['rss_mb']:.0f} MB, {_held(steps[0])}")
                for k in range(1, rounds + 1):
                    step = await one_round(server, sessions, seconds)
                    traced_mb, counts = server.on_loop(lambda: census(settings))
                    step.update({"round": k, "rss_mb": rss_mb(), "traced_mb": traced_mb, "objects": counts.total()})
                    steps.append(step)
                    log(f"round {k}: {sessions} sessions open: RSS {step['rss_open_mb']:.0f} MB; all closed "
                        f"({step['left']} left): RSS {step['rss_mb']:.0f} MB, {_held(step)}")  # fmt: skip
            finally:
                server.stop()
                tracemalloc.stop()
    return {
        "sessions_per_round": sessions,
        "steps": steps,
        "traced_growth_mb": steps[-1]["traced_mb"] - traced0 if traced else None,
        "objects_growth": steps[-1]["objects"] - steps[0]["objects"],
        # what one open session holds: the objects counted with a round's sessions open, less those after the round
        "objects_per_session": min((s["objects_open"] - s["objects"]) / sessions for s in steps[1:]),
        "rss_growth_mb": steps[-1]["rss_mb"] - steps[0]["rss_mb"],
        "rss_growth_last_round_mb": steps[-1]["rss_mb"] - steps[-2]["rss_mb"] if rounds > 1 else None,
        "objects_grown": (counts - counts0).most_common(8),
    }


def _held(step: dict[str, Any]) -> str:
    traced = "" if step["traced_mb"] is None else f"traced {step['traced_mb']:.1f} MB, "
    return f"{traced}{step['objects']:,} objects"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions opened per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds the sessions stay open")
    parser.add_argument("--untraced", action="store_true", help="count objects only (no tracemalloc): faster")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    result = asyncio.run(measure(args.sessions, args.rounds, args.seconds, traced=not args.untraced, log=log))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
