"""Serving over HTTP: the streamable HTTP or SSE app under uvicorn, with Hermes registration beside it.

Hermes runs in the web app's lifespan, once per process, and not in the MCP lifespan: with SSE
the SDK enters that one once per connection. Registration never delays start-up (it runs in the
background), and the entry is removed during shutdown, before uvicorn re-raises the stop signal.
"""

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import h11
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from budget_mcp import __version__
from budget_mcp.config import Settings
from budget_mcp.hermes import HermesClient
from budget_mcp.server.resource_server import protect

MAX_REQUEST_BYTES = 256 * 1024


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on reading each request, head and body.

    uvicorn has none: a client that connects and sends half a request head, or trickles a body a byte
    at a time, keeps its connection (and a place in the concurrency limit) for as long as it likes.
    Here a request must arrive in full within `read_timeout` seconds of its first byte (or of the
    connection opening); otherwise the connection is closed. Responses, and the event streams they
    carry, are not bounded.
    """

    read_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_deadline: asyncio.TimerHandle | None = self.loop.call_later(self.read_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        receiving = self.conn.their_state is h11.SEND_BODY or (
            self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        )
        if not receiving:
            self._stop_deadline()
        elif self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def _stop_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.logger.warning("closing a connection that took over %s s to send its request", self.read_timeout)
            self.transport.close()


CAPABILITIES = ["budget_management", "cost_tracking", "model_recommendations", "mcp"]
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[Any]]


async def serve_http(settings: Settings, server: MCPServer[Any]) -> None:
    """Serve `server` on settings.transport ('http' or 'sse') until stopped; register with Hermes if configured."""
    app = await http_app(settings, server)
    protocol = type("Protocol", (DeadlineH11Protocol,), {"read_timeout": settings.read_timeout_seconds})
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", http=protocol,
        limit_concurrency=settings.max_connections,
    )  # fmt: skip
    await uvicorn.Server(config).serve()


async def http_app(settings: Settings, server: MCPServer[Any]) -> Starlette:
    """The web app for settings.transport: streamable HTTP at /mcp or SSE at /sse, OAuth and Hermes as configured."""
    if settings.transport == "http":
        app = server.streamable_http_app(
            streamable_http_path="/mcp", host=settings.host, max_request_body_size=MAX_REQUEST_BYTES
        )
        mcp_paths = ["/mcp"]
    else:
        app = server.sse_app(host=settings.host, max_request_body_size=MAX_REQUEST_BYTES)
        mcp_paths = ["/sse", "/messages/"]
    auth = server.settings.auth
    if auth is not None and auth.resource_server_url is not None:
        protect(app, auth, mcp_paths, MAX_REQUEST_BYTES)
    if settings.hermes_url:
        tools = [tool.name for tool in await server.list_tools()]
        hermes = HermesClient(
            settings.hermes_url,
            registration(settings, tools),
            heartbeat_seconds=settings.hermes_heartbeat_seconds,
            check_seconds=settings.hermes_check_seconds,
        )
        app.router.lifespan_context = _with_hermes(app.router.lifespan_context, hermes)
    return app


def _with_hermes(lifespan: Lifespan, hermes: HermesClient) -> Lifespan:
    """The app's lifespan, plus Hermes in the background; unregistering before uvicorn hands back the signal."""

    @asynccontextmanager
    async def combined(app: Starlette) -> AsyncIterator[Any]:
        async with lifespan(app) as state, anyio.create_task_group() as tasks:
            tasks.start_soon(hermes.run)
            try:
                yield state
            finally:
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await hermes.unregister()

    return combined


def base_url(settings: Settings) -> str:
    """Where clients reach this server: BUDGET_MCP_PUBLIC_URL, or the bound address (the host name for 0.0.0.0)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = socket.gethostname() if settings.host in {"0.0.0.0", "::"} else settings.host
    return f"http://{host}:{settings.port}"


def resource_url(settings: Settings) -> str:
    """This server's `/mcp` URL: the OAuth resource it is, and the tokens' default audience."""
    return f"{base_url(settings)}/mcp"


def registration(settings: Settings, tools: list[str]) -> dict[str, Any]:
    """The body of Hermes' /api/register for this server (SPEC section 7)."""
    base = base_url(settings)
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "host"
    return {
        "component_id": f"budget-{host}-{settings.port}",
        "name": "budget",
        "version": __version__,
        "type": "budget",
        "endpoint": base,
        "capabilities": CAPABILITIES,
        "metadata": {
            "mcp_url": f"{base}/mcp" if settings.transport == "http" else None,
            "sse_url": f"{base}/sse" if settings.transport == "sse" else None,
            "tools": tools,
            "port": settings.port,
            "transport": settings.transport,
        },
    }
