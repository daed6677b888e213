"""The notebook in a real JupyterLab (and Notebook 7) in Debian's Chromium, offline: Run All, live charts, tabs,
re-runs.  JupyterLab runs with its defaults (comms over subshells on, with ipykernel 7).  Chart data is read from
the page's Bokeh documents (tests/jupyter.py)."""

from __future__ import annotations

import pytest

from tests import jupyter as J
from tests.helpers import close_quietly, fake_env, wait_until

pytestmark = [pytest.mark.ui, pytest.mark.slow]

ENV = {"RTDASH_PRICE_INTERVAL": "500ms", "RTDASH_WEATHER_INTERVAL": "2s", "RTDASH_CITIES": "London,Berlin,Tokyo"}
LIVE, APP, HVPLOT = "from rtdash.views.live", "from rtdash.app", "import asyncio"
LOADED = "loaded from this notebook"  # the first cell's line once the inline JavaScript has run


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """One JupyterLab (and fake API) for the module: starting them is the slow part of a test's setup."""
    from tests.fakeapi import FakeAPI

    with FakeAPI() as api, J.jupyter_server(fake_env(api.url, **ENV), tmp=tmp_path_factory.mktemp("jupyter")) as server:
        server.api = api
        yield server


@pytest.fixture
def lab(lab_server):
    """The module's JupyterLab, as new: no session or kernel left by an earlier test, the notebook as stored."""
    lab_server.reset()
    yield lab_server
    lab_server.reset()


@pytest.fixture(scope="module")
def module_offline_browser():
    """One offline Chromium for the module: starting and stopping one took about 4 s of a test's time."""
    with J.chromium(offline=True) as browser:
        yield browser


@pytest.fixture
def offline_browser(module_offline_browser):
    """The module's offline Chromium; the pages a test opened (each in a context of its own) are closed after it,
    before ``lab`` shuts their kernels down."""
    yield module_offline_browser
    for context in module_offline_browser.contexts:
        close_quietly(context)


def run_all(page, server, ui: str = "lab") -> list[dict]:
    J.open_notebook(page, server, ui=ui)
    J.run_all(page)
    return J.wait_idle(page)


def price_series(page, index: int) -> list[dict]:
    return [s for s in J.series(page, "price") if s["cell"] == index and s["connected"]]


def assert_ordered(page) -> None:
    """Every price series on the page strictly increases in time: no step back, no time twice."""
    for s in J.series(page, "price"):
        if s["connected"]:
            assert s["backward"] == 0 and s["repeated"] == 0 and s["distinct"] == s["rows"], s


def assert_works_as_run(page) -> None:
    """What a user sees after running the notebook, however they ran it: the first cell says the JavaScript loaded,
    every code cell shows an output of its own and no traceback, and the hvPlot, Live and app cells' prices grow."""
    code = [c for c in J.cells(page) if c["type"] == "code"]
    wait_until(lambda: LOADED in J.cells(page)[code[0]["index"]]["output_text"], 30)
    assert [c["index"] for c in code if not c["outputs"]] == []
    for index in (J.cell_index(page, HVPLOT), J.cell_index(page, LIVE), J.cell_index(page, APP)):
        before, after = J.wait_grows(page, index, "price", timeout=60)
        assert after > before
    assert J.tracebacks(page) == []


def test_run_all_offline_then_again_then_restart_and_run_all(lab, offline_browser):
    """What a user does first: Run All in JupyterLab (offline: no CDN), look at every output and switch the app's
    tabs; Run All again, which replaces the outputs; Restart Kernel and Run All, which starts afresh.  (One test: a
    Run All is the slow part, and each step starts where the one before left the notebook.)"""
    page = J.new_page(offline_browser, offline=True)
    cells = run_all(page, lab)
    live, app, hvplot = J.cell_index(page, LIVE), J.cell_index(page, APP), J.cell_index(page, HVPLOT)

    # The outputs render with no route to a CDN: the first cell's check says the inline JavaScript ran.
    code = next(c for c in cells if c["type"] == "code")
    wait_until(lambda: LOADED in J.cells(page)[code["index"]]["output_text"], 30)
    # The Live cell's, the hvPlot cell's and the app cell's price series grow.
    for index in (live, hvplot, app):
        before, after = J.wait_grows(page, index, "price", timeout=60)
        assert after > before

    # Switching tabs in the app cell and back keeps every series in order, without duplicates.
    J.click_tab(page, app, "Refresh")
    J.wait_idle(page)
    # A refresh changes the tab's status line after it was shown: still nothing asked of a CDN (checked below).
    status = J.cell_locator(page, app).locator('.status[role="status"]')

    def shown() -> bool:
        tabs = J.cell_locator(page, app).locator(".bk-tab.bk-active").all_inner_texts()
        assert status.count() == 1, f"{status.count()} status lines; active tabs {tabs}"
        return True

    try:
        wait_until(shown, 60, 0.5, "the Refresh tab's status line")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{J.diagnosis(page, app, 'price')}\nconsole: {page.console_errors}") from None
    before = status.inner_text()
    J.cell_locator(page, app).locator("button", has_text="Refresh").click(timeout=60_000)
    wait_until(lambda: status.inner_text() not in (before, "") and "Fetched" in status.inner_text(), 60)
    for tab in ("Live", "History", "Live"):
        J.click_tab(page, app, tab)
        J.wait_idle(page)
    J.wait_grows(page, app, "price", timeout=60)
    assert_ordered(page)

    assert J.tracebacks(page) == []
    assert J.unexpected_console_errors(page) == []
    # Nothing but map tiles was asked of a public host.
    assert [url for url in page.blocked if not any(h in url for h in J.EXPECTED_OFFLINE_HOSTS)] == []
    # No empty output boxes (Panel's console-output placeholders): every output has something to show.
    empty = [
        c["index"] for c in J.cells(page) for o in c["outputs"] if o["output_type"] == "display_data" and not o["mime"]
    ]
    assert empty == []
    first = J.kernel_json(page, "runtime.price.subscriber_count")

    # Run All again: the first run's outputs are released, not kept beside the new ones.
    J.run_all(page)
    J.wait_idle(page)
    J.wait_grows(page, live, "price", timeout=60)
    J.wait_grows(page, app, "price", timeout=60)
    # One subscriber per live output showing prices (the Live cell, the app cell) and the `subscription` cell's.
    outputs = {s["doc"] for s in J.series(page, "price") if s["connected"] and s["cell"] in (live, app)}
    count = J.kernel_json(page, "runtime.price.subscriber_count")
    assert count == first == len(outputs) + 1, (first, count, outputs)
    # The hvPlot cell's feed was replaced, not added: the poller's own sink and one feed.
    assert J.kernel_json(page, "len(runtime.price.frame.stream.downstreams)") == 2
    assert J.tracebacks(page) == []
    assert_ordered(page)

    # Restart the kernel and run all.
    J.restart_and_run_all(page)
    cells = J.wait_idle(page)
    # A new kernel ran every code cell once, top to bottom.
    counts = [c["execution_count"] for c in cells if c["type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts
    assert_works_as_run(page)
    assert_ordered(page)
    # One poller per source again (the old kernel's died with it), delivering to this kernel.
    assert J.kernel_json(page, "runtime.price.subscriber_count") >= 1
    assert J.kernel_json(page, "len(received)") >= 1


def test_cells_run_one_by_one(lab, offline_browser):
    page = J.new_page(offline_browser, offline=True)
    J.open_notebook(page, lab)
    code = [c["index"] for c in J.cells(page) if c["type"] == "code"]
    for n, index in enumerate(code, start=1):
        J.run_cell(page, index)
        cell = J.wait_ran(page, index)
        # Each cell's output stands on its own: it shows something as soon as the cell has run.
        assert cell["execution_count"] == n and cell["outputs"], cell
        assert J.tracebacks(page) == []
    assert_works_as_run(page)
    assert_ordered(page)


# In the kernel: the outputs Panel still holds that show one of our views (each has an OutputGuard at its top level),
# and the status badges' periodic callbacks still running.
GUARDED_OUTPUTS = (
    "[ref for ref, (view, *_) in __import__('panel').state._views.items() if hasattr(view, 'select')"
    " and view.select(__import__('rtdash.views', fromlist=['OutputGuard']).OutputGuard)]"
)
FEEDS = "len(runtime.price.frame.stream.downstreams)"  # the poller's own sink and the hvPlot cell's feed
STATUS_CALLBACKS = (
    "[1 for o in __import__('gc').get_objects() if type(o).__name__ == 'PeriodicCallback' and o.running"
    " and getattr(o.callback, '__qualname__', '') == 'StatusView.refresh']"
)


@pytest.mark.parametrize("ui", ["lab", "notebook"])
def test_cleared_outputs_release_what_they_showed(lab, offline_browser, ui):
    """Clearing every output, without running anything, ends the subscriptions of the views they showed, the hvPlot
    cell's feed and the status badges' periodic callback, and Panel forgets those outputs; the `subscription` cell's
    own subscriber stays and keeps receiving."""
    page = J.new_page(offline_browser, offline=True)
    run_all(page, lab, ui=ui)  # in Notebook 7 too: its outputs render, and the app cell's prices grow
    J.wait_grows(page, J.cell_index(page, APP), "price", timeout=60)
    assert J.tracebacks(page) == []
    # The Live cell's view, the app cell's and the `subscription` cell's; the hvPlot, Live, Refresh and app outputs.
    assert J.kernel_json(page, "runtime.price.subscriber_count") == 3
    assert len(J.kernel_json(page, GUARDED_OUTPUTS)) == 4
    assert J.kernel_json(page, STATUS_CALLBACKS) == [1]
    assert J.kernel_json(page, FEEDS) == 2

    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    # Each output's release is a message of its own: wait for all of them.
    released = f"[runtime.price.subscriber_count, {FEEDS}, {GUARDED_OUTPUTS}, {STATUS_CALLBACKS}]"
    wait_until(lambda: J.kernel_json(page, released) == [1, 1, [], []], 60, 0.5, "the cleared outputs' release")
    received = J.kernel_json(page, "len(received)")
    wait_until(lambda: J.kernel_json(page, "len(received)") > received, 60, 0.5, "the poller to keep delivering")


@pytest.mark.parametrize("ui", ["lab", "notebook", "lab-tab"])
def test_closing_the_notebook_releases_what_it_showed(lab, offline_browser, ui):
    """Closing the browser tab (JupyterLab's; Notebook 7's) or the notebook's tab inside JupyterLab, with the kernel
    left running, ends the subscriptions of the views its outputs showed, the hvPlot cell's feed and the status
    badges' periodic callback; the `subscription` cell's own subscriber stays and keeps receiving.  The kernel is
    asked over a connection of its own: the page's is gone."""
    page = J.new_page(offline_browser, offline=True)
    run_all(page, lab, ui="notebook" if ui == "notebook" else "lab")
    J.wait_grows(page, J.cell_index(page, APP), "price", timeout=60)
    count = "runtime.price.subscriber_count"
    assert lab.kernel_json(count) == 3
    assert lab.kernel_json(FEEDS) == 2
    assert len(lab.kernel_json(GUARDED_OUTPUTS)) == 4

    if ui == "lab-tab":
        J.close_notebook(page)
    else:
        page.close()
    released = f"[{count}, {FEEDS}, {GUARDED_OUTPUTS}, {STATUS_CALLBACKS}]"
    wait_until(lambda: lab.kernel_json(released) == [1, 1, [], []], 60, 0.5, "the closed notebook's release")
    assert len(lab.kernels()) == 1  # the kernel still runs
    received = lab.kernel_json("len(received)")
    wait_until(lambda: lab.kernel_json("len(received)") > received, 60, 0.5, "the poller to keep delivering")
