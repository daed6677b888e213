"""Settings: every invalid value is one line naming the variable, the value and what is accepted; precedence;
keys never from the command line; limit warnings with their arithmetic; ``python -m rtdash check`` on a bad value."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtdash.config import Settings, SettingsError, parse_duration
from rtdash.stream import get_runtime
from tests.helpers import ROOT

SECRET = "sk-live-0123456789abcdef"


def load(env: dict[str, str] | None = None, argv: list[str] = (), dotenv: str | Path | None = None) -> Settings:
    return Settings.load(environ=env or {}, argv=argv, dotenv=dotenv)


def error_of(env: dict[str, str] | None = None, argv: list[str] = (), dotenv: str | Path | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load(env, argv, dotenv)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def run_rtdash(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m rtdash ...`` in ``cwd`` with only ``env`` as rtdash's settings (none leak from this process)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "rtdash", *args], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


# --- one line per invalid value ------------------------------------------------------------------------------------

DURATION = "positive duration such as 500ms, 5s, 2min"
INVALID = [
    # (environment, every part the message must contain)
    ({"RTDASH_PRICE_INTERVAL": "0"}, ["RTDASH_PRICE_INTERVAL", "'0'", DURATION]),
    ({"RTDASH_PRICE_INTERVAL": "-1s"}, ["RTDASH_PRICE_INTERVAL", "'-1s'", DURATION]),
    ({"RTDASH_PRICE_INTERVAL": "abc"}, ["RTDASH_PRICE_INTERVAL", "'abc'", DURATION]),
    ({"RTDASH_WEATHER_INTERVAL": "1ns"}, ["RTDASH_WEATHER_INTERVAL", "'1ns'", "at least 100ms"]),
    ({"RTDASH_PRICE_INTERVAL": ""}, ["RTDASH_PRICE_INTERVAL", "''", DURATION]),
    ({"RTDASH_PRICE_INTERVAL": "nan"}, ["RTDASH_PRICE_INTERVAL", "'nan'", DURATION]),
    ({"RTDASH_WEATHER_INTERVAL": "0s"}, ["RTDASH_WEATHER_INTERVAL", "'0s'", DURATION]),
    ({"RTDASH_TIMEOUT": "-5"}, ["RTDASH_TIMEOUT", "'-5'", DURATION]),
    (
        {"RTDASH_PRICE_SOURCE": "coinbsae"},
        ["RTDASH_PRICE_SOURCE", "'coinbsae'", "auto, coinbase, coincap, simulated", "did you mean coinbase?"],
    ),
    (
        {"RTDASH_WEATHER_SOURCE": "openmeteo"},
        [
            "RTDASH_WEATHER_SOURCE",
            "'openmeteo'",
            "auto, open-meteo, openweather, simulated",
            "did you mean open-meteo?",
        ],
    ),
    ({"RTDASH_PRICE_SOURCE": "kraken"}, ["RTDASH_PRICE_SOURCE", "'kraken'", "auto, coinbase, coincap, simulated"]),
    ({"RTDASH_PRICE_SOURCE": "coincap"}, ["RTDASH_PRICE_SOURCE=coincap", "needs COINCAP_API_KEY", "coinbase"]),
    (
        {"RTDASH_PRICE_SOURCE": "coincap", "COINCAP_API_KEY": ""},
        ["RTDASH_PRICE_SOURCE=coincap", "needs COINCAP_API_KEY", "coinbase"],
    ),
    (
        {"RTDASH_WEATHER_SOURCE": "openweather"},
        ["RTDASH_WEATHER_SOURCE=openweather", "needs OPENWEATHER_API_KEY", "open-meteo"],
    ),
    ({"RTDASH_CITIES": ""}, ["RTDASH_CITIES", "''", "comma-separated list of at least one name"]),
    ({"RTDASH_CITIES": " , ,"}, ["RTDASH_CITIES", "', ,'", "comma-separated list of at least one name"]),
    ({"RTDASH_ASSETS": ","}, ["RTDASH_ASSETS", "','", "comma-separated list of at least one name"]),
    ({"RTDASH_COINBASE_URL": "api.coinbase.com"}, ["RTDASH_COINBASE_URL", "'api.coinbase.com'", "http:// or https://"]),
    ({"RTDASH_OPENWEATHER_URL": "ftp://example.org"}, ["RTDASH_OPENWEATHER_URL", "'ftp://example.org'", "http://"]),
    ({"RTDASH_OPENMETEO_URL": "http://"}, ["RTDASH_OPENMETEO_URL", "'http://'", "http:// or https://"]),
    ({"RTDASH_UNITS": "kelvin"}, ["RTDASH_UNITS", "'kelvin'", "metric, imperial"]),
    ({"RTDASH_UNITS": "imperal"}, ["RTDASH_UNITS", "'imperal'", "metric, imperial", "did you mean imperial?"]),
    ({"RTDASH_BACKLOG": "0"}, ["RTDASH_BACKLOG", "'0'", "whole number of at least 1"]),
    ({"RTDASH_BACKLOG": "-5"}, ["RTDASH_BACKLOG", "'-5'", "whole number of at least 1"]),
    ({"RTDASH_BACKLOG": "many"}, ["RTDASH_BACKLOG", "'many'", "whole number of at least 1"]),
    ({"RTDASH_BACKLOG": "1.5"}, ["RTDASH_BACKLOG", "'1.5'", "whole number of at least 1"]),
    ({"RTDASH_QUOTE": "dollars"}, ["RTDASH_QUOTE", "'dollars'", "currency code such as USD"]),
    (
        {"RTDASH_PRICE_SOURCE": "coincap", "COINCAP_API_KEY": SECRET, "RTDASH_QUOTE": "EUR"},
        ["RTDASH_QUOTE", "'EUR'", "expected USD"],
    ),
]


@pytest.mark.parametrize(
    ("env", "parts"), INVALID, ids=[" ".join(f"{k}={v}" for k, v in e.items()) for e, _ in INVALID]
)
def test_an_invalid_value_is_one_line_naming_variable_value_and_what_is_accepted(
    env: dict[str, str], parts: list[str]
) -> None:
    message = error_of(env)
    for part in parts:
        assert part in message, f"{part!r} missing from {message!r}"
    assert SECRET not in message


def test_invalid_values_from_the_command_line_and_dotenv_are_reported_the_same_way(tmp_path: Path) -> None:
    assert "RTDASH_PRICE_INTERVAL='0'" in error_of(argv=["--price-interval", "0"])
    assert "RTDASH_UNITS='kelvin'" in error_of(argv=["--units=kelvin"])
    dotenv = tmp_path / ".env"
    dotenv.write_text("RTDASH_BACKLOG=none\n")
    assert "RTDASH_BACKLOG='none'" in error_of(dotenv=dotenv)


def test_unknown_and_malformed_options_are_one_line() -> None:
    message = error_of(argv=["--price-intervl", "1s"])
    assert "--price-intervl" in message and "did you mean --price-interval?" in message
    assert "--price-interval" in error_of(argv=["--price-interval"])
    assert "'5s'" in error_of(argv=["5s"])


@pytest.mark.parametrize(
    "text", ["0", "-1s", "abc", "", "nan", "inf", "-inf", "5 parsecs", "1s2", "s", "--1", "0ms", "-0.5"]
)
def test_durations_that_are_not_positive_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("2min", 120),
        ("1h", 3600),
        ("90d", 90 * 86400),
        ("1d2h", 93600),
        ("1w", 604800),
        ("7", 7),
    ],
)
def test_pandas_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert load({"RTDASH_PRICE_INTERVAL": text}).price_interval == seconds


def test_defaults() -> None:
    s = load()
    assert (s.price_source, s.weather_source, s.assets, s.quote) == ("auto", "auto", ["BTC"], "USD")
    assert s.cities == [
        "San Francisco",
        "Los Angeles",
        "Santa Barbara",
        "Sacramento",
        "Fresno",
        "San Diego",
        "San Luis Obispo",
    ]
    assert (s.price_interval, s.weather_interval, s.units, s.backlog, s.timeout, s.seed) == (
        5,
        120,
        "metric",
        1000,
        10,
        0,
    )
    assert (s.coincap_api_key, s.openweather_api_key) == (None, None)
    assert s.coinbase_url == "https://api.coinbase.com"
    assert s.coincap_url == "https://rest.coincap.io"
    assert s.openmeteo_url == "https://api.open-meteo.com"
    assert s.openmeteo_geocoding_url == "https://geocoding-api.open-meteo.com"
    assert s.openweather_url == "https://api.openweathermap.org"
    assert (s.price_provider, s.weather_provider) == ("coinbase", "open-meteo")


def test_lists_and_choices_are_normalised() -> None:
    s = load({"RTDASH_ASSETS": " btc, eth ,,", "RTDASH_CITIES": "Berlin , Zürich", "RTDASH_UNITS": "Imperial"})
    assert (s.assets, s.cities, s.units) == (["BTC", "ETH"], ["Berlin", "Zürich"], "imperial")


def test_auto_picks_the_keyed_provider_when_its_key_is_set() -> None:
    s = load({"COINCAP_API_KEY": SECRET, "OPENWEATHER_API_KEY": SECRET + "2"})
    assert (s.price_provider, s.weather_provider) == ("coincap", "openweather")
    assert load({"COINCAP_API_KEY": SECRET, "RTDASH_PRICE_SOURCE": "coinbase"}).price_provider == "coinbase"


# --- precedence and keys ---------------------------------------------------------------------------------------------


def test_dotenv_then_environment_then_args(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "RTDASH_PRICE_INTERVAL=1s\nRTDASH_ASSETS=ETH\nRTDASH_UNITS=imperial\nRTDASH_SEED=7\n"
        f"COINCAP_API_KEY={SECRET}\nOPENWEATHER_API_KEY=from-dotenv\n"
    )
    env = {"RTDASH_PRICE_INTERVAL": "2s", "RTDASH_ASSETS": "SOL", "RTDASH_SEED": "8", "OPENWEATHER_API_KEY": "from-env"}
    s = load(env, ["--price-interval", "3s", "--seed=9"], dotenv)
    assert s.price_interval == 3  # args win over both
    assert s.seed == 9
    assert s.assets == ["SOL"]  # environment wins over .env
    assert s.openweather_api_key == "from-env"
    assert s.units == "imperial"  # .env alone
    assert s.coincap_api_key == SECRET  # keys may come from .env


def test_dotenv_of_the_working_directory_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("RTDASH_QUOTE=EUR\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.load(environ={}).quote == "EUR"
    (tmp_path / ".env").unlink()
    assert Settings.load(environ={}).quote == "USD"


@pytest.mark.parametrize(
    "argv",
    [
        ["--coincap-api-key", SECRET],
        [f"--coincap-api-key={SECRET}"],
        [f"--coincap_api_key={SECRET}"],
        [f"--openweather-api-key={SECRET}"],
        [f"--COINCAP_API_KEY={SECRET}"],
        [f"--coincap-key={SECRET}"],
    ],
)
def test_keys_are_never_accepted_from_the_command_line(argv: list[str]) -> None:
    message = error_of({"RTDASH_PRICE_SOURCE": "coinbase"}, argv)
    assert SECRET not in message
    if "api-key" in argv[0] or "api_key" in argv[0]:
        assert "environment or .env" in message


def test_keys_are_not_shown_in_describe() -> None:
    described = load({"COINCAP_API_KEY": SECRET}).describe()
    assert described["COINCAP_API_KEY"] == "set"
    assert described["OPENWEATHER_API_KEY"] == "unset"
    assert SECRET not in repr(described)


# --- limit warnings --------------------------------------------------------------------------------------------------


def test_default_settings_stay_inside_every_limit() -> None:
    assert load().limit_warnings() == []
    simulated = {"RTDASH_PRICE_SOURCE": "simulated", "RTDASH_WEATHER_SOURCE": "simulated", "COINCAP_API_KEY": SECRET}
    assert load({**simulated, "RTDASH_PRICE_INTERVAL": "1s", "RTDASH_WEATHER_INTERVAL": "1s"}).limit_warnings() == []


def test_coincap_monthly_credits_warning_with_arithmetic() -> None:
    (warning,) = load({"COINCAP_API_KEY": SECRET}).limit_warnings()
    # 1 asset * 30 days * 86,400 s / 5 s = 518,400 calls; 2,592,000 / 2,500 = 1,036.8 -> 1037 s.
    assert warning == (
        "CoinCap: 1 asset(s) every 5s is 518,400 calls a month, over the free plan's ~2,500 credits; "
        "RTDASH_PRICE_INTERVAL of at least 1037s stays inside it"
    )
    assert SECRET not in warning
    assert load({"COINCAP_API_KEY": SECRET, "RTDASH_PRICE_INTERVAL": "1037s"}).limit_warnings() == []
    assert load({"COINCAP_API_KEY": SECRET, "RTDASH_PRICE_INTERVAL": "1036s"}).limit_warnings() != []
    two = {"COINCAP_API_KEY": SECRET, "RTDASH_ASSETS": "BTC,ETH"}
    (warning,) = load({**two, "RTDASH_PRICE_INTERVAL": "30min"}).limit_warnings()
    # Each asset is a call: 2 * 2,592,000 / 1,800 = 2,880; 2 * 2,592,000 / 2,500 = 2,073.6 -> 2074 s.
    assert "2 asset(s) every 30min is 2,880 calls a month" in warning
    assert "at least 2074s" in warning
    assert load({**two, "RTDASH_PRICE_INTERVAL": "1h"}).limit_warnings() == []


def test_open_meteo_counts_every_city_of_a_request() -> None:
    (warning,) = load({"RTDASH_WEATHER_INTERVAL": "60s"}).limit_warnings()
    # 7 cities * 86,400 s / 60 s = 10,080 calls a day; 7 * 86,400 / 10,000 = 60.48 -> 61 s.
    assert warning == (
        "Open-Meteo: 7 cities every 1min is 10,080 calls a day (each city counts), over the 10,000 a day allowed; "
        "RTDASH_WEATHER_INTERVAL of at least 61s stays inside it"
    )
    assert load({"RTDASH_WEATHER_INTERVAL": "61s"}).limit_warnings() == []
    assert load({"RTDASH_WEATHER_INTERVAL": "60s", "RTDASH_CITIES": "Berlin"}).limit_warnings() == []


def test_openweather_limits_per_minute_and_per_month() -> None:
    env = {"OPENWEATHER_API_KEY": SECRET}
    (warning,) = load({**env, "RTDASH_WEATHER_INTERVAL": "10s"}).limit_warnings()
    # 7 cities every 10 s: 42 a minute (inside 60) but 7 * 2,592,000 / 10 = 1,814,400 a month (over 1,000,000);
    # 7 * 2,592,000 / 1,000,000 = 18.1 -> 19 s.
    assert "7 cities every 10s is 42 calls a minute, 1,814,400 a month" in warning
    assert "RTDASH_WEATHER_INTERVAL of at least 19s stays inside it" in warning
    (warning,) = load({**env, "RTDASH_WEATHER_INTERVAL": "1s", "RTDASH_CITIES": "Berlin,Paris"}).limit_warnings()
    assert "2 cities every 1s is 120 calls a minute, 5,184,000 a month" in warning
    assert "at least 6s" in warning  # 2 * 2,592,000 / 1,000,000 = 5.2
    assert load({**env, "RTDASH_WEATHER_INTERVAL": "19s"}).limit_warnings() == []


def test_limit_warnings_are_logged_when_the_live_stream_starts(caplog: pytest.LogCaptureFixture, make_settings) -> None:
    settings = make_settings(
        COINCAP_API_KEY=SECRET, RTDASH_WEATHER_SOURCE="simulated", RTDASH_PRICE_INTERVAL="1s", RTDASH_ASSETS="BTC"
    )
    with caplog.at_level(logging.WARNING, logger="rtdash"):
        get_runtime(settings)
    assert any("CoinCap: 1 asset(s) every 1s is 2,592,000 calls a month" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


# --- the command line ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"RTDASH_PRICE_INTERVAL": "0"}, [], "RTDASH_PRICE_INTERVAL='0' is invalid"),
        ({"RTDASH_WEATHER_SOURCE": "openmeteo"}, [], "did you mean open-meteo?"),
        ({"RTDASH_PRICE_SOURCE": "coincap"}, [], "needs COINCAP_API_KEY"),
        ({}, ["--cities", " , "], "RTDASH_CITIES"),
        ({}, ["--coincap-api-key", SECRET], "API keys come from the environment or .env only"),
    ],
)
def test_check_with_a_bad_setting_prints_one_line_and_exits_2(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    result = run_rtdash("check", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rtdash: error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
