"""Open-Meteo: one object for one place, a list for several; ``{"error": true, "reason": ..}``; units; every city in
one request; an unknown city is an error for that city alone."""

from __future__ import annotations

import math

import pytest

from rtdash.sources import WEATHER_COLUMNS, OpenMeteoSource, SourceError
from rtdash.sources.cities import built_in
from rtdash.sources.openmeteo import openmeteo_error, parse_current
from tests.fakeapi import FakeAPI

METRIC = ("°C", "m/s")
IMPERIAL = ("°F", "mp/h")


def place(temperature: object = 12.3, humidity: object = 81, wind: object = 3.4, units: tuple | None = METRIC) -> dict:
    """A real forecast answer for one place (``current_units`` left out when ``units`` is None)."""
    body = {
        "latitude": 52.52,
        "longitude": 13.419998,
        "generationtime_ms": 0.0311136245727539,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": 38.0,
        "current": {
            "time": "2026-11-21T10:15",
            "interval": 900,
            "temperature_2m": temperature,
            "relative_humidity_2m": humidity,
            "wind_speed_10m": wind,
        },
    }
    if units is not None:
        body["current_units"] = {
            "time": "iso8601",
            "interval": "seconds",
            "temperature_2m": units[0],
            "relative_humidity_2m": "%",
            "wind_speed_10m": units[1],
        }
    return body


def values(row: dict) -> tuple:
    return tuple(
        round(row[k], 6) if not math.isnan(row[k]) else "nan" for k in ("temperature", "humidity", "wind_speed")
    )


# --- parser ----------------------------------------------------------------------------------------------------------


def test_one_place_answers_with_an_object() -> None:
    (row,) = parse_current(place(), 1, "metric")
    assert values(row) == (12.3, 81, 3.4)


def test_several_places_answer_with_a_list_in_the_order_asked() -> None:
    rows = parse_current([place(1.0), place(2.0), place(3.0)], 3, "metric")
    assert [row["temperature"] for row in rows] == [1.0, 2.0, 3.0]
    (row,) = parse_current([place(4.0)], 1, "metric")  # a one-element list is fine too
    assert row["temperature"] == 4.0


@pytest.mark.parametrize(
    ("body", "count", "reason"),
    [
        (place(), 2, "1 places for 2 asked"),
        ([place(), place(), place()], 2, "3 places for 2 asked"),
        ([], 1, "0 places for 1 asked"),
        ({"latitude": 1.0}, 1, "no 'current' values"),
        ({"current": None}, 1, "no 'current' values"),
        ({"current": [1, 2]}, 1, "no 'current' values"),
        ([place(), "garbage"], 2, "no 'current' values"),
        ("garbage", 1, "no 'current' values"),
        (None, 1, "no 'current' values"),
    ],
)
def test_wrong_shapes_are_a_source_error(body: object, count: int, reason: str) -> None:
    with pytest.raises(SourceError, match=rf"^Open-Meteo: unexpected answer \({reason}\)$"):
        parse_current(body, count, "metric")


def test_nulls_are_missing_values() -> None:
    (row,) = parse_current(place(None, None, None), 1, "metric")
    assert values(row) == ("nan", "nan", "nan")
    (row,) = parse_current(place("12.5", "80", "n/a"), 1, "metric")
    assert values(row) == (12.5, 80, "nan")


@pytest.mark.parametrize(
    ("units", "answered", "given", "expected"),
    [
        ("metric", METRIC, (10.0, 5.0), (10.0, 5.0)),
        ("metric", ("°F", "km/h"), (50.0, 36.0), (10.0, 10.0)),  # converted where the provider did not
        ("metric", ("°C", "kn"), (10.0, 10.0), (10.0, 5.14444)),
        ("metric", None, (10.0, 5.0), (10.0, 5.0)),  # no current_units: the units asked for
        ("imperial", IMPERIAL, (50.0, 10.0), (50.0, 10.0)),
        ("imperial", ("°C", "m/s"), (10.0, 4.4704), (50.0, 10.0)),
        ("imperial", ("°C", "km/h"), (100.0, 16.09344), (212.0, 10.0)),
        ("imperial", None, (50.0, 10.0), (50.0, 10.0)),
    ],
)
def test_units(units: str, answered: tuple | None, given: tuple, expected: tuple) -> None:
    (row,) = parse_current(place(given[0], 50, given[1], units=answered), 1, units)
    assert (round(row["temperature"], 4), round(row["wind_speed"], 4)) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("garbage", [[], "°C", 1, {"temperature_2m": None, "wind_speed_10m": 3}])
def test_garbage_units_are_taken_as_asked(garbage: object) -> None:
    body = place(10.0, 50, 5.0) | {"current_units": garbage}
    (row,) = parse_current(body, 1, "metric")
    assert values(row) == (10.0, 50, 5.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": True, "reason": "Latitude must be in range of -90 to 90°. Given: 91.0."}, "Latitude must be"),
        ({"error": True}, "error"),
        ({"error": False, "reason": "fine"}, None),
        (place(), None),
        ([place(), place()], None),
        ("text", None),
    ],
)
def test_error_bodies(body: object, message: str | None) -> None:
    result = openmeteo_error(body)
    assert result == message or (message is not None and result.startswith(message))


# --- fetch against the fake API --------------------------------------------------------------------------------------


def test_every_city_in_one_request(fake_api: FakeAPI, make_settings) -> None:
    cities = ["Berlin", "London", "San Diego"]
    source = OpenMeteoSource(settings=make_settings(RTDASH_CITIES=",".join(cities)))
    df = source.fetch()
    assert list(df.columns) == WEATHER_COLUMNS
    assert str(df["time"].dtype) == "datetime64[ns, UTC]"
    assert df["city"].tolist() == cities
    assert df["source"].tolist() == ["open-meteo"] * 3
    assert list(zip(df["lat"], df["lon"], strict=True)) == [built_in(c) for c in cities]
    assert df[["temperature", "humidity", "wind_speed"]].notna().all().all()
    (request,) = fake_api.requests  # built-in cities: no geocoding
    assert request.path == "/v1/forecast"
    assert request.query["latitude"] == ",".join(f"{built_in(c)[0]:.4f}" for c in cities)
    assert request.query["longitude"] == ",".join(f"{built_in(c)[1]:.4f}" for c in cities)
    assert set(request.query["current"].split(",")) >= {"temperature_2m", "relative_humidity_2m", "wind_speed_10m"}


def test_the_answers_go_to_their_cities_in_order(fake_api: FakeAPI, make_settings) -> None:
    fake_api.set_fault("open-meteo", "http", status=200, body=[place(1.0, 11, 0.1), place(2.0, 22, 0.2)])
    df = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Berlin,Tokyo")).fetch()
    assert df[["city", "temperature", "humidity", "wind_speed"]].values.tolist() == [
        ["Berlin", 1.0, 11.0, 0.1],
        ["Tokyo", 2.0, 22.0, 0.2],
    ]


def test_metric_and_imperial(fake_api: FakeAPI, make_settings) -> None:
    metric = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Berlin,Sydney")).fetch()
    imperial = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Berlin,Sydney", RTDASH_UNITS="imperial")).fetch()
    first, second = fake_api.requests
    assert first.query.get("wind_speed_unit") == "ms" and "temperature_unit" not in first.query
    assert (second.query["temperature_unit"], second.query["wind_speed_unit"]) == ("fahrenheit", "mph")
    # The fake answers in the units asked, rounded to 0.1.
    assert imperial["temperature"].tolist() == pytest.approx((metric["temperature"] * 1.8 + 32).tolist(), abs=0.2)
    assert imperial["wind_speed"].tolist() == pytest.approx((metric["wind_speed"] / 0.44704).tolist(), abs=0.3)
    assert imperial["humidity"].tolist() == metric["humidity"].tolist()


def test_other_cities_are_geocoded_once(fake_api: FakeAPI, make_settings) -> None:
    source = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Brisbane,Berlin"))
    df = source.fetch()
    assert df["city"].tolist() == ["Brisbane", "Berlin"]
    assert (df["lat"].iloc[0], df["lon"].iloc[0]) == (-27.46794, 153.02809)
    source.fetch()
    assert fake_api.count("geocoding") == 1
    assert fake_api.count("open-meteo") == 2
    geocoding = next(r for r in fake_api.requests if r.provider == "geocoding")
    assert geocoding.query["name"] == "Brisbane"
    assert fake_api.requests[-1].query["latitude"] == "-27.4679,52.5200"


def test_an_unknown_city_is_an_error_for_that_city_alone(fake_api: FakeAPI, make_settings) -> None:
    source = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Atlantis,Berlin"))
    for _ in range(2):
        df = source.fetch()
        assert df["city"].tolist() == ["Berlin"]
        assert df.attrs["errors"] == {"Atlantis": "unknown city 'Atlantis'"}
    assert fake_api.count("geocoding") == 1  # a name that is not found is not asked again at every poll
    assert fake_api.requests[-1].query["latitude"] == "52.5200"


def test_only_unknown_cities_is_an_error(fake_api: FakeAPI, make_settings) -> None:
    with pytest.raises(SourceError, match=r"^unknown city 'Atlantis'$"):
        OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Atlantis")).fetch()
    assert fake_api.count("open-meteo") == 0


def test_a_geocoding_failure_is_retried_at_the_next_fetch(fake_api: FakeAPI, make_settings) -> None:
    source = OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Brisbane,Berlin"))
    fake_api.set_fault("geocoding", "500")
    df = source.fetch()
    assert df["city"].tolist() == ["Berlin"]
    assert df.attrs["errors"] == {
        "Brisbane": "Open-Meteo geocoding: HTTP 500 Internal Server Error: Internal Server Error"
    }
    fake_api.clear_fault()
    assert source.fetch()["city"].tolist() == ["Brisbane", "Berlin"]


@pytest.mark.parametrize(
    ("fault", "kwargs", "message"),
    [
        (
            "http",
            {
                "status": 400,
                "body": {"error": True, "reason": "Cannot initialize ForecastVariable from invalid String"},
            },
            "Open-Meteo: HTTP 400: Cannot initialize ForecastVariable from invalid String",
        ),
        (
            "http",
            {"status": 200, "body": {"error": True, "reason": "Daily API request limit exceeded."}},
            "Open-Meteo: Daily API request limit exceeded.",  # an error with HTTP 200 is still an error
        ),
        (
            "429",
            {"retry_after": 60},
            "Open-Meteo: HTTP 429: Minutely API request limit exceeded. Please try again in one minute.",
        ),
        ("500", {}, "Open-Meteo: HTTP 500 Internal Server Error: Internal Server Error"),
        ("502-html", {}, "Open-Meteo: HTTP 502 Bad Gateway: 502 Bad Gateway"),
        ("html-200", {}, "Open-Meteo: answered with an HTML page instead of data (Sign in to Wi-Fi)"),
        ("invalid-json", {}, 'Open-Meteo: answered with invalid JSON instead of data ({"data": {"amount": "650)'),
        ("wrong-shape", {}, "Open-Meteo: unexpected answer (1 places for 2 asked)"),
        ("hang", {}, "Open-Meteo: no answer within 0.5 s"),
    ],
)
def test_faults(fake_api: FakeAPI, make_settings, fault: str, kwargs: dict, message: str) -> None:
    fake_api.set_fault("open-meteo", fault, **kwargs)
    with pytest.raises(SourceError) as info:
        OpenMeteoSource(settings=make_settings(RTDASH_CITIES="Berlin,Paris", RTDASH_TIMEOUT="0.5s")).fetch()
    assert str(info.value) == message
    assert info.value.retry_after == kwargs.get("retry_after")
