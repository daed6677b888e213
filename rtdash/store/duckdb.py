"""The embedded default: one DuckDB file (``RTDASH_STORE=data/rtdash.duckdb``), created on first use.

Why DuckDB rather than SQLite: the History tab reads millions of rows and aggregates them by time; DuckDB is a
columnar engine that does both in parallel and hands results to pandas as Arrow (no row-by-row conversion), and
within one process any number of cursors read while the writer thread inserts (MVCC).  The price: a DuckDB file is
opened by one process at a time — several processes (``--num-procs``, a separate collector) need PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..sources import COLUMNS
from .base import ALERTS_DDL, KINDS, Store, StoreError, table_ddl

_PARAM = re.compile(r"%\((\w+)\)s")
CLOSE_WAIT = 10.0  # seconds close() waits for the operations under way before interrupting them


def _dollar(sql: str) -> str:
    """``%(name)s`` placeholders (the shared SQL's) to DuckDB's ``$name``."""
    return _PARAM.sub(r"$\1", sql)


def _os_reason(exc: OSError) -> str:
    """What the operating system said, and about which path."""
    if isinstance(exc, FileExistsError):  # mkdir(exist_ok=True) says this of a file where a folder must be
        return f"{exc.filename} is not a directory"
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


class DuckDBStore(Store):
    """History in a DuckDB file.  Every operation uses its own cursor, so threads never share one."""

    backend = "duckdb"

    def __init__(self, path: str | Path):
        super().__init__(str(path))
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(path))
        except OSError as exc:  # the folder cannot be made: a file in the way, no permission
            raise StoreError(f"cannot open the history store {path}: {_os_reason(exc)}") from None
        except duckdb.IOException as exc:
            reason = str(exc).split(". See also")[0]
            hint = ""
            if "lock" in reason.lower():  # only a lock conflict means another process has the file
                hint = (
                    ". A DuckDB file is used by one process at a time: stop the other one, or use PostgreSQL "
                    "(RTDASH_STORE=postgresql://...) for several processes"
                )
            raise StoreError(f"cannot open the history store {path}: {reason}{hint}") from None
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the history store {path}: {exc}") from None
        self._closed = threading.Event()
        self._idle = threading.Condition()  # notified when an operation ends (_busy: how many are under way)
        self._busy = 0
        for kind in KINDS:
            self._execute(table_ddl(kind))
        self._execute(ALERTS_DDL)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one operation, counted so that :meth:`close` can wait for it."""
        with self._idle:
            if self._closed.is_set():
                raise StoreError(f"the history store {self.url} is closed")
            self._busy += 1
        try:
            with self._con.cursor() as cur:
                yield cur
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        with self._cursor() as cur:
            row = cur.execute(_dollar(sql), params or {}).fetchone()
            return int(row[0]) if row else 0

    def _scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        with self._cursor() as cur:
            return cur.execute(_dollar(sql), params or {}).fetchone()[0]

    def _batches(self, sql: str, params: dict[str, Any], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
        with self._cursor() as cur:
            for batch in cur.sql(_dollar(sql), params=params).to_arrow_reader(rows):
                yield pa.Table.from_batches([batch]).cast(schema)

    def _insert(self, kind: str, table: pa.Table) -> int:
        columns = ", ".join(COLUMNS[kind])
        with self._cursor() as cur:
            cur.register("incoming", table)
            try:
                sql = f"INSERT INTO {kind} ({columns}) SELECT {columns} FROM incoming ON CONFLICT DO NOTHING"
                return int(cur.execute(sql).fetchone()[0])
            finally:
                cur.unregister("incoming")

    def _epoch_us(self, expr: str) -> str:
        return f"epoch_us({expr})"

    def _bucket(self, every: str, expr: str, origin: str) -> str:
        return f"time_bucket({every}, {expr}, {origin})"

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Close the file once the operations under way have ended (new ones are refused): DuckDB refuses to close
        a connection one of its cursors is using.  One still running after ``timeout`` seconds is interrupted."""
        with self._idle:
            if self._closed.is_set():
                return
            self._closed.set()
            if not self._idle.wait_for(lambda: self._busy == 0, timeout):
                self._con.interrupt()
                self._idle.wait_for(lambda: self._busy == 0, timeout)
        self._con.close()
        self._con = None  # released now, not at interpreter exit (where DuckDB's bindings report it as leaked)
