"""OpenWeather current weather: needs ``OPENWEATHER_API_KEY``; one request per city, made concurrently."""

from __future__ import annotations

import pandas as pd

from .base import number
from .cities import CityResolver
from .http import HTTPSource, unexpected

OPENWEATHER_UNITS = {"metric": "metric", "imperial": "imperial"}  # °C and m/s, °F and mph


def openweather_error(body) -> str | None:
    """OpenWeather errors carry ``cod`` as a number (401, 429) or a string (``"404"``, ``"400"``)."""
    if not isinstance(body, dict) or "cod" not in body:
        return None
    try:
        code = int(body["cod"])
    except (TypeError, ValueError):
        return str(body.get("message") or f"error {body['cod']}")
    if code == 200:
        return None
    return str(body.get("message") or f"error {code}")


def parse_weather(body, provider: str = "OpenWeather") -> dict:
    """``temperature, humidity, wind_speed`` (and the time of the measurement) of a ``/data/2.5/weather`` answer."""
    main = body.get("main") if isinstance(body, dict) else None
    if not isinstance(main, dict) or "temp" not in main:
        raise unexpected(provider, "no main.temp")
    wind = body.get("wind") if isinstance(body.get("wind"), dict) else {}
    return {
        "temperature": number(main.get("temp")),
        "humidity": number(main.get("humidity")),
        "wind_speed": number(wind.get("speed")),
    }


class OpenWeatherSource(HTTPSource):
    kind = "weather"
    source_type = "openweather"
    label = "OpenWeather"
    no_history = "its history API needs a paid subscription"
    needs_key = "OPENWEATHER_API_KEY"
    read_error = staticmethod(openweather_error)

    def __init__(self, **params):
        super().__init__(**params)
        s = self.settings
        self.resolver = CityResolver(s.openmeteo_geocoding_url, s.timeout)

    def fetch_one(self, city: str) -> dict:
        s = self.settings
        lat, lon = self.resolver.resolve(city)
        body = self.get(
            f"{s.openweather_url.rstrip('/')}/data/2.5/weather",
            params={"lat": f"{lat:.4f}", "lon": f"{lon:.4f}", "appid": s.openweather_api_key, "units": s.units},
        )
        return {"time": pd.Timestamp.now(tz="UTC"), "city": city, "lat": lat, "lon": lon, **parse_weather(body)}

    def close(self) -> None:
        super().close()
        self.resolver.close()
