"""The notebook runs top to bottom in a real Jupyter kernel, and `panel serve` serves it."""

from __future__ import annotations

import contextlib
import copy
import os
import queue
from collections.abc import Iterator

import nbformat
import panel as pn
import pytest
import requests
from bokeh.document import Document
from bokeh.models import ImportedStyleSheet
from bokeh.plotting import figure
from nbclient import NotebookClient
from panel.models.comm_manager import CommManager
from pyviz_comms import Comm

from rtdash.notebook import _known_models_only
from rtdash.views import Text
from tests.helpers import ROOT, ServedApp, fake_env, wait_until

NOTEBOOK = ROOT / "realtime_dashboard.ipynb"
WAIT_FOR_DELIVERY = """
import asyncio
asset = settings.assets[0]
view = LiveView(runtime=runtime)
points = len(view._prices[asset].data(asset))
for _ in range(300):
    if len(received) >= 2 and len(view._prices[asset].data(asset)) > points:
        break
    await asyncio.sleep(0.1)
print("waited: delivered" if len(received) >= 2 else f"waited: {len(received)} update(s)")
print(f"chart points: {points} -> {len(view._prices[asset].data(asset))}")
"""

WAIT_FOR_BUFFER = """
import asyncio
deliveries = len(received)
for _ in range(300):
    if len(received) >= deliveries + 3:
        break
    await asyncio.sleep(0.1)
times = buffer.data["time"]
delivered = "delivered" if len(received) >= deliveries + 3 else "not delivered"
print(f"buffer: {delivered}, {len(times) - times.nunique()} times repeated")
"""


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [cell for cell in nb.cells if cell.cell_type == "code" and cell.outputs] == []


@pytest.mark.slow
def test_notebook_runs_in_a_kernel(fake_api, tmp_path, monkeypatch):
    for name, value in fake_env(fake_api.url, RTDASH_PRICE_INTERVAL="500ms", RTDASH_WEATHER_INTERVAL="2s").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # One more cell, for the test only: wait on the kernel's own loop until the live stream has delivered there.
    nb.cells.append(nbformat.v4.new_code_cell(WAIT_FOR_DELIVERY))
    # The hvPlot cell run again, its first output still shown (a front end lets go of it only later): each fetch's
    # rows go into each run's own buffer once, not twice into the new one.
    hvplot_cell = next(cell.source for cell in nb.cells if cell.source.startswith("import asyncio"))
    nb.cells.append(nbformat.v4.new_code_cell(hvplot_cell))
    nb.cells.append(nbformat.v4.new_code_cell(WAIT_FOR_BUFFER))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "update(s) delivered to this kernel so far" in text
    assert "waited: delivered" in text, text
    before, after = map(int, text.split("chart points: ", 1)[1].split()[::2][:2])
    assert after > before, text  # a Live view in the kernel streams new points into its chart
    assert "buffer: delivered, 0 times repeated" in text, text
    # The fetch cells showed live rows from the (fake) provider, not simulated ones.
    html = "".join(out.get("data", {}).get("text/html", "") for out in outputs)
    assert "coinbase" in html and "open-meteo" in html
    assert fake_api.count("coinbase") >= 1 and fake_api.count("open-meteo") >= 1


@pytest.mark.slow
def test_panel_serves_the_notebook(fake_api, tmp_path, page):
    env = fake_env(fake_api.url, RTDASH_PRICE_INTERVAL="500ms")
    with ServedApp(ROOT / "realtime_dashboard.ipynb", env=env, cwd=tmp_path) as app:
        assert requests.get(f"{app.url}/realtime_dashboard", timeout=30).status_code == 200
        page.goto(f"{app.url}/realtime_dashboard")
        page.locator(".bk-tab", has_text="Refresh").wait_for(timeout=30_000)
        assert "Traceback" not in page.content()


class _Transport(Comm):
    """A comm that goes nowhere: the Jupyter transport, not rtdash's code."""

    def init(self) -> None:
        pass

    def send(self, data=None, metadata=None, buffers=None) -> None:
        pass


@contextlib.contextmanager
def shown_in_notebook(viewable) -> Iterator[tuple]:
    """``viewable`` shown as a notebook output of its own (its document, a comm that goes nowhere, Panel's record of
    the output): yields ``(root, document, comm)``, then Panel forgets the output."""
    doc, comm = Document(), _Transport()
    root = viewable.get_root(doc, comm=comm)
    doc.add_root(root)
    ref = root.ref["id"]
    pn.state._views[ref] = (viewable, root, doc, comm)
    try:
        yield root, doc, comm
    finally:
        pn.state._views.pop(ref, None)
        viewable._cleanup(root)


def test_a_tab_click_batched_with_changes_to_hidden_charts_still_switches_the_tab():
    """The page's comm manager batches its changes; a batch that also names a hidden tab's axes (models the kernel's
    document let go of) must not lose the tab click (seen in JupyterLab: Live's header over a blank panel)."""
    fig = figure()
    fig.line([1, 2], [1, 2])
    tabs = pn.Tabs(("Live", pn.pane.Bokeh(fig)), ("History", pn.pane.Markdown("h")), dynamic=True)
    with shown_in_notebook(tabs) as (root, doc, comm):
        ref = root.ref["id"]
        manager = CommManager(comm_id=comm.id, plot_id=ref)
        tabs.active = 1  # History shown: the chart leaves the kernel's document
        assert doc.models.get_by_id(fig.x_range.id) is None
        batch = {
            "header": {"msgid": "1", "msgtype": "PATCH-DOC"},
            "metadata": {},
            "_buffers": {},
            "content": {
                "events": [
                    {"kind": "ModelChanged", "model": {"id": fig.x_range.id}, "attr": "start", "new": 0.5},
                    {"kind": "ModelChanged", "model": {"id": root.id}, "attr": "active", "new": 0},
                ]
            },
        }
        # As the page sends it, Bokeh drops the whole batch (the reason for the filter; remove it if this fails).
        tabs._on_msg(ref, manager, copy.deepcopy(batch))
        assert tabs.active == 1
        tabs._on_msg(ref, manager, _known_models_only(ref, copy.deepcopy(batch)))
        assert tabs.active == 0
        assert doc.models.get_by_id(fig.x_range.id) is not None  # the Live chart is back in the document


@pytest.mark.parametrize("pane_type", [pn.pane.HTML, Text])
def test_a_text_changed_after_it_is_shown_in_a_notebook_links_to_no_cdn(pane_type):
    """In a notebook (Panel's inline mode) a ``Text`` whose text changes is sent again with its stylesheets inline.
    Panel's own HTML pane sends them as links to cdn.holoviz.org, which an offline notebook cannot load: the reason
    for ``Text`` (if Panel's pane stops doing so, ``Text`` can go)."""
    with pn.config.set(inline=True):
        pane = pane_type("<p>before</p>", stylesheets=[".note {color: #78350f}"])
        with shown_in_notebook(pane) as (root, _, _):
            pane.object = "<p>after</p>"
            assert "after" in root.text
            links = [str(sheet.url) for sheet in root.stylesheets if isinstance(sheet, ImportedStyleSheet)]
    assert any("cdn.holoviz.org" in link for link in links) == (pane_type is pn.pane.HTML), links


OPEN_CLIENT_COMM = """
import os, time
import panel as pn
from rtdash.notebook import extension
extension()
received = []
client_comm = pn.state._comm_manager.get_client_comm(on_msg=lambda msg: received.append(msg))
print(client_comm.id)
"""


def _run(client, code: str) -> str:
    """Run ``code`` in the kernel of ``client``; what it printed (AssertionError on an error)."""
    out: list[str] = []
    reply = client.execute_interactive(
        code, timeout=120, output_hook=lambda msg: out.append(msg["content"].get("text", ""))
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


@pytest.mark.slow
def test_a_message_that_comes_right_after_its_comm_opens_on_a_subshell_is_handled(tmp_path):
    """JupyterLab sends a Panel output's comm messages to a kernel subshell (its own thread), where rtdash hands them
    to the main thread; the first message of a comm can come before the main thread has taken the comm's opening
    (a cell is running).  It must be handled then, not dropped: the page's comm manager waits for each message's
    reply before it sends the next change (a tab click), and after a dropped one a clicked tab stayed blank."""
    from jupyter_client.manager import start_new_kernel

    flag = tmp_path / "go"
    manager, client = start_new_kernel(kernel_name="python3", env={**os.environ, "PYTHONPATH": str(ROOT)})
    replies: set[str] = set()

    def answered(msg_id: str) -> bool:
        with contextlib.suppress(queue.Empty):
            while True:
                replies.add(client.get_shell_msg(timeout=0)["parent_header"].get("msg_id"))
        return msg_id in replies

    try:
        target = _run(client, OPEN_CLIENT_COMM).strip().splitlines()[-1]
        # The main thread runs a cell until the flag file appears.
        busy = client.execute(f"while not os.path.exists({str(flag)!r}): time.sleep(0.01)")
        # As JupyterLab does: a subshell of its own, then the comm's opening and its first message on it.
        client.control_channel.send(client.session.msg("create_subshell_request", {}))
        subshell = client.get_control_msg(timeout=60)["content"]["subshell_id"]
        sent = []
        for msg_type, content in [
            ("comm_open", {"comm_id": "rtdash-test-comm", "target_name": target, "data": {}}),
            ("comm_msg", {"comm_id": "rtdash-test-comm", "data": {"content": {"events": []}}}),
            ("kernel_info_request", {}),  # answered once the subshell has handled the two before it
        ]:
            msg = client.session.msg(msg_type, content)
            msg["header"]["subshell_id"] = subshell
            client.shell_channel.send(msg)
            sent.append(msg["header"]["msg_id"])
        wait_until(lambda: answered(sent[-1]), 60, 0.1, "the subshell's kernel_info reply")
        flag.write_text("go")
        wait_until(lambda: answered(busy), 60, 0.1, "the busy cell to end")
        assert _run(client, "print(len(received))").strip() == "1"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
