"""A small HTTP server on loopback that answers like a download service, faults included.

Routes map a path to a ``Route``: the body (bytes, or a function of the request giving
bytes or JSON-able data), and faults for the first requests: a status to answer
(429, 503 ...), or a transfer cut after some bytes (the connection closes mid-file).
Range requests are honoured (206), so a client can resume. Every request is logged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    body: bytes | Callable[[dict[str, Any]], Any] = b""
    content_type: str = "application/octet-stream"
    statuses: list[int] = field(default_factory=list)  # answered first, one per request (then the body)
    cut_after: list[int | None] = field(default_factory=list)  # bytes sent before closing (None: all), one per request
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = True
    need_header: tuple[str, str] | None = None  # (name, value) the request must carry, else 401
    redirect: str | None = None  # answer 302 to this path (after any statuses)


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    body: bytes = b""


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._answer(self, "GET")

            def do_POST(self) -> None:
                server._answer(self, "POST")

            def do_HEAD(self) -> None:
                server._answer(self, "HEAD")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_to(self, path: str) -> list[Logged]:
        return [entry for entry in self.log if entry.path == path]

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        sent_body = handler.rfile.read(length) if length else b""
        entry = Logged(method, parts.path, parse_qs(parts.query), dict(handler.headers), 200, sent_body)
        self.log.append(entry)
        route = self.routes.get(parts.path)
        if route is None:
            return self._send(handler, entry, 404, b"not found", "text/plain")
        if route.need_header and handler.headers.get(route.need_header[0]) != route.need_header[1]:
            return self._send(handler, entry, 401, b"unauthorized", "text/plain")
        if route.statuses:
            status = route.statuses.pop(0)
            return self._send(handler, entry, status, b"try again", "text/plain", {"Retry-After": "0"})
        if route.redirect:
            return self._send(handler, entry, 302, b"", "text/plain", {"Location": f"{self.url}{route.redirect}"})
        body = route.body
        if callable(body):
            body = body({"method": method, "query": entry.query, "body": sent_body, "headers": dict(handler.headers)})
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        status, start = 200, 0
        wanted = handler.headers.get("Range")
        if wanted and route.ranges and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0] or 0)
            if start >= len(body):
                return self._send(handler, entry, 416, b"", route.content_type,
                                  {"Content-Range": f"bytes */{len(body)}"})
            status = 206
        headers = dict(route.headers)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        cut = route.cut_after.pop(0) if route.cut_after else None
        self._send(handler, entry, status, body[start:], route.content_type, headers, cut, method == "HEAD")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, entry: Logged, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None, cut: int | None = None, head: bool = False) -> None:
        entry.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if cut is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if head:
            return
        handler.wfile.write(body if cut is None else body[:cut])
        handler.wfile.flush()
        if cut is not None:
            handler.close_connection = True
