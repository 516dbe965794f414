"""Over stdio, with the MCP SDK's own client: `check_budget` against a `tools/list` round trip on the same server,
and the time from spawn to the `initialize` answer against a bare MCP SDK server (bare_mcp_server.py).

    python benchmarks/stdio_bench.py [--quick]    # standalone; `make bench` runs it too

Both servers are spawned the same way (this Python, `-m budget_mcp serve` or the bare script, the SDK's
default environment plus the ledger and price cache in a temporary folder), alternately, after one
warm-up spawn each; a spawn is timed from before the client starts the process to the end of the
`initialize` handshake (`mode="legacy"`). Round trips alternate the two requests; the client's
response cache is off, so every `tools/list` reaches the server.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

BUDGET_MCP = [sys.executable, "-m", "budget_mcp", "serve"]
BARE = [sys.executable, str(Path(__file__).with_name("bare_mcp_server.py"))]
CHECK = {"budget_id": "bench/agent", "estimated_cost_usd": "0.01"}


@asynccontextmanager
async def connected(command: list[str], folder: Path, errlog: TextIO) -> AsyncIterator[Client]:
    env = {"BUDGET_MCP_DB": str(folder / "stdio.db"), "BUDGET_MCP_PRICES_CACHE": str(folder / "prices")}
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
        yield client


async def spawn_seconds(command: list[str], folder: Path, errlog: TextIO) -> float:
    started = time.perf_counter()
    async with connected(command, folder, errlog) as client:
        elapsed = time.perf_counter() - started
        assert client.server_info is not None
    return elapsed


async def spawn_times(folder: Path, rounds: int, errlog: TextIO) -> tuple[float, ...]:
    """Medians (s) of spawn-to-initialize for budget-mcp and for the bare server; per-round ratios' median, min, max."""
    await spawn_seconds(BUDGET_MCP, folder, errlog)  # warm-up: file cache, .pyc files, the ledger created
    await spawn_seconds(BARE, folder, errlog)
    ours: list[float] = []
    bare: list[float] = []
    for i in range(rounds):
        if i % 2:
            bare.append(await spawn_seconds(BARE, folder, errlog))
            ours.append(await spawn_seconds(BUDGET_MCP, folder, errlog))
        else:
            ours.append(await spawn_seconds(BUDGET_MCP, folder, errlog))
            bare.append(await spawn_seconds(BARE, folder, errlog))
    ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
    return statistics.median(ours), statistics.median(bare), statistics.median(ratios), ratios[0], ratios[-1]


async def round_trips(folder: Path, samples: int, errlog: TextIO) -> tuple[float, float]:
    """p50s (ms) of a `check_budget` call and of a `tools/list` request, alternated on one budget-mcp server."""
    async with connected(BUDGET_MCP, folder, errlog) as client:
        for budget_id, limit in (("bench", "1000000"), ("bench/agent", "1000")):
            created = await client.call_tool("allocate", {"budget_id": budget_id, "limit_usd": limit})
            assert not created.is_error, created.content

        async def check() -> None:
            result = await client.call_tool("check_budget", CHECK)
            assert not result.is_error and result.structured_content, result.content

        async def list_tools() -> None:
            assert (await client.list_tools(cache_mode="bypass")).tools

        for _ in range(30):  # warm-up
            await check()
            await list_tools()
        times: dict[str, list[float]] = {"check": [], "list": []}
        for _ in range(samples):
            for name, call in (("check", check), ("list", list_tools)):
                started = time.perf_counter()
                await call()
                times[name].append((time.perf_counter() - started) * 1000)
    return statistics.median(times["check"]), statistics.median(times["list"])


async def measure(folder: Path, quick: bool) -> dict[str, float]:
    with (folder / "servers.log").open("w") as errlog:
        ours, bare, spawn_ratio, lowest, highest = await spawn_times(folder, 10 if quick else 30, errlog)
        check, listing = await round_trips(folder, 200 if quick else 1000, errlog)
    return {
        "spawn_ours_s": ours, "spawn_bare_s": bare, "spawn_ratio": spawn_ratio,
        "spawn_lowest": lowest, "spawn_highest": highest,
        "check_ms": check, "list_ms": listing, "check_ratio": check / listing,
    }  # fmt: skip


def describe(found: dict[str, float]) -> list[str]:
    return [
        f"stdio check_budget p50 {found['check_ms']:.3f} ms, tools/list p50 {found['list_ms']:.3f} ms: "
        f"{found['check_ratio']:.2f}x",
        f"stdio spawn to initialize: budget-mcp {found['spawn_ours_s'] * 1000:.0f} ms, bare SDK server "
        f"{found['spawn_bare_s'] * 1000:.0f} ms (medians); median per-round ratio {found['spawn_ratio']:.2f}x "
        f"(lowest-highest {found['spawn_lowest']:.2f}-{found['spawn_highest']:.2f}x)",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer spawns and round trips")
    quick = parser.parse_args().quick
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(describe(asyncio.run(measure(Path(tmp), quick)))))
