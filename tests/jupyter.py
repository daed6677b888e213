"""A real Jupyter server and Chromium for the notebook's browser tests (tests/test_jupyter.py).

    with jupyter_server(fake_env(api.url)) as server, chromium(offline=True) as browser:
        page = new_page(browser)
        open_notebook(page, server)            # JupyterLab; open_notebook(page, server, ui="notebook") for Notebook 7
        run_all(page)
        wait_idle(page)
        series(page)                           # every ColumnDataSource with a time column, per output cell
        tracebacks(page), unexpected_console_errors(page)
        kernel_exec(page, "print(1)")          # code run in the notebook's kernel, its printed output

The server is ``python -m jupyter lab`` on a free loopback port, token-less, with JupyterLab's defaults (comms
over subshells included), in a temporary root dir that holds a copy of ``realtime_dashboard.ipynb``; its kernels
inherit ``env`` (the fake API's settings). Its config, data, runtime and IPython dirs are temporary too, so the
user's own settings are neither used nor touched. Notebook 7 is served by the same server (``/notebooks/...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import ROOT, free_port, show_tab, wait_until

NOTEBOOK = ROOT / "realtime_dashboard.ipynb"
# Chromium resolves no name but loopback: a CDN or any other public host is unreachable, as on an offline machine.
OFFLINE_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost"]
# What an offline page may fail to load: map tiles (the one public resource the README allows), by host.
EXPECTED_OFFLINE_HOSTS = ("cartodb-basemaps", "basemaps.cartocdn.com", "tile.openstreetmap.org", "arcgisonline.com")


class JupyterServer:
    """``python -m jupyter lab`` as a subprocess; ``stop()`` ends it and its kernels (one process group)."""

    def __init__(self, env: dict[str, str] | None = None, notebook: Path = NOTEBOOK, tmp: Path | None = None):
        self.tmp = Path(tmp) if tmp is not None else Path(tempfile.mkdtemp(prefix="rtdash-jupyter-"))
        self._own_tmp = tmp is None
        self.root = self.tmp / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.notebook = shutil.copy(notebook, self.root / notebook.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dirs = {name: self.tmp / name.lower() for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR")}
        dirs["JUPYTER_RUNTIME_DIR"] = self.tmp / "runtime"
        for path in dirs.values():
            path.mkdir(exist_ok=True)
        # No "Build recommended" dialog over the page (a source extension elsewhere in the environment asks for one).
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig").mkdir(exist_ok=True)
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig" / "page_config.json").write_text(
            json.dumps({"buildCheck": False, "buildAvailable": False})
        )
        # No "Would you like to get notified about official Jupyter news?" toast over the outputs.
        settings = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
        full_env.pop("JUPYTER_PATH", None)
        full_env.update({k: str(v) for k, v in dirs.items()})
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        full_env["PYTHONUNBUFFERED"] = "1"
        self.command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            # window.jupyterapp: the tests run JupyterLab's own commands (Run All) and read its kernel's state.
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
            # Nothing that would call a public host: no news, no update check, no PyPI extension manager.
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        self.log_path = self.tmp / "jupyter.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            self.command,
            env=full_env,
            cwd=self.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> JupyterServer:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return requests.get(f"{self.url}/api/status", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout, 0.2, "jupyter lab to answer /api/status")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- jupyter output ---\n{self.output()}") from None
        return self

    def lab_url(self, name: str | None = None) -> str:
        return f"{self.url}/lab/tree/{name or self.notebook.name}"

    def notebook_url(self, name: str | None = None) -> str:
        """The notebook in Notebook 7."""
        return f"{self.url}/notebooks/{name or self.notebook.name}"

    def kernels(self) -> list[dict]:
        """The server's running kernels (its REST API)."""
        return requests.get(f"{self.url}/api/kernels", timeout=10).json()

    def kernel_json(self, expression: str, kernel_id: str | None = None):
        """The value of a Python ``expression`` in a kernel of this server (the only one if no id is given),
        through JSON, asked over a connection of its own (no page needed: the notebook may be closed)."""
        from jupyter_client import BlockingKernelClient

        if kernel_id is None:
            (kernel,) = self.kernels()
            kernel_id = kernel["id"]
        client = BlockingKernelClient(connection_file=str(self.tmp / "runtime" / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels()
        out: list[str] = []

        def collect(msg) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] == "error":
                out.append(f"{content['ename']}: {content['evalue']}\n")

        try:
            client.wait_for_ready(timeout=60)
            code = f"import json as _json; print(_json.dumps({expression}))"
            client.execute_interactive(code, store_history=False, output_hook=collect, timeout=60)
        finally:
            client.stop_channels()
        try:
            return json.loads("".join(out).strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"the kernel answered {''.join(out)!r} to {expression!r}") from None

    def delete(self, path: str) -> None:
        """``DELETE`` an API ``path``, with the XSRF cookie and header the server asks of a change (404: gone)."""
        with requests.Session() as http:
            http.get(f"{self.url}/lab", timeout=30)  # sets the _xsrf cookie
            headers = {"X-XSRFToken": http.cookies.get("_xsrf", "")}
            answer = http.delete(f"{self.url}{path}", headers=headers, timeout=30)
        if answer.status_code != 404:
            answer.raise_for_status()

    def reset(self) -> None:
        """Back to a fresh start for the next test: every session and kernel shut down, the notebook's copy as in
        the repository again (JupyterLab may have saved outputs into it), its checkpoints gone."""
        for session in requests.get(f"{self.url}/api/sessions", timeout=10).json():
            self.delete(f"/api/sessions/{session['id']}")
        for kernel in self.kernels():
            self.delete(f"/api/kernels/{kernel['id']}")
        shutil.copy(NOTEBOOK, self.notebook)
        shutil.rmtree(self.root / ".ipynb_checkpoints", ignore_errors=True)

    def stop(self) -> None:
        """Shut the kernels down through the server, then end the server and whatever is left of its group."""
        if self.proc.poll() is None:
            with contextlib.suppress(requests.RequestException, ValueError):
                for kernel in self.kernels():
                    self.delete(f"/api/kernels/{kernel['id']}")
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


@contextlib.contextmanager
def jupyter_server(
    env: dict[str, str] | None = None, notebook: Path = NOTEBOOK, tmp: Path | None = None
) -> Iterator[JupyterServer]:
    """A running :class:`JupyterServer` whose kernels see ``env``; stopped (kernels too) at exit."""
    server = JupyterServer(env, notebook, tmp)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@contextlib.contextmanager
def chromium(offline: bool = False, args: list[str] = ()) -> Iterator:
    """Debian's headless Chromium through Playwright; ``offline`` makes every non-loopback host unresolvable."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        extra = [*OFFLINE_ARGS] if offline else []
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra, *args])
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, width: int = 1200, height: int = 1000, offline: bool = False):
    """A page in a fresh context. ``page.console_errors`` collects console errors and uncaught page errors;
    with ``offline``, every request to a non-loopback host is aborted and its URL kept in ``page.blocked``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.console_errors = []
    page.blocked = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(_console_text(msg)))
    page.on("pageerror", lambda exc: page.console_errors.append(f"pageerror: {exc}"))
    if offline:

        def route(route):
            host = urlsplit(route.request.url).hostname or ""
            if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
                route.continue_()
            else:
                page.blocked.append(route.request.url)
                route.abort("namenotresolved")

        context.route(lambda url: urlsplit(url).scheme in ("http", "https", "ws", "wss"), route)
    return page


def _console_text(msg) -> str:
    """A console message's text and, when it has one, the URL it is about (a failed load names no URL itself)."""
    url = (msg.location or {}).get("url") or ""
    return f"{msg.text} ({url})" if url and url not in msg.text else msg.text


def unexpected_console_errors(page, expected: tuple[str, ...] = EXPECTED_OFFLINE_HOSTS) -> list[str]:
    """Console errors of ``page`` that mention none of ``expected`` (nor a URL that was blocked on purpose as one)."""
    blocked_expected = [url for url in page.blocked if any(e in url for e in expected)]
    return [
        err
        for err in page.console_errors
        if not any(e in err for e in expected) and not any(url in err for url in blocked_expected)
    ]


# --- JupyterLab / Notebook 7, driven through the app they expose as window.jupyterapp ---------------------------

_PANEL_JS = """() => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  let panel = app.shell.currentWidget;
  if (!panel || !panel.sessionContext) {
    panel = [...app.shell.widgets('main')].find((w) => w.sessionContext && w.content);
  }
  return panel || null;
}"""


def _js(body: str) -> str:
    """A page function whose ``panel`` is the open notebook's NotebookPanel."""
    return f"(arg) => {{ const panel = ({_PANEL_JS})(); {body} }}"


def open_notebook(page, server: JupyterServer, ui: str = "lab", timeout: float = 120) -> None:
    """Open the server's notebook in JupyterLab (``ui="lab"``) or Notebook 7 (``"notebook"``), kernel idle."""
    page.goto(server.lab_url() if ui == "lab" else server.notebook_url())
    page.wait_for_function(
        _js("return !!panel && panel.context.isReady && !!panel.sessionContext.session?.kernel;"),
        timeout=timeout * 1000,
    )
    wait_until(lambda: kernel_status(page) == "idle", timeout, 0.2, "the notebook's kernel to be idle")


def close_notebook(page) -> None:
    """Close the notebook's JupyterLab tab as a user who discards the unsaved outputs would; its kernel keeps
    running."""
    page.evaluate(_js("panel.context.model.dirty = false; panel.close();"))
    page.wait_for_function(f"() => ({_PANEL_JS})() === null", timeout=60_000)


def kernel_status(page) -> str | None:
    return page.evaluate(_js("return panel?.sessionContext.session?.kernel?.status ?? null;"))


def run_all(page, how: str = "command") -> None:
    """Run All: JupyterLab's ``notebook:run-all-cells`` command, or its menu item (``how="menu"``, Lab only)."""
    if how == "menu":
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    else:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def restart_and_run_all(page) -> None:
    """Kernel → Restart Kernel and Run All Cells, without the confirmation dialog."""
    page.evaluate(
        _js(
            "return panel.sessionContext.restartKernel().then(() => "
            "window.jupyterapp.commands.execute('notebook:run-all-cells'));"
        )
    )


def run_cell(page, index: int) -> None:
    """Select cell ``index`` and run it (Ctrl+Enter's command)."""
    page.evaluate(_js("panel.content.activeCellIndex = arg; return null;"), index)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")


def wait_ran(page, index: int, after: int = 0, timeout: float = 120) -> dict:
    """Wait until code cell ``index`` has run (an execution count above ``after``, no longer running) and the kernel
    is idle; that cell."""

    def ran():
        if kernel_status(page) != "idle":
            return None
        cell = cells(page)[index]
        done = (cell["execution_count"] or 0) > after and not cell["running"]
        return cell if done else None

    return wait_until(ran, timeout, 0.3, f"cell {index} to have run and the kernel to be idle")


CELLS_JS = _js(
    """
  // The text of an output as the page shows it, without its scripts' and styles' source (textContent would give
  // the 7 MB of the inline JavaScript too, and cost the page 0.4 s per call).
  const shownText = (root) => {
    const skip = (node) => ['SCRIPT', 'STYLE'].includes(node.parentNode.nodeName);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT,
      {acceptNode: (node) => (skip(node) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT)});
    let text = '';
    while (walker.nextNode()) text += walker.currentNode.data;
    return text;
  };
  return panel.content.widgets.map((cell, index) => {
    const m = cell.model;
    const prompt = cell.node.querySelector('.jp-InputPrompt');
    const outputs = m.type === 'code' ? m.outputs.toJSON() : [];
    return {
      index, type: m.type, source: m.sharedModel.getSource(),
      execution_count: m.type === 'code' ? m.executionCount : null,
      running: !!prompt && prompt.textContent.includes('*'),
      outputs: outputs.map((o) => ({
        output_type: o.output_type, name: o.name, text: Array.isArray(o.text) ? o.text.join('') : o.text,
        ename: o.ename, evalue: o.evalue, traceback: o.traceback,
        mime: o.data ? Object.keys(o.data) : [],
        data_text: o.data ? o.data['text/plain'] : undefined,
      })),
      output_heights: [...cell.node.querySelectorAll('.jp-OutputArea-child')].map((e) => e.offsetHeight),
      output_text: [...cell.node.querySelectorAll('.jp-OutputArea-output')].map(shownText).join('\\n'),
    };
  });
"""
)


def cells(page) -> list[dict]:
    """Every cell: index, type, source, execution_count, running, outputs (type, name, text, ename, evalue,
    traceback, mime types, text/plain), the heights of its output boxes and their text as the page shows it (its
    text nodes but those of scripts and styles: JupyterLab's windowing leaves ``innerText`` empty off screen)."""
    return page.evaluate(CELLS_JS)


def wait_idle(page, timeout: float = 180) -> list[dict]:
    """Wait until no cell is running or queued, every code cell has run and the kernel is idle; the cells."""

    def idle():
        if kernel_status(page) != "idle":
            return None
        found = cells(page)
        code = [c for c in found if c["type"] == "code"]
        return found if code and not any(c["running"] or c["execution_count"] is None for c in code) else None

    return wait_until(idle, timeout, 0.3, "every cell to have run and the kernel to be idle")


def tracebacks(page) -> list[str]:
    """Every error output and every stream output that holds a traceback or an exception line, per cell."""
    found = []
    for cell in cells(page):
        for out in cell["outputs"]:
            if out["output_type"] == "error":
                found.append(f"cell {cell['index']}: {out['ename']}: {out['evalue']}")
            elif out["output_type"] == "stream" and (
                "Traceback" in (out["text"] or "") or "Error:" in (out["text"] or "")
            ):
                found.append(f"cell {cell['index']} ({out['name']}): {out['text'][-2000:]}")
    return found


SERIES_JS = _js(
    """
  const cellNodes = panel ? panel.content.widgets.map((c) => c.node) : [];
  const out = [];
  const seen = new Set();
  for (const view of window.Bokeh?.index?.roots ?? []) {
    const doc = view.model.document;
    if (doc === null || seen.has(doc)) continue;
    seen.add(doc);
    const cell = cellNodes.findIndex((node) => node.contains(view.el));
    for (const m of doc._all_models.values()) {
      if (!m.data || m.data.time === undefined) continue;
      const t = Array.from(m.data.time);
      let backward = 0, repeated = 0;
      for (let i = 1; i < t.length; i++) {
        if (t[i] < t[i - 1]) backward++;
        else if (t[i] === t[i - 1]) repeated++;
      }
      out.push({cell, connected: view.el.isConnected, doc: doc.roots().map((r) => r.id).join(','), id: m.id,
                columns: Object.keys(m.data).sort(), rows: t.length, distinct: new Set(t).size,
                backward, repeated, last: t.length ? t[t.length - 1] : null});
    }
  }
  return out;
"""
)


def series(page, column: str | None = None) -> list[dict]:
    """Every ColumnDataSource with a ``time`` column in the page's Bokeh documents (those with ``column`` only):
    ``cell`` (index of the cell whose output shows it, -1 if none), ``connected``, ``id``, ``columns``, ``rows``,
    ``distinct`` times, ``backward`` steps and ``repeated`` times, ``last`` time."""
    found = page.evaluate(SERIES_JS)
    return [s for s in found if column is None or column in s["columns"]]


def cell_index(page, startswith: str) -> int:
    """The index of the first code cell whose source starts with ``startswith`` (after leading comments)."""
    for cell in cells(page):
        lines = [line for line in cell["source"].splitlines() if line.strip() and not line.startswith("#")]
        if cell["type"] == "code" and lines and "\n".join(lines).startswith(startswith):
            return cell["index"]
    raise AssertionError(f"no code cell starts with {startswith!r}")


def cell_locator(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def click_tab(page, index: int, name: str) -> None:
    """Click the Panel tab ``name`` in the output of cell ``index`` until it is shown (Playwright's CSS pierces
    shadow roots; ``tests.helpers.show_tab`` says why a click can be lost)."""
    show_tab(cell_locator(page, index), name)


KERNEL_EXEC_JS = _js(
    """
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code: arg, silent: false, store_history: false});
  const parts = [];
  future.onIOPub = (msg) => {
    const c = msg.content;
    if (msg.header.msg_type === 'stream') parts.push(c.text);
    else if (msg.header.msg_type === 'error') parts.push(`${c.ename}: ${c.evalue}\\n`);
    else if (msg.header.msg_type === 'execute_result') parts.push(c.data['text/plain'] + '\\n');
  };
  return future.done.then(() => parts.join(''));
"""
)


def kernel_exec(page, code: str) -> str:
    """Run ``code`` in the notebook's kernel (no cell is added) and return what it printed."""
    return page.evaluate(KERNEL_EXEC_JS, code)


def kernel_json(page, expression: str):
    """The value of a Python ``expression`` in the notebook's kernel, through JSON."""
    out = kernel_exec(page, f"import json as _json; print(_json.dumps({expression}))")
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"the kernel answered {out!r} to {expression!r}") from None


def wait_grows(page, index: int, column: str, timeout: float = 60) -> tuple[int, int]:
    """Wait until the series with ``column`` in cell ``index``'s output gains rows; (rows before, rows after)."""

    def rows():
        found = [s["rows"] for s in series(page, column) if s["cell"] == index and s["connected"]]
        return max(found) if found else None

    wait_until(lambda: rows() is not None, timeout, 0.3, f"a {column!r} series in cell {index}")
    before = rows()
    try:
        after = wait_until(lambda: (r := rows()) and r > before and r, timeout, 0.3, f"cell {index}'s {column} to grow")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(page, index, column)}") from None
    return before, after


DIAGNOSIS = """
import gc as _gc, json as _json, threading as _threading
from rtdash.stream import get_runtime as _get_runtime
import panel as _pn
_rt = _get_runtime(settings)
_views = []
for _v in _gc.get_objects():
    if type(_v).__name__ == "LiveView":
        _o = _v._outputs
        _views.append({
            "rows": {a: len(c.sources[a].data["time"]) for a, c in _v._prices.items()},
            "subscribed": [s.active for s in _v._subscriptions],
            "pending": [len(s._pending) for s in _v._subscriptions],
            "ended": _o and _o.ended, "shown": _o and _o.shown, "outputs": sorted(_o.outputs()) if _o else None,
            "listening": _o and _o.listening(), "behind": _v._behind, "held_since": _v._held_since,
            "sources": {
                a: {"id": c.sources[a].id, "attached": c.sources[a].document is not None} for a, c in _v._prices.items()
            },
            "pane_refs": [sorted(p._models) for p in _v._price_panes],
            "in_output_docs": {
                ref: [_pn.state._views[ref][2].get_model_by_id(c.sources[a].id) is not None
                      for a, c in _v._prices.items()]
                for ref in (_o.outputs() if _o else ())
            },
            "reachable": {
                ref: [c.sources[a].id in {m.id for r in _pn.state._views[ref][2].roots for m in r.references()}
                      for a, c in _v._prices.items()]
                for ref in (_o.outputs() if _o else ())
            },
            "frozen": {ref: _pn.state._views[ref][2].models._freeze_count for ref in (_o.outputs() if _o else ())},
            "held_events": {
                ref: len(_pn.state._views[ref][2].callbacks._held_events) for ref in (_o.outputs() if _o else ())
            },
        })
_tabs = []
for _t in _gc.get_objects():
    if isinstance(_t, _pn.Tabs):
        _tabs.append({"active": _t.active, "models": {
            _ref: [_m.active, [type(_p.child).__name__ for _p in _m.tabs]] for _ref, (_m, _) in _t._models.items()
        }})
print(_json.dumps({
    "tabs": _tabs,
    "status": {k: p.status.snapshot() for k, p in _rt.pollers.items()},
    "subscribers": {k: p.subscriber_count for k, p in _rt.pollers.items()},
    "history": {k: len(p.history()) for k, p in _rt.pollers.items()},
    "clock_running": {k: bool(p.frame.continue_[0]) for k, p in _rt.pollers.items()},
    "threads": sorted(t.name for t in _threading.enumerate()),
    "views": _views, "panel_views": sorted(_pn.state._views),
}, default=str))
"""


TABS_JS = _js(
    """
  const out = [];
  for (const view of window.Bokeh?.index?.roots ?? []) {
    for (const m of view.model.document?._all_models.values() ?? []) {
      if (m._event_buffer !== undefined) {
        out.push({root: view.model.id, comm_manager: m.id, blocked: m._blocked, buffered: m._event_buffer.length,
                  events: m._event_buffer.map((e) => `${e.model?.id}.${e.attr}=${JSON.stringify(e.new)?.slice(0, 40)}`),
                  past_timeout_ms: Date.now() - m._timeout, timeout: m.timeout, debounce: m.debounce});
        continue;
      }
      if (m.type !== "Tabs" && m.constructor.__name__ !== "Tabs") continue;
      out.push({root: view.model.id, id: m.id, active: m.active,
                children: m.tabs.map((p) => p.child.constructor.__name__ + ":" + p.child.id)});
    }
  }
  return out;
"""
)


def diagnosis(page, index: int, column: str) -> str:
    """What the page and the kernel say about a series that did not grow (for a failure's message)."""
    try:
        found = [s for s in series(page, column) if s["cell"] == index]
        tabs = page.evaluate(TABS_JS)
        kernel = kernel_exec(page, DIAGNOSIS)
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        return f"(no diagnosis: {exc!r})"
    return f"page series of cell {index}: {found}\npage tabs: {tabs}\nkernel: {kernel[-6000:]}"
