"""The connector tier's fixtures: a real HTTP server standing in for a department's backend."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

SUBJECT = "110101199003077777"
RECORD = {"xm": "王芳", "csrq": "1990-03-07", "dz": "北京市东城区建国路1号", "hyzk": "已婚"}


@dataclass
class Provider:
    """What the test HTTP server saw: raw request paths, auth headers, the most calls at once."""

    paths: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def handler_for(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            with provider.lock:
                provider.paths.append(self.path)
                provider.auth.append(self.headers.get("Authorization"))
                provider.running += 1
                provider.most_at_once = max(provider.most_at_once, provider.running)
            try:
                self.answer(urlsplit(self.path).path.split("/"))
            finally:
                with provider.lock:
                    provider.running -= 1

        def answer(self, parts: list[str]) -> None:
            kind, subject = parts[1], unquote(parts[2])
            if kind == "slow":
                time.sleep(0.6)
            if kind == "error":
                return self.send(500, b'{"error": "database down"}')
            if kind == "text":
                return self.send(200, b"not json")
            if subject != SUBJECT:
                return self.send(404, b"{}")
            record = {k: v for k, v in RECORD.items() if not (kind == "partial" and k == "csrq")}
            if kind == "nested":
                record["dz"] = {"province": "北京"}  # type: ignore[assignment]
            if kind == "null":
                record["hyzk"] = None  # type: ignore[assignment]
            self.send(200, json.dumps(record).encode())
            return None

        def send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    """A real HTTP server on a free port, in a thread; its base URL."""
    seen = Provider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
