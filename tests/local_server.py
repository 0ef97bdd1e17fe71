"""Plumbing of the local OpenAI-compatible servers the tests start on 127.0.0.1 (generation and judge tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer(ThreadingHTTPServer):
    """A threading HTTP server on a free 127.0.0.1 port; request bodies are kept in `requests`, their
    Authorization headers in `authorizations`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def url_with_credentials(self, userinfo: str) -> str:
        """The base URL with user:password credentials in it, as some proxies and gateways take them."""
        return self.base_url.replace("http://", f"http://{userinfo}@")


class JSONHandler(BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold the thread for longer

    def read_json(self) -> dict:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            self.server.authorizations.append(self.headers.get("Authorization"))
        return body

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chat_completion(self, model: str, choices: list[dict]) -> None:
        self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": model, "choices": choices})

    def log_message(self, *args):
        pass


@contextmanager
def serving(server: LocalServer) -> Iterator[LocalServer]:
    """Serve in a background thread for the duration of the block, then shut down and join."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
