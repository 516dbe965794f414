"""What the guard adds to an LLM call: the real openai SDK against a fake provider on loopback, each call made
plain and guarded in turn (so drift on the machine hits both alike), for the embedded guard on SQLite and on
PostgreSQL (a throwaway server from Debian's postgresql-15) and the remote guard on a served budget-mcp.

    python benchmarks/guard_bench.py [--calls N] [--quick]

Prints the p50 and p99 of a plain call and of a guarded one, and what the guard adds at each.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionUserMessageParam

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.guard import Guard
from tests.postgres_server import find_bin, postgres_server
from tests.providers import Usage, fake_providers
from tests.servers import serving

TOKEN = "bench-token-0123456789abcdef"
MESSAGES: list[ChatCompletionUserMessageParam] = [{"role": "user", "content": "Say hello"}]


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(plain: Callable[[], Awaitable[Any]], guarded: Callable[[], Awaitable[Any]], calls: int) -> str:
    for _ in range(20):  # warm both paths: connections, prepared statements, kept snapshots
        await plain()
        await guarded()
    times: dict[str, list[float]] = {"plain": [], "guarded": []}
    for _ in range(calls):
        for name, call in (("plain", plain), ("guarded", guarded)):
            started = time.perf_counter()
            await call()
            times[name].append((time.perf_counter() - started) * 1000)
    p = {name: (statistics.median(t), quantile(t, 0.99)) for name, t in times.items()}
    added = (p["guarded"][0] - p["plain"][0], p["guarded"][1] - p["plain"][1])
    return (
        f"{p['plain'][0]:.3f} / {p['plain'][1]:.3f} | {p['guarded'][0]:.3f} / {p['guarded'][1]:.3f} | "
        f"{added[0]:+.3f} / {added[1]:+.3f}"
    )


async def row(label: str, location: str, calls: int, base_url: str, token: str | None = None) -> None:
    if not location.startswith("http"):
        ledger = await open_ledger(location)
        await BudgetEngine(ledger, PriceCatalog()).allocate("bench", limit_usd="1000000")
        await ledger.close()
    async with (
        Guard.open(location, token=token, budget_id="bench") as guard,
        openai.AsyncOpenAI(base_url=base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client)

        async def plain_call() -> Any:
            return await client.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES)

        async def guarded_call() -> Any:
            return await guarded.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES)

        print(f"| {label} | {await measure(plain_call, guarded_call, calls)} |", flush=True)


async def main(calls: int) -> None:
    print(f"{calls} calls per line; ms: p50 / p99\n")
    print("| guard | plain call | guarded call | added |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder, fake_providers() as providers:
        providers.usage = Usage(1_000, 50)
        db = Path(folder) / "ledger.db"
        await row("embedded, SQLite", str(db), calls, providers.openai_base_url)
        if find_bin() is not None:
            with postgres_server() as dsn:
                await row("embedded, PostgreSQL", dsn, calls, providers.openai_base_url)
        else:
            print("| embedded, PostgreSQL | (skipped: postgresql-15 not installed) | | |")
        remote_db = Path(folder) / "remote.db"
        ledger = await open_ledger(remote_db)
        await BudgetEngine(ledger, PriceCatalog()).allocate("bench", limit_usd="1000000")
        await ledger.close()
        with serving("http", remote_db, BUDGET_MCP_TOKEN=TOKEN) as base:
            await row("remote, HTTP", f"{base}/mcp", calls, providers.openai_base_url, TOKEN)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="200 calls per line")
    options = parser.parse_args()
    asyncio.run(main(200 if options.quick else options.calls))
