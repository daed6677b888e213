"""OpenWeather: ``cod`` as a number or a string, one request per city made concurrently, the key sent and never
shown, an unknown city an error for that city alone."""

from __future__ import annotations

import math

import pytest

from rtdash.sources import WEATHER_COLUMNS, OpenWeatherSource, SourceError
from rtdash.sources.cities import built_in
from rtdash.sources.openweather import openweather_error, parse_weather
from tests.fakeapi import FakeAPI

# A real /data/2.5/weather answer (units=metric).
REAL = {
    "coord": {"lon": 13.405, "lat": 52.52},
    "weather": [{"id": 803, "main": "Clouds", "description": "broken clouds", "icon": "04d"}],
    "base": "stations",
    "main": {
        "temp": 7.85,
        "feels_like": 4.92,
        "temp_min": 6.69,
        "temp_max": 8.92,
        "pressure": 1012,
        "humidity": 81,
        "sea_level": 1012,
        "grnd_level": 1007,
    },
    "visibility": 10000,
    "wind": {"speed": 4.63, "deg": 250, "gust": 8.2},
    "rain": {"1h": 0.25},
    "clouds": {"all": 75},
    "dt": 1763701200,
    "sys": {"type": 2, "id": 2011538, "country": "DE", "sunrise": 1763706000, "sunset": 1763736000},
    "timezone": 3600,
    "id": 2950159,
    "name": "Berlin",
    "cod": 200,
}
OW_401 = "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."


@pytest.fixture
def settings(fake_api: FakeAPI, make_settings):
    def make(**env: str):
        env.setdefault("OPENWEATHER_API_KEY", fake_api.openweather_key)
        return make_settings(RTDASH_WEATHER_SOURCE="openweather", **env)

    return make


# --- parser ----------------------------------------------------------------------------------------------------------


def test_a_real_answer() -> None:
    assert parse_weather(REAL) == {"temperature": 7.85, "humidity": 81.0, "wind_speed": 4.63}


def test_optional_blocks_and_nulls() -> None:
    body = {k: v for k, v in REAL.items() if k not in ("wind", "rain")} | {"main": {"temp": None, "humidity": "80"}}
    row = parse_weather(body)
    assert math.isnan(row["temperature"]) and row["humidity"] == 80.0 and math.isnan(row["wind_speed"])
    assert math.isnan(parse_weather(REAL | {"wind": "calm"})["wind_speed"])


@pytest.mark.parametrize("body", [{"cod": 200}, {"main": None}, {"main": {"humidity": 3}}, [], "text", None, 5])
def test_wrong_shapes_are_a_source_error(body: object) -> None:
    with pytest.raises(SourceError, match=r"^OpenWeather: unexpected answer \(no main.temp\)$"):
        parse_weather(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cod": 401, "message": OW_401}, OW_401),  # a number on 401 and 429
        ({"cod": 429, "message": "Your account is temporary blocked"}, "Your account is temporary blocked"),
        ({"cod": "404", "message": "city not found"}, "city not found"),  # a string on 400 and 404
        ({"cod": "400", "message": "Nothing to geocode"}, "Nothing to geocode"),
        ({"cod": "400"}, "error 400"),
        ({"cod": "oops"}, "error oops"),
        ({"cod": None, "message": "odd"}, "odd"),
        ({"cod": 200, **REAL}, None),
        ({"cod": "200"}, None),
        (REAL, None),
        ({"main": {"temp": 1}}, None),
        ([], None),
        ("text", None),
    ],
)
def test_cod_as_number_or_string(body: object, message: str | None) -> None:
    assert openweather_error(body) == message


# --- fetch against the fake API --------------------------------------------------------------------------------------


def test_one_request_per_city_with_the_key(fake_api: FakeAPI, settings) -> None:
    cities = ["Berlin", "London", "Tokyo"]
    df = OpenWeatherSource(settings=settings(RTDASH_CITIES=",".join(cities))).fetch()
    assert list(df.columns) == WEATHER_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["city"].tolist() == cities
    assert df["source"].tolist() == ["openweather"] * 3
    assert list(zip(df["lat"], df["lon"], strict=True)) == [built_in(c) for c in cities]
    assert df[["temperature", "humidity", "wind_speed"]].notna().all().all()
    requests = fake_api.requests
    assert [r.provider for r in requests] == ["openweather"] * 3
    assert sorted((r.query["lat"], r.query["lon"]) for r in requests) == sorted(
        (f"{built_in(c)[0]:.4f}", f"{built_in(c)[1]:.4f}") for c in cities
    )
    assert {r.query["appid"] for r in requests} == {fake_api.openweather_key}
    assert {r.query["units"] for r in requests} == {"metric"}


def test_cities_are_asked_concurrently(fake_api: FakeAPI, settings) -> None:
    fake_api.set_fault("openweather", "slow", delay=1.0)
    OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin,London,Tokyo,Paris", RTDASH_TIMEOUT="5s")).fetch()
    times = sorted(r.time for r in fake_api.requests)
    assert len(times) == 4
    assert times[-1] - times[0] < 1.0, "a request waited for another city's answer"


def test_metric_and_imperial(fake_api: FakeAPI, settings) -> None:
    metric = OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin")).fetch()
    imperial = OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin", RTDASH_UNITS="imperial")).fetch()
    assert [r.query["units"] for r in fake_api.requests] == ["metric", "imperial"]
    assert imperial["temperature"].iloc[0] == pytest.approx(metric["temperature"].iloc[0] * 1.8 + 32, abs=0.1)
    assert imperial["wind_speed"].iloc[0] == pytest.approx(metric["wind_speed"].iloc[0] / 0.44704, abs=0.1)


def test_an_unknown_city_is_an_error_for_that_city_alone(fake_api: FakeAPI, settings) -> None:
    source = OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin,Atlantis,Brisbane"))
    df = source.fetch()
    assert df["city"].tolist() == ["Berlin", "Brisbane"]
    assert df.attrs["errors"] == {"Atlantis": "unknown city 'Atlantis'"}
    assert fake_api.count("openweather") == 2


def test_a_404_city_not_found_is_an_error_for_that_city_alone(fake_api: FakeAPI, settings) -> None:
    fake_api.set_fault("openweather", "http", status=404, body={"cod": "404", "message": "city not found"})
    with pytest.raises(SourceError, match=r"^OpenWeather: HTTP 404: city not found$"):
        OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin,London")).fetch()


def test_a_wrong_key_is_reported_without_the_key(fake_api: FakeAPI, settings) -> None:
    key = "0123456789abcdef0123456789abcdef"
    with pytest.raises(SourceError) as info:
        OpenWeatherSource(settings=settings(OPENWEATHER_API_KEY=key, RTDASH_CITIES="Berlin,London")).fetch()
    assert str(info.value) == f"OpenWeather: HTTP 401: {OW_401}"
    assert {r.query["appid"] for r in fake_api.requests} == {key}


@pytest.mark.parametrize(
    ("fault", "kwargs", "message"),
    [
        (
            "http",
            {"status": 200, "body": {"cod": "404", "message": "city not found"}},
            "OpenWeather: city not found",  # an error with HTTP 200
        ),
        (
            "http",
            {"status": 400, "body": {"cod": "400", "message": "wrong latitude"}},
            "OpenWeather: HTTP 400: wrong latitude",
        ),
        ("429", {"retry_after": 5}, "OpenWeather: HTTP 429: Your account is temporary blocked due to exceeding"),
        ("500", {}, "OpenWeather: HTTP 500 Internal Server Error: Internal Server Error"),
        ("502-html", {}, "OpenWeather: HTTP 502 Bad Gateway: 502 Bad Gateway"),
        ("html-200", {}, "OpenWeather: answered with an HTML page instead of data (Sign in to Wi-Fi)"),
        ("invalid-json", {}, 'OpenWeather: answered with invalid JSON instead of data ({"data": {"amount": "650)'),
        ("wrong-shape", {}, "OpenWeather: unexpected answer (no main.temp)"),
        ("hang", {}, "OpenWeather: no answer within 0.5 s"),
    ],
)
def test_faults(fake_api: FakeAPI, settings, fault: str, kwargs: dict, message: str) -> None:
    fake_api.set_fault("openweather", fault, **kwargs)
    with pytest.raises(SourceError) as info:
        OpenWeatherSource(settings=settings(RTDASH_CITIES="Berlin,London", RTDASH_TIMEOUT="0.5s")).fetch()
    assert str(info.value).startswith(message)
    assert info.value.retry_after == kwargs.get("retry_after")
    assert fake_api.openweather_key not in str(info.value)
