"""A real HTTP server on 127.0.0.1, in a thread, for tests: routes answer what the test sets, requests are recorded."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """What a route answers; `hang` makes it wait until the server stops."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang: bool = False


Route = Callable[[Request], Reply]


@dataclass
class Loopback:
    """Routes by (method, path); an unknown route answers 404."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _stopping: threading.Event = field(default_factory=threading.Event)

    def serve(self, path: str, body: bytes | str, status: int = 200, method: str = "GET") -> None:
        """Answer `path` with a fixed body."""
        data = body.encode() if isinstance(body, str) else body
        self.routes[(method, path)] = lambda _: Reply(status, data)

    def route(self, method: str, path: str, handler: Route) -> None:
        """Answer `path` with whatever `handler` returns for the request."""
        self.routes[(method, path)] = handler

    def received(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@contextmanager
def loopback_server() -> Iterator[Loopback]:
    """Start a Loopback on a free port; stop it (and release hanging replies) on exit."""
    server_state = Loopback()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            request = Request(
                self.command, split.path, parse_qs(split.query), dict(self.headers), self.rfile.read(length)
            )
            server_state.requests.append(request)
            route = server_state.routes.get((self.command, split.path))
            reply = route(request) if route else Reply(404, b'{"detail": "not found"}')
            if reply.hang:
                server_state._stopping.wait(30)
                return
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server_state._stopping.set()
        httpd.shutdown()
        httpd.server_close()
