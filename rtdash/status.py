"""The base of the statuses that worker threads write and ``/health`` reads on the server's thread: a source's
(``rtdash.stream.poller``), the history writer's (``rtdash.store.writer``) and a viewer's follower
(``rtdash.scaleout``)."""

from __future__ import annotations

import threading

import param


class Status(param.Parameterized):
    """Fields set together by :meth:`update` and read whole by :meth:`snapshot`."""

    def __init__(self, **params):
        super().__init__(**params)
        self._lock = threading.RLock()

    def update(self, **values) -> None:
        """Set ``values`` together: a snapshot taken meanwhile on another thread has all of them or none (``/health``
        read ``state: ok`` with the first success's ``last_success`` still empty)."""
        with self._lock:
            self.param.update(**values)

    def snapshot(self) -> dict:
        """A JSON-ready copy (times as ISO strings), never half of an :meth:`update`."""
        with self._lock:
            values = {name: getattr(self, name) for name in self.param if name != "name"}
        return {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in values.items()}
