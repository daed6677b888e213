"""History tab benchmark at 10 million rows: "every point" (datashader on the raw rows) beside the bucket path.

    python benchmarks/bench_history.py                  # DuckDB and a temporary PostgreSQL 15, 10,000,000 rows
    python benchmarks/bench_history.py --backends duckdb --rows 2000000

The store is filled by the database itself (``INSERT ... SELECT`` over ``range``/``generate_series``, into the tables
the store creates: one asset, rows 0.25 s apart), then every (backend, path) is measured in a fresh Python process:

- first render, fresh process: ``HistoryView`` on range "All" (query, HoloViews, datashader, Bokeh models), numba's
  compilation of datashader's kernels included (a served app compiles them when a session first uses the tab);
- first render, warm: the same again in that process;
- zooms: the same sequence of zooms and pans for both paths (50 %, 10 %, 1 %, 0.1 % of the range, two pans of half a
  view, back out to 10 % and to the whole range; three rounds, each slightly shifted so that no result is cached),
  each timed from the range change to the updated Bokeh models, reads from the store included.  Server-side figures,
  not the browser's drawing; the raster is 1,100 × 420 px, a History chart's size on a 1,400 px wide page.

Prints JSON and a table, and writes the table to BENCHMARKS.md under "### Every point" in the "History store" section
(a "####" note after it is kept).  Not a test: no assertions on times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBSECTION = "### Every point and buckets at 10 million rows"
STEP_US = 250_000
PLOT_SIZE = (1100, 420)


def fill_duckdb(path: Path, rows: int, end_us: int) -> None:
    import duckdb

    from rtdash.store.duckdb import DuckDBStore

    DuckDBStore(path).close()  # the schema the app creates
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO price (time, asset, quote, price, source) "
            f"SELECT make_timestamptz({end_us - (rows - 1) * STEP_US} + i * {STEP_US}), 'BTC', 'USD', "
            "60000 + 2000 * sin(i / 400000.0) + 300 * sin(i / 7000.0) + (hash(i) % 1000) / 10.0, 'bench' "
            f"FROM range({rows}) AS t(i)"
        )


def fill_postgres(url: str, rows: int, end_us: int) -> None:
    import psycopg

    from rtdash.store.postgres import PostgresStore

    with PostgresStore(url) as store:
        store.ping()  # the schema the app creates
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(
            "INSERT INTO price (time, asset, quote, price, source) "
            f"SELECT to_timestamp(({end_us - (rows - 1) * STEP_US} + i * {STEP_US}) / 1e6), 'BTC', 'USD', "
            "60000 + 2000 * sin(i / 400000.0) + 300 * sin(i / 7000.0) + (hashint8(i) % 1000) / 10.0, 'bench' "
            f"FROM generate_series(0::int8, {rows - 1}) AS i"
        )
        con.execute("VACUUM ANALYZE price")


def zooms(start, end, rounds: int = 3) -> list[tuple]:
    """The zoom and pan sequence, as naive UTC (the plot's) ranges; each round shifted a little."""
    span = end - start
    out = []
    for r in range(rounds):
        middle = start + span / 2 + span * r / 997
        for fraction in (0.5, 0.1, 0.01, 0.001):
            out.append((middle - span * fraction / 2, middle + span * fraction / 2))
        view = span * 0.001
        for k in (1, 2):
            out.append((middle - view / 2 + view * k / 2, middle + view / 2 + view * k / 2))
        out.append((middle - span * 0.05, middle + span * 0.05))
        out.append((start - span * (r + 1) / 1000, end))
    return [(a.tz_localize(None), b.tz_localize(None)) for a, b in out]


def measure(url: str, mode: str) -> dict:
    """In this (fresh) process: first renders and the zoom sequence of ``mode`` ("buckets" or "points")."""
    import holoviews as hv
    from holoviews.streams import PlotSize

    from rtdash.config import Settings
    from rtdash.stream import Runtime
    from rtdash.views.history import HistoryView

    settings = Settings.load(environ={"RTDASH_STORE": url, "RTDASH_ASSETS": "BTC"}, dotenv=None)
    runtime = Runtime(settings)  # not started: only its store
    renderer = hv.renderer("bokeh")

    def render() -> tuple[float, HistoryView, object]:
        started = time.perf_counter()
        view = HistoryView(runtime=runtime, span="All", every_point=mode == "points")
        obj = view._plot.object
        for stream in getattr(obj, "streams", []):
            if isinstance(stream, PlotSize):  # the size a browser reports, before the first aggregation
                stream.update(width=PLOT_SIZE[0], height=PLOT_SIZE[1])
        plot = renderer.get_plot(obj)
        return time.perf_counter() - started, view, plot

    try:
        cold, _, _ = render()
        warm, view, _plot = render()  # the plot stays alive: the zooms update it
        times, rows, reads = [], [], []
        for window in zooms(*view._bounds):
            before = (view._held, view._fine)
            started = time.perf_counter()
            if mode == "points":  # its axis is epoch milliseconds
                view._zoom.event(x_range=tuple(t.value / 1e6 for t in window), y_range=None)
            else:
                view._zoom.event(x_range=window)
            times.append(time.perf_counter() - started)
            reads.append((view._held, view._fine) != before)
            rows.append(len(view._frame) if mode == "points" else int(view._pipe.data["count"].sum()))
        times_ms = sorted(1000 * t for t in times)
        read_ms = sorted(1000 * t for t, read in zip(times, reads, strict=True) if read)
        held_ms = sorted(1000 * t for t, read in zip(times, reads, strict=True) if not read)
        return {
            "mode": mode,
            "rows": runtime.store.count("price", series=["BTC"]),
            "first_render_fresh_s": cold,
            "first_render_warm_s": warm,
            "zooms": len(times),
            "zoom_p50_ms": statistics.median(times_ms),
            "zoom_p95_ms": _p95(times_ms),
            "zoom_max_ms": times_ms[-1],
            "zooms_reading": len(read_ms),
            "zoom_reading_p95_ms": _p95(read_ms),
            "zoom_held_p95_ms": _p95(held_ms),
            "zoom_ms": [round(1000 * t, 1) for t in times],
            "rows_held": rows,
            "detail": view._summary.object,
        }
    finally:
        runtime.stop()


def _p95(sorted_ms: list[float]) -> float | None:
    return sorted_ms[min(len(sorted_ms) - 1, round(0.95 * (len(sorted_ms) - 1)))] if sorted_ms else None


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def run_child(url: str, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", url, "--mode", mode], capture_output=True, text=True, timeout=1800
    )
    if done.returncode:
        raise RuntimeError(f"measuring {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = [
        "| backend | path | first render, fresh process | first render, warm | zoom p50 | zoom p95 | zoom max "
        "| p95 of zooms that read the store (n) | p95 of the others |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        path = "every point (datashader, raw rows)" if r["mode"] == "points" else "buckets (DB) + downsample1d"
        lines.append(
            f"| {r['backend']} | {path} | {r['first_render_fresh_s']:.2f} s | {r['first_render_warm_s']:.2f} s "
            f"| {r['zoom_p50_ms']:.0f} ms | {r['zoom_p95_ms']:.0f} ms | {r['zoom_max_ms']:.0f} ms "
            f"| {_ms(r['zoom_reading_p95_ms'])} ({r['zooms_reading']}) | {_ms(r['zoom_held_p95_ms'])} |"
        )
    return "\n".join(lines)


def write_markdown(text: str, path: Path) -> None:
    """Put ``text`` in place of this subsection of the "History store" section (at its end when new)."""
    old = path.read_text()
    start = old.find(SUBSECTION)
    if start == -1:
        section = old.find("## History store")
        nxt = old.find("\n## ", section + 1) if section != -1 else -1
        at = nxt + 1 if nxt != -1 else len(old)
        new = old[:at].rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n\n" + old[at:]
    else:
        ends = (old.find(mark, start + 1) for mark in ("\n## ", "\n### ", "\n#### "))  # "####" notes are kept
        nxt = min((i for i in ends if i != -1), default=-1)
        new = old[:start] + text.rstrip("\n") + "\n" + (old[nxt:] if nxt != -1 else "")
    path.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the store (10,000,000)")
    parser.add_argument("--backends", default="duckdb,postgresql", help="duckdb, postgresql or both")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"), help="file to update ('' for none)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a child: measure this store
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode), default=str))
        return 0
    if not 1_000 <= args.rows <= 100_000_000:
        parser.error(f"--rows must be between 1,000 and 100,000,000, got {args.rows:,}")
    workdir = Path(tempfile.mkdtemp(prefix="rtdash-bench-history-"))
    server = None
    results = []
    end_us = time.time_ns() // 1000 // STEP_US * STEP_US
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            started = time.perf_counter()
            if backend == "duckdb":
                url = str(workdir / "history.duckdb")
                fill_duckdb(Path(url), args.rows, end_us)
            else:
                from tests.store.conftest import PostgresServer

                server = PostgresServer()
                server.start(durable=True)
                url = server.new_database()
                fill_postgres(url, args.rows, end_us)
            print(f"{backend}: filled {args.rows:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            for mode in ("buckets", "points"):
                result = {"backend": backend, **run_child(url, mode)}
                print(f"  {mode}: {json.dumps({k: v for k, v in result.items() if k != 'zoom_ms'})}", file=sys.stderr)
                results.append(result)
            if server is not None:
                server.destroy()
                server = None
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(json.dumps({"rows": args.rows, "machine": machine, "results": results}, indent=2, default=str))
    text = table(results)
    print(text)
    if args.markdown:
        note = (
            f"{SUBSECTION}\n\n`python benchmarks/bench_history.py --rows {args.rows}` on {machine}, "
            f'{time.strftime("%Y-%m-%d")}: {args.rows:,} price rows of one asset, 0.25 s apart, range "All"; '
            "each path in a fresh process. The zooms: 50 %, 10 %, 1 %, 0.1 % of the range, two pans, back out to 10 % "
            "and to all, three rounds; timed from the range change to the updated Bokeh models, reads from the store "
            "included (on a served page the read runs on a worker thread while the rows already held are "
            "re-aggregated at once). Server-side figures, not the browser's drawing.\n\n"
        )
        write_markdown(note + text + "\n", Path(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
