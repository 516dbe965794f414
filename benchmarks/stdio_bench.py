"""Over stdio, with the MCP SDK's own client: `check_budget` against a `tools/list` round trip on the same server,
and the time from spawn to the `initialize` answer against a bare MCP SDK server (bare_mcp_server.py).

    python benchmarks/stdio_bench.py [--quick]    # standalone; `make bench` runs it too

Both servers are spawned the same way (this Python, `-m budget_mcp serve` or the bare script, the SDK's
default environment plus the ledger and price cache in a temporary folder), alternately, after one
warm-up spawn each; a spawn is timed from before the client starts the process to the end of the
`initialize` handshake (`mode="legacy"`), and on to the answer of a first `tools/list`: budget-mcp builds
its tools' schemas when a request first needs one, so that is where their cost shows. Round trips
alternate the two requests; the client's response cache is off, so every `tools/list` reaches the server.
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


async def spawn_seconds(command: list[str], folder: Path, errlog: TextIO) -> tuple[float, float]:
    """Seconds from spawn to the `initialize` answer, and to the answer of the first `tools/list` after it."""
    started = time.perf_counter()
    async with connected(command, folder, errlog) as client:
        initialized = time.perf_counter() - started
        assert client.server_info is not None
        assert (await client.list_tools(cache_mode="bypass")).tools
        listed = time.perf_counter() - started
    return initialized, listed


async def spawn_times(folder: Path, rounds: int, errlog: TextIO) -> dict[str, float]:
    """Spawn-to-initialize and spawn-to-first-tools/list medians (s) of budget-mcp and of the bare server, and the
    per-round ratios' median (min and max for initialize), the two servers spawned in turn."""
    await spawn_seconds(BUDGET_MCP, folder, errlog)  # warm-up: file cache, .pyc files, the ledger created
    await spawn_seconds(BARE, folder, errlog)
    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for i in range(rounds):
        if i % 2:
            bare.append(await spawn_seconds(BARE, folder, errlog))
            ours.append(await spawn_seconds(BUDGET_MCP, folder, errlog))
        else:
            ours.append(await spawn_seconds(BUDGET_MCP, folder, errlog))
            bare.append(await spawn_seconds(BARE, folder, errlog))
    ratios = sorted(o[0] / b[0] for o, b in zip(ours, bare, strict=True))
    listed_ratios = [o[1] / b[1] for o, b in zip(ours, bare, strict=True)]
    return {
        "spawn_ours_s": statistics.median(o[0] for o in ours), "spawn_bare_s": statistics.median(b[0] for b in bare),
        "spawn_ratio": statistics.median(ratios), "spawn_lowest": ratios[0], "spawn_highest": ratios[-1],
        "listed_ours_s": statistics.median(o[1] for o in ours), "listed_bare_s": statistics.median(b[1] for b in bare),
        "listed_ratio": statistics.median(listed_ratios),
    }  # fmt: skip


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
        spawns = await spawn_times(folder, 10 if quick else 30, errlog)
        check, listing = await round_trips(folder, 200 if quick else 1000, errlog)
    return {**spawns, "check_ms": check, "list_ms": listing, "check_ratio": check / listing}


def describe(found: dict[str, float]) -> list[str]:
    return [
        f"stdio check_budget p50 {found['check_ms']:.3f} ms, tools/list p50 {found['list_ms']:.3f} ms: "
        f"{found['check_ratio']:.2f}x",
        f"stdio spawn to initialize: budget-mcp {found['spawn_ours_s'] * 1000:.0f} ms, bare SDK server "
        f"{found['spawn_bare_s'] * 1000:.0f} ms (medians); median per-round ratio {found['spawn_ratio']:.2f}x "
        f"(lowest-highest {found['spawn_lowest']:.2f}-{found['spawn_highest']:.2f}x)",
        f"stdio spawn to the first tools/list answer (budget-mcp builds its tools then): budget-mcp "
        f"{found['listed_ours_s'] * 1000:.0f} ms, bare {found['listed_bare_s'] * 1000:.0f} ms; median ratio "
        f"{found['listed_ratio']:.2f}x",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer spawns and round trips")
    quick = parser.parse_args().quick
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(describe(asyncio.run(measure(Path(tmp), quick)))))
