"""Registration with Hermes, against a fake Hermes on loopback that behaves as SPEC section 7 says the real one does."""

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from mcp import Client

from tests.loopback import Loopback, Reply, Request, loopback_server
from tests.servers import serving_process

pytestmark = pytest.mark.anyio
TOOLS = {
    "check_budget",
    "charge",
    "allocate",
    "release",
    "get_budget",
    "list_budgets",
    "estimate_cost",
    "recommend_model",
}


@dataclass
class FakeHermes:
    """Hermes' registry: entries by id, tokens that outlive a restart, 422 without the header, 401 with a bad one."""

    entries: dict[str, dict[str, object]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> component id
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, server: Loopback) -> None:
        server.route("POST", "/api/register", self.register)
        server.route("POST", "/api/heartbeat", self.heartbeat)
        server.route("GET", "/api/components", self.components)
        server.route("POST", "/api/unregister", self.unregister)

    def register(self, request: Request) -> Reply:
        body = request.json()
        token = json.dumps({"component_id": body["component_id"], "nonce": secrets.token_hex(8)})  # opaque, JSON inside
        with self.lock:
            self.entries[body["component_id"]] = body
            self.tokens[token] = body["component_id"]
        reply = {"success": True, "componentId": body["component_id"], "token": token, "message": "registered"}
        return Reply(200, json.dumps(reply).encode())

    def _caller(self, request: Request) -> tuple[Reply | None, str | None]:
        token = request.headers.get("X-Authentication-Token")
        if token is None:
            return Reply(
                422, b'{"detail": [{"loc": ["header", "x-authentication-token"], "msg": "field required"}]}'
            ), None
        with self.lock:
            owner = self.tokens.get(token)
        return (Reply(401, b'{"detail": "invalid token"}'), None) if owner is None else (None, owner)

    def heartbeat(self, request: Request) -> Reply:
        refused, _ = self._caller(request)
        return refused or Reply(200, b'{"success": true}')

    def components(self, _: Request) -> Reply:
        with self.lock:
            listed = [{"component_id": k, "name": v["name"]} for k, v in self.entries.items()]
        return Reply(200, json.dumps(listed).encode())

    def unregister(self, request: Request) -> Reply:
        refused, owner = self._caller(request)
        if refused:
            return refused
        with self.lock:
            self.entries.pop(request.query["component_id"][0], None)
        return Reply(200, b'{"success": true}')

    def restart(self) -> None:
        """Forget every entry, as a restarted Hermes does, but keep honouring the tokens it issued."""
        with self.lock:
            self.entries.clear()


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_registers_heartbeats_registers_again_after_a_restart_and_unregisters(tmp_path: Path) -> None:
    hermes = FakeHermes()
    with loopback_server() as registry:
        hermes.install(registry)
        env = {"HERMES_URL": registry.url, "HERMES_HEARTBEAT_SECONDS": "0.1", "HERMES_CHECK_SECONDS": "0.3"}
        with serving_process("http", tmp_path / "ledger.db", **env) as served:
            wait_until(lambda: len(registry.received("/api/heartbeat")) >= 2, "two heartbeats")
            first = registry.received("/api/register")[0].json()
            hermes.restart()
            wait_until(lambda: len(registry.received("/api/register")) >= 2, "registration after the restart")
            assert list(hermes.entries) == [first["component_id"]]
        port = served.base.rsplit(":", 1)[1]

    assert first["component_id"].startswith("budget-") and first["component_id"].endswith(f"-{port}")
    assert (first["name"], first["type"], first["endpoint"]) == ("budget", "budget", served.base)
    assert all(isinstance(c, str) for c in first["capabilities"]) and "budget_management" in first["capabilities"]
    assert first["metadata"]["mcp_url"] == f"{served.base}/mcp" and set(first["metadata"]["tools"]) == TOOLS
    beats = registry.received("/api/heartbeat")
    assert all(b.headers["X-Authentication-Token"] in hermes.tokens for b in beats)
    assert beats[0].json() == {
        "component_id": first["component_id"],
        "status": {"health": "healthy", "version": "0.1.0"},
    }
    goodbye = registry.received("/api/unregister")
    assert len(goodbye) == 1 and goodbye[0].query == {"component_id": [first["component_id"]]}
    assert hermes.tokens[goodbye[0].headers["X-Authentication-Token"]] == first["component_id"]
    assert hermes.entries == {}
    assert f"registered with Hermes at {registry.url} as {first['component_id']}" in served.stderr


def test_a_refused_heartbeat_leads_to_a_new_registration(tmp_path: Path) -> None:
    hermes = FakeHermes()
    with loopback_server() as registry:
        hermes.install(registry)
        env = {"HERMES_URL": registry.url, "HERMES_HEARTBEAT_SECONDS": "0.1", "HERMES_CHECK_SECONDS": "600"}
        with serving_process("sse", tmp_path / "ledger.db", **env):
            wait_until(lambda: len(registry.received("/api/heartbeat")) >= 1, "a heartbeat")
            with hermes.lock:
                hermes.tokens.clear()  # every token now gets a 401
            wait_until(lambda: len(registry.received("/api/register")) >= 2, "a new registration")
            first = registry.received("/api/register")[0].json()
    assert first["metadata"]["sse_url"].endswith("/sse") and first["metadata"]["transport"] == "sse"
    refused = [
        r for r in registry.received("/api/heartbeat") if r.headers["X-Authentication-Token"] not in hermes.tokens
    ]
    assert refused  # the 401s that led to the new registration


async def test_an_unreachable_hermes_never_delays_the_server(tmp_path: Path) -> None:
    env = {"HERMES_URL": "http://127.0.0.1:9", "HERMES_HEARTBEAT_SECONDS": "0.1"}
    with serving_process("http", tmp_path / "ledger.db", **env) as served:
        assert httpx2.get(f"{served.base}/health", timeout=2).json() == {"status": "ok"}
        async with Client(f"{served.base}/mcp") as client:
            created = await client.call_tool("allocate", {"budget_id": "acme", "limit_usd": "1"})
    assert not created.is_error
    assert "Hermes at http://127.0.0.1:9 is not reachable" in served.stderr
