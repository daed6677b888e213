"""CoinCap v3 asset prices: needs ``COINCAP_API_KEY``; one request per asset, every number a string."""

from __future__ import annotations

import pandas as pd

from .base import SourceError
from .http import HTTPSource, not_a_number, unexpected

# CoinCap names assets by id, not by symbol.
COINCAP_IDS = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "SOL": "solana",
    "DOGE": "dogecoin",
    "ADA": "cardano",
    "XRP": "xrp",
    "LTC": "litecoin",
    "DOT": "polkadot",
    "BNB": "binance-coin",
    "AVAX": "avalanche",
    "LINK": "chainlink",
    "MATIC": "polygon",
    "USDT": "tether",
    "USDC": "usd-coin",
}


def coincap_error(body) -> str | None:
    """CoinCap's error bodies are undocumented: ``{"error": "..."}`` (or ``"message"``) is taken as one."""
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    if isinstance(body, dict) and "data" not in body and body.get("message"):
        return str(body["message"])
    return None


def parse_asset(body, provider: str = "CoinCap") -> tuple[float, pd.Timestamp | None]:
    """``(priceUsd, timestamp)`` of a ``/v3/assets/{id}`` answer; numbers come as strings, time in ms."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("priceUsd") is None:
        raise unexpected(provider, "no data.priceUsd")
    try:
        if isinstance(data["priceUsd"], bool):  # JSON true is no price, though float(True) == 1.0
            raise TypeError(data["priceUsd"])
        price = float(data["priceUsd"])  # "NaN" and "1e308" too: Source.to_frame refuses them
    except (TypeError, ValueError):
        raise not_a_number(provider, "priceUsd", data["priceUsd"]) from None
    stamp = body.get("timestamp")
    try:
        time = pd.Timestamp(int(stamp), unit="ms", tz="UTC") if isinstance(stamp, int | float) else None
    except (ValueError, OverflowError):  # NaN or out of range: the time of arrival will do
        time = None
    return price, time


class CoinCapSource(HTTPSource):
    kind = "price"
    source_type = "coincap"
    label = "CoinCap"
    no_history = "its /history endpoint spends credits the free plan's ~2,500 a month cannot spare"
    needs_key = "COINCAP_API_KEY"
    read_error = staticmethod(coincap_error)

    def fetch_one(self, asset: str) -> dict:
        s = self.settings
        if s.quote != "USD":
            raise SourceError(f"{self.label}: prices are in USD only, not {s.quote} (set RTDASH_QUOTE=USD)")
        asset_id = COINCAP_IDS.get(asset, asset.lower())
        body = self.get(
            f"{s.coincap_url.rstrip('/')}/v3/assets/{asset_id}",
            headers={"Authorization": f"Bearer {s.coincap_api_key}"},
        )
        price, time = parse_asset(body, self.label)
        return {"time": time or pd.Timestamp.now(tz="UTC"), "asset": asset, "quote": s.quote, "price": price}
