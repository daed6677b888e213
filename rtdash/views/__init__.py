"""Panel components of the dashboard, one module per tab or strip."""

import contextlib
import functools
import logging
import re
import weakref
from collections.abc import Callable, Iterator

import panel as pn
from bokeh.models import ImportedStyleSheet
from panel.custom import JSComponent
from panel.io.notebook import replace_inline_css

log = logging.getLogger("rtdash")


@contextlib.contextmanager
def one_message() -> Iterator[None]:
    """Send the model changes made inside as one message to the page, once the page has loaded.

    Until then the changes go out one by one: Panel drops the changes held in ``pn.io.hold()`` while a session is
    not yet connected (the document is sent whole at connection), yet a page that has pulled the document but not
    yet said it is ready would never get them.
    """
    if pn.state.loaded:
        with pn.io.hold():
            yield
    else:
        yield


class Text(pn.pane.HTML):
    """An HTML pane whose text changes after it is shown (a status line, a notice).

    In a notebook (Panel's inline mode, rtdash.notebook) its stylesheets go out inline at every change, as at the
    first render.  Panel 1.9's ``HTMLBasePane._update`` sends a pane's stylesheets again with each new text, and
    there Panel's own stylesheets are links to cdn.holoviz.org (the inlining of ``Viewable._preprocess`` is skipped
    on that path): an offline notebook could not load them, and the pane lost its styles, with errors in the console.
    """

    def _get_properties(self, doc):
        properties = super()._get_properties(doc)
        if pn.config.inline and "stylesheets" in properties:
            properties["stylesheets"] = [
                replace_inline_css(sheet) if isinstance(sheet, ImportedStyleSheet) else sheet
                for sheet in properties["stylesheets"]
            ]
        return properties


def when_drawn(callback: Callable[[], None]) -> None:
    """Call ``callback`` once the served page has been drawn (Bokeh's "document ready"), at once elsewhere.

    It runs on the next turn after Panel's own ``onload`` callbacks: models built inside one of those, before Panel
    counts the page as loaded, kept their stylesheet changes held (``panel.io.resources.patch_model_css``), and the
    page then got none of the session's later changes (seen: a link to the Refresh tab, then the Live tab blank).
    """
    if pn.state.loaded:
        callback()
        return
    doc = pn.state.curdoc
    pn.state.onload(lambda: doc.add_next_tick_callback(callback))


# Panel's notebook CommManager (panel/models/comm_manager.ts, ``_document_changed``) sends every change of its
# document back to the kernel, the kernel's own included: BokehJS's ClientSession skips events with ``sync`` false
# (those it applied from the other side), Panel's comm manager does not.  So each ``ColumnDataSource.stream`` pushed
# to a notebook came back and was streamed a second time into the kernel's copy of the data, which went out whole,
# duplicates and all, whenever the chart was attached again (a dynamic tab shown again); and a model sent whole came
# back with BokehJS's wrapped scalar visuals, which Bokeh cannot read (bokeh/bokeh#14364: "failed to validate
# Line.line_color ... got Value(...)").  ``guard``, once per page, gives the comm manager the ClientSession's rule.
#
# JupyterLab and Notebook 7 never tell the kernel that an output is gone: pyviz_comms' JupyterLab extension (3.0.6)
# disposes of an output (its cell re-run or cleared) by clearing its Bokeh document and would send
# ``{event_type: "delete", id: <root id>}`` over its "hv-extension-comm" comm, but it opens that comm only while its
# ``_comm`` is ``null``, and ``_comm`` starts (and is reset to) ``undefined`` (jupyterlab_pyviz ``get comm()``, since
# holoviz/pyviz_comms#53; no upstream report found).  So Panel never forgot an output (``pn.state._views``) and what
# it showed kept the kernel busy.  ``release`` sends that same message itself, to the same comm target (Panel's
# ``pn.extension`` registers it; ``pyviz_comms.extension._process_comm_msg`` runs the delete actions: Panel's
# ``_cleanup_panel``, then ``OutputLifetime``'s), when its output's root leaves the page's document.  A dynamic tab
# hidden, or a layout re-rendered, removes the guard's view but leaves the root, and sends nothing.  The comm is
# opened once per output, when it is shown, through the kernel handle the extension keeps for it
# (``window.PyViz.kernels[root id]``; the extension lets go of it before clearing the document).  After a kernel
# restart that comm is gone with the old kernel and nothing is sent.  Closing the browser tab sends the delete of
# every output of the page when the page is hidden for good (``pagehide``).  Closing a notebook inside JupyterLab
# disposes of its kernel connection before its outputs, after which that comm refuses to send, and the extension keeps
# the connection out of reach.  So each guard also asks the kernel (``model.send_msg``) to open a comm to a target it
# registers, "rtdash_release": the comm that arrives carries the real connection (``adopt``), and while that
# connection is being disposed the guard sends the delete of every output in the closing notebook's panel on it
# (``sendDisposing``).  A page that dies without closing (a crash, a lost network) leaves its views in the kernel
# until the kernel stops.  Elsewhere (``panel serve``, VS Code, the classic notebook) there is no such handle and
# nothing is sent.
OUTPUT_GUARD_ESM = """
function guard(doc) {
  for (const root of doc?.roots() ?? []) {
    const proto = Object.getPrototypeOf(root)
    if (root.constructor.__module__ !== "panel.models.comm_manager" || proto.__rtdash_sync_only) continue
    const changed = proto._document_changed
    proto._document_changed = function (event) {
      if (event.sync !== false) changed.call(this, event)  // false: the change came from the kernel
    }
    proto.__rtdash_sync_only = true
  }
}

const COMMS = (window.__rtdash_release_comms ??= new Map())  // root id -> its comm, one per output

if (!window.__rtdash_pagehide) {  // the browser tab closing: every output of the page is gone
  window.__rtdash_pagehide = true
  window.addEventListener("pagehide", (event) => {
    if (event.persisted) return
    for (const [id, comm] of COMMS) {
      try { comm.send({event_type: "delete", id}) } catch (e) { console.debug("rtdash: release on unload", e) }
    }
    COMMS.clear()
  })
}

const ROOTS = (window.__rtdash_release_roots ??= new Map())  // root id -> its element in the page
const TARGET = "rtdash_release"

// pyviz_comms' delete, sent on the kernel connection itself while it is being disposed (a notebook closing in
// JupyterLab): comms refuse to send once it is disposed, but during its `disposed` signal its websocket is still
// open (@jupyterlab/services KernelConnection.dispose: the signal first, the socket closed after).
function sendDisposing(kernel, comm, id) {
  const msg_id = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`
  kernel.sendShellMessage({
    header: {msg_id, msg_type: "comm_msg", username: kernel.username, session: kernel.clientId,
             date: new Date().toISOString(), version: "5.2"},
    parent_header: {}, metadata: {}, channel: "shell", buffers: [],
    content: {comm_id: comm.commId, data: {event: "delete", id}},
  }, false, true)
}

function adopt(comm, msg) {  // the kernel opened the comm this page asked for (once per notebook is enough)
  const asker = ROOTS.get(msg?.content?.data?.id)
  const panel = asker?.closest(".jp-NotebookPanel")
  const kernel = comm._kernel  // CommHandler's connection: it has no public getter
  if (!panel || kernel?.disposed === undefined || kernel.__rtdash_watched) return
  kernel.__rtdash_watched = true
  kernel.disposed.connect(() => {  // the notebook is closing: its outputs go after its connection
    for (const [id, el] of ROOTS) {
      if (!panel.contains(el) || !COMMS.has(id)) continue
      COMMS.delete(id)
      try { sendDisposing(kernel, comm, id) } catch (e) { console.debug("rtdash: release on close", e) }
    }
  })
}

function release(model, view) {
  const root = view.root.model, doc = root.document, id = root.id
  if (doc === null || !doc.roots().includes(root)) return
  ROOTS.set(id, view.root.el)
  const open = (tries) => {
    const kernel = window.PyViz?.kernels?.[id]
    if (COMMS.has(id) || !doc.roots().includes(root)) return
    if (kernel !== undefined) {
      const comm = kernel.connectToComm("hv-extension-comm")
      comm.open()
      COMMS.set(id, comm)
      kernel.registerCommTarget(TARGET, adopt)  // again after a kernel restart, which forgets targets
      model.send_msg({root: id})
    } else if (tries > 0) {
      setTimeout(() => open(tries - 1), 200)
    }
  }
  open(50)
  model.on("remove", () => {
    const comm = COMMS.get(id)
    if (comm === undefined || doc.roots().includes(root)) return
    COMMS.delete(id)
    ROOTS.delete(id)
    comm.send({event_type: "delete", id})
  })
}

export function render({ model, view }) {
  guard(view.model.document)
  release(model, view)
  return document.createElement("span")
}
"""


class OutputGuard(JSComponent):
    """An invisible part of a notebook output that stops its page from echoing the kernel's changes back, and tells
    the kernel when the output is gone (see ``OUTPUT_GUARD_ESM``).  Put it at the output's top level, not in a
    dynamic tab (a hidden tab holds no views)."""

    _esm = OUTPUT_GUARD_ESM

    def __init__(self, **params):
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})

    def _handle_msg(self, msg) -> None:
        """The page shows this guard in output ``msg["root"]``: open a comm to its "rtdash_release" target, on which
        the page can still say which outputs are gone while JupyterLab closes the notebook (one per output asked)."""
        root = msg.get("root") if isinstance(msg, dict) else None
        if not isinstance(root, str) or not _ROOT_ID.fullmatch(root) or root in _RELEASE_COMMS:
            return
        from comm import create_comm

        comm = create_comm(target_name="rtdash_release", data={"id": root})
        comm.on_msg(_release_message)
        _RELEASE_COMMS[root] = comm


_ROOT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # a Bokeh root id as a page sends it (a notebook's are UUIDs)
_RELEASE_COMMS: dict[str, object] = {}  # root id -> the "rtdash_release" comm opened when its page asked


def _release_message(msg: dict) -> None:
    """``{event: "delete", id}`` on a release comm (on whichever thread the kernel handles comms): pyviz_comms'
    delete actions forget output ``id`` on the main thread (Panel's, then ours), as its own message would."""
    data = msg.get("content", {}).get("data")
    ref = data.get("id") if isinstance(data, dict) and data.get("event") == "delete" else None
    if isinstance(ref, str) and _ROOT_ID.fullmatch(ref):
        from ..notebook import on_main_thread

        on_main_thread(pn.extension._process_comm_msg, {"event_type": "delete", "id": ref})


class OutputLifetime:
    """The notebook outputs showing ``panes``, and ``on_end()`` once every one of them is gone.

    A notebook has no session to end with: an output is gone when the page disposes of it (its cell re-run or
    cleared, deleted, the notebook closed), which the page tells the kernel through pyviz_comms' ``delete`` message;
    Panel then forgets the output (``pn.state._views`` and each pane's ``_models``).  ``check()`` runs at every such
    message and whenever its owner is about to do work.  Panes not shown yet keep their owner alive (it may be shown
    later); panes shown twice keep it alive until both outputs are gone.
    """

    def __init__(self, panes: list[pn.viewable.Viewable], on_end: Callable[[], None]):
        self.panes = panes
        self.on_end = on_end
        self.shown = False  # some output has shown the panes
        self.ended = False
        _LIFETIMES.add(self)
        _watch_deletions()

    def outputs(self) -> set[str]:
        """The ids of the live outputs (root models) showing the panes."""
        views = pn.state._views
        refs = {ref for pane in self.panes for ref in list(pane._models) if ref in views}
        self.shown = self.shown or bool(refs)
        return refs

    def listening(self) -> bool:
        """Whether the page of every live output has opened its comm (see :meth:`push`)."""
        views = pn.state._views
        comms = [views[ref][3] for ref in self.outputs() if ref in views]
        return all(comm is None or comm._comm is not None for comm in comms)  # no comm: nothing to wait for

    def push(self) -> None:
        """Send the panes' changes to the outputs whose page has opened its comm (``pn.io.push_notebook``, but to
        those only).  Panel keeps a push to an output whose comm is not open yet and retries it every 0.1 s, each
        push on a timer of its own, so that several went out in any order once it opened (a point out of time order,
        seen after Run All again on a loaded machine).  An output not listening keeps its changes in its document,
        held, and gets them in one message, in order, with the first push after its comm opens."""
        views = pn.state._views
        for ref in self.outputs():
            _, root, doc, comm = views[ref]
            if comm is not None and comm._comm is not None and "embedded" not in root.tags:
                pn.io.notebook.push(doc, comm)

    def check(self, deleted: str | None = None) -> bool:
        """Whether the panes are shown, or not shown yet; if every output showing them is gone, ``on_end()``."""
        if self.ended:
            return False
        if deleted is not None and not self.shown:
            # Shown and deleted between two checks: the deleted output's document still holds the panes' models.
            docs = {getattr(getattr(pane, "object", None), "document", None) for pane in self.panes} - {None}
            self.shown = any(doc.get_model_by_id(deleted) is not None for doc in docs)
        if self.outputs() or not self.shown:
            return True
        self.ended = True
        _LIFETIMES.discard(self)
        self.on_end()
        return False


_LIFETIMES: weakref.WeakSet[OutputLifetime] = weakref.WeakSet()


@functools.cache
def _watch_deletions() -> None:
    """Once per process: check every lifetime when the page deletes an output (after Panel's own clean-up)."""
    pn.extension.add_delete_action(_output_deleted)


def _output_deleted(ref: str) -> None:
    for lifetime in list(_LIFETIMES):
        try:
            lifetime.check(deleted=ref)
        except Exception:  # one view's clean-up must not keep the others from theirs
            log.warning("releasing a deleted notebook output failed", exc_info=True)


class _Shown(pn.Column):
    """A column whose lifetime counts as shown once Panel has rendered it (``while_shown``)."""

    def __init__(self, *objects, lifetime: OutputLifetime, **params):
        super().__init__(*objects, **params)
        self._lifetime = lifetime  # held here: a lifetime is only weakly known to the deletions it watches

    def get_root(self, doc=None, comm=None, preprocess=True):
        root = super().get_root(doc, comm, preprocess)
        self._lifetime.outputs()  # notes that it was shown; the panes' models are forgotten again once deleted
        return root


_SHOWN: set[OutputLifetime] = set()  # the lifetimes of ``while_shown`` outputs that have not ended yet


def while_shown(obj, on_end: Callable[[], None]) -> pn.viewable.Viewable:
    """``obj`` as a notebook output that calls ``on_end()`` once the output is gone (re-run, cleared, deleted, its
    notebook or browser tab closed): e.g. a stream's sink that feeds the chart shown.  Elsewhere (``panel serve``),
    ``on_end()`` runs when the session ends."""
    pane = pn.panel(obj)

    def end() -> None:
        lifetime.ended = True
        if lifetime in _SHOWN:
            _SHOWN.discard(lifetime)
            on_end()

    lifetime = OutputLifetime([pane], end)
    _SHOWN.add(lifetime)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:  # a server session
        pn.state.on_session_destroyed(lambda _context: end())
        return pane
    return _Shown(pane, OutputGuard(), lifetime=lifetime)
