"""Settings: read from the environment, a ``.env`` file and ``--args``, validated once, at startup.

Every setting is a typed, documented ``param`` parameter.  The environment variable of a
setting is its name upper-cased with an ``RTDASH_`` prefix (``price_interval`` ->
``RTDASH_PRICE_INTERVAL``), except the API keys, which keep their providers' usual names
and may only come from the environment or ``.env`` (never from the command line, where
they would show in ``ps``).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import param
from dotenv import dotenv_values

log = logging.getLogger("rtdash")

DEFAULT_CITIES = [
    "San Francisco",
    "Los Angeles",
    "Santa Barbara",
    "Sacramento",
    "Fresno",
    "San Diego",
    "San Luis Obispo",
]

SECRET_ENV = {
    "coincap_api_key": "COINCAP_API_KEY",
    "openweather_api_key": "OPENWEATHER_API_KEY",
    "metrics_token": "RTDASH_METRICS_TOKEN",
}
# CSP keywords accepted in RTDASH_FRAME_ANCESTORS, written with or without their quotes.
CSP_KEYWORDS = ("self", "none")

# holoviews.element.tiles.tile_sources (tests/views/test_refresh.py checks they agree), or "none" for plain axes.
TILE_SOURCES = [
    "CartoDark",
    "CartoLight",
    "EsriImagery",
    "EsriNatGeo",
    "EsriReference",
    "EsriStreet",
    "EsriTerrain",
    "EsriUSATopo",
    "OSM",
    "OpenTopoMap",
    "none",
]

DURATION_HELP = "a positive duration such as 500ms, 5s, 2min, 90d (a bare number means seconds)"
URL_SETTINGS = ("coinbase_url", "coincap_url", "openmeteo_url", "openmeteo_geocoding_url", "openweather_url")
DAY = 86400.0


class SettingsError(ValueError):
    """A user's configuration mistake: one line naming the setting, the value and what is accepted."""


# Unit letters pandas deprecates in this case (``90d`` warns and will stop working): the case it accepts.
_UNIT_CASE = {"d": "D", "w": "W", "H": "h", "S": "s"}
_DEPRECATED_UNIT = re.compile(r"(?<=[\d.\s])([dwHS])(?=[\d\s]|$)")


def parse_duration(text: str) -> float:
    """Seconds in a pandas-style duration (``500ms``, ``5s``, ``2min``, ``1h``); a bare number is seconds."""
    text = str(text).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = pd.Timedelta(_DEPRECATED_UNIT.sub(lambda m: _UNIT_CASE[m[1]], text)).total_seconds()
        except (ValueError, TypeError) as exc:
            raise ValueError(text) from exc
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(text)
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for messages: ``0.5`` -> ``500ms``, ``120`` -> ``2min``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= DAY and seconds % DAY == 0:
        return f"{seconds / DAY:g}d"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}min"
    return f"{seconds:g}s"


def url_secrets(url: str | None) -> list[str]:
    """Every form in which a message may show the password of ``scheme://user:password@host/...``, however
    malformed the URL (no parser that could refuse it is used): what lies between ``user:`` and the last ``@``, raw
    and percent-decoded, and the ``@``-separated pieces of it (a driver that splits at the first ``@`` shows the rest
    as part of the host); likewise a ``password=`` query parameter.  Longest first; empty without a password.
    """
    text = str(url or "")
    _, scheme, rest = text.partition("://")
    if not scheme:
        return []
    found = re.findall(r"(?i)[?&]password=([^&#]+)", rest)
    userinfo, at, _ = rest.rpartition("@")
    _, colon, password = userinfo.partition(":")
    if at and colon and password:
        found.append(password)
    forms = set()
    for secret in found:
        for form in (secret, unquote(secret)):
            forms.add(form)
            forms.update(piece for piece in form.split("@") if len(piece) >= 3)  # shorter would blank out text
    return sorted(forms, key=len, reverse=True)


def url_problem(value: str) -> str | None:
    """Why ``value`` is not a usable http(s) base URL (scheme, host, port 1..65535, no whitespace), or None."""
    if any(char.isspace() for char in value):
        return "it contains whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port that is not a number or out of range
    except ValueError as exc:
        return f"it is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "its scheme is not http:// or https://"
    if not parts.hostname:
        return "it has no host"
    if port == 0:
        return "its port is 0"
    return None


def split_list(text: str) -> list[str]:
    return [item.strip() for item in str(text).split(",") if item.strip()]


class Settings(param.Parameterized):
    """Everything rtdash can be told.  Build it with :meth:`Settings.load`."""

    price_source = param.Selector(
        default="auto",
        objects=["auto", "coinbase", "coincap", "simulated"],
        doc="Price provider; auto = CoinCap when COINCAP_API_KEY is set, else Coinbase, simulated while offline.",
    )
    weather_source = param.Selector(
        default="auto",
        objects=["auto", "open-meteo", "openweather", "simulated"],
        doc="Weather provider; auto = OpenWeather when OPENWEATHER_API_KEY is set, else Open-Meteo.",
    )
    assets = param.List(default=["BTC"], item_type=str, bounds=(1, None), doc="Asset symbols to track.")
    quote = param.String(default="USD", regex=r"^[A-Z]{3,5}$", doc="Quote currency of the prices.")
    cities = param.List(default=list(DEFAULT_CITIES), item_type=str, bounds=(1, None), doc="City names to watch.")
    # Every number from outside is parsed into a bounded range or refused, naming the setting, here at load: a value
    # accepted now must not fail later (a timeout too large for a socket, a backlog too large for a deque).
    price_interval = param.Number(
        default=5.0, bounds=(0.1, 365 * DAY), doc="Seconds between price polls (100ms to 365d)."
    )
    weather_interval = param.Number(
        default=120.0, bounds=(0.1, 365 * DAY), doc="Seconds between weather polls (100ms to 365d)."
    )
    # Provider history (README, "History from the providers"): the recent past drawn at start, and holes filled.
    past = param.Number(
        default=6 * 3600.0,
        allow_None=True,
        bounds=(0, 92 * DAY),
        inclusive_bounds=(False, True),
        doc="How much of the recent past to fetch from the providers at start (e.g. 6h, at most 92d); none: none.",
    )
    gap_search = param.Number(
        default=2 * DAY,
        allow_None=True,
        bounds=(0, 92 * DAY),
        inclusive_bounds=(False, True),
        doc="How far back the store is searched for holes at start, filled from the providers (e.g. 2d, at most "
        "92d); none: no search.",
    )
    history_budget = param.Integer(
        default=60,
        bounds=(0, 3600),
        doc="Most history calls a source makes to its provider per hour, as the provider counts them (0 to 3,600; "
        "0 fetches no history).",
    )
    units = param.Selector(default="metric", objects=["metric", "imperial"], doc="°C, m/s or °F, mph.")
    backlog = param.Integer(default=1000, bounds=(1, 1_000_000), doc="Points kept per live series.")
    timeout = param.Number(default=10.0, bounds=(0.1, 300.0), doc="HTTP timeout, s (100ms to 5min).")
    backoff_max = param.Number(default=300.0, bounds=(0.1, DAY), doc="Longest wait between retries, s (up to 1d).")
    seed = param.Integer(default=0, bounds=(0, 2**32 - 1), doc="Seed of the simulated source.")
    # A million rows is a day of one-second polls of ten series (864,000 rows): about 80 MB of CSV, 10 MB of Parquet,
    # a few seconds of reading on either store.  Exports stream in bounded memory, so the limit bounds how long one
    # download keeps the store busy, not the server's memory; raise it for larger ranges.
    export_max_rows = param.Integer(
        default=1_000_000, bounds=(1, 1_000_000_000), doc="Rows one export may hold at most (1 to 1,000,000,000)."
    )
    tiles = param.String(default="CartoLight", doc="Map tile source name, or 'none' for plain axes.")
    log_format = param.Selector(default="text", objects=["text", "json"], doc="Server log line format.")
    store = param.String(
        default="data/rtdash.duckdb",
        doc="Where history lives: a file path (embedded DuckDB), a postgresql:// URL, or 'none' to keep none.",
    )
    retention = param.Number(
        default=None,
        allow_None=True,
        bounds=(0, 36500 * DAY),
        inclusive_bounds=(False, True),
        doc="Seconds of history kept (e.g. 90d, at most 36500d); unset or 'none' keeps everything.",
    )
    role = param.Selector(
        default="all",
        objects=["all", "collector", "viewer"],
        doc="all = poll and serve; collector = poll and store only; viewer = follow the store, poll nothing.",
    )
    allowed_origins = param.List(
        default=[],
        item_type=str,
        doc="Hosts (host[:port], * wildcards) whose pages may open the websocket; unset keeps Panel's own list.",
    )
    frame_ancestors = param.List(
        default=["'self'"],
        item_type=str,
        bounds=(1, None),
        doc="Pages that may embed the dashboard in a frame (CSP frame-ancestors): self, none or origins.",
    )
    # A session costs 3-6 MB and a share of the loop: the caps keep a flood of sessions (a script, a reload loop) from
    # taking the process's memory and every other viewer's updates (README, "Security").
    max_sessions = param.Integer(
        default=200, bounds=(1, 100_000), doc="Sessions open at once in a process; more are refused (1 to 100,000)."
    )
    max_sessions_per_client = param.Integer(
        default=20,
        bounds=(1, 100_000),
        doc="Sessions open at once from one client address; more are refused (1 to 100,000).",
    )
    alerts = param.String(
        default=None,
        allow_None=True,
        doc="A TOML or YAML file of alert rules (README, \"Alerts\"); unset or 'none': no alerts.",
    )
    metrics_token = param.String(
        default=None, allow_None=True, precedence=-1, doc="Bearer token for /metrics when a login is on (secret)."
    )
    coincap_api_key = param.String(default=None, allow_None=True, precedence=-1, doc="CoinCap v3 key (secret).")
    openweather_api_key = param.String(default=None, allow_None=True, precedence=-1, doc="OpenWeather key (secret).")
    coinbase_url = param.String(default="https://api.coinbase.com", doc="Coinbase API base URL.")
    coincap_url = param.String(default="https://rest.coincap.io", doc="CoinCap API base URL.")
    openmeteo_url = param.String(default="https://api.open-meteo.com", doc="Open-Meteo forecast base URL.")
    openmeteo_geocoding_url = param.String(
        default="https://geocoding-api.open-meteo.com", doc="Open-Meteo geocoding base URL."
    )
    openweather_url = param.String(default="https://api.openweathermap.org", doc="OpenWeather API base URL.")

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        argv: Sequence[str] = (),
        dotenv: str | os.PathLike | None = ".env",
        **overrides,
    ) -> Settings:
        """Settings from ``.env`` < environment < ``--args`` < keyword overrides, validated.

        Raises :class:`SettingsError` with a one-line message on the first invalid value.
        """
        environ = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            raw.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        raw.update(environ)
        raw.update(_parse_argv(argv))
        values = {}
        for name in cls._setting_names():
            env = env_name(name)
            if env in raw:
                values[name] = _convert(cls, name, env, raw[env])
        values.update(overrides)
        try:
            settings = cls(**values)
        except ValueError as exc:  # a programmatic override that param rejects
            raise SettingsError(str(exc).splitlines()[0]) from None
        settings.validate()
        return settings

    @classmethod
    def _setting_names(cls) -> list[str]:
        return [name for name in cls.param if name != "name"]

    # -- validation across settings -----------------------------------------------------------------------------

    def validate(self) -> None:
        if self.price_source == "coincap" and not self.coincap_api_key:
            raise SettingsError(
                "RTDASH_PRICE_SOURCE=coincap needs COINCAP_API_KEY (in the environment or .env); "
                "or use coinbase, which needs no key"
            )
        if self.weather_source == "openweather" and not self.openweather_api_key:
            raise SettingsError(
                "RTDASH_WEATHER_SOURCE=openweather needs OPENWEATHER_API_KEY (in the environment or .env); "
                "or use open-meteo, which needs no key"
            )
        for name in URL_SETTINGS:
            value = getattr(self, name) or ""
            problem = url_problem(value)
            if problem:
                raise SettingsError(
                    f"{env_name(name)}={_shown(value)} is invalid: {problem}; expected an http:// or https:// URL "
                    "with a host and a port from 1 to 65535, such as https://api.example.com"
                )
        if self.price_provider == "coincap" and self.quote != "USD":
            raise SettingsError(f"RTDASH_QUOTE={self.quote!r} is invalid with CoinCap: expected USD (or use coinbase)")
        tiles = {name.casefold(): name for name in TILE_SOURCES}
        if self.tiles.casefold() not in tiles:
            close = difflib.get_close_matches(self.tiles.casefold(), tiles, n=1)
            hint = f" (did you mean {tiles[close[0]]}?)" if close else ""
            accepted = ", ".join(TILE_SOURCES)
            raise SettingsError(f"RTDASH_TILES={self.tiles!r} is invalid: expected one of {accepted}{hint}")
        if self.role in ("collector", "viewer") and not (self.store or "").startswith(("postgresql://", "postgres://")):
            raise SettingsError(
                f"RTDASH_ROLE={self.role} needs RTDASH_STORE=postgresql://...: the collector and the viewers meet there"
            )
        for origin in self.allowed_origins:
            if not re.match(r"^(https?://)?[\w.*-]+(:(\d+|\*))?/?$", origin):
                raise SettingsError(
                    f"RTDASH_ALLOWED_ORIGINS entry {origin!r} is invalid: expected host[:port] such as "
                    "dash.example.com or dash.example.com:443 (* matches any)"
                )
        for source in self.frame_ancestors:
            keyword = source.strip("'").lower() in CSP_KEYWORDS and source.startswith("'")
            if not keyword and not re.match(r"^(https?://)?(\*\.)?[\w.-]+(:(\d+|\*))?/?$|^\*$", source):
                raise SettingsError(
                    f"RTDASH_FRAME_ANCESTORS entry {source!r} is invalid: expected self, none, * or an origin "
                    "such as https://intranet.example.com"
                )
        self._rules = self._load_rules()
        if "'none'" in self.frame_ancestors and len(self.frame_ancestors) > 1:
            raise SettingsError("RTDASH_FRAME_ANCESTORS: none cannot be combined with other entries")
        for name in ("assets", "cities"):
            values = getattr(self, name)
            if not values:
                raise SettingsError(f"{env_name(name)} is empty: give a comma-separated list of at least one name")

    def _load_rules(self) -> list:
        from .alerts import load_rules

        path = (self.alerts or "").strip()
        return load_rules(None if path.lower() in ("", "none", "off") else path, self.assets, self.cities)

    # -- derived values -----------------------------------------------------------------------------------------

    @property
    def rules(self) -> list:
        """The alert rules of ``RTDASH_ALERTS`` (:mod:`rtdash.alerts`), read and checked by :meth:`validate`."""
        if getattr(self, "_rules", None) is None:
            self._rules = self._load_rules()
        return self._rules

    @property
    def secrets(self) -> list[str]:
        """The API keys that are set, the passwords in the store's and providers' URLs (in every form a message
        may show them, however malformed the URL) and the alert rules' webhook URLs: to be removed from every
        message."""
        from .alerts import webhook_secrets

        keys = [key for key in (self.coincap_api_key, self.openweather_api_key, self.metrics_token) if key]
        for url in (self.store, *(getattr(self, name) for name in URL_SETTINGS)):
            keys += [secret for secret in url_secrets(url) if secret not in keys]
        keys += [secret for secret in webhook_secrets(self.rules) if secret not in keys]
        return keys

    @property
    def price_provider(self) -> str:
        """The live price provider that ``auto`` stands for (or the one chosen)."""
        if self.price_source == "auto":
            return "coincap" if self.coincap_api_key else "coinbase"
        return self.price_source

    @property
    def weather_provider(self) -> str:
        if self.weather_source == "auto":
            return "openweather" if self.openweather_api_key else "open-meteo"
        return self.weather_source

    def limit_warnings(self) -> list[str]:
        """Settings that would exceed a provider's documented limits, each with the arithmetic."""
        warnings = []
        month, day = 30 * 86400, 86400
        if self.price_provider == "coincap":
            calls = len(self.assets) * month / self.price_interval
            if calls > 2500:
                need = len(self.assets) * month / 2500
                warnings.append(
                    f"CoinCap: {len(self.assets)} asset(s) every {format_duration(self.price_interval)} is "
                    f"{calls:,.0f} calls a month, over the free plan's ~2,500 credits; "
                    f"RTDASH_PRICE_INTERVAL of at least {format_duration(math.ceil(need))} stays inside it"
                )
        if self.weather_provider == "open-meteo":
            per_day = len(self.cities) * day / self.weather_interval
            per_min = len(self.cities) * 60 / self.weather_interval
            if per_day > 10000 or per_min > 600:
                need = max(len(self.cities) * day / 10000, len(self.cities) * 60 / 600)
                warnings.append(
                    f"Open-Meteo: {len(self.cities)} cities every {format_duration(self.weather_interval)} is "
                    f"{per_day:,.0f} calls a day (each city counts), over the 10,000 a day allowed; "
                    f"RTDASH_WEATHER_INTERVAL of at least {format_duration(math.ceil(need))} stays inside it"
                )
        if self.weather_provider == "openweather":
            per_min = len(self.cities) * 60 / self.weather_interval
            per_month = len(self.cities) * month / self.weather_interval
            if per_min > 60 or per_month > 1_000_000:
                # 60 a minute is 2,592,000 a month: the monthly limit is the one that binds.
                need = format_duration(math.ceil(max(len(self.cities), len(self.cities) * month / 1_000_000)))
                warnings.append(
                    f"OpenWeather: {len(self.cities)} cities every {format_duration(self.weather_interval)} is "
                    f"{per_min:,.0f} calls a minute, {per_month:,.0f} a month (one per city), over the free plan's "
                    f"60 a minute or 1,000,000 a month; RTDASH_WEATHER_INTERVAL of at least {need} stays inside it"
                )
        return warnings

    def key(self) -> tuple:
        """A hashable identity: the shared live stream of a process is kept per distinct settings."""
        return tuple((name, _hashable(getattr(self, name))) for name in self._setting_names())

    def describe(self) -> dict[str, object]:
        """Settings for display, with the keys replaced by whether they are set."""
        out: dict[str, object] = {}
        for name in self._setting_names():
            value = getattr(self, name)
            if name in SECRET_ENV:
                value = "set" if value else "unset"
            elif isinstance(value, str):
                value = _hide(value)
            out[env_name(name)] = value
        return out


def env_name(name: str) -> str:
    return SECRET_ENV.get(name, f"RTDASH_{name.upper()}")


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _hide(text: str) -> str:
    """``text`` with the password of a URL in it replaced by ``***``."""
    for secret in url_secrets(text):
        text = text.replace(secret, "***")
    return text


def _shown(text: str) -> str:
    """A value as a message quotes it: passwords hidden, at most 100 characters."""
    text = _hide(text)
    return repr(text if len(text) <= 100 else text[:97] + "...")


def _whole_numbers(p: param.Integer) -> str:
    """What an integer setting accepts: ``a whole number of at least 1 and at most 1,000,000``."""
    lower, upper = p.bounds or (None, None)
    least = f"at least {lower}" if lower is not None else ""
    most = f"at most {upper:,}" if upper is not None else ""
    return " of ".join(filter(None, ["a whole number", " and ".join(filter(None, [least, most]))]))


def _durations(p: param.Number) -> str:
    """What a duration setting accepts: ``a duration of at least 100ms and at most 5min``."""
    lower, upper = p.bounds or (None, None)
    least = f"at least {format_duration(lower)}" if lower else ""
    most = f"at most {format_duration(upper)}" if upper else ""
    return " of ".join(filter(None, ["a duration", " and ".join(filter(None, [least, most]))]))


def _accepted(p: param.Parameter) -> str:
    if isinstance(p, param.Selector):
        return "one of " + ", ".join(p.objects)
    return p.doc or "a valid value"


def _convert(cls: type[Settings], name: str, env: str, text: str):
    """One environment string to the parameter's type, or a one-line SettingsError."""
    p = cls.param[name]
    text = str(text).strip()
    shown = "<hidden>" if name in SECRET_ENV else _shown(text)
    try:
        if name in SECRET_ENV:
            return text or None
        if isinstance(p, param.Selector):
            value = text.lower()
            if value not in p.objects:
                close = difflib.get_close_matches(value, p.objects, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SettingsError(f"{env}={shown} is invalid: expected one of {', '.join(p.objects)}{hint}")
            return value
        if isinstance(p, param.List):
            items = split_list(text)
            if not items:
                raise SettingsError(f"{env}={shown} is invalid: expected a comma-separated list of at least one name")
            if name == "frame_ancestors":
                keyword = {word: f"'{word}'" for word in CSP_KEYWORDS}
                return [keyword.get(item.strip("'").lower(), item) for item in items]
            return [item.upper() for item in items] if name == "assets" else items
        if isinstance(p, param.Integer):
            value = int(text)
            lower, upper = p.bounds or (None, None)
            if (lower is not None and value < lower) or (upper is not None and value > upper):
                raise SettingsError(f"{env}={shown} is invalid: expected {_whole_numbers(p)}")
            return value
        if isinstance(p, param.Number):
            if p.allow_None and text.lower() in ("", "none", "off"):
                return None
            value = parse_duration(text)
            lower, upper = p.bounds or (None, None)
            if (lower and value < lower) or (upper is not None and value > upper):
                raise SettingsError(f"{env}={shown} is invalid: expected {_durations(p)}")
            return value
        if name == "quote":
            value = text.upper()
            if not re.match(p.regex, value):
                raise SettingsError(f"{env}={shown} is invalid: expected a currency code such as USD, EUR, GBP")
            return value
        return text
    except SettingsError:
        raise
    except ValueError:
        if isinstance(p, param.Integer):
            accepted = "a whole number" + (f" of at least {p.bounds[0]}" if p.bounds and p.bounds[0] else "")
        elif isinstance(p, param.Number):
            accepted = DURATION_HELP
        else:
            accepted = _accepted(p)
        raise SettingsError(f"{env}={shown} is invalid: expected {accepted}") from None


def _parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """``--price-interval 1s --assets=BTC,ETH`` -> ``{"RTDASH_PRICE_INTERVAL": "1s", "RTDASH_ASSETS": "BTC,ETH"}``."""
    names = {name.replace("_", "-"): name for name in Settings._setting_names() if name not in SECRET_ENV}
    out: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise SettingsError(f"unexpected argument {arg!r}: expected --setting value, e.g. --price-interval 5s")
        flag, _, value = arg[2:].partition("=")
        if flag not in names:
            if flag.replace("-", "_") in SECRET_ENV:
                raise SettingsError(f"--{flag} is not accepted: API keys come from the environment or .env only")
            close = difflib.get_close_matches(flag, names, n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise SettingsError(f"unknown option --{flag}{hint}: accepted are --" + ", --".join(sorted(names)))
        if not _:
            if not args:
                raise SettingsError(f"--{flag} needs a value")
            value = args.pop(0)
        out[env_name(names[flag])] = value
    return out
