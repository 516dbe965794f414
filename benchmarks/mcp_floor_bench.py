"""The MCP SDK's own round trip over streamable HTTP: the floor under the remote guard (two round trips a call).

    python benchmarks/mcp_floor_bench.py [--calls N]

The SDK's `Client` against a bare MCP SDK server with one `echo` tool (`tools/list`, `tools/call`), then against a
served budget-mcp (`tools/list`, `check_budget`), each on loopback, one client, p50 of N calls after a warm-up.
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import free_port, serving

TOKEN = "bench-token-0123456789abcdef"
BARE_HTTP = """
import sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    return text


server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), streamable_http_path="/mcp")
"""


async def p50(url: str, call: Callable[[Client], Awaitable[Any]], calls: int) -> float:
    """The median of `calls` timed calls (ms) on one SDK client session, after 30 untimed ones."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            for _ in range(30):
                await call(client)
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                await call(client)
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=0.5)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bare_http.py"
        script.write_text(BARE_HTTP)
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, str(script), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            wait_until_up(url)
            bare_list = await p50(url, lambda c: c.list_tools(), calls)
            bare_call = await p50(url, lambda c: c.call_tool("echo", {"text": "x"}), calls)
        finally:
            bare.terminate()
            bare.wait(timeout=20)
        with serving("http", Path(tmp) / "ledger.db", BUDGET_MCP_TOKEN=TOKEN) as base:
            httpx2.post(
                f"{base}/api/v1/allocate", json={"budget_id": "bench"}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            ours_list = await p50(f"{base}/mcp", lambda c: c.list_tools(), calls)
            check = {"budget_id": "bench", "estimated_cost_usd": "0.01"}
            ours_check = await p50(f"{base}/mcp", lambda c: c.call_tool("check_budget", check), calls)
    print(f"{calls} calls each, the SDK's client over streamable HTTP on loopback, ms p50")
    print(f"bare MCP SDK server   tools/list {bare_list:7.3f}   tools/call echo         {bare_call:7.3f}")
    print(f"budget-mcp            tools/list {ours_list:7.3f}   tools/call check_budget {ours_check:7.3f}")
    print(f"a remote guarded call makes two round trips: at least {2 * bare_call:.3f} ms on this SDK (target 3 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(main(parser.parse_args().calls))
