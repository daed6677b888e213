"""Hostile settings (issue 13, items 1, 3 and 5): every number is refused at load unless it lies in a range that
works later, provider URLs must parse with a host and a valid port, and the store's password is known to the
redaction in every form, however malformed the URL."""

from __future__ import annotations

import pytest

from rtdash.config import Settings, SettingsError, url_secrets
from rtdash.sources import redact

MALFORMED = {
    # URL: the password as written in it
    "postgresql://rtdash:PGPASS789%zz@127.0.0.1:5432/rtdash": "PGPASS789%zz",
    "postgresql://rtdash:PASS@789@127.0.0.1:5432/rtdash": "PASS@789",
    "postgresql://rtdash:PGPASS@[::1/rtdash": "PGPASS",
}


def error_of(**env: str) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.load(environ=env, dotenv=None)
    message = str(info.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# -- item 3 and 5: numbers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["99999999999999999999999", "1000001", str(2**63)])
def test_an_absurd_backlog_is_refused_at_load_naming_the_range(value):
    message = error_of(RTDASH_BACKLOG=value)
    assert message.startswith(f"RTDASH_BACKLOG={value!r} is invalid")
    assert "at least 1 and at most 1,000,000" in message


def test_a_backlog_at_the_bounds_is_accepted():
    assert Settings.load(environ={"RTDASH_BACKLOG": "1000000"}, dotenv=None).backlog == 1_000_000
    assert Settings.load(environ={"RTDASH_BACKLOG": "1"}, dotenv=None).backlog == 1


@pytest.mark.parametrize("value", ["-1", str(2**32), "99999999999999999999999"])
def test_a_seed_outside_32_bits_is_refused_at_load(value):
    message = error_of(RTDASH_SEED=value)
    assert message.startswith(f"RTDASH_SEED={value!r} is invalid")
    assert "at least 0 and at most 4,294,967,295" in message


@pytest.mark.parametrize("value", ["0", str(2**32 - 1)])
def test_a_seed_inside_32_bits_seeds_the_simulated_source(value):
    from rtdash.sources.simulated import SimulatedPrice

    settings = Settings.load(environ={"RTDASH_SEED": value}, dotenv=None)
    assert len(SimulatedPrice(settings=settings).fetch()) == 1


DURATIONS = {
    "RTDASH_PRICE_INTERVAL": "at least 100ms and at most 365d",
    "RTDASH_WEATHER_INTERVAL": "at least 100ms and at most 365d",
    "RTDASH_TIMEOUT": "at least 100ms and at most 5min",
    "RTDASH_BACKOFF_MAX": "at least 100ms and at most 1d",
    "RTDASH_RETENTION": "at most 36500d",
}


@pytest.mark.parametrize("env", DURATIONS)
@pytest.mark.parametrize("value", ["1e10", "1e300", "40000d"])
def test_an_absurd_duration_is_refused_at_load_naming_the_range(env, value):
    message = error_of(**{env: value})
    assert message.startswith(f"{env}={value!r} is invalid: expected a duration")
    assert DURATIONS[env] in message


def test_durations_at_the_bounds_are_accepted():
    env = {
        "RTDASH_PRICE_INTERVAL": "365d",
        "RTDASH_WEATHER_INTERVAL": "100ms",
        "RTDASH_TIMEOUT": "5min",
        "RTDASH_BACKOFF_MAX": "1d",
        "RTDASH_RETENTION": "36500d",
    }
    settings = Settings.load(environ=env, dotenv=None)
    assert (settings.price_interval, settings.timeout, settings.retention) == (365 * 86400, 300, 36500 * 86400)
    assert "RTDASH_TIMEOUT='50ms' is invalid" in error_of(RTDASH_TIMEOUT="50ms")


def test_an_out_of_range_override_is_refused_too():
    with pytest.raises(SettingsError, match="timeout"):
        Settings.load(environ={}, dotenv=None, timeout=1e10)


# -- item 5: provider URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("https://api.example.com:0", "port is 0"),
        ("http://127.0.0.1:8o80", "Port could not be cast"),
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://api.example .com", "whitespace"),
        ("http://api.example.com/a b", "whitespace"),
        ("http://:8080", "no host"),
        ("ftp://api.example.com", "not http:// or https://"),
    ],
)
@pytest.mark.parametrize("env", ["RTDASH_COINBASE_URL", "RTDASH_OPENMETEO_GEOCODING_URL"])
def test_a_provider_url_that_cannot_work_is_refused_at_load(env, value, reason):
    message = error_of(**{env: value})
    assert message.startswith(f"{env}={value!r} is invalid: ") and reason in message
    assert "http:// or https:// URL with a host and a port from 1 to 65535" in message


@pytest.mark.parametrize("value", ["http://127.0.0.1:8080/mirror", "https://[::1]:443", "HTTPS://api.example.com"])
def test_a_provider_url_that_works_is_accepted(value):
    assert Settings.load(environ={"RTDASH_OPENWEATHER_URL": value}, dotenv=None).openweather_url == value


def test_a_refused_provider_url_does_not_show_its_password():
    message = error_of(RTDASH_COINCAP_URL="https://proxyuser:proxy-Secret1@proxy:99999")
    assert "proxy-Secret1" not in message and "proxyuser:***@proxy" in message


# -- item 1: the store's password is a secret, however malformed the URL ---------------------------------------------


@pytest.mark.parametrize("url", MALFORMED)
def test_the_store_password_of_a_malformed_url_is_among_the_secrets(url):
    password = MALFORMED[url]
    settings = Settings.load(environ={"RTDASH_STORE": url}, dotenv=None)
    assert password in settings.secrets
    text = f"failed for {url}: {password!r} and host {password.split('@')[-1]}@127.0.0.1"
    cleaned = redact(text, settings.secrets)
    assert password not in cleaned and password.split("@")[-1] not in cleaned, cleaned
    assert "PASS" not in redact(url) and "PASS" not in str(settings.describe()), "not even without the secrets"


def test_the_secrets_hold_the_password_raw_and_percent_decoded_and_from_the_query():
    assert {"p%40ss%2Fw0rd", "p@ss/w0rd", "ss/w0rd"} <= set(url_secrets("postgresql://u:p%40ss%2Fw0rd@db:5432/x"))
    assert "qs-Secret9" in url_secrets("postgresql://u@db/x?sslmode=require&password=qs-Secret9")
    assert url_secrets("postgresql://u@db/x") == url_secrets("data/rtdash.duckdb") == url_secrets(None) == []
    assert "p@ss/w0rd" not in redact("password p@ss/w0rd", url_secrets("postgresql://u:p%40ss%2Fw0rd@db/x"))


# -- item 6: session caps --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["RTDASH_MAX_SESSIONS", "RTDASH_MAX_SESSIONS_PER_CLIENT"])
@pytest.mark.parametrize("value", ["0", "-1", "100001", "99999999999999999999999"])
def test_a_session_cap_outside_its_range_is_refused_at_load(env, value):
    message = error_of(**{env: value})
    assert message.startswith(f"{env}={value!r} is invalid") and "at least 1 and at most 100,000" in message


def test_session_caps_default_and_bounds():
    settings = Settings.load(environ={}, dotenv=None)
    assert (settings.max_sessions, settings.max_sessions_per_client) == (200, 20)
    env = {"RTDASH_MAX_SESSIONS": "100000", "RTDASH_MAX_SESSIONS_PER_CLIENT": "1"}
    settings = Settings.load(environ=env, dotenv=None)
    assert (settings.max_sessions, settings.max_sessions_per_client) == (100_000, 1)
