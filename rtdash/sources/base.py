"""The contract every provider keeps: ``fetch()`` returns a tidy DataFrame or raises :class:`SourceError`."""

from __future__ import annotations

import difflib
import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pandas as pd
import param

from ..config import Settings, SettingsError

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
    """``text`` with every known secret and anything shaped like a key in a URL or header removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


class SourceError(Exception):
    """A provider failed: a short message fit for a user, and when to retry at the earliest."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def number(value) -> float:
    """A float out of a provider's number, numeric string or null (NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def empty_frame(kind: str) -> pd.DataFrame:
    """An empty frame with the schema of ``kind`` (``price`` or ``weather``) and its dtypes."""
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
        if not rows:
            raise errors[0][1]
        df = tidy(pd.DataFrame(rows).assign(source=self.source_type), self.kind)
        df.attrs["errors"] = {name: str(err) for name, err in errors}
        return df

    def fetch_one(self, name: str) -> dict:
        """One row (a dict of the schema's columns but ``source``) for the series ``name``."""
        raise NotImplementedError

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
            results = list(zip(names, pool.map(lambda name: _attempt(fetch_one, name), names), strict=True))
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
