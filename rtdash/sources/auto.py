"""``auto``: the live provider, and simulated rows only until live data has been seen once."""

from __future__ import annotations

import time

import pandas as pd
import param

from .base import Source, SourceError
from .http import retry_wait


class AutoSource(Source):
    """Asks ``live``; while no live fetch has ever succeeded, a failure yields ``fallback`` rows instead.

    ``simulated`` and ``fallback_reason`` say when the rows are made up.  Once live data has been seen the
    fallback is never used again: a live failure raises, and the poller marks the data stale.
    """

    live = param.ClassSelector(class_=Source, precedence=-1)
    fallback = param.ClassSelector(class_=Source, precedence=-1)
    fallback_reason = param.String(default=None, allow_None=True, doc="Why the rows are simulated.")
    live_seen = param.Boolean(default=False)

    def __init__(self, **params):
        super().__init__(**params)
        self.kind = self.live.kind
        self._live_not_before = 0.0

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.live.label

    @property
    def provider(self) -> str:
        return self.fallback.label if self.simulated else self.live.label

    @property
    def history_provider(self) -> Source:
        return self.live

    def fetch(self) -> pd.DataFrame:
        if self.live_seen:
            return self.live.fetch()
        rejected: dict[str, str] = {}
        if time.monotonic() >= self._live_not_before:
            try:
                df = self.live.fetch()
            except SourceError as exc:
                # Honour Retry-After even while showing simulated rows, capped as the poller caps it.
                wait = retry_wait(exc.retry_after, self.settings.backoff_max) or 0.0
                self._live_not_before = time.monotonic() + wait
                self.fallback_reason = str(exc)
                rejected = exc.rejected
            else:
                with param.edit_constant(self):
                    self.simulated = False
                self.live_seen, self.fallback_reason = True, None
                return df
        with param.edit_constant(self):
            self.simulated = True
        df = self.fallback.fetch()
        df.attrs["rejected"] = rejected  # the live rows refused, still counted while simulated rows stand in
        return df

    def close(self) -> None:
        self.live.close()
        self.fallback.close()
