"""History store benchmark: append throughput, reading 10 million rows, and the History tab at 10 million rows.

    python benchmarks/bench_store.py                    # both backends; PostgreSQL 15 started in a temp dir
    python benchmarks/bench_store.py --backends duckdb --rows 2000000
    python benchmarks/bench_store.py --postgres postgresql://user@host/db   # an existing server (tables created)

For each backend it measures:

- bulk append: the store filled with ``--rows`` price rows of one asset (0.25 s apart, so "All" covers every row),
  written in batches of 50,000 as ``python -m rtdash backfill`` does;
- live-sized append: 2,000 batches of 8 rows (a fetch of a few series), one transaction each;
- read: ``store.read`` of every row into pandas;
- aggregate: ``store.aggregate`` of the whole range into 20,000 buckets (what the History tab asks for);
- History first render: ``HistoryView`` with range "All" (query + plot + Bokeh models);
- History zoom re-render: a zoom to one hour (finer buckets from the database + downsampling + Bokeh update), and
  a zoom that the loaded buckets already resolve (downsampling only).

Prints JSON and a table, and writes the table to BENCHMARKS.md under "## History store" (other sections are kept).
The temporary PostgreSQL runs with its default durability (fsync on).  Not a test: no assertions on times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import holoviews as hv  # noqa: E402
import panel as pn  # noqa: E402

from rtdash.config import Settings  # noqa: E402
from rtdash.store.backfill import CHUNK, aligned_times, simulated_rows  # noqa: E402
from rtdash.stream import Runtime  # noqa: E402
from rtdash.views.history import HistoryView  # noqa: E402

EVERY = pd.Timedelta("250ms")
SECTION = "## History store"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def fill(store, settings: Settings, rows: int) -> dict:
    times = aligned_times(rows * EVERY / pd.Timedelta("1D"), EVERY)[-rows:]
    index = times.asi8 // EVERY.value
    written, spent = 0, 0.0
    for lo in range(0, len(times), CHUNK):
        df = simulated_rows("price", settings, times[lo : lo + CHUNK], index[lo : lo + CHUNK])
        seconds, inserted = timed(store.write, "price", df)
        spent += seconds
        written += inserted
        print(f"\r  filled {written:,}/{rows:,} rows", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"rows": written, "seconds": spent, "rows_per_s": written / spent}


def small_appends(store, settings: Settings, batches: int = 2000, size: int = 8) -> dict:
    start = pd.Timestamp("2020-01-01", tz="UTC")  # before the bulk rows: a new key every time
    frames = []
    for i in range(batches):
        times = pd.date_range(start + pd.Timedelta(seconds=i * size), periods=size, freq="1s", tz="UTC")
        frames.append(pd.DataFrame({"time": times, "asset": "ETH", "quote": "USD", "price": 1.0, "source": "bench"}))
    spent = 0.0
    for df in frames:
        seconds, _ = timed(store.write, "price", df)
        spent += seconds
    return {
        "batches": batches,
        "rows_per_batch": size,
        "rows_per_s": batches * size / spent,
        "ms_per_batch": 1000 * spent / batches,
    }


def history(runtime: Runtime) -> dict:
    first, view = timed(lambda: HistoryView(runtime=runtime, span="All"))
    render, root = timed(lambda: pn.panel(view).get_root())
    plot_render, plot = timed(hv.renderer("bokeh").get_plot, view._plot.object)  # the plot the zooms update
    start, end = view._bounds
    middle = start + (end - start) / 2
    window = (middle.tz_localize(None), (middle + pd.Timedelta("1h")).tz_localize(None))
    zoom_db, _ = timed(view._zoom.event, x_range=window)
    inner = (window[0] + pd.Timedelta("10min"), window[1] - pd.Timedelta("10min"))
    zoom_local, _ = timed(view._zoom.event, x_range=inner)
    return {
        "first_query_and_plot_s": first,
        "first_render_s": first + render,
        "zoom_refine_s": zoom_db,
        "zoom_downsample_only_s": zoom_local,
        "buckets": len(view._frame),
        "rows_shown": int(view._frame["count"].sum()),
        "detail": view._summary.object,
        "_keep": (root, plot, plot_render),
    }


def run_backend(name: str, url: str, rows: int) -> dict:
    print(f"{name}: {url if name == 'duckdb' else 'postgresql'}", file=sys.stderr)
    settings = Settings.load(environ={"RTDASH_STORE": url, "RTDASH_ASSETS": "BTC"}, dotenv=None)
    runtime = Runtime(settings)  # not started: no polling, only its store
    store = runtime.store
    try:
        out = {"backend": name, "append_bulk": fill(store, settings, rows)}
        out["append_small"] = small_appends(store, settings)
        out["count"] = store.count("price", series=["BTC"])
        seconds, df = timed(store.read, "price", series=["BTC"])
        out["read"] = {"rows": len(df), "seconds": seconds, "rows_per_s": len(df) / seconds}
        del df
        first, last = store.bounds("price", ["BTC"])
        seconds, agg = timed(store.aggregate, "price", first, last, (last - first) / 20_000, ["BTC"])
        out["aggregate"] = {"buckets": len(agg), "seconds": seconds}
        out["history"] = history(runtime)
        out["history"].pop("_keep")
        return out
    finally:
        runtime.stop()


def table(results: list[dict], rows: int) -> str:
    lines = [
        "| backend | bulk append | small appends (8 rows) | read all rows | DB aggregate → 20k buckets | History first"
        " render | zoom (DB refine) | zoom (downsample only) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        h = r["history"]
        lines.append(
            f"| {r['backend']} | {r['append_bulk']['rows_per_s']:,.0f} rows/s "
            f"| {r['append_small']['rows_per_s']:,.0f} rows/s ({r['append_small']['ms_per_batch']:.1f} ms/batch) "
            f"| {r['read']['seconds']:.1f} s ({r['read']['rows_per_s']:,.0f} rows/s) "
            f"| {r['aggregate']['seconds']:.2f} s | {h['first_render_s']:.2f} s | {h['zoom_refine_s']:.2f} s "
            f"| {h['zoom_downsample_only_s']:.3f} s |"
        )
    return "\n".join(lines)


def write_markdown(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        # up to the next section, or to the subsection benchmarks/bench_history.py writes (kept)
        ends = [old.find(mark, start + len(SECTION)) for mark in ("\n## ", "\n### Every point")]
        nxt = min((i for i in ends if i != -1), default=-1)
        new = old[:start] + text + (old[nxt:] if nxt != -1 else "")
    path.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the store (10,000,000)")
    parser.add_argument("--backends", default="duckdb,postgresql", help="duckdb, postgresql or both")
    parser.add_argument("--postgres", help="an existing PostgreSQL URL instead of a temporary server")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"), help="file to update ('' for none)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rtdash-bench-"))
    server = None
    results = []
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "duckdb":
                url = str(workdir / "history.duckdb")
            else:
                url = args.postgres
                if url is None:
                    from tests.store.conftest import PostgresServer

                    server = PostgresServer()
                    server.start(durable=True)
                    url = server.new_database()
            results.append(run_backend(backend, url, args.rows))
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(json.dumps({"rows": args.rows, "machine": machine, "results": results}, indent=2, default=str))
    text = table(results, args.rows)
    print(text)
    if args.markdown:
        note = (
            f"{SECTION}\n\n`python benchmarks/bench_store.py --rows {args.rows}` on {machine}, "
            f"{time.strftime('%Y-%m-%d')}: {args.rows:,} price rows of one asset (0.25 s apart); PostgreSQL 15 "
            "with default durability (fsync on), plain tables (no TimescaleDB). The History figures are server-side "
            "(query, HoloViews, Bokeh models), not the browser's drawing.\n\n"
        )
        write_markdown(note + text + "\n", Path(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
