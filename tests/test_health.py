"""``/health`` and ``/metrics``: they follow the imitation API as it fails and recovers, never show a key, parse
with prometheus_client's own parser, are served by plain ``panel serve`` and by the plugin, and add up across
``--num-procs`` processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from rtdash import server
from rtdash.stream import get_runtime
from tests.helpers import close_quietly, free_port, wait_until

KEYS = {
    "COINCAP_API_KEY": "cc-secret-4f9a1b2c3d",
    "OPENWEATHER_API_KEY": "ow-secret-8e7d6c5b4a",
    "RTDASH_METRICS_TOKEN": "mt-secret-0a1b2c3d4e",
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, parsed by prometheus_client: ``{(name, sorted labels): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v for (n, found), v in samples(text).items() if n == name and set(labels.items()) <= set(dict(found).items())
    )


def price(body: dict) -> dict:
    return body["sources"]["price"]


# -- in this process: the functions the handlers serve -----------------------------------------------------------------


def test_health_and_metrics_follow_the_api_failing_and_recovering(fake_api, make_settings):
    runtime = get_runtime(make_settings(RTDASH_PRICE_INTERVAL="0.2s", RTDASH_BACKOFF_MAX="0.4s"))
    server.sampler.watch(runtime)
    before = server.generate_latest().decode()

    status, body = wait_until(lambda: (r := server.health()) and price(r[1])["state"] == "ok" and r, 60)
    assert status == 200 and body["status"] in ("ok", "starting")
    assert price(body)["provider"] == "Coinbase" and price(body)["last_success"] and price(body)["last_error"] is None
    json.dumps(body)  # JSON-ready
    fetches_before = value(before, "rtdash_fetches_total", kind="price", provider="Coinbase")
    ok_scrape = wait_until(
        lambda: (
            (t := server.generate_latest().decode())
            and value(t, "rtdash_source_up", kind="price") == 1
            and value(t, "rtdash_fetches_total", kind="price", provider="Coinbase") > fetches_before
            and t
        ),
        60,
    )
    assert value(ok_scrape, "rtdash_fetch_duration_seconds_count", kind="price") >= 1
    assert value(ok_scrape, "rtdash_rows_fetched_total", kind="price") >= 1

    fake_api.set_fault("coinbase", "500")
    status, body = wait_until(lambda: (r := server.health()) and price(r[1])["state"] != "ok" and r, 60)
    assert status == 200, "a failing provider does not take the server out of rotation"
    assert body["status"] == "degraded"
    assert "500" in price(body)["last_error"] and price(body)["failures"] >= 1 and price(body)["last_error_time"]
    failing = wait_until(
        lambda: (t := server.generate_latest().decode()) and value(t, "rtdash_source_up", kind="price") == 0 and t, 60
    )
    assert value(failing, "rtdash_fetch_failures_total", kind="price", provider="Coinbase") > value(
        ok_scrape, "rtdash_fetch_failures_total", kind="price", provider="Coinbase"
    )

    fake_api.clear_fault()
    status, body = wait_until(lambda: (r := server.health()) and price(r[1])["state"] == "ok" and r, 60)
    assert status == 200 and price(body)["failures"] == 0
    recovered = wait_until(
        lambda: (t := server.generate_latest().decode()) and value(t, "rtdash_source_up", kind="price") == 1 and t, 60
    )
    assert value(recovered, "rtdash_fetches_total", kind="price", provider="Coinbase") > value(
        failing, "rtdash_fetches_total", kind="price", provider="Coinbase"
    )


def test_a_stopped_runtime_leaves_the_metrics(fake_api, make_settings):
    """A runtime stopped (an earlier test, a reload) but still referenced somewhere kept ``rtdash_source_up`` at 1
    while the running one's provider failed."""
    from rtdash.stream import stop_all

    settings = make_settings(RTDASH_PRICE_INTERVAL="0.2s", RTDASH_BACKOFF_MAX="0.4s")
    old = get_runtime(settings)
    server.sampler.watch(old)
    wait_until(lambda: old.price.status.state == "ok", 60, message="the first runtime's price")
    stop_all()  # ``old`` is still referenced here
    new = get_runtime(settings)
    server.sampler.watch(new)
    wait_until(lambda: new.price.status.state == "ok", 60, message="the running runtime's price")
    fake_api.set_fault("coinbase", "500")
    wait_until(lambda: new.price.status.failures >= 1, 60, message="the running runtime's price to fail")
    wait_until(lambda: value(server.generate_latest().decode(), "rtdash_source_up", kind="price") == 0, 60)
    assert old.stopped and old.price.status.state == "ok"


def test_health_and_metrics_hold_no_key(fake_api, make_settings):
    fake_api.coincap_key = "another-key"  # every CoinCap answer is a 401 that echoes nothing, the URL holds the key
    fake_api.set_fault("openweather", "401")
    settings = make_settings(
        RTDASH_PRICE_SOURCE="coincap", RTDASH_WEATHER_SOURCE="openweather", RTDASH_PRICE_INTERVAL="0.2s", **KEYS
    )
    runtime = get_runtime(settings)
    server.sampler.watch(runtime)
    status, body = wait_until(
        lambda: (r := server.health()) and all(s["last_error"] for s in r[1]["sources"].values()) and r, 15
    )
    text = json.dumps(body) + server.generate_latest().decode()
    assert status == 200
    for key in KEYS.values():
        assert key not in text
    assert "401" in price(body)["last_error"] or "key" in price(body)["last_error"].lower()


def test_health_is_503_while_the_store_is_down(fake_api, make_settings):
    port = free_port()  # nothing listens there: PostgreSQL is "down"
    runtime = get_runtime(make_settings(RTDASH_STORE=f"postgresql://rtdash:pw-9z8y7x@127.0.0.1:{port}/rtdash"))
    server.sampler.watch(runtime)
    status, body = wait_until(lambda: (r := server.health()) and r[1]["store"]["state"] == "down" and r, 15)
    assert status == 503 and body["status"] == "unavailable"
    assert body["store"]["backend"] == "postgresql" and body["store"]["last_error"]
    assert "pw-9z8y7x" not in json.dumps(body)
    scrape = server.generate_latest().decode()
    assert value(scrape, "rtdash_store_up") == 0


def test_health_is_200_with_an_embedded_store(fake_api, make_settings, tmp_path):
    runtime = get_runtime(make_settings(RTDASH_STORE=str(tmp_path / "h.duckdb"), RTDASH_PRICE_INTERVAL="0.2s"))
    server.sampler.watch(runtime)
    status, body = wait_until(lambda: (r := server.health()) and r[1]["store"].get("written", 0) > 0 and r, 15)
    assert status == 200 and body["store"]["state"] == "ok" and body["store"]["backend"] == "duckdb"
    assert value(server.generate_latest().decode(), "rtdash_store_rows_written_total") >= 1


# -- served by a real panel serve --------------------------------------------------------------------------------------


def open_session(app) -> None:
    """A page request: Bokeh creates the session (and the app its runtime) while answering it."""
    response = requests.get(app.url + "/realtime_dashboard", timeout=30)
    assert response.status_code == 200, response.text[:500]


def scrape(url: str, **kwargs) -> str:
    response = requests.get(url + "/metrics", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


@pytest.mark.slow
def test_plain_panel_serve_answers_health_and_metrics(serve, fake_api):
    app = serve(env={"RTDASH_PRICE_SOURCE": "coinbase", "RTDASH_PRICE_INTERVAL": "0.5s", **KEYS})
    open_session(app)
    response = wait_until(lambda: (r := requests.get(app.url + "/health", timeout=5)).status_code == 200 and r, 30)
    assert response.headers["Content-Type"].startswith("application/json")
    body = wait_until(lambda: price(b := requests.get(app.url + "/health", timeout=5).json())["fetches"] > 0 and b, 30)
    assert body["sessions"] >= 1 and set(body["sources"]) == {"price", "weather"}

    fake_api.set_fault("coinbase", "502-html")
    body = wait_until(lambda: price(b := requests.get(app.url + "/health", timeout=5).json())["errors"] > 0 and b, 30)
    assert "502" in price(body)["last_error"]
    text = wait_until(lambda: value(t := scrape(app.url), "rtdash_fetch_failures_total", kind="price") > 0 and t, 30)
    assert value(text, "rtdash_sessions") >= 1
    fake_api.clear_fault()
    wait_until(lambda: price(requests.get(app.url + "/health", timeout=5).json())["state"] == "ok", 30)
    text = scrape(app.url) + requests.get(app.url + "/health", timeout=5).text
    for key in KEYS.values():
        assert key not in text
    assert "Traceback" not in app.output()


@pytest.mark.slow
def test_the_plugin_serves_health_before_any_session(serve):
    app = serve(serve_args=["--plugins", "rtdash.server"])
    response = requests.get(app.url + "/health", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "starting"
    assert value(scrape(app.url), "rtdash_sessions") == 0
    open_session(app)
    wait_until(lambda: requests.get(app.url + "/health", timeout=5).json()["sources"], 30)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the ``--num-procs`` workers of a ``panel serve``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stop_workers(pids: list[int]) -> None:
    """Terminate, wait, then kill: a worker whose parent was stopped is not stopped with it."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "Z" not in stat_state(pid) for pid in pids)

    try:
        wait_until(gone, 10, 0.1, "the workers to exit")
    except AssertionError:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stat_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.slow
@pytest.mark.ui
def test_metrics_add_up_across_processes(serve, browser, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    # Signed sessions, as the README asks for --num-procs: a page's websocket may reach the other process.
    signed = {"BOKEH_SIGN_SESSIONS": "true", "BOKEH_SECRET_KEY": "test-bokeh-secret-key-" + "k" * 32}
    app = serve(
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **signed},
        serve_args=["--plugins", "rtdash.server", "--num-procs", "2"],
    )
    workers = wait_until(lambda: len(c := children(app.proc.pid)) == 2 and c, 30)
    pages = [browser.new_page() for _ in range(3)]
    try:
        for page in pages:
            page.goto(app.url + "/realtime_dashboard")
        # Each scrape is a new connection, answered by either process: all must show the three sessions.
        wait_until(lambda: all(value(scrape(app.url), "rtdash_sessions") == 3 for _ in range(6)), 60)
        assert any(metrics_dir.glob("gauge_livesum_*.db")), "the processes write their values to the shared directory"
        for page in pages:
            page.close()
        wait_until(lambda: all(value(scrape(app.url), "rtdash_sessions") == 0 for _ in range(6)), 60)
    finally:
        app.stop()
        stop_workers(workers)
        for page in pages:
            close_quietly(page)
