"""The contract of a history store, and the SQL that both backends share.

One table per kind (``price``, ``weather``) with the columns of :mod:`rtdash.sources`; a row is identified by
``(series, time, source)`` — the primary key — so writing the same rows again (a replay, a retry after an
outage, a second backfill) changes nothing.  Times are stored as ``timestamptz`` with microsecond precision.

Backends implement four small hooks (run a statement, stream a query as Arrow tables, insert a batch, the
bucketing function); everything else is the same SQL for DuckDB and PostgreSQL.  Queries return time columns
as integer microseconds since the epoch (each backend's own conversion), turned into UTC timestamps here, so
that no backend-specific time zone handling reaches pandas.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa

from ..sources import COLUMNS, SERIES, empty_frame
from ..sources.base import tidy

KINDS = tuple(COLUMNS)
LABELS = ("asset", "quote", "city", "source")
METRICS = {"price": ["price"], "weather": ["temperature", "humidity", "wind_speed", "lat", "lon"]}
ORIGIN = pd.Timestamp(0, tz="UTC")  # buckets are aligned to the epoch, so the same bucket has the same start
EXPORT_CHUNK_ROWS = 200_000


class StoreError(RuntimeError):
    """The store cannot be opened or used: a one-line message fit for a log or a status badge."""


TimeLike = pd.Timestamp | dt.datetime | str | None


def utc(value: TimeLike) -> pd.Timestamp | None:
    """A UTC timestamp out of anything pandas reads as a time; a naive one is taken as UTC."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _param(value: TimeLike, *, ceil: bool = False) -> dt.datetime:
    """A bound for SQL: UTC, to the microsecond the stores keep (an end bound rounds up, so that it still excludes
    exactly what it excluded)."""
    ts = utc(value)
    return (ts.ceil("us") if ceil else ts.floor("us")).to_pydatetime()


def _where_clause(
    start: TimeLike, end: TimeLike, column: str, names: Sequence[str] | None
) -> tuple[str, dict[str, Any]]:
    """`` WHERE`` ``start <= time < end`` and ``column`` among ``names`` (each when given), and its parameters."""
    clauses, params = [], {}
    if start is not None:
        clauses.append("time >= %(start)s")
        params["start"] = _param(start)
    if end is not None:
        clauses.append("time < %(end)s")
        params["end"] = _param(end, ceil=True)
    if names is not None:
        clauses.append(f"{column} = ANY(%(series)s)")
        params["series"] = [str(name) for name in names]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _check_kind(kind: str) -> None:
    if kind not in COLUMNS:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")


def _check_metric(kind: str, metric: str) -> None:
    if metric not in METRICS[kind]:
        raise ValueError(f"unknown {kind} metric {metric!r}: expected one of {', '.join(METRICS[kind])}")


def arrow_schema(kind: str, columns: Sequence[str] | None = None) -> pa.Schema:
    """Arrow types of the columns of ``kind`` as queries return them (``time`` in integer microseconds)."""
    names = list(columns or COLUMNS[kind])
    return pa.schema([(n, pa.int64() if n == "time" else pa.string() if n in LABELS else pa.float64()) for n in names])


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A query result as pandas: ``time`` (and ``start``/``end``) integer microseconds become UTC timestamps."""
    for name in ("time", "start", "end"):
        if name in table.column_names:
            index = table.column_names.index(name)
            column = table.column(index).cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("ns", tz="UTC"))
            table = table.set_column(index, name, column)
    return table.to_pandas()


def table_ddl(kind: str) -> str:
    """``CREATE TABLE`` of ``kind``, the same for DuckDB and PostgreSQL; the key makes writes idempotent."""
    name = SERIES[kind]

    def column(c: str) -> str:
        if c == "time":
            return "time timestamptz NOT NULL"
        if c in LABELS:
            return f"{c} text" + (" NOT NULL" if c in (name, "source") else "")
        return f"{c} double precision"

    columns = ", ".join(column(c) for c in COLUMNS[kind])
    return f"CREATE TABLE IF NOT EXISTS {kind} ({columns}, PRIMARY KEY ({name}, time, source))"


# Alert firings and resolutions (rtdash.alerts): one row per rule, time and state, so a replay adds nothing.
ALERTS_DDL = (
    "CREATE TABLE IF NOT EXISTS alerts (rule text NOT NULL, time timestamptz NOT NULL, state text NOT NULL, "
    "series text, value double precision, level double precision, severity text, PRIMARY KEY (rule, time, state))"
)
ALERT_COLUMNS = ("rule", "time", "state", "series", "value", "level", "severity")
ALERTS_SCHEMA = pa.schema(
    [("rule", pa.string()), ("time", pa.int64()), ("state", pa.string()), ("series", pa.string()),
     ("value", pa.float64()), ("level", pa.float64()), ("severity", pa.string())]
)  # fmt: skip


def prepare(kind: str, df: pd.DataFrame) -> pa.Table:
    """The rows of ``df`` ready to insert: schema order, microsecond UTC times, one row per key."""
    _check_kind(kind)
    missing = {SERIES[kind], "time", "source"} - set(df.columns)
    if missing:
        raise ValueError(f"{kind} rows lack the column(s) {', '.join(sorted(missing))}")
    out = tidy(df, kind)
    out["time"] = out["time"].dt.floor("us").astype("datetime64[us, UTC]")
    out = out.dropna(subset=["time", SERIES[kind], "source"])
    out = out.drop_duplicates(subset=[SERIES[kind], "time", "source"], keep="last")
    return pa.Table.from_pandas(out, preserve_index=False)


class Store(abc.ABC):
    """Where fetched rows are kept.  Thread-safe: the writer thread and the sessions use one store together."""

    backend: ClassVar[str] = ""
    param_style: ClassVar[str] = "pyformat"  # queries are written with %(name)s; DuckDB rewrites them

    def __init__(self, url: str):
        self.url = url

    # -- backend hooks ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _insert(self, kind: str, table: pa.Table) -> int:
        """Insert ``table`` into the ``kind`` table, skipping rows whose key is already there; rows inserted."""

    @abc.abstractmethod
    def _execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        """Run one statement that changes rows; how many it changed."""

    @abc.abstractmethod
    def _scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        """The single value that ``sql`` selects."""

    @abc.abstractmethod
    def _batches(self, sql: str, params: dict[str, Any], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
        """Stream the result of ``sql`` as Arrow tables of about ``rows`` rows with ``schema``."""

    @abc.abstractmethod
    def _epoch_us(self, expr: str) -> str:
        """SQL for ``expr`` (a timestamptz) as integer microseconds since the epoch."""

    @abc.abstractmethod
    def _bucket(self, every: str, expr: str, origin: str) -> str:
        """SQL for the start of the ``every``-long bucket of ``expr``, buckets aligned to ``origin``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and files.  The store cannot be used afterwards."""

    def ping(self) -> None:
        """Raise (the driver's error) when the store cannot answer now."""
        self._scalar("SELECT 1")

    # -- the contract ----------------------------------------------------------------------------------------------

    def write(self, kind: str, df: pd.DataFrame) -> int:
        """Insert the rows of ``df``, a tidy frame of ``kind``; rows already stored are skipped.  Rows inserted."""
        table = prepare(kind, df)
        return self._insert(kind, table) if table.num_rows else 0

    def read(
        self,
        kind: str,
        start: TimeLike = None,
        end: TimeLike = None,
        series: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows with ``start <= time < end`` (either bound optional) of the given series, oldest first.

        Fast for millions of rows: the result travels as Arrow, labels stay Arrow-backed pandas strings.
        """
        tables = list(self._select(kind, start, end, series, columns, rows=1_000_000))
        return to_frame(pa.concat_tables(tables) if tables else arrow_schema(kind, columns).empty_table())

    def export(
        self,
        kind: str,
        start: TimeLike = None,
        end: TimeLike = None,
        series: Sequence[str] | None = None,
        chunk_rows: int = EXPORT_CHUNK_ROWS,
    ) -> Iterator[pd.DataFrame]:
        """The rows :meth:`read` would give, as frames of at most about ``chunk_rows`` rows, for large ranges."""
        for table in self._select(kind, start, end, series, None, rows=chunk_rows):
            if table.num_rows:
                yield to_frame(table)

    def latest(self, kind: str, per_series: int, series: Sequence[str] | None = None) -> pd.DataFrame:
        """The last ``per_series`` rows of every series (or of those given), oldest first: to seed live charts."""
        _check_kind(kind)
        sql, params = self._latest_query(kind, int(per_series), series)
        tables = list(self._batches(sql, params, arrow_schema(kind), 1_000_000))
        return tidy(to_frame(pa.concat_tables(tables)), kind) if tables else empty_frame(kind)

    def _latest_query(self, kind: str, n: int, series: Sequence[str] | None) -> tuple[str, dict[str, Any]]:
        name = SERIES[kind]
        where, params = self._where(kind, None, None, series)
        sql = (
            f"SELECT {self._select_list(kind, COLUMNS[kind])} FROM ("
            f"SELECT *, row_number() OVER (PARTITION BY {name} ORDER BY time DESC) AS rn FROM {kind}{where}"
            f") AS recent WHERE rn <= %(n)s ORDER BY recent.time, recent.{name}"
        )
        return sql, {**params, "n": n}

    def aggregate(
        self,
        kind: str,
        start: TimeLike,
        end: TimeLike,
        every: float | pd.Timedelta | dt.timedelta,
        series: Sequence[str] | None = None,
        metric: str | None = None,
    ) -> pd.DataFrame:
        """``metric`` per series in buckets of ``every`` (seconds or a Timedelta), computed in the database.

        Columns: ``time`` (bucket start), the series column, ``metric`` (the mean), ``min``, ``max``, ``count``;
        ordered by series then time.  Empty buckets are absent, so gaps stay gaps.
        """
        _check_kind(kind)
        metric = metric or METRICS[kind][0]
        _check_metric(kind, metric)
        name = SERIES[kind]
        step = every if isinstance(every, dt.timedelta) else pd.Timedelta(seconds=float(every))
        if step <= dt.timedelta(0):
            raise ValueError(f"every must be positive, got {every!r}")
        where, params = self._where(kind, start, end, series)
        params.update(every=pd.Timedelta(step).ceil("us").to_pytimedelta(), origin=ORIGIN.to_pydatetime())
        bucket = self._bucket("%(every)s", "time", "%(origin)s")
        sql = (
            f"SELECT {self._epoch_us('bucket')} AS time, {name}, mean AS {metric}, lo AS min, hi AS max, n AS count "
            f"FROM (SELECT {bucket} AS bucket, {name}, avg({metric}) AS mean, min({metric}) AS lo, "
            f"max({metric}) AS hi, count({metric}) AS n FROM {kind}{where} GROUP BY 1, 2) AS buckets "
            f"ORDER BY {name}, time"
        )
        floats = [(metric, pa.float64()), ("min", pa.float64()), ("max", pa.float64())]
        schema = pa.schema([("time", pa.int64()), (name, pa.string()), *floats, ("count", pa.int64())])
        tables = list(self._batches(sql, params, schema, 1_000_000))
        return to_frame(pa.concat_tables(tables) if tables else schema.empty_table())

    def window(
        self,
        kind: str,
        metric: str,
        start: TimeLike,
        end: TimeLike,
        series: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Every stored value of ``metric`` with ``start <= time < end`` (either bound optional) of the given series:
        the raw rows the History tab's "every point" mode rasterizes.

        Columns ``time`` (``datetime64[us, UTC]``, straight from Arrow, no copy) and ``metric``; rows without a value
        are left out.  The rows come in no particular order — a rasterizer needs none, and sorting ten million rows
        costs more than reading them.  ``limit`` caps the rows read (which ones is then unspecified): ask for one
        more than you accept to know whether there were too many.
        """
        _check_kind(kind)
        _check_metric(kind, metric)
        where, params = self._where(kind, start, end, series)
        where += (" AND " if where else " WHERE ") + f"{metric} IS NOT NULL"
        sql = self._window_query(kind, metric, where)
        if limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = max(int(limit), 0)
        schema = pa.schema([("time", pa.int64()), (metric, pa.float64())])
        tables = list(self._window_batches(sql, params, schema))
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        table = table.set_column(0, "time", table.column(0).cast(pa.timestamp("us", tz="UTC")))
        return table.to_pandas()

    def _window_query(self, kind: str, metric: str, where: str) -> str:
        return f"SELECT {self._epoch_us('time')} AS time, {metric} FROM {kind}{where}"

    def _window_batches(self, sql: str, params: dict[str, Any], schema: pa.Schema) -> Iterator[pa.Table]:
        return self._batches(sql, params, schema, 1_000_000)

    def count(
        self, kind: str, start: TimeLike = None, end: TimeLike = None, series: Sequence[str] | None = None
    ) -> int:
        """How many rows :meth:`read` would give."""
        where, params = self._where(kind, start, end, series)
        return int(self._scalar(f"SELECT count(*) FROM {kind}{where}", params))

    def bounds(self, kind: str, series: Sequence[str] | None = None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The first and last stored time (of the given series), or ``(None, None)`` when there is none."""
        where, params = self._where(kind, None, None, series)
        sql = f"SELECT {self._epoch_us('min(time)')} AS start, {self._epoch_us('max(time)')} AS end FROM {kind}{where}"
        schema = pa.schema([("start", pa.int64()), ("end", pa.int64())])
        frame = to_frame(pa.concat_tables(list(self._batches(sql, params, schema, 10))))
        if not len(frame) or pd.isna(frame["start"].iloc[0]):
            return None, None
        return frame["start"].iloc[0], frame["end"].iloc[0]

    def series(self, kind: str) -> list[str]:
        """The names of the series (assets or cities) stored for ``kind``, sorted."""
        _check_kind(kind)
        name = SERIES[kind]
        tables = list(self._batches(self._series_query(kind), {}, pa.schema([(name, pa.string())]), 100_000))
        return sorted(value for table in tables for value in table.column(0).to_pylist())

    def _series_query(self, kind: str) -> str:
        return f"SELECT DISTINCT {SERIES[kind]} FROM {kind}"

    def write_alert(self, event: dict[str, Any]) -> int:
        """Store one firing or resolution (``rtdash.alerts``); one already stored is skipped.  Rows inserted."""
        columns = ", ".join(ALERT_COLUMNS)
        values = ", ".join(f"%({name})s" for name in ALERT_COLUMNS)
        params = {name: event.get(name) for name in ALERT_COLUMNS}
        params["time"] = _param(event["time"])
        sql = f"INSERT INTO alerts ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"
        return self._execute(sql, params)

    def alerts(self, start: TimeLike = None, end: TimeLike = None, rules: Sequence[str] | None = None) -> pd.DataFrame:
        """The stored firings and resolutions with ``start <= time < end`` (of the given rules), oldest first."""
        where, params = _where_clause(start, end, "rule", rules)
        select = ", ".join(f"{self._epoch_us('time')} AS time" if c == "time" else c for c in ALERT_COLUMNS)
        sql = f"SELECT {select} FROM alerts{where} ORDER BY alerts.time, alerts.rule"
        tables = list(self._batches(sql, params, ALERTS_SCHEMA, 100_000))
        return to_frame(pa.concat_tables(tables) if tables else ALERTS_SCHEMA.empty_table())

    def prune(self, older_than: TimeLike) -> int:
        """Delete the rows of every kind, and the alert firings, with ``time < older_than`` (the retention); rows
        deleted."""
        cutoff = _param(older_than, ceil=True)
        tables = [*KINDS, "alerts"]
        sql = "DELETE FROM {} WHERE time < %(cutoff)s"
        return sum(self._execute(sql.format(table), {"cutoff": cutoff}) for table in tables)

    # -- shared SQL --------------------------------------------------------------------------------------------------

    def _where(
        self, kind: str, start: TimeLike, end: TimeLike, series: Sequence[str] | None
    ) -> tuple[str, dict[str, Any]]:
        _check_kind(kind)
        return _where_clause(start, end, SERIES[kind], series)

    def _select_list(self, kind: str, columns: Sequence[str]) -> str:
        unknown = [c for c in columns if c not in COLUMNS[kind]]
        if unknown:
            raise ValueError(f"unknown {kind} column(s) {', '.join(unknown)}: expected {', '.join(COLUMNS[kind])}")
        return ", ".join(f"{self._epoch_us('time')} AS time" if c == "time" else c for c in columns)

    def _select(
        self,
        kind: str,
        start: TimeLike,
        end: TimeLike,
        series: Sequence[str] | None,
        columns: Sequence[str] | None,
        rows: int,
    ) -> Iterator[pa.Table]:
        columns = list(columns or COLUMNS[kind])
        select = self._select_list(kind, columns)
        where, params = self._where(kind, start, end, series)
        sql = f"SELECT {select} FROM {kind}{where} ORDER BY {kind}.time, {kind}.{SERIES[kind]}"
        return self._batches(sql, params, arrow_schema(kind, columns), rows)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
