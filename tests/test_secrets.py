"""With both keys set and every fault, no key appears in a status field, a log line, a SourceError or ``check``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtdash.config import Settings
from rtdash.sources import CoinCapSource, OpenWeatherSource, SourceError
from rtdash.stream import get_runtime
from tests.fakeapi import FakeAPI
from tests.helpers import ROOT, fake_env, wait_until

COINCAP_KEY = "cc-SECRET-4f3a9b1c2d"
OPENWEATHER_KEY = "ow-SECRET-8e7d6c5b4a"
KEYS = (COINCAP_KEY, OPENWEATHER_KEY)


def echo(provider: str) -> dict:
    """An error body that repeats the key the provider was sent, as some gateways do."""
    if provider == "coincap":
        return {
            "status": 401,
            "body": {"error": f"Invalid API key {COINCAP_KEY} (Authorization: Bearer {COINCAP_KEY})"},
        }
    return {
        "status": 401,
        "body": {"cod": 401, "message": f"Invalid API key {OPENWEATHER_KEY}; request ?appid={OPENWEATHER_KEY}"},
    }


FAULTS = {
    # name: (fault, keywords per provider)
    "echo-401": ("http", echo),
    "echo-200": ("http", lambda p: echo(p) | {"status": 200}),
    "401": ("401", lambda p: {}),
    "429": ("429", lambda p: {"retry_after": 1}),
    "500": ("500", lambda p: {}),
    "502-html": ("502-html", lambda p: {}),
    "html-200": ("html-200", lambda p: {}),
    "invalid-json": ("invalid-json", lambda p: {}),
    "wrong-shape": ("wrong-shape", lambda p: {}),
    "hang": ("hang", lambda p: {}),
    "every-other": ("every-other", lambda p: {}),
}


def keyed_env(api: FakeAPI, **env: str) -> dict[str, str]:
    return fake_env(
        api.url,
        COINCAP_API_KEY=COINCAP_KEY,
        OPENWEATHER_API_KEY=OPENWEATHER_KEY,
        RTDASH_CITIES="Berlin,Brisbane",
        RTDASH_PRICE_INTERVAL="100ms",
        RTDASH_WEATHER_INTERVAL="100ms",
        RTDASH_TIMEOUT="0.3s",
        RTDASH_BACKOFF_MAX="0.2s",
        **env,
    )


def load_settings(env: dict[str, str]) -> Settings:
    return Settings.load(environ=env, dotenv=None)


def assert_no_key(where: str, text: object) -> None:
    for key in KEYS:
        assert key not in str(text), f"a key leaked into {where}: {text}"


def start_check(api: FakeAPI, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
    env.update(keyed_env(api, RTDASH_PRICE_SOURCE="coincap", RTDASH_WEATHER_SOURCE="openweather"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "rtdash", "check"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("name", list(FAULTS))
def test_no_key_anywhere(name: str, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger="rtdash")
    fault, kwargs = FAULTS[name]
    with FakeAPI() as api:
        api.coincap_key, api.openweather_key = KEYS  # the fake accepts exactly these keys
        for provider in ("coincap", "openweather"):
            api.set_fault(provider, fault, **kwargs(provider))
        check = start_check(api, tmp_path)  # runs while the pollers below fail

        explicit = get_runtime(
            load_settings(keyed_env(api, RTDASH_PRICE_SOURCE="coincap", RTDASH_WEATHER_SOURCE="openweather"))
        )
        auto = get_runtime(load_settings(keyed_env(api)))  # auto: the keyed providers, simulated while they fail
        pollers = [*explicit.pollers.values(), *auto.pollers.values()]
        wait_until(lambda: all(p.status.fetches >= 3 for p in pollers), timeout=30, message="three fetches each")

        # The keys were really in play: sent with every request.
        coincap = [r for r in api.requests if r.provider == "coincap"]
        openweather = [r for r in api.requests if r.provider == "openweather"]
        assert coincap and all(r.headers["Authorization"] == f"Bearer {COINCAP_KEY}" for r in coincap)
        assert openweather and all(r.query["appid"] == OPENWEATHER_KEY for r in openweather)

        for poller in pollers:
            assert_no_key(f"{poller.kind} status", poller.status.snapshot())
        assert_no_key("the rows", [p.history().to_dict() for p in pollers])

        for source in (
            CoinCapSource(settings=load_settings(keyed_env(api, RTDASH_PRICE_SOURCE="coincap"))),
            OpenWeatherSource(settings=load_settings(keyed_env(api, RTDASH_WEATHER_SOURCE="openweather"))),
        ):
            for _ in range(2):  # every-other: one failing, one answering
                try:
                    df = source.fetch()
                except SourceError as exc:
                    assert_no_key("a SourceError", (str(exc), repr(exc), exc.args))
                else:
                    assert_no_key("per-series errors", df.attrs)

        output, _ = check.communicate(timeout=60)
        assert_no_key("check output", output)
        assert check.returncode in (0, 1), output

    assert_no_key("the log", caplog.text)
    for record in caplog.records:
        assert_no_key("a log record", (record.getMessage(), record.exc_text, record.args))
