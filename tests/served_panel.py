"""``python -m tests.served_panel serve ...``: ``panel serve`` as the tests run it, which answers ``kill -USR2`` by
writing to its standard error what each Bokeh session of the process is waiting for.

For the message of a test that waited in vain for the server (``ServedApp.stacks``): a session's document lock and
hold, its held events and pending callbacks, its websockets' write locks (Panel's), the event loop's tasks, and what
the Refresh views hold.  The server itself writes every thread's stack on ``kill -USR1``
(rtdash.server.dump_stacks_on_sigusr1); a lost callback or a lock that is never released shows in no stack.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import traceback


def _name(callback) -> str:
    callback = getattr(callback, "func", callback)  # a functools.partial
    return getattr(callback, "__qualname__", None) or repr(callback)[:80]


def sessions() -> list[str]:
    from bokeh.server.session import ServerSession

    lines = []
    for session in (o for o in gc.get_objects() if isinstance(o, ServerSession)):
        callbacks = session.document.callbacks
        sockets = [getattr(c._socket, "write_lock", None) for c in session._subscribed_connections]
        lines.append(
            f"session {session.id[:8]}: destroyed={session.destroyed} lock={session._lock!r} "
            f"writing={session._pending_writes is not None} hold={callbacks._hold!r} "
            f"held events={[type(e).__name__ for e in callbacks._held_events]} "
            f"callbacks={sorted(_name(c.callback) for c in callbacks.session_callbacks)} "
            f"websocket write locks={sockets!r}"
        )
    return lines


def tasks() -> list[str]:
    loop = asyncio._get_running_loop()
    if loop is None:
        return ["no event loop running in the main thread"]
    lines = []
    for task in asyncio.all_tasks(loop):
        stack = "; ".join(f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in task.get_stack())
        lines.append(f"task {_name(task.get_coro())}: {stack or 'not started'}")
    return lines


def refresh_views() -> list[str]:
    from rtdash.views.refresh import RefreshView

    lines = []
    for view in (o for o in gc.get_objects() if isinstance(o, RefreshView)):
        future = view._future
        state = "none" if future is None else ("done" if future.done() else "running")
        table = None if view._table is None else sorted(set(view._table.value["fetched"]))
        lines.append(
            f"refresh view: fetching={view.fetching} error={view.error!r} future={state} table fetched={table} "
            f"status={view._status.object!r}"
        )
    return lines


def report(signum, frame) -> None:
    gc.unfreeze()  # the sessions rtdash.server froze out of the collector's scans are listed too
    lines = ["--- what the sessions wait for (SIGUSR2) ---"]
    for part in (sessions, tasks, refresh_views):
        try:
            lines += part()
        except Exception:
            lines.append(traceback.format_exc())
    lines.append("--- end ---")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGUSR2, report)
    from panel.command import main

    main()
