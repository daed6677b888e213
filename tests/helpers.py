"""Test helpers shared by every test module: waiting with a deadline, free ports, a served app (a ``panel serve``
process, or a Panel server on a thread of this process)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "realtime_dashboard.py"


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = condition()
        except AssertionError as exc:  # conditions may assert to explain themselves
            result, last_exc = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f": {last_exc}" if last_exc else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}{detail}")
        time.sleep(interval)


def show_tab(scope, name: str, timeout: float = 60.0) -> None:
    """Click the Panel tab ``name`` in ``scope`` (a page or a locator) until the page shows it as the active tab.

    A click can be lost, for a user as for a test: BokehJS draws a Tabs' headers anew whenever its ``tabs`` change,
    which a dynamic Tabs does at every switch (the shown tab's content replaces a placeholder), so a click whose
    mouse-up comes after the server's answer to the previous switch lands on a header that is gone.  Seen in the
    tab-switch test: the page and the server both showed History after a last click on Live, and no change was sent.
    """
    tab = scope.locator(".bk-tab", has_text=name).first

    def shown() -> bool:
        if "bk-active" in (tab.get_attribute("class", timeout=timeout * 1000) or "").split():
            return True
        tab.click(timeout=timeout * 1000)
        return False

    wait_until(shown, timeout, 0.5, f"the {name} tab shown")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_env(api_url: str, **overrides: str) -> dict[str, str]:
    """RTDASH_* variables that point every provider at the fake API, plus ``overrides``."""
    env = {
        "RTDASH_COINBASE_URL": api_url,
        "RTDASH_COINCAP_URL": api_url,
        "RTDASH_OPENMETEO_URL": api_url,
        "RTDASH_OPENMETEO_GEOCODING_URL": api_url,
        "RTDASH_OPENWEATHER_URL": api_url,
        "RTDASH_TIMEOUT": "2s",
        "RTDASH_BACKOFF_MAX": "2s",
        "RTDASH_STORE": "none",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class ServedApp:
    """``panel serve`` as a real subprocess on a free port; its output is kept for failure messages."""

    def __init__(
        self,
        target: Path | str = SCRIPT,
        env: dict[str, str] | None = None,
        args: list[str] = (),
        serve_args: list[str] = (),
        cwd: str | os.PathLike | None = None,
        command: list[str] | None = None,
        port: int | None = None,
        unused_session_lifetime_ms: int = 1000,
    ):
        """``unused_session_lifetime_ms``: how long Bokeh keeps a session no websocket is connected to (its default
        is 15 s; 1 s here, so that a closed session goes fast)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_cwd = cwd is None  # a folder of its own, removed by stop()
        self.cwd = Path(cwd or tempfile.mkdtemp(prefix="rtdash-serve-"))
        self.log_path = self.cwd / f"panel-serve-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("RTDASH_", "COINCAP_", "OPENWEATHER_"))}
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        full_env["PYTHONUNBUFFERED"] = "1"
        if command is None:
            command = [
                sys.executable,
                "-m",
                "tests.served_panel",  # panel serve, which reports its sessions' state on SIGUSR2
                "serve",
                str(target),
                "--address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--allow-websocket-origin",
                f"127.0.0.1:{self.port}",
                "--liveness",
                "--check-unused-sessions",
                "500",
                "--unused-session-lifetime",
                str(unused_session_lifetime_ms),
                *serve_args,
            ]
            if args:
                command += ["--args", *args]
        self.command = command
        self._log = open(self.log_path, "w")  # closed in stop()
        # Its own process group, so that stop() also ends the workers of --num-procs.
        self.proc = subprocess.Popen(
            command, env=full_env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        if self._log.closed:  # stopped: its folder may be gone
            return self._final
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stacks(self) -> str:
        """The server's output, ending with the stack of each of its threads and (``tests.served_panel``) what each
        of its sessions waits for: for the message of a test that waited in vain for the server.

        The stacks come from ``kill -USR1``, which the server answers once it has served a page
        (rtdash.server.dump_stacks_on_sigusr1; before that the signal would end it).
        """
        output = self.output()
        if self.proc.poll() is not None:
            return output
        # Each report's last line: faulthandler writes the signalled thread's block ("Current thread") last.
        signals = [(signal.SIGUSR1, "Current thread")] if "/health and " in output else []
        if "tests.served_panel" in self.command:
            signals.append((signal.SIGUSR2, "--- end ---"))
        for number, last in signals:
            before = self.output().count(last)
            self.proc.send_signal(number)
            try:
                wait_until(lambda last=last, before=before: self.output().count(last) > before, 30, 0.2, str(number))
            except AssertionError as exc:
                return f"{self.output()}\n({exc})"
        return self.output()

    def wait_ready(self, timeout: float = 60.0, path: str = "/liveness") -> ServedApp:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return requests.get(self.url + path, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout, 0.2, f"{self.command} to answer {path}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server output ---\n{self.output()}") from None
        return self

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        self._signal(signal.SIGKILL)  # whatever of its group is left (--num-procs workers)
        if self._log.closed:
            return
        self._final = self.output()
        self._log.close()
        if self._own_cwd:
            shutil.rmtree(self.cwd, ignore_errors=True)

    def __enter__(self) -> ServedApp:
        try:
            return self.wait_ready()
        except BaseException:  # a failed start or Ctrl+C: ``with`` calls __exit__ only after __enter__ returned
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def close_quietly(closable) -> None:
    """Close a Playwright page or context in a teardown, after the servers: Ctrl+C and a SIGTERM sent to the process
    group reach Playwright's driver too, and ``close()`` then raises instead of closing what is already gone."""
    with contextlib.suppress(Exception):
        closable.close()


class PanelServer:
    """A Panel server in this process, on its own thread and loop, serving ``app`` at ``/``."""

    def __init__(self, app: Callable[[], object], **server_kwargs: object) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(app, server_kwargs), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the Panel server did not start"
        self.url = f"http://127.0.0.1:{self.server.port}"

    def _run(self, app: Callable[[], object], server_kwargs: dict) -> None:
        from panel.io.server import get_server  # Panel only where a test serves in-process
        from tornado.ioloop import IOLoop

        self.loop = IOLoop()
        self.server = get_server(app, port=0, address="127.0.0.1", loop=self.loop, start=False, **server_kwargs)
        self.server.start()
        self._ready.set()
        self.loop.start()

    def new_session(self) -> None:
        """A session, as a page request makes one (its callbacks run on the server's loop)."""
        requests.get(self.url, timeout=30).raise_for_status()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Keep the server's loop busy (as a slow session would) until the block ends."""
        release = threading.Event()
        self.loop.add_callback(release.wait, 30)
        try:
            yield
        finally:
            release.set()

    def on_loop(self, fn: Callable[[], Any], timeout: float = 60) -> Any:
        """``fn()`` run on the server's loop, between two of its callbacks, and its result."""
        done, out = threading.Event(), {}

        def call() -> None:
            out["result"] = fn()
            done.set()

        self.loop.add_callback(call)
        assert done.wait(timeout), "the server's loop did not answer"
        return out["result"]

    def stop(self) -> None:
        self.loop.add_callback(self.server.stop)
        self.loop.add_callback(self.loop.stop)
        self._thread.join(10)


class BokehExchange:
    """What a Bokeh websocket client got from the server: the messages (header, content as text) and how it closed."""

    def __init__(self, messages: list[tuple[dict, str]], close_code: int | None, close_reason: str | None):
        self.messages, self.close_code, self.close_reason = messages, close_code, close_reason

    def reply(self, msgtype: str) -> str | None:
        """The content of the first message of ``msgtype`` the server sent, or None."""
        return next((content for header, content in self.messages if header.get("msgtype") == msgtype), None)


def bokeh_exchange(
    page_url: str, token: str, *requests_: tuple[str, str], origin: str | None = None, keep: float = 0.0
) -> BokehExchange:
    """Open the websocket of the app at ``page_url`` with ``token`` as a browser's Bokeh client does, wait for the ACK,
    then send each ``(msgtype, content JSON)`` and wait for its reply; ``keep`` seconds more (for what the server sends
    after), then close.  Stops early when the server closes the connection.

    Tornado's client, on an event loop of its own thread (Playwright may hold this thread's).
    """
    import asyncio
    import json
    import uuid
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def read(conn) -> tuple[dict, str] | None:
        frames = []
        for _ in range(3):
            frame = await conn.read_message()
            if frame is None:
                return None
            frames.append(frame)
        header = json.loads(frames[0])
        for _ in range(2 * int(header.get("num_buffers") or 0)):  # a buffer's header and payload
            if await conn.read_message() is None:
                return None
        content = frames[2]
        return header, content.decode() if isinstance(content, bytes) else content

    async def talk() -> BokehExchange:
        parts = urlsplit(page_url)
        request = HTTPRequest(
            page_url.replace("http://", "ws://").rstrip("/") + "/ws",
            headers={"Origin": origin or f"{parts.scheme}://{parts.netloc}"},
            connect_timeout=120,
            request_timeout=120,
        )
        conn = await websocket_connect(request, subprotocols=["bokeh", token], max_message_size=1 << 30)
        messages: list[tuple[dict, str]] = []
        message = await asyncio.wait_for(read(conn), 120)
        if message is not None:
            messages.append(message)
        for msgtype, content in requests_:
            if message is None:
                break
            msgid = uuid.uuid4().hex
            for part in (json.dumps({"msgid": msgid, "msgtype": msgtype}), "{}", content):
                await conn.write_message(part)
            while (message := await asyncio.wait_for(read(conn), 120)) is not None:
                messages.append(message)
                if message[0].get("reqid") == msgid:
                    break
        deadline = time.monotonic() + keep
        while message is not None and (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(read(conn), left)
            except TimeoutError:
                break
            if message is not None:
                messages.append(message)
        conn.close()
        return BokehExchange(messages, conn.close_code, conn.close_reason)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, talk()).result(timeout=600)
