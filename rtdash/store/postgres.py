"""PostgreSQL (and TimescaleDB) history: ``RTDASH_STORE=postgresql://user:password@host/db``.

The schema is created on first use.  When the ``timescaledb`` extension is available the tables become hypertables
and buckets are computed by ``time_bucket``; otherwise they are plain tables with a time index and ``date_bin``
(PostgreSQL 14 or later).  Rows travel in bulk with ``COPY`` both ways: a batch is copied into a temporary
staging table and inserted with ``ON CONFLICT DO NOTHING``; results are copied out as CSV and parsed by Arrow.

Connections are opened lazily and kept in a small pool; one that fails is dropped, so that after an outage the
next call simply connects again.  Nothing here retries: the :class:`~rtdash.store.writer.StoreWriter` does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ..config import url_secrets
from ..sources import COLUMNS, SERIES, redact
from .base import ALERTS_DDL, KINDS, Store, StoreError, table_ddl

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - psycopg is a dependency; kept for slim installs
    raise StoreError(
        "PostgreSQL support needs psycopg 3: `pip install 'psycopg[binary]'` (or `pip install rtdash`)"
    ) from exc

log = logging.getLogger("rtdash.store")

POOL_SIZE = 4
PAST_CHANNEL = "rtdash_past_{kind}"  # NOTIFY payload: the oldest provider-history row inserted, epoch microseconds
CONNECT_TIMEOUT = 5  # seconds; an unreachable server must not hang the writer or a session for long


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, however malformed the URL (it never raises): for messages."""
    return redact(url, url_secrets(url))


class PostgresStore(Store):
    """History in PostgreSQL.  ``timescale=None`` uses TimescaleDB when the server has it."""

    backend = "postgresql"

    def __init__(self, url: str, *, timescale: bool | None = None):
        super().__init__(url)
        self.timescale = timescale
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection] = []
        self._schema_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r})"

    # -- connections -----------------------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="rtdash"
            )
        except Exception as exc:
            # The driver quotes what it could not parse or resolve (a bad escape, a host after an unencoded "@"):
            # the password is removed here, so that no status, log line or page built from the error shows it.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot connect to the history store {redact_url(self.url)}: {redact(reason, url_secrets(self.url))}"
            ) from None
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if not self._schema_ready:
                self._create_schema(conn)
            for kind in KINDS:  # per connection: where a batch waits between COPY and INSERT
                conn.execute(f"CREATE TEMP TABLE stage_{kind} (LIKE {kind}) ON COMMIT DELETE ROWS")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise StoreError(f"the history store {redact_url(self.url)} is closed")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # broken, or left mid-COPY by an abandoned generator: never reuse it
            raise
        with self._lock:
            if self._closed or len(self._idle) >= POOL_SIZE:
                conn.close()
            else:
                self._idle.append(conn)

    def _create_schema(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            # Several processes may start at once (a collector and viewers): create the schema one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('rtdash schema'))")
            if self.timescale is None:
                self.timescale = self._has_timescale(conn)
            for kind in KINDS:
                conn.execute(table_ddl(kind))
                if self.timescale:
                    conn.execute(
                        "SELECT create_hypertable(%s, 'time', if_not_exists => TRUE, migrate_data => TRUE)", [kind]
                    )
                else:
                    conn.execute(f"CREATE INDEX IF NOT EXISTS {kind}_time_idx ON {kind} (time)")
            conn.execute(ALERTS_DDL)
        log.info("history store %s ready (%s)", redact_url(self.url), "TimescaleDB" if self.timescale else "PostgreSQL")
        self._schema_ready = True

    @staticmethod
    def _has_timescale(conn: psycopg.Connection) -> bool:
        """Whether TimescaleDB is installed in the database, or can be (available and we may create it)."""
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            return True
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
            return False
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:  # not preloaded, or no privilege: plain tables work too
            log.warning("TimescaleDB is available but cannot be enabled (%s); using plain tables", exc)
            return False
        return True

    # -- hooks -------------------------------------------------------------------------------------------------------

    def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def _scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()[0]

    def _batches(self, sql: str, params: dict[str, Any], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
        def parse(lines: list[bytes]) -> pa.Table:
            return pacsv.read_csv(
                io.BytesIO(b"".join(lines)),
                read_options=pacsv.ReadOptions(column_names=schema.names),
                convert_options=pacsv.ConvertOptions(
                    column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
                ),
            )

        with self._connection() as conn, conn.cursor() as cur:
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params or None) as copy:
                lines: list[bytes] = []
                for line in copy:  # one row per message
                    lines.append(bytes(line))
                    if len(lines) >= rows:
                        yield parse(lines)
                        lines = []
                if lines:
                    yield parse(lines)

    def _insert(self, kind: str, table: pa.Table) -> int:
        data = io.BytesIO()
        pacsv.write_csv(table, data)
        columns = ", ".join(COLUMNS[kind])
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY stage_{kind} ({columns}) FROM STDIN (FORMAT csv, HEADER)") as copy:
                copy.write(data.getbuffer())
            # Rows of a provider's history (``source`` like ``coinbase/1min``) may be older than what a scale-out
            # viewer holds: the oldest one inserted is announced (rtdash.scaleout), at commit, like every insert.
            cur.execute(
                f"WITH new AS (INSERT INTO {kind} ({columns}) SELECT {columns} FROM stage_{kind} "
                "ON CONFLICT DO NOTHING RETURNING time, source) "
                f"SELECT count(*), {self._epoch_us('min(time) FILTER (WHERE strpos(source, %(slash)s) > 0)')} FROM new",
                {"slash": "/"},
            )
            inserted, oldest_past = cur.fetchone()
            if oldest_past is not None:
                cur.execute(
                    "SELECT pg_notify(%(channel)s, %(oldest)s)",
                    {"channel": PAST_CHANNEL.format(kind=kind), "oldest": str(oldest_past)},
                )
            return inserted

    def _epoch_us(self, expr: str) -> str:
        return f"(extract(epoch FROM {expr}) * 1000000)::int8"

    def _bucket(self, every: str, expr: str, origin: str) -> str:
        if self.timescale:
            return f"time_bucket({every}::interval, {expr}, {origin}::timestamptz)"
        return f"date_bin({every}::interval, {expr}, {origin}::timestamptz)"

    # -- queries that an index answers better in PostgreSQL ----------------------------------------------------------

    def _series_query(self, kind: str) -> str:
        # DISTINCT would read the whole table; this walks the primary key's index, one step per series.
        name = SERIES[kind]
        return (
            f"WITH RECURSIVE s AS (SELECT min({name}) AS v FROM {kind} UNION ALL "
            f"SELECT (SELECT min({name}) FROM {kind} WHERE {name} > s.v) FROM s WHERE s.v IS NOT NULL) "
            "SELECT v FROM s WHERE v IS NOT NULL"
        )

    def _latest_query(self, kind: str, n: int, series) -> tuple[str, dict[str, Any]]:
        # The newest n rows of each series straight from the index, rather than a window over the whole table.
        name = SERIES[kind]
        names = list(series) if series is not None else self.series(kind)
        columns = ", ".join(f"r.{c}" for c in COLUMNS[kind] if c != "time")
        sql = (
            f"SELECT {self._epoch_us('r.time')} AS time, {columns} FROM unnest(%(series)s::text[]) AS s(name) "
            f"CROSS JOIN LATERAL (SELECT * FROM {kind} WHERE {name} = s.name ORDER BY time DESC LIMIT %(n)s) AS r "
            f"ORDER BY r.time, r.{name}"
        )
        return sql, {"series": [str(x) for x in names], "n": n}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
