"""The contract every provider keeps: ``fetch()`` returns a tidy DataFrame or raises :class:`SourceError`."""

from __future__ import annotations

import difflib
import functools
import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pandas as pd
import param

from ..config import Settings, SettingsError, format_duration

PRICE_COLUMNS = ["time", "asset", "quote", "price", "source"]
WEATHER_COLUMNS = ["time", "city", "lat", "lon", "temperature", "humidity", "wind_speed", "source"]
COLUMNS = {"price": PRICE_COLUMNS, "weather": WEATHER_COLUMNS}
SERIES = {"price": "asset", "weather": "city"}  # the column that names one line of a chart
UNITS = {
    "metric": {"temperature": "°C", "humidity": "%", "wind_speed": "m/s"},
    "imperial": {"temperature": "°F", "humidity": "%", "wind_speed": "mph"},
}

_KEY_PATTERNS = [
    re.compile(r"(?i)((?:api_?key|appid|key|token)=)[^&\s'\"]+"),
    re.compile(r"(?i)(bearer\s+)[^\s'\"]+"),
]


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with every known secret and anything shaped like a key or a password in a URL or header removed.

    The longest secret goes first, so that a piece of one (see :func:`rtdash.config.url_secrets`) cannot leave the
    rest of it behind.  A URL's ``user:password@`` loses everything up to its last ``@``.
    """
    text = str(text)
    for secret in sorted({str(s) for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(r"\1***", text)
    text = re.sub(r"(?i)([?&]password=)[^&\s'\"]+", r"\1***", text)
    return re.sub(r"(://[^:/@\s'\"]*:)[^\s'\"]*@", r"\1***@", text)


class SourceError(Exception):
    """A provider failed: a short message fit for a user, and when to retry at the earliest.

    When a fetch failed because no row was left, ``rejected`` maps each series whose row was refused
    (:class:`RejectedRow`) to the reason, for the counter.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.rejected: dict[str, str] = {}


class RejectedRow(SourceError):
    """A provider answered for a series, well formed, with a value that cannot be a measurement.

    ``reason`` is a short label for the metrics (``not_a_number``, ``not_finite``, ``out_of_range``, ``no_value``,
    ``unit``); the message says what the value was and why it was refused.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def number(value) -> float:
    """A float out of a provider's number, numeric string or null (NaN); JSON ``true``/``false`` are not numbers."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def empty_frame(kind: str) -> pd.DataFrame:
    """An empty frame with the schema of ``kind`` (``price`` or ``weather``) and its dtypes (a new copy each time of
    one made once: building it costs pandas about 5 ms, and every session asks for a few)."""
    return _empty_frame(kind).copy()


@functools.cache
def _empty_frame(kind: str) -> pd.DataFrame:
    return tidy(pd.DataFrame({column: [] for column in COLUMNS[kind]}), kind)


def tidy(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Columns in schema order with fixed dtypes: tz-aware UTC times, float values, string labels."""
    out = df.reindex(columns=COLUMNS[kind])
    out["time"] = pd.to_datetime(out["time"], utc=True).astype("datetime64[ns, UTC]")
    for column in COLUMNS[kind]:
        if column == "time":
            continue
        if column in ("asset", "quote", "source", "city"):
            out[column] = out[column].astype(object)
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


# Every value from a provider is a number from outside: a row is kept only when its values are finite and within the
# physical range of their metric, in the units asked for (the records are -89.2 and 56.7 °C, 113 m/s).  A weather
# row may miss a value (a gap in that chart) but not all of them.
VALUES = {"price": ["price"], "weather": ["temperature", "humidity", "wind_speed"]}
RANGES = {
    "metric": {"temperature": (-90.0, 60.0), "humidity": (0.0, 100.0), "wind_speed": (0.0, 120.0)},
    "imperial": {"temperature": (-130.0, 140.0), "humidity": (0.0, 100.0), "wind_speed": (0.0, 270.0)},
}
PRICE_MAX = 1e12  # above any asset in any quote currency; a price must also be above 0


def refusal(row: dict, kind: str, units: str) -> tuple[str, str] | None:
    """Why ``row`` (a tidy row of ``kind`` in ``units``) cannot be a measurement: ``(reason, what)``, or None."""
    values = {name: row[name] for name in VALUES[kind]}
    if kind == "weather" and all(math.isnan(value) for value in values.values()):
        return "no_value", "a row with no value"
    for name, value in values.items():
        label = name.replace("_", " ")
        if kind == "weather" and math.isnan(value):
            continue
        if not math.isfinite(value):
            return "not_finite", f"{label} {value:g} (not a finite number)"
        if kind == "price":
            quote = row.get("quote") or ""
            if value <= 0:
                return "out_of_range", f"price {value:g} {quote} (not above 0)"
            if value > PRICE_MAX:
                return "out_of_range", f"price {value:g} {quote} (outside 0…{PRICE_MAX:g} {quote})"
            continue
        low, high = RANGES[units][name]
        if not low <= value <= high:
            unit = UNITS[units][name]
            return "out_of_range", f"{label} {value:g} {unit} (outside {low:g}…{high:g} {unit})"
    return None


def history_source(source_type: str, resolution: float) -> str:
    """The ``source`` of a provider's history rows: its name and their resolution, ``coinbase/1min``.

    Rows a poller fetched live keep the bare name (``coinbase``), so the store tells candles from spot prices.
    """
    return f"{source_type}/{format_duration(resolution)}"


def is_history(source) -> bool:
    """Whether a row's ``source`` names a provider's history (``coinbase/1min``) rather than a live reading."""
    return "/" in str(source)


def provider_of(source) -> str:
    """The provider's name in a row's ``source``: ``coinbase`` for both ``coinbase`` and ``coinbase/1min``."""
    return str(source).split("/", 1)[0]


class HistoryUnavailable(SourceError):
    """The provider has no history a source can fetch (no endpoint, or not on the plan rtdash can assume)."""


class Source(param.Parameterized):
    """A provider of one kind of data.  Subclasses set ``kind`` and ``source_type`` and implement ``fetch``.

    ``fetch`` blocks (it does HTTP) and is only ever called from a worker thread, never from an event loop.
    """

    kind: ClassVar[str] = ""
    source_type: ClassVar[str] = ""
    label: ClassVar[str] = ""
    needs_key: ClassVar[str | None] = None
    registry: ClassVar[dict[tuple[str, str], type[Source]]] = {}

    settings = param.ClassSelector(class_=Settings, precedence=-1)
    simulated = param.Boolean(default=False, constant=True, doc="True when the rows are made up, not measured.")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.source_type:
            Source.registry[(cls.kind, cls.source_type)] = cls

    @classmethod
    def lookup(cls, kind: str, source_type: str) -> type[Source]:
        try:
            return cls.registry[(kind, source_type)]
        except KeyError:
            names = sorted(name for k, name in cls.registry if k == kind)
            close = difflib.get_close_matches(source_type, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(
                f"unknown {kind} source {source_type!r}{hint}: accepted are auto, {', '.join(names)}"
            ) from None

    @property
    def series(self) -> list[str]:
        """The names of the series this source yields (assets or cities)."""
        return list(self.settings.assets if self.kind == "price" else self.settings.cities)

    @property
    def provider(self) -> str:
        """The name of the provider answering now (``auto`` sources change theirs)."""
        return self.label

    def fetch(self) -> pd.DataFrame:
        """Rows of every series that answered; the others' errors in ``df.attrs["errors"]``.

        Raises the most telling :class:`SourceError` when no series answered.  Providers that ask for
        one series per request implement ``fetch_one``; those that batch override ``fetch``.
        """
        rows, errors = fetch_each(self.fetch_one, self.series)
        return self.to_frame(rows, dict(errors))

    def to_frame(self, rows: list[dict], errors: dict[str, SourceError]) -> pd.DataFrame:
        """The tidy frame of ``rows`` (dicts of the schema's columns but ``source``), checked; what every fetch returns.

        A row that cannot be a measurement (:func:`refusal`) is left out, and joins ``errors`` as a
        :class:`RejectedRow`.  ``df.attrs["errors"]`` holds every series' error message, ``df.attrs["rejected"]``
        the reasons of the refused ones.  When no row is left, raises the most telling error (one that says when
        to retry first) with ``rejected`` set.
        """
        errors = dict(errors)
        df = tidy(pd.DataFrame(rows).assign(source=self.source_type), self.kind) if rows else empty_frame(self.kind)
        keep = []
        for row in df.to_dict("records"):
            refused = refusal(row, self.kind, self.settings.units)
            if refused is not None:
                reason, what = refused
                errors[row[SERIES[self.kind]]] = RejectedRow(f"{self.label}: rejected {what}", reason)
            keep.append(refused is None)
        df = df[keep].reset_index(drop=True) if len(df) else df
        rejected = {name: err.reason for name, err in errors.items() if isinstance(err, RejectedRow)}
        if not len(df):
            if not errors:
                raise SourceError(f"{self.label}: no rows")
            error = sorted(errors.values(), key=lambda err: err.retry_after is None)[0]
            error.rejected = rejected
            raise error
        df.attrs["errors"] = {name: str(err) for name, err in errors.items()}
        df.attrs["rejected"] = rejected
        return df

    def fetch_one(self, name: str) -> dict:
        """One row (a dict of the schema's columns but ``source``) for the series ``name``."""
        raise NotImplementedError

    # -- history: the provider's own record of the recent past (rtdash.stream.history pages and budgets it) --------

    resolution: ClassVar[float] = 0.0  # seconds between two rows of the provider's history; 0 when it has none
    page_span: ClassVar[float] = 0.0  # the longest time range one history request covers, s
    retention: ClassVar[float | None] = None  # how far back the provider's history reaches, s (None: far enough)
    batched: ClassVar[bool] = False  # one history request covers every series (else one request per series)
    no_history: ClassVar[str] = "no history endpoint"  # why a provider without history cannot fill gaps

    @property
    def history_provider(self) -> Source:
        """The source whose provider answers history requests (``auto`` asks its live provider, never simulated)."""
        return self

    def history_calls(self, names: list[str]) -> int:
        """How many calls the provider counts for one history request of ``names`` (a batch counts every place)."""
        return len(names) if self.batched else 1

    def history_page(self, start: pd.Timestamp, end: pd.Timestamp, names: list[str]) -> pd.DataFrame:
        """The provider's history rows of ``names`` with ``start <= time < end``, at most ``page_span`` long, in one
        request: tidy, checked like live rows (:meth:`past_frame`), ``source`` naming the resolution.

        Raises :class:`SourceError` when the provider fails, :class:`HistoryUnavailable` when it has no history.
        """
        raise HistoryUnavailable(f"{self.label}: cannot fill gaps ({self.no_history})")

    def past_frame(self, rows: list[dict], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """History ``rows`` (dicts of the schema's columns but ``source``) as a tidy frame: only rows within
        ``start <= time < end`` whose values can be measurements (:func:`refusal`, as for live rows), labelled
        :func:`history_source`.  ``df.attrs["rejected"]`` counts the rows refused."""
        df = tidy(pd.DataFrame(rows), self.kind) if rows else empty_frame(self.kind)
        df["source"] = history_source(self.source_type, self.resolution)
        keep = [
            refusal(row, self.kind, self.settings.units) is None and start <= row["time"] < end
            for row in df.to_dict("records")
        ]
        out = df[keep].reset_index(drop=True) if len(df) else df
        out.attrs["rejected"] = len(df) - len(out)
        return out

    def close(self) -> None:
        """Release connections."""


def fetch_each(fetch_one, names: list[str]) -> tuple[list[dict], list[tuple[str, SourceError]]]:
    """Call ``fetch_one(name)`` for every name concurrently; rows of those that answered, errors of the others."""
    rows: list[dict] = []
    errors: list[tuple[str, SourceError]] = []
    if len(names) == 1:
        results = [(names[0], _attempt(fetch_one, names[0]))]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="rtdash-fetch") as pool:
            try:
                futures = [pool.submit(_attempt, fetch_one, name) for name in names]
            except RuntimeError as exc:  # the interpreter is exiting (a fetch in flight at Ctrl+C): no new threads
                results = [(name, SourceError(f"not fetched: {exc}")) for name in names]
            else:
                results = [(name, future.result()) for name, future in zip(names, futures, strict=True)]
    for name, result in results:
        if isinstance(result, SourceError):
            errors.append((name, result))
        else:
            rows.append(result)
    # The most useful error first: one that says when to retry.
    errors.sort(key=lambda item: item[1].retry_after is None)
    return rows, errors


def _attempt(fetch_one, name):
    try:
        return fetch_one(name)
    except SourceError as exc:
        return exc
