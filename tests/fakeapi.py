"""A local imitation of the data APIs rtdash reads: Coinbase, CoinCap v3, Open-Meteo (forecast and geocoding)
and OpenWeather, served from one ``ThreadingHTTPServer`` on 127.0.0.1 with injectable faults.

Shapes, status codes, string-vs-number types and error bodies follow ``/work/shared/api-notes.md``.

    with FakeAPI() as api:
        api.prices["BTC"] = 65000.12           # the next answered BTC price, exactly; then it random-walks
        api.set_fault("coinbase", "429", retry_after=3)
        requests.get(f"{api.url}/v2/prices/BTC-USD/spot")

History (api-notes, "History from the providers") is served as its own providers, ``coinbase-history`` (the public
one-minute candles) and ``open-meteo-history`` (a forecast call asking ``minutely_15``), so that it is counted
apart from the live polls; a fault set on ``coinbase`` or ``open-meteo`` reaches their history too, and
``set_fault(..., after=n)`` lets n requests through first (a provider failing half way through a paged fill).
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

PROVIDERS = ("coinbase", "coincap", "open-meteo", "geocoding", "openweather", "coinbase-history", "open-meteo-history")
FAULTS = ("500", "502-html", "429", "invalid-json", "wrong-shape", "slow", "hang", "html-200", "every-other", "401")
HANG_MAX_SECONDS = 60.0
CANDLES_MAX = 350  # candles one Coinbase request may ask for
GRANULARITIES = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300, "FIFTEEN_MINUTE": 900, "THIRTY_MINUTE": 1800,
                 "ONE_HOUR": 3600, "TWO_HOUR": 7200, "SIX_HOUR": 21600, "ONE_DAY": 86400}  # fmt: skip
PAST_DAYS = 92  # Open-Meteo's forecast endpoint serves at most this many days of the past
ROUTE_PREFIXES = {
    "/api/v3/brokerage/": "coinbase-history",
    "/v2/": "coinbase",
    "/v3/": "coincap",
    "/v1/forecast": "open-meteo",
    "/v1/search": "geocoding",
    "/data/": "openweather",
    "/geo/": "openweather",
}

DEFAULT_PRICES = {"BTC": 65000.12, "ETH": 3400.55, "SOL": 150.25, "DOGE": 0.16123}
QUOTE_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79}
# CoinCap id -> (rank, symbol, name, supply, maxSupply, explorer)
ASSETS = {
    "bitcoin": ("1", "BTC", "Bitcoin", 19_800_000.0, 21_000_000.0, "https://blockchain.info/"),
    "ethereum": ("2", "ETH", "Ethereum", 120_400_000.0, None, "https://etherscan.io/"),
    "solana": ("5", "SOL", "Solana", 480_000_000.0, None, "https://explorer.solana.com/"),
    "dogecoin": ("8", "DOGE", "Dogecoin", 147_000_000_000.0, None, "https://dogechain.info/"),
}
# Shared by both geocoders and by OpenWeather's q=; None means "absent from the answer", like the real data.
# fmt: off
_PLACE_COLUMNS = ("id", "name", "latitude", "longitude", "elevation", "feature_code", "country_code", "timezone",
                  "population", "country", "admin1", "admin2", "utc_offset")
PLACES: list[dict[str, Any]] = [{k: v for k, v in zip(_PLACE_COLUMNS, row, strict=True) if v is not None} for row in (
    (2174003, "Brisbane", -27.46794, 153.02809, 28.0, "PPLA", "AU", "Australia/Brisbane", 963425, "Australia",
     "Queensland", "Brisbane", 36000),
    (3413829, "Reykjavik", 64.13548, -21.89541, 61.0, "PPLC", "IS", "Atlantic/Reykjavik", 118918, "Iceland",
     "Capital Region", None, 0),
    (2028462, "Ulaanbaatar", 47.90771, 106.88324, 1350.0, "PPLC", "MN", "Asia/Ulaanbaatar", None, "Mongolia",
     "Ulaanbaatar", None, 28800),
    (2657896, "Zürich", 47.36667, 8.55, 408.0, "PPLA", "CH", "Europe/Zurich", 341730, "Switzerland",
     "Zurich", "Bezirk Zürich", 3600),
    (2643743, "London", 51.50853, -0.12574, 25.0, "PPLC", "GB", "Europe/London", 7556900, "United Kingdom",
     "England", "Greater London", 0),
    (6058560, "London", 42.98339, -81.23304, 251.0, "PPL", "CA", "America/Toronto", 346765, "Canada",
     "Ontario", "Middlesex County", -18000),
    (2950159, "Berlin", 52.52437, 13.41053, 74.0, "PPLC", "DE", "Europe/Berlin", 3426354, "Germany",
     "State of Berlin", None, 3600),
)]
LOCAL_NAMES = {  # OpenWeather's geocoder; absent for some places
    2174003: {"en": "Brisbane", "ja": "ブリスベン"},
    2657896: {"de": "Zürich", "en": "Zurich", "fr": "Zurich"},
    2643743: {"en": "London", "fr": "Londres", "de": "London"},
    2950159: {"en": "Berlin", "ru": "Берлин"},
}
GEO_FIELDS = _PLACE_COLUMNS[:-1]
OW_CLOUDS = ((10, 800, "clear sky"), (25, 801, "few clouds"), (50, 802, "scattered clouds"), (84, 803, "broken clouds"),
             (100, 804, "overcast clouds"))
OM_VARIABLES = ("temperature_2m", "apparent_temperature", "relative_humidity_2m", "wind_speed_10m",
                "wind_direction_10m",
                "cloud_cover", "surface_pressure", "weather_code", "is_day")  # what the fake's "current" can give
# fmt: on
WIND_UNITS = {"kmh": ("km/h", 1.0), "ms": ("m/s", 3.6), "mph": ("mp/h", 1.609344), "kn": ("kn", 1.852)}
OW_401 = "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."
OW_429 = (
    "Your account is temporary blocked due to exceeding of requests limitation of your subscription type. "
    "Please choose the proper subscription https://openweathermap.org/price"
)
OM_429 = "Minutely API request limit exceeded. Please try again in one minute."
ERROR_BODIES: dict[str, dict[str, Any]] = {  # provider -> {status: body} for the "401" and "429" faults
    "coinbase": {
        "401": {"errors": [{"id": "authentication_error", "message": "Invalid API Key"}]},
        "429": {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]},
    },
    "coincap": {"401": {"error": "Invalid API key"}, "429": {"error": "Too many requests"}},
    "open-meteo": {"401": {"error": True, "reason": "Invalid API key"}, "429": {"error": True, "reason": OM_429}},
    "openweather": {"401": {"cod": 401, "message": OW_401}, "429": {"cod": 429, "message": OW_429}},
}
ERROR_BODIES["geocoding"] = ERROR_BODIES["open-meteo"]
ERROR_BODIES["coinbase-history"] = {  # Advanced Trade's envelope, not the v2 API's
    "401": {"error": "UNAUTHENTICATED", "error_details": "Unauthorized", "message": "Unauthorized"},
    "429": {"error": "RATE_LIMIT_EXCEEDED", "error_details": "Too many requests", "message": "Too many requests"},
}
ERROR_BODIES["open-meteo-history"] = ERROR_BODIES["open-meteo"]
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
HTML_PORTAL = "<!DOCTYPE html><html><head><title>Sign in to Wi-Fi</title></head><body><h1>Welcome!</h1></body></html>"


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    provider: str  # one of PROVIDERS, or "unknown"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    time: float


@dataclass
class _Fault:
    kind: str
    status: int = 500
    body: Any = None
    retry_after: int | None = None
    delay: float = 1.0
    after: int = 0  # requests answered normally before the fault begins
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


_CLOSE = _Response(0, b"")  # close the connection without answering


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(obj, ensure_ascii=False).encode(), headers=headers or {})


def _text(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> _Response:
    return _Response(status, text.encode(), content_type)


def _num(x: float) -> str:
    """A number as the shortest decimal string, never in exponent form: 65000.12 -> "65000.12"."""
    return format(Decimal(repr(float(x))), "f")


def _fold(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).casefold()


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class _Prices(dict[str, float]):
    """Symbol -> USD price. An assigned price is the next one answered, exactly; after that it random-walks."""

    def __init__(self, values: dict[str, float]) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pinned: set[str] = set()
        self._rng = random.Random(42)
        self.update(values)

    def __setitem__(self, symbol: str, price: float) -> None:
        with self._lock:
            super().__setitem__(symbol, float(price))
            self._pinned.add(symbol)

    def update(self, *args: Any, **kwargs: float) -> None:  # type: ignore[override]
        for symbol, price in dict(*args, **kwargs).items():
            self[symbol] = price

    def take(self, symbol: str) -> float | None:
        with self._lock:
            if symbol not in self:
                return None
            price = self[symbol]
            if symbol in self._pinned:
                self._pinned.discard(symbol)
                return price
            price = round(price * (1 + self._rng.gauss(0, 0.001)), 2 if price >= 1 else 6)
            super().__setitem__(symbol, price)
            return price


def _conditions(lat: float, lon: float, t: float) -> dict[str, Any]:
    """Deterministic weather in metric units for a place and a time; changes slowly with time."""
    solar_hour = (t / 3600 + lon / 15) % 24
    diurnal = math.cos(2 * math.pi * (solar_hour - 15) / 24)  # warmest at 15:00 local solar time
    temp = 27 - 0.42 * abs(lat) + 3 * math.sin(math.radians(3 * lon)) + 4 * diurnal
    humidity = min(100, max(5, round(60 + 25 * math.sin(math.radians(5 * lat + lon)) - 8 * diurnal)))
    wind = 10 + 7 * abs(math.cos(math.radians(7 * lat - 2 * lon))) + 2 * math.sin(2 * math.pi * t / 7200 + lat)
    clouds = min(100, max(0, round(50 + 55 * math.sin(math.radians(3 * lat + 11 * lon) + t / 20000))))
    return {
        "temp": temp,
        "feels": temp - 0.05 * wind + 0.02 * (humidity - 50),
        "humidity": humidity,
        "wind_kmh": wind,
        "wind_deg": round(13 * lat + 7 * lon + t / 600) % 360,
        "clouds": clouds,
        "pressure": round(1013 + 8 * math.sin(math.radians(2 * lat - lon))),
        "is_day": int(6 <= solar_hour < 18),
    }


def _provider_for(path: str) -> str:
    return next((provider for prefix, provider in ROUTE_PREFIXES.items() if path.startswith(prefix)), "unknown")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        response = self.server.api._handle(self.path, self.headers)
        if response is _CLOSE:
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("X-Fake-Served-At", repr(time.time()))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once
    block_on_close = False  # stop() must not wait for handlers
    api: FakeAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up is not an error
            super().handle_error(request, client_address)


class FakeAPI:
    """The fake server; use as a context manager, or call start() and stop()."""

    def __init__(self) -> None:
        self.coincap_key = "test-coincap-key"
        self.openweather_key = "test-openweather-key"
        self.prices = DEFAULT_PRICES
        self._first_price: dict[str, float] = {}
        self._requests: list[Request] = []
        self._faults: dict[str, _Fault] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def prices(self) -> _Prices:
        return self._prices

    @prices.setter
    def prices(self, values: dict[str, float]) -> None:
        self._prices = _Prices(values)

    # lifecycle
    def start(self) -> FakeAPI:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            for fault in self._faults.values():
                fault.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # faults
    def set_fault(
        self,
        provider: str,
        kind: str,
        *,
        retry_after: int | None = None,
        delay: float = 1.0,
        status: int = 500,
        body: Any = None,
        after: int = 0,
    ) -> None:
        """Make `provider`'s routes ("*" for all) misbehave; see FAULTS, plus "http" for `status` with JSON `body`.

        A provider's own fault wins over "*". "every-other" fails the 1st, 3rd, ... request with a plain 500.
        """
        if provider not in (*PROVIDERS, "*"):
            raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(PROVIDERS)}, *")
        if kind not in (*FAULTS, "http"):
            raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(FAULTS)}, http")
        with self._cond:
            if old := self._faults.get(provider):
                old.released.set()
            self._faults[provider] = _Fault(kind, status, body, retry_after, delay, after)

    def clear_fault(self, provider: str | None = None) -> None:
        with self._cond:
            for name in list(self._faults) if provider is None else [provider]:
                if fault := self._faults.pop(name, None):
                    fault.released.set()

    # what was received
    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def count(self, provider: str | None = None) -> int:
        with self._cond:
            return sum(1 for r in self._requests if provider is None or r.provider == provider)

    def wait_for_count(self, provider: str | None, n: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count(provider) >= n, timeout)

    def reset_counts(self) -> None:
        with self._cond:
            self._requests.clear()

    # serving
    def _handle(self, raw_path: str, headers: Message) -> _Response:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        provider = _provider_for(path)
        if provider == "open-meteo" and "minutely_15" in query:
            provider = "open-meteo-history"
        with self._cond:
            self._requests.append(Request(provider, path, query, dict(headers.items()), time.time()))
            self._cond.notify_all()
            parent = provider.removesuffix("-history")
            fault = self._faults.get(provider) or self._faults.get(parent) or self._faults.get("*")
        if provider == "unknown":
            return _text(404, "Not Found")
        if fault is not None and (response := self._fault_response(fault, provider)) is not None:
            return response
        route = {
            "coinbase": self._coinbase,
            "coincap": self._coincap,
            "open-meteo": self._forecast,
            "coinbase-history": self._candles,
            "open-meteo-history": self._forecast,
            "geocoding": self._geocoding,
            "openweather": self._openweather,
        }[provider]
        return route(path, query, headers)

    def _fault_response(self, fault: _Fault, provider: str) -> _Response | None:
        """The fault's answer, or None to answer normally."""
        kind = fault.kind
        with self._cond:
            if fault.after > 0:
                fault.after -= 1
                return None
        if kind == "slow":
            self._stopping.wait(fault.delay)
            return None
        if kind == "hang":
            fault.released.wait(HANG_MAX_SECONDS)
            return _CLOSE
        if kind == "every-other":
            with self._cond:
                fault.hits += 1
                if fault.hits % 2 == 0:
                    return None
        if kind in ("500", "every-other"):
            return _text(500, "Internal Server Error")
        if kind == "502-html":
            return _text(502, HTML_502, "text/html")
        if kind == "html-200":
            return _text(200, HTML_PORTAL, "text/html; charset=utf-8")
        if kind == "invalid-json":
            return _Response(200, b'{"data": {"amount": "650')
        if kind == "wrong-shape":
            return _json(200, {"foo": []})
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if kind in ("401", "429"):
            return _json(int(kind), ERROR_BODIES[provider][kind], headers)
        return _json(fault.status, {} if fault.body is None else fault.body, headers)  # "http"

    def _coinbase(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        m = re.fullmatch(r"/v2/prices/([A-Za-z0-9]+)-([A-Za-z]+)/spot", path)
        if not m:
            return _json(404, {"errors": [{"id": "not_found", "message": "Not found"}]})
        base, quote = m[1].upper(), m[2].upper()
        if quote not in QUOTE_RATES or (usd := self.prices.take(base)) is None:
            return _json(404, {"errors": [{"id": "not_found", "message": "Invalid currency"}]})
        amount = usd if quote == "USD" else round(usd * QUOTE_RATES[quote], 2 if usd >= 1 else 6)
        return _json(200, {"data": {"amount": _num(amount), "base": base, "currency": quote}})

    def _candles(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        """Coinbase Advanced Trade's public candles: newest first, every number a string, at most 350."""

        def error(status: int, code: str, message: str) -> _Response:
            return _json(status, {"error": code, "error_details": message, "message": message})

        m = re.fullmatch(r"/api/v3/brokerage/market/products/([A-Za-z0-9]+)-([A-Za-z]+)/candles", path)
        if not m:
            return error(404, "NOT_FOUND", "Not Found")
        base, quote = m[1].upper(), m[2].upper()
        granularity = GRANULARITIES.get(query.get("granularity", ""))
        if granularity is None:
            return error(400, "INVALID_ARGUMENT", "Invalid granularity")
        try:
            start, end = int(query["start"]), int(query["end"])
        except (KeyError, ValueError):
            return error(400, "INVALID_ARGUMENT", "start and end are required UNIX timestamps")
        if end < start:
            return error(400, "INVALID_ARGUMENT", "end must be after start")
        first = -(-start // granularity) * granularity
        slots = list(range(first, end + 1, granularity))
        if len(slots) > CANDLES_MAX:
            return error(400, "INVALID_ARGUMENT", f"number of candles requested should be less than {CANDLES_MAX}")
        usd = dict.get(self.prices, base)
        if quote not in QUOTE_RATES or usd is None:
            return error(404, "NOT_FOUND", "ProductID is invalid")
        now = time.time()
        candles = []
        for slot in reversed(slots):  # newest first
            if slot > now:
                continue
            close = candle_price(usd * QUOTE_RATES[quote], base, slot + granularity)
            open_ = candle_price(usd * QUOTE_RATES[quote], base, slot)
            candles.append(
                {
                    "start": str(slot),
                    "low": _num(round(min(open_, close) * 0.9995, 6)),
                    "high": _num(round(max(open_, close) * 1.0005, 6)),
                    "open": _num(round(open_, 6)),
                    "close": _num(round(close, 6)),
                    "volume": _num(round(3 + 2 * math.sin(slot / 977), 8)),
                }
            )
        return _json(200, {"candles": candles})

    def _coincap(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        auth = headers.get("Authorization", "")
        key = query.get("apiKey") or (auth[7:] if auth.startswith("Bearer ") else None)
        if key != self.coincap_key:
            return _json(401, {"error": "Invalid API key"})
        m = re.fullmatch(r"/v3/assets/([^/]+)", path)
        if not m:
            return _json(404, {"error": "Not found"})
        asset = ASSETS.get(m[1])
        price = self.prices.take(asset[1]) if asset else None
        if asset is None or price is None:
            return _json(404, {"error": f"{m[1]} not found"})
        rank, symbol, name, supply, max_supply, explorer = asset
        first = self._first_price.setdefault(symbol, price)
        data = {
            "id": m[1],
            "rank": rank,
            "symbol": symbol,
            "name": name,
            "supply": _num(supply),
            "maxSupply": None if max_supply is None else _num(max_supply),
            "marketCapUsd": _num(supply * price),
            "volumeUsd24Hr": _num(round(supply * price * 0.02, 4)),
            "priceUsd": _num(price),
            "changePercent24Hr": _num(round((price / first - 1) * 100, 6)),
            "vwap24Hr": _num(round((price + first) / 2, 6)),
            "explorer": explorer,
            "tokens": {},
        }
        return _json(200, {"data": data, "timestamp": int(time.time() * 1000)})

    def _forecast(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        def error(reason: str) -> _Response:
            return _json(400, {"error": True, "reason": reason})

        lats, lons = ([s for s in query.get(k, "").split(",") if s] for k in ("latitude", "longitude"))
        if not lats or len(lats) != len(lons):
            return error("Parameter 'latitude' and 'longitude' must have the same number of elements")
        coords = []
        for lat, lon in ((_float(a), _float(b)) for a, b in zip(lats, lons, strict=True)):
            if lat is None or lon is None:
                return error("Value of type 'Float' required for key 'latitude'.")
            if not -90 <= lat <= 90:
                return error(f"Latitude must be in range of -90 to 90°. Given: {lat}.")
            if not -180 <= lon <= 180:
                return error(f"Longitude must be in range of -180 to 180°. Given: {lon}.")
            coords.append((lat, lon))
        temp_unit = query.get("temperature_unit", "celsius")
        wind_unit = query.get("wind_speed_unit") or query.get("windspeed_unit") or "kmh"
        if temp_unit not in ("celsius", "fahrenheit"):
            return error(f"Cannot initialize TemperatureUnit from invalid String value {temp_unit}.")
        if wind_unit not in WIND_UNITS:
            return error(f"Cannot initialize WindspeedUnit from invalid String value {wind_unit}.")
        fahrenheit = temp_unit == "fahrenheit"
        t_unit, (w_unit, w_div) = ("°F" if fahrenheit else "°C"), WIND_UNITS[wind_unit]
        slot = int(time.time() // 900 * 900)
        variables = [v for v in query.get("current", "").split(",") if v]
        past_variables = [v for v in query.get("minutely_15", "").split(",") if v]
        if unknown := [v for v in variables + past_variables if v not in OM_VARIABLES]:
            return error(f"Cannot initialize ForecastVariable from invalid String value {unknown[0]}.")
        past_slots: list[int] = []
        if past_variables:
            past_slots, problem = _minutely_slots(query)
            if problem:
                return error(problem)
        results = []
        for lat, lon in coords:
            c = _conditions(lat, lon, slot)
            code = 0 if c["clouds"] < 20 else 1 if c["clouds"] < 45 else 2 if c["clouds"] < 75 else 3
            table = {
                "temperature_2m": (t_unit, c["temp"] * 9 / 5 + 32 if fahrenheit else c["temp"]),
                "apparent_temperature": (t_unit, c["feels"] * 9 / 5 + 32 if fahrenheit else c["feels"]),
                "relative_humidity_2m": ("%", c["humidity"]),
                "wind_speed_10m": (w_unit, c["wind_kmh"] / w_div),
                "wind_direction_10m": ("°", c["wind_deg"]),
                "cloud_cover": ("%", c["clouds"]),
                "surface_pressure": ("hPa", float(c["pressure"])),
                "weather_code": ("wmo code", code),
                "is_day": ("", c["is_day"]),
            }
            result: dict[str, Any] = {
                "latitude": round(lat / 0.0625) * 0.0625,
                "longitude": round(lon / 0.0625) * 0.0625,
                "generationtime_ms": round(random.uniform(0.02, 0.2), 6),
                "utc_offset_seconds": 0,
                "timezone": "GMT",
                "timezone_abbreviation": "GMT",
                "elevation": float(round(abs(math.sin(math.radians(3 * lat)) * math.cos(math.radians(lon))) * 800)),
            }
            if variables:
                when = datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M")
                result["current_units"] = {"time": "iso8601", "interval": "seconds"}
                result["current"] = {"time": when, "interval": 900}
                for v in variables:
                    unit, value = table[v]
                    result["current_units"][v] = unit
                    result["current"][v] = round(value, 1) if isinstance(value, float) else value
            if past_variables:
                result["minutely_15_units"] = {"time": "iso8601"}
                result["minutely_15"] = {
                    "time": [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M") for t in past_slots]
                }
                for v in past_variables:
                    column = []
                    for t in past_slots:
                        p = _conditions(lat, lon, t)
                        unit, value = {
                            "temperature_2m": (t_unit, p["temp"] * 9 / 5 + 32 if fahrenheit else p["temp"]),
                            "relative_humidity_2m": ("%", p["humidity"]),
                            "wind_speed_10m": (w_unit, p["wind_kmh"] / w_div),
                        }.get(v, table[v])
                        column.append(round(value, 1) if isinstance(value, float) else value)
                    result["minutely_15_units"][v] = unit
                    result["minutely_15"][v] = column
            results.append(result)
        return _json(200, results if len(results) > 1 else results[0])

    def _geocoding(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        if path != "/v1/search":
            return _json(404, {"error": True, "reason": "Not Found"})
        if "name" not in query:
            return _json(400, {"error": True, "reason": "Parameter name is required"})
        name, count = _fold(query["name"].strip()), int(_float(query.get("count")) or 10)
        if len(name) < 2:  # the documented behaviour: empty or one character -> empty result
            places = []
        else:  # two characters match exactly, more match by prefix
            places = [
                p for p in PLACES if _fold(p["name"]) == name or (len(name) > 2 and _fold(p["name"]).startswith(name))
            ]
        places.sort(key=lambda p: -p.get("population", 0))
        body: dict[str, Any] = {"generationtime_ms": round(random.uniform(0.2, 1.5), 6)}
        if places:
            body = {
                "results": [{k: p[k] for k in GEO_FIELDS if k in p} for p in places[: max(1, min(count, 100))]]
            } | body
        return _json(200, body)

    def _openweather(self, path: str, query: dict[str, str], headers: Message) -> _Response:
        if query.get("appid") != self.openweather_key:
            return _json(401, {"cod": 401, "message": OW_401})
        if path == "/geo/1.0/direct":
            if not query.get("q", "").strip():
                return _json(400, {"cod": "400", "message": "Nothing to geocode"})
            limit = max(1, min(5, int(_float(query.get("limit")) or 5)))
            places = self._owm_places(query["q"])[:limit]
            return _json(200, [_owm_geo(p) for p in places])
        if path != "/data/2.5/weather":
            return _json(404, {"cod": "404", "message": "Internal error"})
        if query.get("q", "").strip():
            found = self._owm_places(query["q"])
            if not found:
                return _json(404, {"cod": "404", "message": "city not found"})
            place: dict[str, Any] | None = found[0]
            lat, lon = place["latitude"], place["longitude"]
        elif query.get("lat") and query.get("lon"):
            lat, lon = _float(query["lat"]), _float(query["lon"])
            if lat is None or not -90 <= lat <= 90:
                return _json(400, {"cod": "400", "message": "wrong latitude"})
            if lon is None or not -180 <= lon <= 180:
                return _json(400, {"cod": "400", "message": "wrong longitude"})
            near = [p for p in PLACES if abs(p["latitude"] - lat) < 0.5 and abs(p["longitude"] - lon) < 0.5]
            place = near[0] if near else None  # far from any known city: name "" and no sys.country, like the sea
        else:
            return _json(400, {"cod": "400", "message": "Nothing to geocode"})
        return _json(200, self._owm_weather(lat, lon, place, query.get("units", "standard")))

    @staticmethod
    def _owm_places(q: str) -> list[dict[str, Any]]:
        city, *rest = [_fold(part.strip()) for part in q.split(",")]
        country = rest[-1].upper() if rest else None
        found = [p for p in PLACES if _fold(p["name"]) == city and country in (None, p["country_code"])]
        return sorted(found, key=lambda p: -p.get("population", 0))

    @staticmethod
    def _owm_weather(lat: float, lon: float, place: dict[str, Any] | None, units: str) -> dict[str, Any]:
        now = time.time()
        c = _conditions(lat, lon, now)
        temp = {"metric": lambda x: x, "imperial": lambda x: x * 9 / 5 + 32}.get(units, lambda x: x + 273.15)
        wind = c["wind_kmh"] / 3.6 * (2.236936 if units == "imperial" else 1)
        day = int(now // 86400 * 86400)
        season = math.cos(2 * math.pi * (time.gmtime(now).tm_yday - 172) / 365)
        noon = day + 43200 - int(lon / 15 * 3600)
        half = int(21600 + 7200 * math.sin(math.radians(max(-66.0, min(66.0, lat)))) * season)
        sunrise, sunset = noon - half, noon + half
        code, description = next((code, text) for top, code, text in OW_CLOUDS if c["clouds"] <= top)
        icon = {800: "01", 801: "02", 802: "03"}.get(code, "04") + ("d" if sunrise <= now < sunset else "n")
        elevation = place["elevation"] if place else 0.0
        wind_block: dict[str, Any] = {"speed": round(wind, 2), "deg": c["wind_deg"]}
        if wind > 3:
            wind_block["gust"] = round(wind * 1.6, 2)
        sys_block: dict[str, Any] = {"country": place["country_code"]} if place else {}
        return {
            "coord": {"lon": round(lon, 4), "lat": round(lat, 4)},
            "weather": [
                {"id": code, "main": "Clear" if code == 800 else "Clouds", "description": description, "icon": icon}
            ],
            "base": "stations",
            "main": {
                "temp": round(temp(c["temp"]), 2),
                "feels_like": round(temp(c["feels"]), 2),
                "temp_min": round(temp(c["temp"] - 1.2), 2),
                "temp_max": round(temp(c["temp"] + 0.9), 2),
                "pressure": c["pressure"],
                "humidity": c["humidity"],
                "sea_level": c["pressure"],
                "grnd_level": c["pressure"] - round(elevation / 8.3),
            },
            "visibility": 10000,
            "wind": wind_block,
            "clouds": {"all": c["clouds"]},
            "dt": int(now),
            "sys": sys_block | {"sunrise": sunrise, "sunset": sunset},
            "timezone": place["utc_offset"] if place else round(lon / 15) * 3600,
            "id": place["id"] if place else 0,
            "name": place["name"] if place else "",
            "cod": 200,
        }


def candle_price(usd: float, symbol: str, t: int) -> float:
    """The fake's price of ``symbol`` at time ``t`` (s) for a candle: a slow deterministic wave around ``usd``."""
    phase = sum(map(ord, symbol))
    return usd * (1 + 0.004 * math.sin(t / 1800 + phase) + 0.001 * math.sin(t / 97 + phase))


def _minutely_slots(query: dict[str, str]) -> tuple[list[int], str | None]:
    """The 15-minute times a ``minutely_15`` request asks for (``start_minutely_15``/``end_minutely_15``, or
    ``past_minutely_15``/``forecast_minutely_15`` around now), or Open-Meteo's reason for refusing them."""
    now = int(time.time() // 900 * 900)
    oldest = now - PAST_DAYS * 86400
    if "start_minutely_15" in query or "end_minutely_15" in query:
        try:
            start, end = (
                int(datetime.strptime(query[k], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp())
                for k in ("start_minutely_15", "end_minutely_15")
            )
        except (KeyError, ValueError):
            return [], "Parameter 'start_minutely_15' and 'end_minutely_15' must be set together as yyyy-mm-ddThh:mm"
        if start < oldest or end > now + 16 * 86400:
            day = datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%d")
            return [], f"Parameter 'start_minutely_15' is out of allowed range from {day}"
        if end < start:
            return [], "Parameter 'end_minutely_15' must be after 'start_minutely_15'"
        first = -(-start // 900) * 900
        return list(range(first, end + 1, 900)), None
    past = int(_float(query.get("past_minutely_15")) or 0)
    ahead = _float(query.get("forecast_minutely_15"))
    ahead = 96 if ahead is None else int(ahead)
    if not 0 <= past <= PAST_DAYS * 96:
        return [], f"Parameter 'past_minutely_15' must be between 0 and {PAST_DAYS * 96}"
    return list(range(now - past * 900, now + ahead * 900, 900)), None


def _owm_geo(place: dict[str, Any]) -> dict[str, Any]:
    local_names = {"local_names": LOCAL_NAMES[place["id"]]} if place["id"] in LOCAL_NAMES else {}
    return {
        "name": place["name"],
        **local_names,
        "lat": place["latitude"],
        "lon": place["longitude"],
        "country": place["country_code"],
        "state": place["admin1"],
    }


_held_sockets: list[socket.socket] = []


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port is bound but not listening, so connecting is refused (kept for the process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _held_sockets.append(sock)
    return f"http://127.0.0.1:{sock.getsockname()[1]}"
