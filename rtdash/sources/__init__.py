"""Data providers.  ``make_source(kind, settings)`` builds the one the settings ask for."""

from __future__ import annotations

from ..config import Settings
from .auto import AutoSource
from .base import COLUMNS, PRICE_COLUMNS, SERIES, UNITS, WEATHER_COLUMNS, Source, SourceError, empty_frame, redact
from .coinbase import CoinbaseSource
from .coincap import CoinCapSource
from .openmeteo import OpenMeteoSource
from .openweather import OpenWeatherSource
from .simulated import SimulatedPrice, SimulatedWeather


def make_source(kind: str, settings: Settings) -> Source:
    """The ``price`` or ``weather`` source of ``settings``; ``auto`` wraps the live one with a simulated fallback."""
    chosen = settings.price_source if kind == "price" else settings.weather_source
    provider = settings.price_provider if kind == "price" else settings.weather_provider
    live = Source.lookup(kind, provider)(settings=settings)
    if chosen != "auto":
        return live
    return AutoSource(settings=settings, live=live, fallback=Source.lookup(kind, "simulated")(settings=settings))


__all__ = [
    "COLUMNS",
    "PRICE_COLUMNS",
    "SERIES",
    "UNITS",
    "WEATHER_COLUMNS",
    "AutoSource",
    "CoinCapSource",
    "CoinbaseSource",
    "OpenMeteoSource",
    "OpenWeatherSource",
    "SimulatedPrice",
    "SimulatedWeather",
    "Source",
    "SourceError",
    "empty_frame",
    "make_source",
    "redact",
]
