"""``deploy/nginx.conf`` itself, run by Debian's nginx on a free loopback port in front of
``panel serve --prefix /rtdash``: the page, its websocket, ``/health`` and an export download all work through it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.helpers import ROOT, ServedApp, fake_env, free_port, wait_until

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = ROOT / "deploy" / "nginx.conf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(NGINX).exists(), reason="needs Debian's nginx (apt-get install nginx-light)"),
]


def render_site(listen: int, upstream: int) -> str:
    """The deployed site file with only its listen port and upstream address changed."""
    text = CONF.read_text()
    text, listens = re.subn(r"(?m)^(\s*)listen 80;", rf"\1listen 127.0.0.1:{listen};", text)
    text, upstreams = re.subn(r"(?m)^(\s*)server 127\.0\.0\.1:5006;", rf"\1server 127.0.0.1:{upstream};", text)
    assert (listens, upstreams) == (1, 1), "deploy/nginx.conf no longer has the shape this test edits"
    return text


class Nginx:
    """nginx -c <tmp conf> -p <tmp>, in the foreground, stopped with SIGQUIT (graceful) then SIGKILL."""

    def __init__(self, tmp: Path, site: str, port: int):
        self.port = port
        self.prefix = tmp / "nginx"
        (self.prefix / "logs").mkdir(parents=True)
        (self.prefix / "rtdash.conf").write_text(site)
        main = f"""
daemon off;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.prefix}/logs/access.log;
    client_body_temp_path {self.prefix}/client_body;
    proxy_temp_path {self.prefix}/proxy;
    fastcgi_temp_path {self.prefix}/fastcgi;
    uwsgi_temp_path {self.prefix}/uwsgi;
    scgi_temp_path {self.prefix}/scgi;
    include {self.prefix}/rtdash.conf;
}}
"""
        (self.prefix / "nginx.conf").write_text(main)
        self.url = f"http://127.0.0.1:{self.port}"
        command = [NGINX, "-c", "nginx.conf", "-p", str(self.prefix)]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.prefix / "logs").glob("*.log")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def proxied(fake_api, tmp_path):
    nginx_port = free_port()
    env = fake_env(
        fake_api.url,
        RTDASH_PRICE_INTERVAL="1s",
        RTDASH_STORE=str(tmp_path / "history.duckdb"),
        RTDASH_ALLOWED_ORIGINS=f"127.0.0.1:{nginx_port}",  # the browser's origin is the proxy, not the app
    )
    app = ServedApp(
        env=env, cwd=tmp_path, serve_args=["--prefix", "/rtdash", "--use-xheaders", "--plugins", "rtdash.server"]
    )
    nginx = None
    try:
        app.wait_ready(path="/rtdash/liveness")
        site = render_site(nginx_port, app.port)
        nginx = Nginx(tmp_path, site, nginx_port)

        def up():
            assert nginx.proc.poll() is None, nginx.logs()
            try:
                return requests.get(nginx.url + "/rtdash/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, 20, 0.1, "nginx to proxy /rtdash/health")
        yield app, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        app.stop()


@pytest.mark.ui
def test_page_websocket_and_download_through_nginx(proxied, page, tmp_path):
    app, nginx = proxied
    assert (
        requests.get(nginx.url + "/rtdash", allow_redirects=False, timeout=10).headers["Location"].endswith("/rtdash/")
    )
    health = requests.get(nginx.url + "/rtdash/health", timeout=10)
    assert health.status_code == 200 and health.headers["Content-Type"].startswith("application/json")
    assert "rtdash_sessions" in requests.get(nginx.url + "/rtdash/metrics", timeout=10).text  # from 127.0.0.1

    page.goto(nginx.url + "/rtdash/")
    expect(page).to_have_url(re.compile(r"/rtdash/realtime_dashboard"))
    live = page.locator(".bk-tab").filter(has_text=re.compile("^Live$"))
    expect(live).to_be_visible(timeout=30_000)  # the document arrived over the proxied websocket
    wait_until(lambda: requests.get(nginx.url + "/rtdash/health", timeout=5).json()["sessions"] >= 1, 30)
    wait_until(lambda: requests.get(nginx.url + "/rtdash/health", timeout=5).json()["store"].get("written", 0) > 0, 30)
    page.locator(".bk-tab").filter(has_text=re.compile("^History$")).click()
    button = page.get_by_role("button", name=re.compile("Export CSV"))
    expect(button).to_be_visible(timeout=30_000)
    with page.expect_download(timeout=30_000) as download_info:
        button.click()
    download = download_info.value
    path = tmp_path / download.suggested_filename
    try:
        download.save_as(path)
    except Exception as exc:  # what the server and the proxy said of it
        raise AssertionError(f"{exc}\n--- server ---\n{app.output()}\n--- nginx ---\n{nginx.logs()}") from None
    rows = path.read_text().strip().splitlines()
    assert download.suggested_filename.endswith(".csv")
    assert len(rows) >= 2 and "time" in rows[0], rows[:5]
    assert "Traceback" not in app.output()
    page.close()  # nginx logs the websocket when it closes: it was upgraded (101) through the proxy
    upgraded = '"GET /rtdash/realtime_dashboard/ws HTTP/1.1" 101'
    wait_until(lambda: upgraded in nginx.logs(), 30, 0.2, "the websocket in nginx's access log")
