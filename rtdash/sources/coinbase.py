"""Coinbase spot prices: keyless, one request per asset."""

from __future__ import annotations

import pandas as pd

from .http import HTTPSource, not_a_number, unexpected


def coinbase_error(body) -> str | None:
    """``{"errors": [{"id": "not_found", "message": "Invalid currency"}]}`` -> ``"Invalid currency (not_found)"``."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        if isinstance(first, dict):
            return f"{first.get('message') or 'error'} ({first.get('id') or 'unknown'})"
        return str(first)
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


class CoinbaseSource(HTTPSource):
    kind = "price"
    source_type = "coinbase"
    label = "Coinbase"
    read_error = staticmethod(coinbase_error)

    def fetch_one(self, asset: str) -> dict:
        s = self.settings
        body = self.get(f"{s.coinbase_url.rstrip('/')}/v2/prices/{asset}-{s.quote}/spot")
        price = parse_spot(body, self.label)
        return {"time": pd.Timestamp.now(tz="UTC"), "asset": asset, "quote": s.quote, "price": price}
