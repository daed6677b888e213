"""Open-Meteo current weather: keyless; every city in one request (each still counts as a call).  The same call
with ``minutely_15`` and a start and end gives the recent past, 15 minutes apart, up to 92 days back."""

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


PAST = 900.0  # s: the resolution of minutely_15
PAST_DAYS = 92  # the most days of past Open-Meteo's forecast endpoint serves
TIME_MAX = pd.Timestamp("2200-01-01", tz="UTC")


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


def _places(body, count: int, provider: str) -> list:
    """The places of a forecast answer, in the order asked: one place answers with an object, several with a list."""
    places = body if isinstance(body, list) else [body]
    if len(places) != count:
        raise unexpected(provider, f"{len(places)} places for {count} asked")
    return places


def _units(place: dict, key: str) -> dict:
    """The units a place's answer names under ``key`` (none when absent or malformed)."""
    units = place.get(key)
    return units if isinstance(units, dict) else {}


def parse_current(body, count: int, units: str, provider: str = "Open-Meteo") -> list[dict | RejectedRow]:
    """One dict of ``temperature, humidity, wind_speed`` per place, in ``units``, from a forecast answer.

    One place answers with an object, several with a list of objects in the order asked.  A place whose
    ``current_units`` name a unit that cannot be converted to ``units`` gives a :class:`RejectedRow` instead.
    """
    places = _places(body, count, provider)
    out: list[dict | RejectedRow] = []
    for place in places:
        current = place.get("current") if isinstance(place, dict) else None
        if not isinstance(current, dict):
            raise unexpected(provider, "no 'current' values")
        # Values come in the units asked for (REQUEST_UNITS) unless ``current_units`` says otherwise.
        got_units = _units(place, "current_units")
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


def _past_time(value) -> pd.Timestamp | None:
    """A ``minutely_15`` time (``2026-11-21T10:15``, GMT as asked) as UTC, or None when it is not one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, OverflowError):
        return None
    if ts is pd.NaT:
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts if pd.Timestamp(0, tz="UTC") <= ts < TIME_MAX else None


def parse_past(body, count: int, units: str, provider: str = "Open-Meteo") -> list[list[dict] | RejectedRow]:
    """Per place, the ``minutely_15`` rows (``time, temperature, humidity, wind_speed`` in ``units``) of a forecast
    answer with past data: ``{"minutely_15": {"time": [...], "temperature_2m": [...], ...}, "minutely_15_units":
    {...}}``.  Units are read as for ``current`` (:func:`unit_refusal`); a time that is not one drops its row."""
    places = _places(body, count, provider)
    out: list[list[dict] | RejectedRow] = []
    for place in places:
        data = place.get("minutely_15") if isinstance(place, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("time"), list):
            raise unexpected(provider, "no 'minutely_15' values")
        got_units = _units(place, "minutely_15_units")
        refused = unit_refusal(got_units, units, provider)
        if refused is not None:
            out.append(refused)
            continue
        t_unit, w_unit = got_units.get("temperature_2m"), got_units.get("wind_speed_10m")
        t_unit = t_unit if isinstance(t_unit, str) else ASKED_UNITS[units][0]
        w_unit = w_unit if isinstance(w_unit, str) else ASKED_UNITS[units][1]

        temperature, humidity, wind = (
            data.get(name) if isinstance(data.get(name), list) else []
            for name in ("temperature_2m", "relative_humidity_2m", "wind_speed_10m")
        )
        rows = []
        for i, value in enumerate(data["time"]):
            time = _past_time(value)
            if time is None:
                continue
            rows.append(
                {
                    "time": time,
                    "temperature": convert_temperature(
                        number(temperature[i] if i < len(temperature) else None), t_unit, units
                    ),
                    "humidity": number(humidity[i] if i < len(humidity) else None),
                    "wind_speed": convert_wind(number(wind[i] if i < len(wind) else None), w_unit, units),
                }
            )
        out.append(rows)
    return out


class OpenMeteoSource(HTTPSource):
    kind = "weather"
    source_type = "open-meteo"
    label = "Open-Meteo"
    read_error = staticmethod(openmeteo_error)
    resolution = PAST
    page_span = 7 * 86400.0  # a longer range counts as more than one call per place
    retention = PAST_DAYS * 86400.0
    batched = True

    def history_page(self, start: pd.Timestamp, end: pd.Timestamp, names: list[str]) -> pd.DataFrame:
        """Every city's ``minutely_15`` values with ``start <= time < end``, in one request."""
        s = self.settings
        places, errors = self.resolver.resolve_all(names)
        if not places:
            raise next(iter(errors.values()))
        first = start.ceil("15min")
        last = (end - pd.Timedelta(seconds=1)).floor("15min")
        if last < first:
            return self.past_frame([], start, end)
        body = self.get(
            f"{s.openmeteo_url.rstrip('/')}/v1/forecast",
            params={
                "latitude": ",".join(f"{lat:.4f}" for lat, _ in places.values()),
                "longitude": ",".join(f"{lon:.4f}" for _, lon in places.values()),
                "minutely_15": CURRENT,
                "start_minutely_15": first.strftime("%Y-%m-%dT%H:%M"),
                "end_minutely_15": last.strftime("%Y-%m-%dT%H:%M"),
                **REQUEST_UNITS[s.units],
            },
        )
        now = pd.Timestamp.now(tz="UTC")
        rows = []
        for (city, (lat, lon)), values in zip(places.items(), parse_past(body, len(places), s.units), strict=True):
            if isinstance(values, RejectedRow):
                continue
            rows += [{"city": city, "lat": lat, "lon": lon, **row} for row in values if row["time"] <= now]
        return self.past_frame(rows, start, end)

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
