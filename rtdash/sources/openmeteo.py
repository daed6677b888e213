"""Open-Meteo current weather: keyless; every city in one request (each still counts as a call)."""

from __future__ import annotations

import pandas as pd

from .base import RejectedRow, number
from .cities import CityResolver
from .http import HTTPSource, unexpected

CURRENT = "temperature_2m,relative_humidity_2m,wind_speed_10m"
# Open-Meteo's names for our units, and the factors to m/s of the wind units it may answer in.
REQUEST_UNITS = {
    "metric": {"wind_speed_unit": "ms"},
    "imperial": {"temperature_unit": "fahrenheit", "wind_speed_unit": "mph"},
}
# What Open-Meteo answers in for REQUEST_UNITS: (temperature, wind speed).
ASKED_UNITS = {"metric": ("°C", "m/s"), "imperial": ("°F", "mp/h")}
TO_MS = {"m/s": 1.0, "km/h": 1 / 3.6, "mp/h": 0.44704, "mph": 0.44704, "kn": 0.514444, "knots": 0.514444}
# The units an answer may name (converted to ours); any other is refused, not guessed: "K" is not °C.
KNOWN_UNITS = {
    "temperature_2m": ("temperature", ("°C", "°F")),
    "relative_humidity_2m": ("humidity", ("%",)),
    "wind_speed_10m": ("wind speed", tuple(TO_MS)),
}


def openmeteo_error(body) -> str | None:
    """``{"error": true, "reason": "..."}`` -> the reason."""
    if isinstance(body, dict) and body.get("error"):
        return str(body.get("reason") or "error")
    return None


def convert_temperature(value: float, unit: str, units: str) -> float:
    celsius = (value - 32) / 1.8 if unit == "°F" else value
    return celsius * 1.8 + 32 if units == "imperial" else celsius


def convert_wind(value: float, unit: str, units: str) -> float:
    ms = value * TO_MS.get(unit, 1.0)
    return ms / 0.44704 if units == "imperial" else ms


def unit_refusal(got_units: dict, units: str, provider: str) -> RejectedRow | None:
    """The refusal of a place whose ``current_units`` name a unit we neither asked for nor can convert from.

    A unit that is absent or not a string is taken as the one asked for.
    """
    asked = {
        "temperature_2m": ASKED_UNITS[units][0],
        "relative_humidity_2m": "%",
        "wind_speed_10m": ASKED_UNITS[units][1],
    }
    for variable, (label, known) in KNOWN_UNITS.items():
        unit = got_units.get(variable)
        if isinstance(unit, str) and unit not in known:
            return RejectedRow(f"{provider}: rejected {label} in {unit!r} (asked for {asked[variable]})", "unit")
    return None


def parse_current(body, count: int, units: str, provider: str = "Open-Meteo") -> list[dict | RejectedRow]:
    """One dict of ``temperature, humidity, wind_speed`` per place, in ``units``, from a forecast answer.

    One place answers with an object, several with a list of objects in the order asked.  A place whose
    ``current_units`` name a unit that cannot be converted to ``units`` gives a :class:`RejectedRow` instead.
    """
    places = body if isinstance(body, list) else [body]
    if len(places) != count:
        raise unexpected(provider, f"{len(places)} places for {count} asked")
    out: list[dict | RejectedRow] = []
    for place in places:
        current = place.get("current") if isinstance(place, dict) else None
        if not isinstance(current, dict):
            raise unexpected(provider, "no 'current' values")
        # Values come in the units asked for (REQUEST_UNITS) unless ``current_units`` says otherwise.
        got_units = place.get("current_units")
        got_units = got_units if isinstance(got_units, dict) else {}
        refused = unit_refusal(got_units, units, provider)
        if refused is not None:
            out.append(refused)
            continue
        temperature_unit = got_units.get("temperature_2m")
        wind_unit = got_units.get("wind_speed_10m")
        out.append(
            {
                "temperature": convert_temperature(
                    number(current.get("temperature_2m")),
                    temperature_unit if isinstance(temperature_unit, str) else ASKED_UNITS[units][0],
                    units,
                ),
                "humidity": number(current.get("relative_humidity_2m")),
                "wind_speed": convert_wind(
                    number(current.get("wind_speed_10m")),
                    wind_unit if isinstance(wind_unit, str) else ASKED_UNITS[units][1],
                    units,
                ),
            }
        )
    return out


class OpenMeteoSource(HTTPSource):
    kind = "weather"
    source_type = "open-meteo"
    label = "Open-Meteo"
    read_error = staticmethod(openmeteo_error)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.settings
        self.resolver = CityResolver(s.openmeteo_geocoding_url, s.timeout)

    def fetch(self) -> pd.DataFrame:
        s = self.settings
        places, errors = self.resolver.resolve_all(self.series)
        if not places:
            raise next(iter(errors.values()))
        body = self.get(
            f"{s.openmeteo_url.rstrip('/')}/v1/forecast",
            params={
                "latitude": ",".join(f"{lat:.4f}" for lat, _ in places.values()),
                "longitude": ",".join(f"{lon:.4f}" for _, lon in places.values()),
                "current": CURRENT,
                **REQUEST_UNITS[s.units],
            },
        )
        values = parse_current(body, len(places), s.units, self.label)
        now = pd.Timestamp.now(tz="UTC")
        rows = []
        for (city, (lat, lon)), value in zip(places.items(), values, strict=True):
            if isinstance(value, RejectedRow):
                errors[city] = value
            else:
                rows.append({"time": now, "city": city, "lat": lat, "lon": lon, **value})
        return self.to_frame(rows, errors)

    def close(self) -> None:
        super().close()
        self.resolver.close()
