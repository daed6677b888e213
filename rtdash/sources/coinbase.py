"""Coinbase spot prices: keyless, one request per asset; and its public one-minute candles for the recent past."""

from __future__ import annotations

import math

import pandas as pd

from .base import number
from .http import HTTPSource, not_a_number, unexpected

CANDLE = 60.0  # s: the granularity asked for, ONE_MINUTE
CANDLES_PER_REQUEST = 350  # the most candles Coinbase answers in one request
EPOCH_MAX = 2**33  # s: a candle's start beyond this (year 2242) is no time at all


def coinbase_error(body) -> str | None:
    """``{"errors": [{"id": "not_found", "message": "Invalid currency"}]}`` -> ``"Invalid currency (not_found)"``;
    Advanced Trade's ``{"error": "INVALID_ARGUMENT", "message": "..."}`` -> ``"... (INVALID_ARGUMENT)"``."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        if isinstance(first, dict):
            return f"{first.get('message') or 'error'} ({first.get('id') or 'unknown'})"
        return str(first)
    if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
        return f"{body.get('message') or body.get('error_details') or 'error'} ({body['error']})"
    return None


def parse_spot(body, provider: str = "Coinbase") -> float:
    """The amount of a spot price answer, which comes as a string."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or "amount" not in data:
        raise unexpected(provider, "no data.amount")
    amount = data["amount"]
    try:
        if isinstance(amount, bool):  # JSON true is no price, though float(True) == 1.0
            raise TypeError(amount)
        return float(amount)  # "NaN", "Infinity" and "1e308" too: Source.to_frame refuses them
    except (TypeError, ValueError):
        raise not_a_number(provider, "amount", amount) from None


def parse_candles(body, provider: str = "Coinbase") -> list[tuple[pd.Timestamp, float]]:
    """``(time, close)`` of each candle of a candles answer, oldest first; a candle's time is its minute's end.

    Candles come newest first, every number a string: ``{"candles": [{"start": "1712192400", "close": "66181.6",
    ...}]}``.  A candle whose start is not a time is left out; its close is checked with the live rows' rules.
    """
    candles = body.get("candles") if isinstance(body, dict) else None
    if not isinstance(candles, list):
        raise unexpected(provider, "no candles list")
    out = []
    for candle in candles:
        if not isinstance(candle, dict):
            continue
        start = number(candle.get("start"))
        if not (math.isfinite(start) and 0 <= start < EPOCH_MAX):
            continue
        out.append((pd.Timestamp(int(start) + CANDLE, unit="s", tz="UTC"), number(candle.get("close"))))
    return sorted(out, key=lambda pair: pair[0])


class CoinbaseSource(HTTPSource):
    kind = "price"
    source_type = "coinbase"
    label = "Coinbase"
    read_error = staticmethod(coinbase_error)
    resolution = CANDLE
    page_span = CANDLE * (CANDLES_PER_REQUEST - 1)  # the end is inclusive: one candle more than minutes

    def history_page(self, start: pd.Timestamp, end: pd.Timestamp, names: list[str]) -> pd.DataFrame:
        """One-minute candles of one asset (``names[0]``): their closes, at the end of their minute."""
        s, asset = self.settings, names[0]
        body = self.get(
            f"{s.coinbase_url.rstrip('/')}/api/v3/brokerage/market/products/{asset}-{s.quote}/candles",
            params={
                # Candles that start in [start - 1 min, end - 1 min] end in [start, end].
                "start": str(int(start.timestamp() - CANDLE)),
                "end": str(int(end.timestamp() - CANDLE)),
                "granularity": "ONE_MINUTE",
            },
        )
        now = pd.Timestamp.now(tz="UTC")
        rows = [
            {"time": time, "asset": asset, "quote": s.quote, "price": close}
            for time, close in parse_candles(body, self.label)
            if time <= now  # the minute still running has no close yet
        ]
        return self.past_frame(rows, start, end)

    def fetch_one(self, asset: str) -> dict:
        s = self.settings
        body = self.get(f"{s.coinbase_url.rstrip('/')}/v2/prices/{asset}-{s.quote}/spot")
        price = parse_spot(body, self.label)
        return {"time": pd.Timestamp.now(tz="UTC"), "asset": asset, "quote": s.quote, "price": price}
