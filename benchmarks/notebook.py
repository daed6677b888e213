"""The notebook's cost per update, and what inlining its JavaScript costs, from one run in a real JupyterLab.

    python -m benchmarks.notebook [--seconds 60] [--json notebook.json]
    python -m benchmarks.notebook --screenshot docs/notebook.png

Starts the fake API and JupyterLab (``tests/jupyter.py``: token-less, loopback, JupyterLab's defaults), opens
``realtime_dashboard.ipynb`` in Debian's headless Chromium with every public host unresolvable, and runs its cells
one by one, as a user would, with prices every 1 s and weather every hour (so that only the price updates during
the windows below).  It measures:

- **inlining**: the characters of the first cell's output (Bokeh's, Panel's and Tabulator's JavaScript, inline)
  against the loader Panel publishes for the CDN, and the size of the JavaScript files that loader would fetch (the
  files Panel inlines, from the installed packages, raw and gzipped); the time from running the first cell to its
  "loaded" line, and from running the hvPlot cell to its chart drawn with data;
- **kernel CPU per update**: the kernel process's ``utime+stime`` (``/proc``, every thread) over a window, ÷ the
  price updates delivered to the kernel in it — first with the pollers and the ``subscription`` cell only (the
  baseline), then with every output on the page (the hvPlot cell, the Live cell, the Refresh cell, the app);
- **bytes per new row**: what Chromium's DevTools report received on the kernel's websocket
  (``Network.webSocketFrameReceived``) over the second window, ÷ the price rows added to the page's charts in it.

``--screenshot PATH`` instead runs the whole notebook (Run All, weather every 2 s), waits for the charts to fill,
hides the file browser, scrolls to the app cell's Live tab and saves a PNG of the page (docs/notebook.png).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.run import CLK_TCK, machine
from tests import jupyter as J
from tests.fakeapi import FakeAPI
from tests.helpers import fake_env, wait_until

HVPLOT, LIVE, APP, SUBSCRIPTION = "import asyncio", "from rtdash.views.live", "from rtdash.app", "from rtdash.stream"
LOADED = "loaded from this notebook"
CHART_DRAWN_JS = """(index) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const node = panel.content.widgets[index].node;
  return [...(window.Bokeh?.index?.roots ?? [])].some((view) => view?.el?.isConnected && node.contains(view.el) &&
    [...(view.model.document?._all_models?.values() ?? [])].some((m) => m.data?.price?.length > 0));
}"""


def kernel_pid(kernel_id: str) -> int:
    """The pid of the ipykernel whose command line names ``kernel_id`` (its connection file), from ``/proc``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"ipykernel_launcher" in a for a in argv) and any(kernel_id.encode() in a for a in argv):
            return int(proc.name)
    raise RuntimeError(f"no ipykernel process for kernel {kernel_id}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class KernelSocket:
    """Bytes Chromium receives on the kernel's websocket(s) (``/api/kernels/<id>/channels``), via DevTools, in all
    and by comm (JupyterLab's v1 websocket protocol: 8-byte offsets, then channel, header, parent header,
    metadata, content and buffers)."""

    def __init__(self, page):
        self.ids: set[str] = set()
        self.bytes = 0
        self.by_comm: dict[str, list[int]] = {}  # comm id -> [bytes, messages, bytes outside content and buffers]
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Network.enable")
        self.cdp.on("Network.webSocketCreated", self._created)
        self.cdp.on("Network.webSocketFrameReceived", self._frame)

    def _created(self, event: dict) -> None:
        if "/api/kernels/" in event["url"] and "/channels" in event["url"]:
            self.ids.add(event["requestId"])

    def _frame(self, event: dict) -> None:
        if event["requestId"] in self.ids:
            frame = event["response"]
            data = frame.get("payloadData", "")
            raw = base64.b64decode(data) if frame.get("opcode") == 2 else data.encode()
            self.bytes += len(raw)
            if frame.get("opcode") == 2:
                self._count(raw)

    def _count(self, raw: bytes) -> None:
        n = int.from_bytes(raw[:8], "little")
        offsets = [int.from_bytes(raw[8 + 8 * i : 16 + 8 * i], "little") for i in range(n)]
        parts = [raw[a:b] for a, b in itertools.pairwise(offsets)] + [raw[offsets[-1] :]]
        try:
            comm = json.loads(parts[4]).get("comm_id")
        except (IndexError, ValueError, AttributeError):
            return
        if comm:
            counts = self.by_comm.setdefault(comm, [0, 0, 0])
            counts[0] += len(raw)
            counts[1] += 1
            counts[2] += len(raw) - len(parts[4]) - sum(len(b) for b in parts[5:])


def price_rows(page) -> dict[str, tuple[int, int]]:
    """(cell, rows) of every price series shown in a cell's output, by ColumnDataSource id."""
    return {s["id"]: (s["cell"], s["rows"]) for s in J.series(page, "price") if s["connected"] and s["cell"] >= 0}


def comm_cells(page) -> dict[str, int]:
    """The cell whose output each Panel comm updates: the kernel's comm id -> root model id, the page's root model
    id -> cell."""
    roots = J.kernel_json(  # pyviz_comms' JupyterComm sends through an ipykernel Comm of its own id
        page,
        "{c._comm.comm_id: r for r, (*_, c) in __import__('panel').state._views.items() if getattr(c, '_comm', None)}",
    )
    cell_of = {root: s["cell"] for s in J.series(page) if s["connected"] for root in s["doc"].split(",")}
    return {comm: cell_of[root] for comm, root in roots.items() if root in cell_of}


def loader_sizes() -> dict[str, Any]:
    """What Panel's notebook loader publishes, inline and for the CDN, and the JavaScript files the CDN one fetches
    (the same files the inline one carries), measured from the installed packages."""
    import bokeh
    import panel as pn
    from bokeh.resources import CDN
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from panel.io.notebook import load_notebook
    from panel.io.resources import CDN_DIST, DIST_DIR, Resources, bundle_resources, set_resource_mode

    pn.extension("tabulator")
    InteractiveShell.instance()
    published = {}
    for inline in (True, False):
        with capture_output() as captured:
            load_notebook(inline=inline)
        published["inline" if inline else "cdn"] = sum(
            len(value) for out in captured.outputs for value in out.data.values() if isinstance(value, str)
        )
    with set_resource_mode("cdn"):
        bundle = bundle_resources(None, Resources.from_bokeh(CDN, notebook=True), notebook=True)
    bokeh_js = Path(bokeh.__file__).parent / "server" / "static" / "js"
    files = {}
    for url in [str(u.url) if hasattr(u, "url") else str(u) for u in bundle.js_files]:
        if url.startswith(CDN_DIST):
            path = Path(DIST_DIR) / url.removeprefix(CDN_DIST)
        else:  # https://cdn.bokeh.org/bokeh/release/bokeh-gl-3.9.2.min.js -> bokeh-gl.min.js
            path = bokeh_js / url.rsplit("/", 1)[1].replace(f"-{bokeh.__version__}", "")
        data = path.read_bytes()
        files[url] = {"bytes": len(data), "gzip": len(gzip.compress(data, 6))}
    return {
        "published_chars": published,
        "cdn_files": files,
        "cdn_bytes": sum(f["bytes"] for f in files.values()),
        "cdn_gzip": sum(f["gzip"] for f in files.values()),
    }


def run_cell(page, index: int) -> float:
    """Run cell ``index``, wait until it ran; the seconds it took."""
    start = time.monotonic()
    J.run_cell(page, index)
    J.wait_ran(page, index, timeout=180)
    return time.monotonic() - start


def window(page, pid: int, socket: KernelSocket | None, seconds: float) -> dict[str, float]:
    """Kernel CPU, updates delivered, websocket bytes and new chart rows over ``seconds``."""
    rows0, cpu0, bytes0 = price_rows(page), cpu_seconds(pid), socket.bytes if socket else 0
    comms0 = {k: list(v) for k, v in socket.by_comm.items()} if socket else {}
    received0 = J.kernel_json(page, "len(received)")
    time.sleep(seconds)
    rows1, cpu1, bytes1 = price_rows(page), cpu_seconds(pid), socket.bytes if socket else 0
    comms1 = {k: list(v) for k, v in socket.by_comm.items()} if socket else {}
    received1 = J.kernel_json(page, "len(received)")
    grown = {k: (rows1[k][0], max(0, rows1[k][1] - rows0[k][1])) for k in rows0.keys() & rows1.keys()}
    result = {
        "seconds": seconds,
        "cpu_s": cpu1 - cpu0,
        "updates": received1 - received0,
        "bytes": bytes1 - bytes0,
        "new_rows": sum(n for _, n in grown.values()),
        "series": len(rows1),
    }
    if socket:
        by_cell: dict[int, dict[str, int]] = {}
        for comm, cell in comm_cells(page).items():
            before, after = comms0.get(comm, [0, 0, 0]), comms1.get(comm, [0, 0, 0])
            entry = by_cell.setdefault(cell, {"bytes": 0, "messages": 0, "envelope": 0, "new_rows": 0})
            for key, a, b in zip(("bytes", "messages", "envelope"), before, after, strict=True):
                entry[key] += b - a
        for cell, n in grown.values():
            if cell in by_cell:
                by_cell[cell]["new_rows"] += n
        for entry in by_cell.values():
            entry["bytes_per_new_row"] = round(entry["bytes"] / entry["new_rows"]) if entry["new_rows"] else None
        result["by_cell"] = {str(cell): entry for cell, entry in sorted(by_cell.items())}
    return result


@contextlib.contextmanager
def offline_jupyter(env: dict[str, str]) -> Iterator[tuple[J.JupyterServer, Any]]:
    """A JupyterLab whose kernels talk to the fake API with ``env``, and a Chromium that reaches loopback only."""
    with FakeAPI() as api, J.jupyter_server(fake_env(api.url, **env)) as server, J.chromium(offline=True) as browser:
        yield server, browser


def measure(seconds: float, baseline_seconds: float) -> dict[str, Any]:
    env = {"RTDASH_PRICE_INTERVAL": "1s", "RTDASH_WEATHER_INTERVAL": "1h"}
    with offline_jupyter(env) as (server, browser):
        page = J.new_page(browser, width=1200, height=1000, offline=True)
        socket = KernelSocket(page)
        J.open_notebook(page, server)
        pid = kernel_pid(server.kernels()[0]["id"])
        code = [c["index"] for c in J.cells(page) if c["type"] == "code"]
        first, subscription = code[0], J.cell_index(page, SUBSCRIPTION)
        hvplot = J.cell_index(page, HVPLOT)

        start = time.monotonic()
        J.run_cell(page, first)
        wait_until(lambda: LOADED in J.cells(page)[first]["output_text"], 120, 0.05, "the first cell's check line")
        first_loaded = time.monotonic() - start
        J.wait_ran(page, first)
        first_output = sum(o["size"] for o in J.cells(page)[first]["outputs"])
        for index in code[1 : code.index(subscription) + 1]:
            run_cell(page, index)
        time.sleep(5)
        baseline = window(page, pid, None, baseline_seconds)

        start = time.monotonic()
        J.run_cell(page, hvplot)
        page.wait_for_function(CHART_DRAWN_JS, arg=hvplot, timeout=120_000, polling=50)
        hvplot_drawn = time.monotonic() - start
        J.wait_ran(page, hvplot)
        for index in code[code.index(hvplot) + 1 :]:
            run_cell(page, index)
        J.wait_grows(page, J.cell_index(page, APP), "price", timeout=120)
        time.sleep(5)
        outputs = J.kernel_json(page, "runtime.price.subscriber_count")
        loaded = window(page, pid, socket, seconds)
        errors = J.tracebacks(page) + J.unexpected_console_errors(page)

    per_update = loaded["cpu_s"] / max(loaded["updates"], 1) * 1000
    base_per_update = baseline["cpu_s"] / max(baseline["updates"], 1) * 1000
    return {
        "machine": machine(),
        "settings": env,
        "first_cell_output_chars": first_output,
        "first_cell_loaded_s": round(first_loaded, 2),
        "hvplot_chart_drawn_s": round(hvplot_drawn, 2),
        "loader": loader_sizes(),
        "baseline": baseline,
        "window": loaded,
        "price_subscribers": outputs,
        "kernel_cpu_ms_per_update": round(per_update, 2),
        "baseline_cpu_ms_per_update": round(base_per_update, 2),
        "outputs_cpu_ms_per_update": round(per_update - base_per_update, 2),
        "bytes_per_new_row": round(loaded["bytes"] / max(loaded["new_rows"], 1)),
        "bytes_per_update": round(loaded["bytes"] / max(loaded["updates"], 1)),
        "errors": errors,
    }


def screenshot(path: Path, settle: float = 40) -> None:
    env = {"RTDASH_PRICE_INTERVAL": "1s", "RTDASH_WEATHER_INTERVAL": "2s"}
    with offline_jupyter(env) as (server, browser):
        page = J.new_page(browser, width=1280, height=1100, offline=True)
        J.open_notebook(page, server)
        J.run_all(page)
        J.wait_idle(page)
        app = J.cell_index(page, APP)
        J.wait_grows(page, app, "price", timeout=120)
        time.sleep(settle)
        # No file browser (the notebook gets the window's width) and no "Jupyter news?" toast over the charts.
        page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.first.click()
        # The app cell's top (header and tabs) at the top of the notebook's scroll area.
        J.cell_locator(page, app).evaluate("(el) => el.scrollIntoView({block: 'start'})")
        time.sleep(2)
        page.screenshot(path=str(path))
        if J.tracebacks(page) or J.unexpected_console_errors(page):
            raise SystemExit(f"errors on the page: {J.tracebacks(page) + J.unexpected_console_errors(page)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="the measured window (default 60)")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="the pollers-only window (default 20)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the notebook after Run All instead")
    args = parser.parse_args()
    if not 5 <= args.seconds <= 3600 or not 5 <= args.baseline_seconds <= 3600:
        parser.error("--seconds and --baseline-seconds must be between 5 and 3600")
    if args.screenshot:
        screenshot(args.screenshot)
        print(f"wrote {args.screenshot}")
        return
    result = measure(args.seconds, args.baseline_seconds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
