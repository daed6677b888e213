"""CoinCap v3: every number a string, ``{"error": ..}`` bodies, the key in a header and never in a message."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rtdash.sources import PRICE_COLUMNS, CoinCapSource, SourceError
from rtdash.sources.coincap import coincap_error, parse_asset
from tests.fakeapi import FakeAPI

# A real /v3/assets/bitcoin answer: every number is a string, maxSupply may be null, timestamp in ms.
REAL = {
    "data": {
        "id": "ethereum",
        "rank": "2",
        "symbol": "ETH",
        "name": "Ethereum",
        "supply": "120400000.0000000000000000",
        "maxSupply": None,
        "marketCapUsd": "409427032567.7811862498540080",
        "volumeUsd24Hr": "8188540651.3556237248970801",
        "priceUsd": "3400.5500000000000000",
        "changePercent24Hr": "-1.2345",
        "vwap24Hr": "3412.1",
        "explorer": "https://etherscan.io/",
        "tokens": {},
    },
    "timestamp": 1763701200123,
}


@pytest.fixture
def settings(fake_api: FakeAPI, make_settings):
    def make(**env: str):
        return make_settings(RTDASH_PRICE_SOURCE="coincap", COINCAP_API_KEY=fake_api.coincap_key, **env)

    return make


# --- parser ----------------------------------------------------------------------------------------------------------


def test_string_numbers_null_max_supply_and_millisecond_timestamp() -> None:
    price, time = parse_asset(REAL)
    assert price == 3400.55
    assert time == pd.Timestamp("2025-11-21T05:00:00.123", tz="UTC")


@pytest.mark.parametrize("stamp", [None, "1763701200123", 10**30, math.nan, math.inf, -(10**30)])
def test_an_unusable_timestamp_leaves_the_time_to_the_caller(stamp: object) -> None:
    assert parse_asset({"data": {"priceUsd": "1.5"}, "timestamp": stamp}) == (1.5, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"data": {**REAL["data"], "priceUsd": None}}, "no data.priceUsd"),
        ({"data": {"priceUsd": "abc"}}, "priceUsd 'abc' is not a number"),
        ({"data": {"priceUsd": []}}, r"priceUsd \[\] is not a number"),
        ({"data": None}, "no data.priceUsd"),
        ({"data": [REAL["data"]]}, "no data.priceUsd"),
        ({"timestamp": 1}, "no data.priceUsd"),
        ([], "no data.priceUsd"),
        ("<html>", "no data.priceUsd"),
        (None, "no data.priceUsd"),
    ],
)
def test_wrong_shapes_are_a_source_error(body: object, reason: str) -> None:
    with pytest.raises(SourceError, match=rf"^CoinCap: unexpected answer \({reason}\)$"):
        parse_asset(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": "Invalid API key"}, "Invalid API key"),
        ({"error": "bitcoinz not found"}, "bitcoinz not found"),
        ({"message": "Unauthorized"}, "Unauthorized"),
        ({"error": None, "data": {"priceUsd": "1"}}, None),
        ({"error": "", "data": {}}, None),
        (REAL, None),
        ([], None),
        ("text", None),
    ],
)
def test_error_bodies(body: object, message: str | None) -> None:
    assert coincap_error(body) == message


# --- fetch against the fake API --------------------------------------------------------------------------------------


def test_fetch_sends_the_key_in_a_header_and_names_assets_by_id(fake_api: FakeAPI, settings) -> None:
    fake_api.prices["BTC"] = 64000.5
    fake_api.prices["ETH"] = 3400.55
    df = CoinCapSource(settings=settings(RTDASH_ASSETS="BTC,ETH")).fetch()
    assert list(df.columns) == PRICE_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df[["asset", "quote", "price", "source"]].to_dict("list") == {
        "asset": ["BTC", "ETH"],
        "quote": ["USD", "USD"],
        "price": [64000.5, 3400.55],
        "source": ["coincap", "coincap"],
    }
    requests = sorted(fake_api.requests, key=lambda r: r.path)
    assert [r.path for r in requests] == ["/v3/assets/bitcoin", "/v3/assets/ethereum"]
    for request in requests:
        assert request.headers["Authorization"] == f"Bearer {fake_api.coincap_key}"
        assert fake_api.coincap_key not in request.path and fake_api.coincap_key not in str(request.query)


def test_the_time_is_coincaps_timestamp(fake_api: FakeAPI, settings) -> None:
    fake_api.set_fault("coincap", "http", status=200, body=REAL)
    df = CoinCapSource(settings=settings()).fetch()
    assert df["time"].tolist() == [pd.Timestamp("2025-11-21T05:00:00.123", tz="UTC")]
    assert df["price"].tolist() == [3400.55]


def test_an_unknown_asset_is_an_error_for_that_asset_alone(fake_api: FakeAPI, settings) -> None:
    df = CoinCapSource(settings=settings(RTDASH_ASSETS="BTC,NOPE")).fetch()
    assert df["asset"].tolist() == ["BTC"]
    assert df.attrs["errors"] == {"NOPE": "CoinCap: HTTP 404: nope not found"}


def test_a_wrong_key_is_reported_without_the_key(fake_api: FakeAPI, make_settings) -> None:
    key = "wrong-key-9f8e7d6c"
    source = CoinCapSource(settings=make_settings(RTDASH_PRICE_SOURCE="coincap", COINCAP_API_KEY=key))
    with pytest.raises(SourceError) as info:
        source.fetch()
    assert str(info.value) == "CoinCap: HTTP 401: Invalid API key"
    assert fake_api.requests[0].headers["Authorization"] == f"Bearer {key}"


@pytest.mark.parametrize(
    ("fault", "kwargs", "message"),
    [
        ("http", {"status": 200, "body": {"error": "Too many requests"}}, "CoinCap: Too many requests"),
        ("429", {"retry_after": 3}, "CoinCap: HTTP 429: Too many requests"),
        ("500", {}, "CoinCap: HTTP 500 Internal Server Error: Internal Server Error"),
        ("502-html", {}, "CoinCap: HTTP 502 Bad Gateway: 502 Bad Gateway"),
        ("html-200", {}, "CoinCap: answered with an HTML page instead of data (Sign in to Wi-Fi)"),
        ("invalid-json", {}, 'CoinCap: answered with invalid JSON instead of data ({"data": {"amount": "650)'),
        ("wrong-shape", {}, "CoinCap: unexpected answer (no data.priceUsd)"),
        ("hang", {}, "CoinCap: no answer within 0.5 s"),
    ],
)
def test_faults(fake_api: FakeAPI, settings, fault: str, kwargs: dict, message: str) -> None:
    fake_api.set_fault("coincap", fault, **kwargs)
    with pytest.raises(SourceError) as info:
        CoinCapSource(settings=settings(RTDASH_TIMEOUT="0.5s")).fetch()
    assert str(info.value) == message
    assert info.value.retry_after == kwargs.get("retry_after")
    assert fake_api.coincap_key not in str(info.value)
