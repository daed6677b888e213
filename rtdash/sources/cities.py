"""City names to coordinates: a built-in table (works offline) and the Open-Meteo geocoding API, cached."""

from __future__ import annotations

import threading
import time

from .base import SourceError
from .http import get_json, new_session, unexpected

# name: (latitude, longitude) — the seed's seven and big world cities.
CITIES: dict[str, tuple[float, float]] = {
    "San Francisco": (37.7749, -122.4194),
    "Los Angeles": (34.0522, -118.2437),
    "Santa Barbara": (34.4208, -119.6982),
    "Sacramento": (38.5816, -121.4944),
    "Fresno": (36.7378, -119.7871),
    "San Diego": (32.7157, -117.1611),
    "San Luis Obispo": (35.2828, -120.6596),
    "New York": (40.7128, -74.0060),
    "Chicago": (41.8781, -87.6298),
    "Houston": (29.7604, -95.3698),
    "Seattle": (47.6062, -122.3321),
    "Denver": (39.7392, -104.9903),
    "Miami": (25.7617, -80.1918),
    "Boston": (42.3601, -71.0589),
    "Washington": (38.9072, -77.0369),
    "Toronto": (43.6532, -79.3832),
    "Vancouver": (49.2827, -123.1207),
    "Montreal": (45.5019, -73.5674),
    "Mexico City": (19.4326, -99.1332),
    "São Paulo": (-23.5505, -46.6333),
    "Rio de Janeiro": (-22.9068, -43.1729),
    "Buenos Aires": (-34.6037, -58.3816),
    "Lima": (-12.0464, -77.0428),
    "Bogotá": (4.7110, -74.0721),
    "Santiago": (-33.4489, -70.6693),
    "London": (51.5074, -0.1278),
    "Paris": (48.8566, 2.3522),
    "Berlin": (52.5200, 13.4050),
    "Madrid": (40.4168, -3.7038),
    "Rome": (41.9028, 12.4964),
    "Amsterdam": (52.3676, 4.9041),
    "Vienna": (48.2082, 16.3738),
    "Zurich": (47.3769, 8.5417),
    "Stockholm": (59.3293, 18.0686),
    "Oslo": (59.9139, 10.7522),
    "Copenhagen": (55.6761, 12.5683),
    "Helsinki": (60.1699, 24.9384),
    "Dublin": (53.3498, -6.2603),
    "Lisbon": (38.7223, -9.1393),
    "Warsaw": (52.2297, 21.0122),
    "Prague": (50.0755, 14.4378),
    "Athens": (37.9838, 23.7275),
    "Istanbul": (41.0082, 28.9784),
    "Moscow": (55.7558, 37.6173),
    "Cairo": (30.0444, 31.2357),
    "Lagos": (6.5244, 3.3792),
    "Nairobi": (-1.2921, 36.8219),
    "Johannesburg": (-26.2041, 28.0473),
    "Cape Town": (-33.9249, 18.4241),
    "Dubai": (25.2048, 55.2708),
    "Mumbai": (19.0760, 72.8777),
    "Delhi": (28.7041, 77.1025),
    "Bangalore": (12.9716, 77.5946),
    "Singapore": (1.3521, 103.8198),
    "Bangkok": (13.7563, 100.5018),
    "Jakarta": (-6.2088, 106.8456),
    "Hong Kong": (22.3193, 114.1694),
    "Shanghai": (31.2304, 121.4737),
    "Beijing": (39.9042, 116.4074),
    "Seoul": (37.5665, 126.9780),
    "Tokyo": (35.6762, 139.6503),
    "Osaka": (34.6937, 135.5023),
    "Sydney": (-33.8688, 151.2093),
    "Melbourne": (-37.8136, 144.9631),
    "Auckland": (-36.8485, 174.7633),
    "Honolulu": (21.3069, -157.8583),
}
_BUILT_IN = {name.casefold(): coords for name, coords in CITIES.items()}
UNKNOWN_TTL = 3600.0  # an unknown name is asked again after an hour


def geocoding_error(body) -> str | None:
    if isinstance(body, dict) and body.get("error"):
        return str(body.get("reason") or "error")
    return None


class CityResolver:
    """Coordinates of city names, looked up once: built-in table first, then Open-Meteo geocoding."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = new_session()
        self._known: dict[str, tuple[float, float]] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self._asking: dict[str, threading.Lock] = {}

    def resolve(self, name: str) -> tuple[float, float]:
        """``(latitude, longitude)`` of ``name``; :class:`SourceError` naming the city when it is not found."""
        key = name.strip().casefold()
        if key in _BUILT_IN:
            return _BUILT_IN[key]
        with self._lock:
            asking = self._asking.setdefault(key, threading.Lock())
        with asking:  # one question per city at a time: the live poll and the history fetch share its answer
            return self._resolve(name, key)

    def _resolve(self, name: str, key: str) -> tuple[float, float]:
        with self._lock:
            if key in self._known:
                return self._known[key]
            if time.monotonic() < self._unknown.get(key, 0):
                raise SourceError(f"unknown city {name!r}")
        body = get_json(
            self._session,
            f"{self.base_url}/v1/search",
            params={"name": name.strip(), "count": 1, "language": "en", "format": "json"},
            provider="Open-Meteo geocoding",
            timeout=self.timeout,
            read_error=geocoding_error,
        )
        if not isinstance(body, dict):
            raise unexpected("Open-Meteo geocoding", "not an object")
        results = body.get("results")  # absent altogether when nothing matches
        if not results:
            with self._lock:
                self._unknown[key] = time.monotonic() + UNKNOWN_TTL
            raise SourceError(f"unknown city {name!r}")
        try:
            coords = (float(results[0]["latitude"]), float(results[0]["longitude"]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise unexpected("Open-Meteo geocoding", "a result without latitude/longitude") from None
        with self._lock:
            self._known[key] = coords
        return coords

    def resolve_all(self, names: list[str]) -> tuple[dict[str, tuple[float, float]], dict[str, SourceError]]:
        found, errors = {}, {}
        for name in names:
            try:
                found[name] = self.resolve(name)
            except SourceError as exc:
                errors[name] = exc
        return found, errors

    def close(self) -> None:
        self._session.close()


def built_in(name: str) -> tuple[float, float] | None:
    """Coordinates of ``name`` from the built-in table, if it has them."""
    return _BUILT_IN.get(name.strip().casefold())
