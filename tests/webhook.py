"""A local webhook receiver for the alert tests: records every POST, and answers with scripted failures first."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class WebhookReceiver:
    """``with WebhookReceiver(fail=2) as hook``: ``hook.url`` answers 500 to the first ``fail`` POSTs, then 200;
    ``hook.received`` holds the JSON bodies of the accepted ones, ``hook.attempts`` every POST's."""

    def __init__(self, fail: int = 0, path: str = "/services/T000/B000/secret-token-1234") -> None:
        self.fail = fail
        self.received: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                with receiver._lock:
                    receiver.attempts.append(body)
                    refuse = len(receiver.attempts) <= receiver.fail
                    if not refuse:
                        receiver.received.append(body)
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def states(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(body["rule"], body["state"]) for body in self.received]
