"""City names to coordinates: the built-in table (offline), then Open-Meteo geocoding, cached."""

from __future__ import annotations

import pytest

from rtdash.config import DEFAULT_CITIES
from rtdash.sources import SourceError
from rtdash.sources.cities import CITIES, CityResolver, built_in
from tests.fakeapi import FakeAPI, closed_port_url


@pytest.fixture
def resolver(fake_api: FakeAPI):
    r = CityResolver(fake_api.url, timeout=1.0)
    yield r
    r.close()


def test_the_built_in_table_has_the_defaults_and_big_world_cities() -> None:
    for city in DEFAULT_CITIES:
        assert built_in(city) is not None, city
    assert len(CITIES) >= 50
    for lat, lon in CITIES.values():
        assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_built_in_names_need_no_network() -> None:
    r = CityResolver(closed_port_url(), timeout=1.0)
    assert r.resolve("san francisco ") == built_in("San Francisco") == pytest.approx((37.77, -122.42), abs=0.01)


def test_geocoding_once_per_name(fake_api: FakeAPI, resolver: CityResolver) -> None:
    assert resolver.resolve("Brisbane") == (-27.46794, 153.02809)
    assert resolver.resolve("brisbane") == (-27.46794, 153.02809)
    (request,) = fake_api.requests
    assert request.path == "/v1/search" and request.query["name"] == "Brisbane" and request.query["count"] == "1"


def test_no_results_key_is_an_unknown_city_and_is_remembered(fake_api: FakeAPI, resolver: CityResolver) -> None:
    for _ in range(3):
        with pytest.raises(SourceError, match=r"^unknown city 'Atlantis'$"):
            resolver.resolve("Atlantis")
    assert fake_api.count("geocoding") == 1


@pytest.mark.parametrize(
    ("fault", "kwargs", "message"),
    [
        ("http", {"status": 200, "body": {"results": []}}, "unknown city 'Brisbane'"),
        ("http", {"status": 200, "body": {"results": [{"name": "Brisbane"}]}}, "a result without latitude/longitude"),
        ("http", {"status": 200, "body": {"results": [{"latitude": "x", "longitude": 1}]}}, "a result without"),
        ("http", {"status": 200, "body": []}, "Open-Meteo geocoding: unexpected answer (not an object)"),
        ("http", {"status": 400, "body": {"error": True, "reason": "Parameter name is required"}}, "required"),
        ("500", {}, "Open-Meteo geocoding: HTTP 500 Internal Server Error"),
        ("html-200", {}, "Open-Meteo geocoding: answered with an HTML page instead of data"),
        ("hang", {}, "Open-Meteo geocoding: no answer within 0.5 s"),
    ],
)
def test_errors(fake_api: FakeAPI, fault: str, kwargs: dict, message: str) -> None:
    fake_api.set_fault("geocoding", fault, **kwargs)
    with pytest.raises(SourceError) as info:
        CityResolver(fake_api.url, timeout=0.5).resolve("Brisbane")
    assert message in str(info.value)


def test_a_failed_lookup_is_asked_again(fake_api: FakeAPI, resolver: CityResolver) -> None:
    fake_api.set_fault("geocoding", "500")
    with pytest.raises(SourceError):
        resolver.resolve("Brisbane")
    fake_api.clear_fault()
    assert resolver.resolve("Brisbane") == (-27.46794, 153.02809)


def test_resolve_all_keeps_the_errors_apart(resolver: CityResolver) -> None:
    found, errors = resolver.resolve_all(["Berlin", "Atlantis", "Reykjavik"])
    assert found == {"Berlin": built_in("Berlin"), "Reykjavik": (64.13548, -21.89541)}
    assert list(errors) == ["Atlantis"] and str(errors["Atlantis"]) == "unknown city 'Atlantis'"
