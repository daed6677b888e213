"""Checks of the fake provider APIs themselves (tests/fakeapi.py), with plain requests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.fakeapi import PROVIDERS, FakeAPI, closed_port_url

TIMEOUT = 5
OK_PATHS: dict[str, tuple[str, dict[str, str]]] = {  # one successful request per provider
    "coinbase": ("/v2/prices/BTC-USD/spot", {}),
    "coincap": ("/v3/assets/bitcoin", {"apiKey": "test-coincap-key"}),
    "open-meteo": ("/v1/forecast", {"latitude": "52.52", "longitude": "13.41", "current": "temperature_2m"}),
    "geocoding": ("/v1/search", {"name": "Berlin"}),
    "openweather": ("/data/2.5/weather", {"q": "Berlin", "appid": "test-openweather-key"}),
    "coinbase-history": (
        "/api/v3/brokerage/market/products/BTC-USD/candles",
        {"start": "1796000000", "end": "1796000600", "granularity": "ONE_MINUTE"},
    ),
    "open-meteo-history": (
        "/v1/forecast",
        {"latitude": "52.52", "longitude": "13.41", "minutely_15": "temperature_2m", "past_minutely_15": "4"},
    ),
}
PARENT = {"coinbase-history": "coinbase", "open-meteo-history": "open-meteo"}  # a parent's fault reaches its history
OM_429 = {"error": True, "reason": "Minutely API request limit exceeded. Please try again in one minute."}
EXPECTED_429 = {
    "coinbase": {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]},
    "coincap": {"error": "Too many requests"},
    "open-meteo": OM_429,
    "geocoding": OM_429,
    "openweather": {
        "cod": 429,
        "message": "Your account is temporary blocked due to exceeding of requests limitation of your subscription "
        "type. Please choose the proper subscription https://openweathermap.org/price",
    },
    "coinbase-history": {
        "error": "RATE_LIMIT_EXCEEDED",
        "error_details": "Too many requests",
        "message": "Too many requests",
    },
    "open-meteo-history": OM_429,
}
OW_401 = {"cod": 401, "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."}


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        yield fake


def get(api: FakeAPI, path: str, timeout: float = TIMEOUT, **params: Any) -> requests.Response:
    return requests.get(api.url + path, params=params, timeout=timeout)


def get_ok(api: FakeAPI, provider: str, timeout: float = TIMEOUT) -> requests.Response:
    path, params = OK_PATHS[provider]
    return get(api, path, timeout=timeout, **params)


# --- routes ------------------------------------------------------------------------------------------------------


def test_coinbase_spot_price_is_a_string_set_exactly_then_moving(api: FakeAPI) -> None:
    api.prices["BTC"] = 65000.12
    r = get(api, "/v2/prices/BTC-USD/spot")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"data": {"amount": "65000.12", "base": "BTC", "currency": "USD"}}
    assert float(r.headers["X-Fake-Served-At"]) == pytest.approx(time.time(), abs=5)
    following = [float(get(api, "/v2/prices/BTC-USD/spot").json()["data"]["amount"]) for _ in range(3)]
    assert len(set(following)) == 3 and all(p == pytest.approx(65000.12, rel=0.05) for p in following)
    api.prices["ETH"] = 2000
    assert get(api, "/v2/prices/eth-eur/spot").json() == {
        "data": {"amount": "1840.0", "base": "ETH", "currency": "EUR"}
    }
    assert get(api, "/v2/prices/DOGE-GBP/spot").json()["data"]["currency"] == "GBP"


@pytest.mark.parametrize("pair", ["XYZ-USD", "BTC-JPY"])
def test_coinbase_unknown_pair_is_404(api: FakeAPI, pair: str) -> None:
    r = get(api, f"/v2/prices/{pair}/spot")
    assert r.status_code == 404
    assert r.json() == {"errors": [{"id": "not_found", "message": "Invalid currency"}]}


def test_coincap_asset_has_string_numbers_and_needs_the_key(api: FakeAPI) -> None:
    api.prices["ETH"] = 3000.5
    r = get(api, "/v3/assets/ethereum", apiKey="test-coincap-key")
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["timestamp"], int) and body["timestamp"] == pytest.approx(time.time() * 1000, abs=5000)
    data = body["data"]
    assert data["priceUsd"] == "3000.5" and data["maxSupply"] is None and data["tokens"] == {}
    assert (data["id"], data["symbol"], data["name"], data["rank"]) == ("ethereum", "ETH", "Ethereum", "2")
    for key in ("supply", "marketCapUsd", "volumeUsd24Hr", "priceUsd", "changePercent24Hr", "vwap24Hr"):
        assert isinstance(data[key], str) and float(data[key]) == float(data[key])
    api.coincap_key = "ck-secret"
    r = requests.get(f"{api.url}/v3/assets/bitcoin", headers={"Authorization": "Bearer ck-secret"}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["data"]["maxSupply"] == "21000000.0"
    for params in ({"apiKey": "wrong-key"}, {}):
        r = get(api, "/v3/assets/bitcoin", **params)
        assert r.status_code == 401 and r.json() == {"error": "Invalid API key"} and "wrong-key" not in r.text
    r = get(api, "/v3/assets/notacoin", apiKey="ck-secret")
    assert r.status_code == 404 and r.json() == {"error": "notacoin not found"}


def test_open_meteo_single_place(api: FakeAPI) -> None:
    current = "temperature_2m,relative_humidity_2m,wind_speed_10m"
    body = get(api, "/v1/forecast", latitude="-27.47", longitude="153.03", current=current).json()
    assert list(body) == [
        "latitude",
        "longitude",
        "generationtime_ms",
        "utc_offset_seconds",
        "timezone",
        "timezone_abbreviation",
        "elevation",
        "current_units",
        "current",
    ]
    assert body["latitude"] != -27.47 and body["latitude"] == pytest.approx(-27.47, abs=0.1)
    assert (body["utc_offset_seconds"], body["timezone"], body["timezone_abbreviation"]) == (0, "GMT", "GMT")
    assert body["current_units"] == {
        "time": "iso8601",
        "interval": "seconds",
        "temperature_2m": "°C",
        "relative_humidity_2m": "%",
        "wind_speed_10m": "km/h",
    }
    cur = body["current"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:(00|15|30|45)", cur["time"]) and cur["interval"] == 900
    age = time.time() - datetime.strptime(cur["time"], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp()
    assert 0 <= age < 900 + 5
    assert isinstance(cur["temperature_2m"], float) and isinstance(cur["relative_humidity_2m"], int)
    assert isinstance(cur["wind_speed_10m"], float)


def _same_slot_pair(api: FakeAPI, a: dict[str, str], b: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two forecasts from the same 15-minute slot (retried if a slot boundary falls between them)."""
    for _ in range(3):
        first, second = (get(api, "/v1/forecast", **params).json() for params in (a, b))
        if first["current"]["time"] == second["current"]["time"]:
            return first, second
    raise AssertionError("the slot changed three times in a row")


@pytest.mark.parametrize(
    ("unit", "label", "per_kmh"), [("ms", "m/s", 1 / 3.6), ("mph", "mp/h", 0.621371), ("kn", "kn", 0.539957)]
)
def test_open_meteo_converts_units(api: FakeAPI, unit: str, label: str, per_kmh: float) -> None:
    base = {"latitude": "64.13", "longitude": "-21.9", "current": "temperature_2m,wind_speed_10m"}
    metric, other = _same_slot_pair(api, base, base | {"temperature_unit": "fahrenheit", "wind_speed_unit": unit})
    assert other["current_units"]["temperature_2m"] == "°F" and other["current_units"]["wind_speed_10m"] == label
    assert other["current"]["temperature_2m"] == pytest.approx(
        metric["current"]["temperature_2m"] * 9 / 5 + 32, abs=0.2
    )
    assert other["current"]["wind_speed_10m"] == pytest.approx(metric["current"]["wind_speed_10m"] * per_kmh, abs=0.1)


def test_open_meteo_only_requested_variables_and_several_places(api: FakeAPI) -> None:
    one = get(api, "/v1/forecast", latitude="52.52", longitude="13.41", current="temperature_2m").json()
    assert set(one["current"]) == {"time", "interval", "temperature_2m"}
    assert "current" not in get(api, "/v1/forecast", latitude="52.52", longitude="13.41").json()
    several = get(api, "/v1/forecast", latitude="52.52,64.13", longitude="13.41,-21.9", current="temperature_2m")
    places = several.json()
    assert isinstance(places, list) and len(places) == 2
    assert places[0]["current"]["temperature_2m"] != places[1]["current"]["temperature_2m"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"latitude": "100", "longitude": "10"}, "Latitude must be in range of -90 to 90°. Given: 100.0."),
        (
            {"latitude": "1,2", "longitude": "3"},
            "Parameter 'latitude' and 'longitude' must have the same number of elements",
        ),
    ],
)
def test_open_meteo_400(api: FakeAPI, params: dict[str, str], reason: str) -> None:
    r = get(api, "/v1/forecast", **params)
    assert r.status_code == 400 and r.json() == {"error": True, "reason": reason}


def test_geocoding(api: FakeAPI) -> None:
    body = get(api, "/v1/search", name="Brisbane", count="1").json()
    (place,) = body["results"]
    assert isinstance(body["generationtime_ms"], float)
    assert (place["name"], place["country_code"], place["admin1"], place["timezone"]) == (
        "Brisbane",
        "AU",
        "Queensland",
        "Australia/Brisbane",
    )
    assert {"id", "latitude", "longitude", "elevation", "feature_code", "country", "population"} <= set(place)
    for name in ("Zürich", "zurich"):
        assert get(api, "/v1/search", name=name).json()["results"][0]["name"] == "Zürich"
    assert "admin2" not in get(api, "/v1/search", name="Reykjavik").json()["results"][0]
    assert "population" not in get(api, "/v1/search", name="Ulaanbaatar").json()["results"][0]
    assert [p["country_code"] for p in get(api, "/v1/search", name="London", count="10").json()["results"]] == [
        "GB",
        "CA",
    ]
    for name in ("Atlantis", ""):
        r = get(api, "/v1/search", name=name)
        assert r.status_code == 200 and "results" not in r.json() and "generationtime_ms" in r.json()
    r = get(api, "/v1/search")
    assert r.status_code == 400 and r.json()["error"] is True


def test_openweather_current_weather(api: FakeAPI) -> None:
    key = {"appid": "test-openweather-key"}
    metric = get(api, "/data/2.5/weather", lat="-27.47", lon="153.03", units="metric", **key).json()
    assert list(metric) == [
        "coord",
        "weather",
        "base",
        "main",
        "visibility",
        "wind",
        "clouds",
        "dt",
        "sys",
        "timezone",
        "id",
        "name",
        "cod",
    ]
    assert metric["cod"] == 200 and metric["name"] == "Brisbane" and metric["sys"]["country"] == "AU"
    assert metric["base"] == "stations" and metric["timezone"] == 36000 and isinstance(metric["dt"], int)
    assert set(metric["weather"][0]) == {"id", "main", "description", "icon"}
    assert {"temp", "feels_like", "temp_min", "temp_max", "pressure", "humidity", "sea_level", "grnd_level"} == set(
        metric["main"]
    )
    standard = get(api, "/data/2.5/weather", lat="-27.47", lon="153.03", **key).json()
    imperial = get(api, "/data/2.5/weather", lat="-27.47", lon="153.03", units="imperial", **key).json()
    assert standard["main"]["temp"] == pytest.approx(metric["main"]["temp"] + 273.15, abs=0.1)
    assert imperial["main"]["temp"] == pytest.approx(metric["main"]["temp"] * 9 / 5 + 32, abs=0.1)
    assert standard["wind"]["speed"] == pytest.approx(metric["wind"]["speed"], abs=0.05)
    assert imperial["wind"]["speed"] == pytest.approx(metric["wind"]["speed"] * 2.236936, abs=0.1)
    canada = get(api, "/data/2.5/weather", q="London,CA", **key).json()
    assert (canada["name"], canada["sys"]["country"], canada["timezone"]) == ("London", "CA", -18000)


@pytest.mark.parametrize(
    ("params", "status", "body"),
    [
        ({"q": "Atlantis", "appid": "test-openweather-key"}, 404, {"cod": "404", "message": "city not found"}),
        ({"appid": "test-openweather-key"}, 400, {"cod": "400", "message": "Nothing to geocode"}),
        ({"q": "London", "appid": "wrong-key"}, 401, OW_401),
        ({"q": "London"}, 401, OW_401),
    ],
)
def test_openweather_errors(api: FakeAPI, params: dict[str, str], status: int, body: dict[str, Any]) -> None:
    r = get(api, "/data/2.5/weather", **params)
    assert r.status_code == status and r.json() == body and "wrong-key" not in r.text


def test_openweather_geocoding(api: FakeAPI) -> None:
    found = get(api, "/geo/1.0/direct", q="London", limit="5", appid="test-openweather-key").json()
    assert [(p["name"], p["country"], p["state"]) for p in found] == [
        ("London", "GB", "England"),
        ("London", "CA", "Ontario"),
    ]
    assert set(found[0]) == {"name", "local_names", "lat", "lon", "country", "state"}
    assert get(api, "/geo/1.0/direct", q="Atlantis", appid="test-openweather-key").json() == []
    assert get(api, "/geo/1.0/direct", q="London").status_code == 401


def test_unknown_route_is_404(api: FakeAPI) -> None:
    assert get(api, "/nothing/here").status_code == 404
    assert api.count("unknown") == 1


# --- faults ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_faults_answer_like_the_real_thing(api: FakeAPI, provider: str) -> None:
    api.set_fault(provider, "500")
    r = get_ok(api, provider)
    assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain")
    with pytest.raises(ValueError):
        r.json()
    api.set_fault(provider, "502-html")
    r = get_ok(api, provider)
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html" and "<html>" in r.text
    api.set_fault(provider, "429", retry_after=3)
    r = get_ok(api, provider)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3" and r.json() == EXPECTED_429[provider]
    api.set_fault(provider, "429")
    assert "Retry-After" not in get_ok(api, provider).headers
    api.set_fault(provider, "401")
    r = get_ok(api, provider)
    assert r.status_code == 401 and r.json()
    api.set_fault(provider, "invalid-json")
    r = get_ok(api, provider)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    api.set_fault(provider, "wrong-shape")
    assert get_ok(api, provider).json() == {"foo": []}
    api.set_fault(provider, "html-200")
    r = get_ok(api, provider)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    api.set_fault(provider, "http", status=418, body={"message": "teapot"}, retry_after=7)
    r = get_ok(api, provider)
    assert (r.status_code, r.json(), r.headers["Retry-After"]) == (418, {"message": "teapot"}, "7")
    assert "X-Fake-Served-At" in r.headers
    others = [p for p in PROVIDERS if provider not in (p, PARENT.get(p))]
    assert all(get_ok(api, p).status_code == 200 for p in others)
    api.clear_fault(provider)
    assert get_ok(api, provider).status_code == 200


def test_401_bodies_of_the_keyed_providers(api: FakeAPI) -> None:
    api.set_fault("*", "401")
    assert get_ok(api, "coincap").json() == {"error": "Invalid API key"}
    assert get_ok(api, "openweather").json() == OW_401


def test_every_other_request_fails(api: FakeAPI) -> None:
    api.set_fault("coinbase", "every-other")
    assert [get_ok(api, "coinbase").status_code for _ in range(4)] == [500, 200, 500, 200]


def test_star_fault_applies_to_all_and_a_provider_fault_wins(api: FakeAPI) -> None:
    api.set_fault("*", "500")
    api.set_fault("coinbase", "wrong-shape")
    # coinbase-history takes coinbase's fault (its parent's), open-meteo-history the "*" one.
    assert [get_ok(api, p).status_code for p in PROVIDERS] == [200, 500, 500, 500, 500, 200, 500]
    assert get_ok(api, "coinbase").json() == get_ok(api, "coinbase-history").json() == {"foo": []}
    api.clear_fault()
    assert [get_ok(api, p).status_code for p in PROVIDERS] == [200] * 7


def test_slow_answers_after_the_delay(api: FakeAPI) -> None:
    api.set_fault("coinbase", "slow", delay=0.3)
    start = time.monotonic()
    assert get_ok(api, "coinbase").status_code == 200
    assert time.monotonic() - start >= 0.3


def _call_in_thread(api: FakeAPI, provider: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["response"] = get_ok(api, provider, timeout=30)
        except requests.RequestException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, outcome


def test_hang_holds_one_provider_until_cleared(api: FakeAPI) -> None:
    api.set_fault("coinbase", "hang")
    thread, outcome = _call_in_thread(api, "coinbase")
    assert api.wait_for_count("coinbase", 1, timeout=5)
    start = time.monotonic()
    assert get_ok(api, "open-meteo").status_code == 200
    assert time.monotonic() - start < 2 and thread.is_alive()
    api.clear_fault("coinbase")
    thread.join(timeout=5)
    assert not thread.is_alive() and isinstance(outcome.get("error"), requests.ConnectionError)
    assert get_ok(api, "coinbase").status_code == 200


def test_stop_is_prompt_while_a_request_hangs() -> None:
    api = FakeAPI().start()
    api.set_fault("*", "hang")
    thread, outcome = _call_in_thread(api, "coincap")
    assert api.wait_for_count("coincap", 1, timeout=5)
    start = time.monotonic()
    api.stop()
    assert time.monotonic() - start < 2
    thread.join(timeout=5)
    assert not thread.is_alive() and isinstance(outcome.get("error"), requests.ConnectionError)
    with pytest.raises(requests.ConnectionError):
        get_ok(api, "coinbase", timeout=2)


# --- bookkeeping ---------------------------------------------------------------------------------------------------


def test_counts_and_request_records(api: FakeAPI) -> None:
    get_ok(api, "coinbase")
    get_ok(api, "coinbase")
    get_ok(api, "open-meteo")
    assert (api.count("coinbase"), api.count("open-meteo"), api.count()) == (2, 1, 3)
    last = api.requests[-1]
    assert (last.provider, last.path, last.query["latitude"]) == ("open-meteo", "/v1/forecast", "52.52")
    assert "User-Agent" in last.headers and last.time == pytest.approx(time.time(), abs=5)
    assert api.wait_for_count("coinbase", 2, timeout=0)
    assert not api.wait_for_count("coinbase", 3, timeout=0.1)
    thread, _ = _call_in_thread(api, "coinbase")
    assert api.wait_for_count("coinbase", 3, timeout=5)
    thread.join(timeout=5)
    api.reset_counts()
    assert api.count() == 0 and api.requests == []


def test_bad_fault_arguments_are_refused(api: FakeAPI) -> None:
    with pytest.raises(ValueError, match="coinbase"):
        api.set_fault("coinbsae", "500")
    with pytest.raises(ValueError, match="hang"):
        api.set_fault("coinbase", "explode")


def test_nothing_is_logged(api: FakeAPI, capfd: pytest.CaptureFixture[str]) -> None:
    get_ok(api, "coinbase")
    get(api, "/nothing")
    assert capfd.readouterr().err == ""


def test_closed_port_refuses_connections() -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(closed_port_url(), timeout=2)


def test_candles_come_newest_first_as_strings_at_most_350(api: FakeAPI) -> None:
    path = "/api/v3/brokerage/market/products/BTC-USD/candles"
    body = get(api, path, start="1796000000", end="1796003000", granularity="ONE_MINUTE").json()
    starts = [int(c["start"]) for c in body["candles"]]
    assert starts == sorted(starts, reverse=True) and len(starts) == 50 and starts[0] == 1796002980
    assert all(isinstance(v, str) for c in body["candles"] for v in c.values())
    assert set(body["candles"][0]) == {"start", "low", "high", "open", "close", "volume"}
    r = get(api, path, start="1796000000", end="1796030000", granularity="ONE_MINUTE")
    assert r.status_code == 400 and "less than 350" in r.json()["message"]
    assert get(api, path, start="1", end="2", granularity="ONE_SECOND").status_code == 400


def test_a_fault_may_let_some_requests_through_first(api: FakeAPI) -> None:
    api.set_fault("coinbase-history", "500", after=2)
    assert [get_ok(api, "coinbase-history").status_code for _ in range(4)] == [200, 200, 500, 500]
    assert api.count("coinbase-history") == 4 and api.count("coinbase") == 0


def test_past_weather_beyond_92_days_is_refused_as_open_meteo_does(api: FakeAPI) -> None:
    params = {"latitude": "52.52", "longitude": "13.41", "minutely_15": "temperature_2m"}
    r = get(api, "/v1/forecast", start_minutely_15="2020-01-01T00:00", end_minutely_15="2020-01-02T00:00", **params)
    assert r.status_code == 400 and r.json()["error"] is True and "out of allowed range" in r.json()["reason"]
    body = get(api, "/v1/forecast", past_minutely_15="8", forecast_minutely_15="0", **params).json()
    assert len(body["minutely_15"]["time"]) == len(body["minutely_15"]["temperature_2m"]) == 8
    assert body["minutely_15_units"]["temperature_2m"] == "°C"
