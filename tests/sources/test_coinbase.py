"""Coinbase spot prices: the parser on every real shape, and fetch end-to-end against the fake API."""

from __future__ import annotations

import pandas as pd
import pytest

from rtdash import __version__
from rtdash.sources import PRICE_COLUMNS, CoinbaseSource, SourceError
from rtdash.sources.coinbase import coinbase_error, parse_spot
from tests.fakeapi import FakeAPI, closed_port_url

# --- parser ----------------------------------------------------------------------------------------------------------


def test_amount_comes_as_a_string() -> None:
    assert parse_spot({"data": {"amount": "65000.12", "base": "BTC", "currency": "USD"}}) == 65000.12
    assert parse_spot({"data": {"amount": "0.000001", "base": "SHIB", "currency": "USD"}}) == 0.000001


def test_a_number_amount_is_taken_too() -> None:
    assert parse_spot({"data": {"amount": 97845, "base": "BTC", "currency": "USD"}}) == 97845.0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"data": {"amount": None, "base": "BTC", "currency": "USD"}}, "amount None is not a number"),
        ({"data": {"amount": "n/a"}}, "amount 'n/a' is not a number"),
        ({"data": {"base": "BTC"}}, "no data.amount"),
        ({"data": None}, "no data.amount"),
        ({"data": []}, "no data.amount"),
        ({}, "no data.amount"),
        ([], "no data.amount"),
        ("garbage", "no data.amount"),
        (None, "no data.amount"),
        (12, "no data.amount"),
    ],
)
def test_wrong_shapes_are_a_source_error(body: object, reason: str) -> None:
    with pytest.raises(SourceError, match=rf"^Coinbase: unexpected answer \({reason}\)$"):
        parse_spot(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"errors": [{"id": "not_found", "message": "Invalid currency"}]}, "Invalid currency (not_found)"),
        ({"errors": [{"id": "invalid_request", "message": "Invalid request"}]}, "Invalid request (invalid_request)"),
        (
            {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]},
            "Too many requests (rate_limit_exceeded)",
        ),
        ({"errors": [{"id": "x"}, {"id": "y", "message": "second"}]}, "error (x)"),
        ({"errors": [{"message": "no id"}]}, "no id (unknown)"),
        ({"errors": ["plain text"]}, "plain text"),
        ({"errors": []}, None),
        ({"data": {"amount": "1"}}, None),
        ([], None),
        ("text", None),
        (None, None),
    ],
)
def test_errors_envelope(body: object, message: str | None) -> None:
    assert coinbase_error(body) == message


# --- fetch against the fake API --------------------------------------------------------------------------------------


def test_fetch_gives_tidy_rows_with_the_exact_price(fake_api: FakeAPI, make_settings) -> None:
    fake_api.prices["BTC"] = 65000.12
    fake_api.prices["ETH"] = 3400.55
    source = CoinbaseSource(settings=make_settings(RTDASH_ASSETS="BTC,ETH"))
    before = pd.Timestamp.now(tz="UTC")
    df = source.fetch()
    assert list(df.columns) == PRICE_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["price"].dtype == "float64"
    assert df.to_dict("list") | {"time": None} == {
        "time": None,
        "asset": ["BTC", "ETH"],
        "quote": ["USD", "USD"],
        "price": [65000.12, 3400.55],
        "source": ["coinbase", "coinbase"],
    }
    assert (df["time"] >= before).all() and (df["time"] <= pd.Timestamp.now(tz="UTC")).all()
    assert df.attrs["errors"] == {}
    paths = sorted(r.path for r in fake_api.requests)
    assert paths == ["/v2/prices/BTC-USD/spot", "/v2/prices/ETH-USD/spot"]


def test_quote_and_user_agent(fake_api: FakeAPI, make_settings) -> None:
    df = CoinbaseSource(settings=make_settings(RTDASH_QUOTE="EUR")).fetch()
    assert df["quote"].tolist() == ["EUR"]
    (request,) = fake_api.requests
    assert request.path == "/v2/prices/BTC-EUR/spot"
    assert request.headers["User-Agent"].startswith(f"rtdash/{__version__}")


def test_an_unknown_asset_is_an_error_for_that_asset_alone(fake_api: FakeAPI, make_settings) -> None:
    df = CoinbaseSource(settings=make_settings(RTDASH_ASSETS="BTC,NOPE")).fetch()
    assert df["asset"].tolist() == ["BTC"]
    assert df.attrs["errors"] == {"NOPE": "Coinbase: HTTP 404: Invalid currency (not_found)"}
    with pytest.raises(SourceError, match=r"^Coinbase: HTTP 404: Invalid currency \(not_found\)$"):
        CoinbaseSource(settings=make_settings(RTDASH_ASSETS="NOPE")).fetch()


FAULTS = [
    # (fault, keywords for set_fault, the error message, status)
    ("500", {}, "Coinbase: HTTP 500 Internal Server Error: Internal Server Error", 500),
    ("502-html", {}, "Coinbase: HTTP 502 Bad Gateway: 502 Bad Gateway", 502),
    ("429", {}, "Coinbase: HTTP 429: Too many requests (rate_limit_exceeded)", 429),
    ("401", {}, "Coinbase: HTTP 401: Invalid API Key (authentication_error)", 401),
    ("invalid-json", {}, 'Coinbase: answered with invalid JSON instead of data ({"data": {"amount": "650)', 200),
    ("wrong-shape", {}, "Coinbase: unexpected answer (no data.amount)", None),
    ("html-200", {}, "Coinbase: answered with an HTML page instead of data (Sign in to Wi-Fi)", 200),
    ("hang", {}, "Coinbase: no answer within 0.5 s", None),
    ("slow", {"delay": 2.0}, "Coinbase: no answer within 0.5 s", None),
    (
        "http",
        {"status": 200, "body": {"errors": [{"id": "invalid_request", "message": "Invalid request"}]}},
        "Coinbase: Invalid request (invalid_request)",  # an error that comes with HTTP 200
        200,
    ),
    (
        "http",
        {"status": 400, "body": {"errors": [{"id": "invalid_request", "message": "Invalid request"}]}},
        "Coinbase: HTTP 400: Invalid request (invalid_request)",
        400,
    ),
    ("http", {"status": 503, "body": {"message": "down"}}, "Coinbase: HTTP 503 Service Unavailable", 503),
]


@pytest.mark.parametrize(("fault", "kwargs", "message", "status"), FAULTS, ids=[f[0] for f in FAULTS])
def test_every_fault_is_one_source_error_with_the_providers_reason(
    fake_api: FakeAPI, make_settings, fault: str, kwargs: dict, message: str, status: int | None
) -> None:
    fake_api.set_fault("coinbase", fault, **kwargs)
    with pytest.raises(SourceError) as info:
        CoinbaseSource(settings=make_settings(RTDASH_TIMEOUT="0.5s")).fetch()
    assert str(info.value) == message
    assert info.value.status == status
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_read_on_429_and_503(fake_api: FakeAPI, make_settings, status: int) -> None:
    if status == 429:
        fake_api.set_fault("coinbase", "429", retry_after=3)
    else:
        fake_api.set_fault("coinbase", "http", status=503, body={}, retry_after=7)
    with pytest.raises(SourceError) as info:
        CoinbaseSource(settings=make_settings()).fetch()
    assert (info.value.status, info.value.retry_after) == (status, 3 if status == 429 else 7)


def test_the_error_that_says_when_to_retry_wins(fake_api: FakeAPI, make_settings) -> None:
    fake_api.set_fault("coinbase", "429", retry_after=3)
    with pytest.raises(SourceError) as info:
        CoinbaseSource(settings=make_settings(RTDASH_ASSETS="NOPE,BTC,ETH")).fetch()
    assert info.value.retry_after == 3


def test_connection_refused(make_settings) -> None:
    url = closed_port_url()
    with pytest.raises(SourceError, match=rf"^Coinbase: cannot connect {url.removeprefix('http://')}$"):
        CoinbaseSource(settings=make_settings(RTDASH_COINBASE_URL=url)).fetch()


def test_recovers_when_the_api_comes_back(fake_api: FakeAPI, make_settings) -> None:
    source = CoinbaseSource(settings=make_settings())
    fake_api.set_fault("coinbase", "500")
    with pytest.raises(SourceError):
        source.fetch()
    fake_api.clear_fault()
    fake_api.prices["BTC"] = 123.45
    assert source.fetch()["price"].tolist() == [123.45]
