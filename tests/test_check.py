"""``python -m rtdash check``: a table of rows per provider and exit 0, or each failure in one line and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeapi import FakeAPI, closed_port_url
from tests.helpers import ROOT, fake_env


def run_check(api_url: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real command in a clean environment (no RTDASH_* or keys of this process) pointed at the fake API."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
    full_env.update(fake_env(api_url, **env))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "rtdash", "check", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sections(stdout: str) -> dict[str, list[str]]:
    """``{"price: Coinbase (auto)": [lines...], "weather: ...": [...]}``."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith(("price:", "weather:")):
            current = out.setdefault(line, [])
        else:
            current.append(line)
    return out


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def test_every_provider_answers(fake_api: FakeAPI, tmp_path: Path) -> None:
    fake_api.prices.update({"BTC": 65000.12, "ETH": 3400.55})
    result = run_check(fake_api.url, tmp_path, RTDASH_ASSETS="BTC,ETH", RTDASH_CITIES="Berlin,Brisbane")
    assert result.returncode == 0, explain(result)
    assert result.stderr == ""
    out = sections(result.stdout)
    assert list(out) == ["price: Coinbase (auto)", "weather: Open-Meteo (auto)"], explain(result)
    header, *rows = out["price: Coinbase (auto)"]
    assert header.split() == ["time", "asset", "quote", "price"]
    assert [row.split()[-3:] for row in rows] == [["BTC", "USD", "65000.12"], ["ETH", "USD", "3400.55"]]
    header, *rows = out["weather: Open-Meteo (auto)"]
    assert header.split() == ["time", "city", "lat", "lon", "temperature", "humidity", "wind_speed"]
    assert [row.split()[2] for row in rows] == ["Berlin", "Brisbane"]
    assert "error" not in result.stdout
    # The same code as the stream: one request per asset, every city in one forecast request.
    assert (fake_api.count("coinbase"), fake_api.count("open-meteo"), fake_api.count("geocoding")) == (2, 1, 1)


def test_keyed_providers_and_explicit_choices(fake_api: FakeAPI, tmp_path: Path) -> None:
    keys = {"COINCAP_API_KEY": fake_api.coincap_key, "OPENWEATHER_API_KEY": fake_api.openweather_key}
    result = run_check(fake_api.url, tmp_path, RTDASH_CITIES="Berlin", **keys)
    assert result.returncode == 0, explain(result)
    assert list(sections(result.stdout)) == ["price: CoinCap (auto)", "weather: OpenWeather (auto)"]
    result = run_check(
        fake_api.url,
        tmp_path,
        "--price-source",
        "coinbase",
        "--weather-source=simulated",
        RTDASH_CITIES="Berlin",
        **keys,
    )
    assert result.returncode == 0, explain(result)
    assert list(sections(result.stdout)) == ["price: Coinbase", "weather: Simulated"]


def test_simulated_needs_no_network(tmp_path: Path) -> None:
    result = run_check(closed_port_url(), tmp_path, RTDASH_PRICE_SOURCE="simulated", RTDASH_WEATHER_SOURCE="simulated")
    assert result.returncode == 0, explain(result)
    out = sections(result.stdout)
    assert len(out["weather: Simulated"]) == 1 + 7  # header and the seven default cities


@pytest.mark.parametrize(
    ("fault", "kwargs", "error"),
    [
        ("500", {}, "Coinbase: HTTP 500 Internal Server Error: Internal Server Error"),
        ("502-html", {}, "Coinbase: HTTP 502 Bad Gateway: 502 Bad Gateway"),
        ("429", {"retry_after": 30}, "Coinbase: HTTP 429: Too many requests (rate_limit_exceeded)"),
        ("html-200", {}, "Coinbase: answered with an HTML page instead of data (Sign in to Wi-Fi)"),
        ("hang", {}, "Coinbase: no answer within 0.5 s"),
    ],
)
def test_one_failing_provider_is_one_line_and_exit_1(
    fake_api: FakeAPI, tmp_path: Path, fault: str, kwargs: dict, error: str
) -> None:
    fake_api.set_fault("coinbase", fault, **kwargs)
    result = run_check(fake_api.url, tmp_path, RTDASH_CITIES="Berlin", RTDASH_TIMEOUT="0.5s")
    assert result.returncode == 1, explain(result)
    out = sections(result.stdout)
    assert out["price: Coinbase (auto)"] == [f"  error: {error}"], explain(result)
    header, *rows = out["weather: Open-Meteo (auto)"]  # the other provider still shows its rows
    assert "temperature" in header and len(rows) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_connection_refused(fake_api: FakeAPI, tmp_path: Path) -> None:
    url = closed_port_url()
    result = run_check(fake_api.url, tmp_path, RTDASH_OPENMETEO_URL=url, RTDASH_CITIES="Berlin")
    assert result.returncode == 1, explain(result)
    host = url.removeprefix("http://")
    assert sections(result.stdout)["weather: Open-Meteo (auto)"] == [f"  error: Open-Meteo: cannot connect {host}"]


def test_a_city_that_fails_alone_is_reported_and_is_a_failure(fake_api: FakeAPI, tmp_path: Path) -> None:
    result = run_check(fake_api.url, tmp_path, RTDASH_CITIES="Berlin,Atlantis")
    assert result.returncode == 1, explain(result)
    _, *lines = sections(result.stdout)["weather: Open-Meteo (auto)"]
    assert len(lines) == 2 and "Berlin" in lines[0]
    assert lines[1] == "  error for Atlantis: unknown city 'Atlantis'"
