"""No client can stall or slow the others: one that stops reading its notifications, slow senders of request
heads and bodies. Real `budget-mcp serve` processes on loopback, raw sockets for the misbehaving clients."""

import socket
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from tests.servers import serving

pytestmark = pytest.mark.anyio

LEGACY = "2025-11-25"


def legacy_session(base: str, uris: list[str]) -> str:
    """A 2025-11-25 session that initialized and subscribed to `uris`; its id."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    def post(message: dict[str, object], session: str | None = None) -> httpx2.Response:
        extra = {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY} if session else {}
        return httpx2.post(f"{base}/mcp", json=message, headers={**headers, **extra}, timeout=10)

    init = post({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "stuck", "version": "1"}},
    })  # fmt: skip
    session = init.headers["mcp-session-id"]
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    for n, uri in enumerate(uris, start=2):
        assert post(
            {"jsonrpc": "2.0", "id": n, "method": "resources/subscribe", "params": {"uri": uri}}, session
        ).is_success
    return session


def never_reading_stream(base: str, session: str) -> socket.socket:
    """Open the session's GET /mcp event stream on a socket with a tiny receive buffer, and never read it."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: {LEGACY}\r\n\r\n".encode()
    )
    return sock


async def test_a_client_that_never_reads_its_notifications_stalls_no_writer(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db") as base:
        async with Client(f"{base}/mcp") as client:
            await client.call_tool("allocate", {"budget_id": "acme"})
            uris = ["budget://budgets", "budget://budgets/acme", "budget://reports/acme", "budget://ledger/acme"]
            stuck = never_reading_stream(base, legacy_session(base, uris))
            try:
                for _ in range(5_000):
                    with anyio.fail_after(10):  # a guard against a stall, not a timing assertion
                        charged = await client.call_tool("charge", {"budget_id": "acme", "cost_usd": "0.001"})
                    assert not charged.is_error, charged.content
                status = await client.call_tool("get_budget", {"budget_id": "acme"})
            finally:
                stuck.close()
    assert (status.structured_content or {})["spent_usd"] == "5.000000"


async def test_slow_request_heads_and_bodies_are_shed_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db", BUDGET_MCP_READ_TIMEOUT="1") as base:
        host, port = base.removeprefix("http://").split(":")
        heads = []
        for _ in range(150):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")  # and never the rest
            heads.append(sock)
        trickle = socket.create_connection((host, int(port)))
        trickle.sendall(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
        )
        try:
            async with Client(f"{base}/mcp") as client:  # served meanwhile
                assert not (await client.call_tool("allocate", {"budget_id": "acme"})).is_error
            with anyio.fail_after(20):
                closed = [await hung_up(sock) for sock in [*heads, trickle]]
            health = httpx2.get(f"{base}/health", timeout=5)
        finally:
            for sock in [*heads, trickle]:
                sock.close()
    assert closed == [True] * 151 and health.status_code == 200


async def hung_up(sock: socket.socket) -> bool:
    """Wait until the server closes this connection, trickling a byte of body now and then meanwhile."""
    sock.setblocking(False)
    while True:
        try:
            if sock.recv(65536) == b"":
                return True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return True
        try:
            sock.send(b"x")
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return True
        await anyio.sleep(0.1)
