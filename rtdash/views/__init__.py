"""Panel components of the dashboard, one module per tab or strip."""

import contextlib
import functools
import logging
import re
import weakref
from collections.abc import Callable, Iterator

import panel as pn
from panel.custom import JSComponent

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
# it showed kept the kernel busy.  The guard tells the kernel itself, on a comm of its own per output: once shown, it
# registers the "rtdash_release" comm target on the kernel handle the extension keeps for its output
# (``window.PyViz.kernels[root id]``) and asks the kernel (``model.send_msg``) to open a comm to it.  It sends
# ``{event: "delete", id}`` on that comm when its output's root leaves the page's document (re-run, cleared); the
# kernel runs pyviz_comms' own delete actions (``pyviz_comms.extension._process_comm_msg``: Panel's
# ``_cleanup_panel``, then ``OutputLifetime``'s).  A dynamic tab hidden, or a layout re-rendered, removes the guard's
# view but leaves the root, and sends nothing.  Closing the notebook in JupyterLab disposes of its kernel connection
# before its outputs, after which a comm refuses to send; but during the connection's ``disposed`` signal its
# websocket is still open (@jupyterlab/services ``KernelConnection.dispose``: the signal first, the socket closed
# after), so the guard sends the delete of every output of that connection then, as a message of its own
# (``sendDisposing``; the comm's connection is its private ``_kernel``: ``CommHandler`` has no public getter).
# Closing the browser tab (Notebook 7's page is one notebook) sends them when the page is hidden for good
# (``pagehide``).  A page that dies without either (a crash, a lost network) leaves its views in the kernel until the
# kernel stops.  Elsewhere (``panel serve``, VS Code, the classic notebook) there is no such handle and nothing is
# sent.
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

const TARGET = "rtdash_release"
const OUTPUTS = (window.__rtdash_release_outputs ??= new Map())  // root id -> the comm the kernel opened for it

function sendDisposing(kernel, comm, id) {
  const msg_id = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`
  kernel.sendShellMessage({
    header: {msg_id, msg_type: "comm_msg", username: kernel.username, session: kernel.clientId,
             date: new Date().toISOString(), version: "5.2"},
    parent_header: {}, metadata: {}, channel: "shell", buffers: [],
    content: {comm_id: comm.commId, data: {event: "delete", id}},
  }, false, true)
}

function adopt(comm, msg) {  // the kernel opened the comm of one output
  const id = msg?.content?.data?.id
  if (typeof id !== "string") return
  OUTPUTS.set(id, comm)
  const kernel = comm._kernel
  if (kernel?.disposed === undefined || kernel.__rtdash_watched) return
  kernel.__rtdash_watched = true
  kernel.disposed.connect(() => {  // the notebook is closing: its outputs go after its connection
    for (const [id, comm] of OUTPUTS) {
      if (comm._kernel !== kernel) continue
      OUTPUTS.delete(id)
      try { sendDisposing(kernel, comm, id) } catch (e) { console.debug("rtdash: release on close", e) }
    }
  })
}

if (!window.__rtdash_pagehide) {  // the browser tab closing
  window.__rtdash_pagehide = true
  window.addEventListener("pagehide", (event) => {
    if (event.persisted) return
    for (const [id, comm] of OUTPUTS) {
      try { comm.send({event: "delete", id}) } catch (e) { console.debug("rtdash: release on unload", e) }
    }
    OUTPUTS.clear()
  })
}

function release(model, view) {
  const root = view.root.model, doc = root.document, id = root.id
  if (doc === null || !doc.roots().includes(root)) return
  const ask = (tries) => {
    if (OUTPUTS.has(id) || !doc.roots().includes(root)) return
    const kernel = window.PyViz?.kernels?.[id]
    if (kernel !== undefined) {
      kernel.registerCommTarget(TARGET, adopt)  // again after a kernel restart, which forgets targets
      model.send_msg({root: id})
    } else if (tries > 0) {
      setTimeout(() => ask(tries - 1), 200)
    }
  }
  ask(50)
  model.on("remove", () => {
    const comm = OUTPUTS.get(id)
    if (comm === undefined || doc.roots().includes(root)) return
    OUTPUTS.delete(id)
    try { comm.send({event: "delete", id}) } catch (e) { console.debug("rtdash: release", e) }
  })
}

export function render({ model, view }) {
  guard(view.model.document)
  release(model, view)
  return document.createElement("span")
}
"""

RELEASE_TARGET = "rtdash_release"
_ROOT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # a Bokeh root id, as the page sends it (server "p123", notebook UUID)
_RELEASE_COMMS: dict[str, object] = {}  # root id -> the comm its page tells the kernel on that the output is gone


class OutputGuard(JSComponent):
    """An invisible part of a notebook output that stops its page from echoing the kernel's changes back, and tells
    the kernel when the output is gone (see ``OUTPUT_GUARD_ESM``).  Put it at the output's top level, not in a
    dynamic tab (a hidden tab holds no views)."""

    _esm = OUTPUT_GUARD_ESM

    def __init__(self, **params):
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})

    def _handle_msg(self, msg) -> None:
        """The page shows this guard in output ``msg["root"]``: open the comm it tells the kernel on when the output
        is gone (once per output)."""
        root = msg.get("root") if isinstance(msg, dict) else None
        if not isinstance(root, str) or not _ROOT_ID.fullmatch(root) or root in _RELEASE_COMMS:
            return
        from comm import create_comm

        comm = create_comm(target_name=RELEASE_TARGET, data={"id": root})
        comm.on_msg(functools.partial(_release_message, root))
        _RELEASE_COMMS[root] = comm


def _release_message(root: str, msg: dict) -> None:
    """A message on an output's release comm (on whichever thread the kernel handles comms)."""
    data = msg.get("content", {}).get("data")
    if isinstance(data, dict) and data.get("event") == "delete" and data.get("id") == root:
        from ..notebook import on_main_thread

        on_main_thread(_release, root)


def _release(root: str) -> None:
    """The page says output ``root`` is gone: pyviz_comms' delete actions forget it (Panel's, then ours)."""
    comm = _RELEASE_COMMS.pop(root, None)
    try:
        pn.extension._process_comm_msg({"event_type": "delete", "id": root})
    finally:
        if comm is not None:
            with contextlib.suppress(Exception):  # the page may be gone already
                comm.close()


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
        """Whether the page of every live output has opened its comm.  Until then Panel keeps each push and retries
        it every 0.1 s, and the retries go out in any order."""
        views = pn.state._views
        comms = [views[ref][3] for ref in self.outputs() if ref in views]
        return all(comm is None or comm._comm is not None for comm in comms)  # no comm: nothing to wait for

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
