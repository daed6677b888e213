"""rtdash in a Jupyter kernel: the notebook's one-time setup.

``extension()`` is the notebook's ``pn.extension``: it loads Bokeh, Panel and Tabulator's JavaScript *inline*, once,
in the calling cell's output (so outputs render with no route to a CDN), says in plain text when that JavaScript
did not run, imports the modules whose import would publish a loader again in a later cell, and makes every comm
message of a Panel output run on the kernel's main thread.  ``log_stream()`` is where rtdash's log lines go in a
kernel: the kernel process's own stderr (the terminal or log of the Jupyter server), not whichever cell is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import IO

import panel as pn

log = logging.getLogger("rtdash")

# Panel's notifications (the alerts') in the dashboard's font, not the browser's default serif.
NOTIFICATION_CSS = ".notyf__message {font: 14px/1.4 system-ui, sans-serif}"
# Shown until the inline JavaScript has run; a trusted output replaces it with one line saying what loaded.
JS_CHECK = """<div id="{id}" style="font: 13px/1.4 system-ui, sans-serif; color: #7f1d1d">{message}</div>
<script>
(() => {{
  const el = document.getElementById("{id}");
  let tries = 0;
  const check = () => {{
    if (el === null) return;
    if (window.Bokeh !== undefined && window.Bokeh.Panel !== undefined) {{
      el.style.color = "#4b5563";
      el.textContent = `rtdash: Bokeh ${{window.Bokeh.version}} and Panel's JavaScript loaded from this notebook ` +
        "(inline: no CDN needed).";
    }} else if (++tries < 100) {{
      setTimeout(check, 100);
    }} else {{
      el.textContent = "rtdash: Bokeh or Panel's JavaScript did not load, so the dashboard's outputs below stay " +
        "blank. Run this cell again; if it persists, see the browser's console.";
    }}
  }};
  check();
}})();
</script>"""
JS_MISSING = (
    "rtdash: the dashboard's JavaScript has not run, so its outputs below stay blank. Run this cell (or Run All): "
    "a notebook opened from disk is not trusted and its saved outputs do not run their JavaScript."
)


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel), not a script or ``panel serve``."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def log_stream() -> IO[str] | None:
    """Where rtdash logs: in a kernel, the kernel process's stderr (the Jupyter server's terminal or log), since
    a kernel's ``sys.stderr`` writes under whichever cell happens to be running; elsewhere ``None`` (stderr)."""
    return sys.__stderr__ if in_kernel() else None


def extension(notifications: bool = False) -> None:
    """Load the dashboard's JavaScript in a notebook, inline and once; elsewhere ``pn.extension("tabulator")``,
    with Panel's notifications when ``notifications`` (alert rules are set).

    Call it (or ``create_app``, which does) before displaying any rtdash view.  A second call in the same kernel
    publishes nothing again.
    """
    if not in_kernel():
        # apply_signatures: the keyword signatures an editor shows in a kernel; a server has no use for them, and
        # making them again took a sixth of each session's build.
        if notifications:  # alerts notify every open page (rtdash.views.alerts), in the page's own font
            pn.extension("tabulator", notifications=True, raw_css=[NOTIFICATION_CSS], apply_signatures=False)
        else:
            pn.extension("tabulator", apply_signatures=False)
        return
    if _state.loaded:
        return
    from IPython.display import publish_display_data

    _handle_comms_on_main_thread()
    # No empty "console output" box under every Panel output: a callback's error goes to the log (see below).
    pn.config.console_output = "disable"
    # Inline: the JavaScript travels in this cell's output (the README has the cost), so nothing needs a CDN.
    pn.extension("tabulator", inline=True)
    # ``import hvplot.pandas`` calls ``hv.extension``, which publishes Bokeh's loader again (from the CDN) in
    # whatever cell imports it first, and hvPlot re-imports it in every cell that asks.  Import what imports it
    # now, with its loader output dropped: the JavaScript is loaded above.
    with _dropped_display():
        import hvplot.pandas  # noqa: F401

        from . import app  # noqa: F401  (the views import hvplot.pandas)
    element = f"rtdash-js-{uuid.uuid4().hex[:12]}"
    publish_display_data(
        {
            "text/html": JS_CHECK.format(id=element, message=html.escape(JS_MISSING)),
            "text/plain": JS_MISSING,
        }
    )
    _state.loaded = True


@contextlib.contextmanager
def _dropped_display() -> Iterator[None]:
    """Drop what is displayed meanwhile.  The display publisher's ``publish`` is silenced, not the publisher
    swapped (IPython's ``capture_output`` does that): ipykernel calls ``display_pub.set_parent`` for a comm message
    arriving on a subshell thread meanwhile, which a capturing publisher does not have (an ``AttributeError`` under
    the first cell)."""
    from IPython import get_ipython

    publisher = get_ipython().display_pub
    publisher.publish = lambda *args, **kwargs: None
    try:
        yield
    finally:
        del publisher.publish


class _State:
    loaded = False
    loop: asyncio.AbstractEventLoop | None = None
    thread: int | None = None


_state = _State()


def _handle_comms_on_main_thread() -> None:
    """Run every comm message of a Panel output on the kernel's main thread, in arrival order.

    JupyterLab ≥ 4.4 sends comm messages to a kernel subshell by default ("comms over subshells", with ipykernel
    ≥ 7), so ipykernel runs their handlers on a subshell's own thread.  Panel's handler applies the browser's change
    to the output's Bokeh document and sends the resulting events, as a Bokeh message of several comm messages
    (header, metadata, content, then one text and one binary message per buffer; ``panel.io.notebook.send``),
    while the live updates stream into the same document and comm from the main thread's loop.  Two threads
    interleave those parts ("Expected binary fragment but received text fragment", "reference … isn't known" in the
    browser) and change one document at once.  Upstream: jupyterlab/jupyterlab#19719 (comms over subshells can
    corrupt plots); ipympl took the lock route (matplotlib/ipympl#603).  Here the handlers of Panel's client comms
    (pyviz_comms ``JupyterCommJS``, as Panel subclasses it) hop to the main thread's loop, so that the document and
    its comm have one thread again, whatever the frontend's setting.
    """
    from panel.io import notebook
    from pyviz_comms import JupyterCommJS, JupyterCommManager

    _state.loop = asyncio.get_running_loop() if _running_loop() else None
    _state.thread = threading.get_ident()
    if _state.loop is None:
        return  # not in a cell's loop (a plain IPython shell): nothing runs elsewhere anyway
    notebook.JupyterCommManagerBinary.client_comm = _main_thread_comm(notebook.JupyterCommManagerBinary.client_comm)
    JupyterCommManager.client_comm = _main_thread_comm(JupyterCommJS)


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _main_thread_comm(base: type) -> type:
    if getattr(base, "_rtdash_main_thread", False):
        return base

    class MainThreadComm(base):
        """``base`` whose incoming messages are handled on the kernel's main thread; errors go to the log."""

        _rtdash_main_thread = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            on_msg, on_error = self._on_msg, self._on_error
            if isinstance(on_msg, functools.partial) and on_msg.args:  # Panel's: partial(_on_msg, root ref, manager)
                ref = on_msg.args[0]
                self._on_msg = lambda msg: on_msg(_known_models_only(ref, msg))

            def logged(error: Exception) -> None:
                log.error("a notebook output's callback failed: %s: %s", type(error).__name__, error, exc_info=error)
                if on_error is not None:
                    on_error(error)

            self._on_error = logged

        def _handle_open(self, comm, msg):
            # The comm's messages are taken from now on, on whichever thread opened it: each goes to the main
            # thread's queue, behind the opening.  ipykernel drops a message that comes before a comm has a
            # handler, and the page's comm manager sends its next change only when the last is answered (or at a
            # change more than 5 s later): a first message arriving while a cell ran (the opening waiting for the
            # main thread) was lost, and the output's next change (a tab clicked) was never sent.
            comm.on_msg(self._handle_msg)
            on_main_thread(super()._handle_open, comm, msg)

        def _handle_msg(self, msg):
            on_main_thread(super()._handle_msg, msg)

    MainThreadComm.__name__ = MainThreadComm.__qualname__ = f"MainThread{base.__name__}"
    return MainThreadComm


def _known_models_only(ref: str, msg: dict) -> dict:
    """``msg`` (a page's ``PATCH-DOC`` for the output ``ref``) without the changes to models its document no longer
    holds.

    Panel's comm manager in the page sends its changes in batches, and Bokeh's ``Document.apply_json_patch`` drops a
    whole patch, at debug level, when one change names a model the document has let go of.  A dynamic tab hidden in
    the kernel lets go of its charts while the page may still report their auto-ranged axes, in the same batch as
    the next tab click: the click was dropped with them, the page showed the Live tab's header over a blank panel and
    its charts stopped (the kernel went on thinking History was shown).  Only the stale changes are dropped here.
    """
    views = pn.state._views
    content = msg.get("content")
    if ref not in views or not isinstance(content, dict) or not isinstance(content.get("events"), list):
        return msg
    models = views[ref][2].models
    events = content["events"]
    kept = [
        event
        for event in events
        if not (isinstance(event, dict) and event.get("kind") == "ModelChanged")
        or models.get_by_id(str((event.get("model") or {}).get("id"))) is not None
    ]
    if len(kept) == len(events):
        return msg
    log.debug("a notebook output's patch named %d model(s) it no longer shows: dropped", len(events) - len(kept))
    return {**msg, "content": {**content, "events": kept}}


def on_main_thread(fn, *args) -> None:
    """``fn(*args)`` on the kernel's main thread: now if this is it (or no cell loop is known), else soon, in order."""
    if _state.loop is None or threading.get_ident() == _state.thread or _state.loop.is_closed():
        fn(*args)
    else:
        _state.loop.call_soon_threadsafe(fn, *args)
