"""The real `budget-mcp serve` process over stdio, streamable HTTP and SSE, with and without a token."""

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.servers import EXE, free_port, server_env, serving

pytestmark = pytest.mark.anyio


async def session_round_trip(client: Client) -> None:
    created = await client.call_tool("allocate", {"budget_id": "acme", "limit_usd": "10"})
    assert not created.is_error, created.content
    checked = await client.call_tool("check_budget", {"budget_id": "acme", "estimated_cost_usd": "2", "reserve": True})
    assert checked.structured_content and checked.structured_content["allowed"]
    charged = await client.call_tool(
        "charge",
        {"budget_id": "acme", "cost_usd": "1.5", "reservation_id": checked.structured_content["reservation_id"]},
    )
    assert charged.structured_content and charged.structured_content["spent_usd"] == "1.500000"


async def test_stdio_server(tmp_path: Path) -> None:
    params = StdioServerParameters(command=EXE, args=["serve"], env=server_env(tmp_path / "ledger.db"))
    async with Client(params) as client:
        await session_round_trip(client)


def test_a_lone_surrogate_over_stdio_gets_an_answer(tmp_path: Path) -> None:
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }  # fmt: skip
    lines = [
        json.dumps(initialize),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/call",'
        ' "params": {"name": "get_budget", "arguments": {"budget_id": "\\ud800"}}}',
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    ]
    process = subprocess.Popen(
        [EXE, "serve"], env=server_env(tmp_path / "ledger.db"), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdin and process.stdout
    replies: dict[int, Any] = {}
    answers: queue.Queue[str] = queue.Queue()
    output = process.stdout

    def read_answers() -> None:
        for line in output:
            answers.put(line)

    threading.Thread(target=read_answers, daemon=True).start()
    try:
        process.stdin.write("\n".join(lines) + "\n")
        process.stdin.flush()
        while 3 not in replies:  # the ping comes after the surrogate: its answer means that one was answered or lost
            reply = json.loads(answers.get(timeout=30))
            replies[reply["id"]] = reply
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()
    assert sorted(replies) == [1, 2, 3]
    assert replies[2]["result"]["isError"] and "budget_id '\ufffd' has an invalid segment" in str(replies[2])


async def test_streamable_http_without_token(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db") as base:
        async with Client(f"{base}/mcp") as client:
            await session_round_trip(client)


async def test_sse_transport(tmp_path: Path) -> None:
    with serving("sse", tmp_path / "ledger.db") as base:
        async with Client(sse_client(f"{base}/sse")) as client:
            await session_round_trip(client)


async def test_streamable_http_requires_the_token_when_set(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db", BUDGET_MCP_TOKEN="s3cret-token") as base:
        health = httpx2.get(f"{base}/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx2.post(f"{base}/mcp", json=initialize, headers=headers)
            assert refused.status_code == 401
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret-token"}, timeout=30) as http:
            async with Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                await session_round_trip(client)


async def test_foreign_host_header_is_refused(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db") as base:
        response = httpx2.post(
            f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Host": "evil.example:80"}
        )
    assert response.status_code == 421


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    refused = subprocess.run(
        [EXE, "serve", "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())],
        env=server_env(tmp_path / "ledger.db"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0 without a token" in refused.stderr


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is needed for the MCP Inspector CLI")
def test_mcp_inspector_cli_calls_check_budget(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    subprocess.run([EXE, "budgets", "set", "acme", "--limit-usd", "10", "--db", str(db)], check=True, timeout=60)
    inspector = [
        "npx", "-y", "@modelcontextprotocol/inspector@2.12.0", "--cli", "-q", "--format", "json",
        "-e", f"BUDGET_MCP_DB={db}", "--method", "tools/call", "--tool-name", "check_budget",
        "--tool-args-json", json.dumps({"budget_id": "acme", "estimated_cost_usd": "2.5"}),
        "--", EXE, "serve",
    ]  # fmt: skip
    done = subprocess.run(inspector, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)["result"]
    assert answer["isError"] is False
    assert answer["structuredContent"]["allowed"] is True
    assert answer["structuredContent"]["remaining_usd"] == "10.000000"
    assert answer["content"][0]["text"].startswith("allowed: $2.50 estimated, $10.00 left in acme")
