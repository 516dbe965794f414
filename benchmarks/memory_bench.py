"""Memory: the engine's resident size after its ledger grows to 1M entries, against its own size at start, and
the ledger file's size at 1M entries.

    python benchmarks/memory_bench.py [--entries N] [--quick]    # standalone; `make bench` runs it too

A child process opens the engine on a ledger holding only its budgets, makes real charges, checks and
reserve-then-charge pairs, asks for a status and the latest 100 ledger entries (the budget://ledger resource),
and reads its VmRSS from /proc/self/status (the start). This process then
appends the history (`seed_history`: priced charges shaped like the ones the engine writes, one a minute
going back, with their hourly and daily totals) while the child waits, and the child goes on with the
same work on the grown ledger (its next decisions see every seeded entry) and reads VmRSS again.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.ledger.codec import to_us

PRICE_SOURCE = "openai/gpt-4o (genai-prices 0.2.3)"


def seed_history(path: Path, entries: int) -> None:
    """Append `entries` past charges (one a minute, going back) to bench/agent, with their hourly totals.

    Each row is shaped like a priced charge the engine writes (random chg_ id, model, provider, price source,
    tokens), so the file size is what a ledger of real charges would take. Totals: hourly and daily windows
    of bench/agent and bench (the windows the seeding reaches; current windows already written are kept).
    """
    now = datetime.now(UTC)
    stamps = [to_us(now - timedelta(minutes=i + 1)) for i in range(entries)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rows = (
        (f"chg_{os.urandom(12).hex()}", "charge", "bench/agent", at_us, 3_000_000, 1000, 50, 0, 0, 0,
         "gpt-4o", "openai", PRICE_SOURCE)
        for at_us in stamps
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO entries (entry_id, kind, budget_id, at_us, cost_nanos, input_tokens, output_tokens, "
        "cache_read_tokens, cache_write_tokens, reasoning_tokens, model, provider, price_source) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    for period, seconds in (("hourly", 3600), ("daily", 86_400)):
        windows: dict[int, int] = {}
        for at_us in stamps:
            start = (at_us // 1_000_000 // seconds) * seconds
            windows[start] = windows.get(start, 0) + 1
        conn.executemany(
            "INSERT OR IGNORE INTO totals VALUES (?, ?, ?, ?, ?, ?)",
            ((budget, period, start, calls * 3_000_000, calls * 1050, calls)
             for budget in ("bench", "bench/agent") for start, calls in windows.items()),
        )  # fmt: skip
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def allocate(path: Path) -> None:
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate("bench", limit_usd="100000000")
    await engine.allocate("bench/agent", limit_usd="10000000")
    await ledger.close()


def rss_kb() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def child(path: Path, work: int) -> None:
    """The measured process: work, report RSS, wait for the history to be seeded, work again, report RSS."""
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())

    async def workload() -> dict[str, int]:
        for _ in range(work):
            await engine.charge("bench/agent", model="gpt-4o", input_tokens=1000, output_tokens=50)
            await engine.check("bench/agent", model="gpt-4o", input_tokens=1000, max_output_tokens=100)
        for _ in range(work // 4):
            held = await engine.check("bench/agent", estimated_cost_usd="0.01", reserve=True)
            await engine.charge("bench/agent", cost_usd="0.005", reservation_id=held.reservation_id)
        await engine.status("bench/agent")
        decided = rss_kb()["VmRSS"]  # after the decisions alone, before the listing (budget://ledger)
        await engine.ledger_entries("bench/agent", limit=100)
        return {**rss_kb(), "decided": decided}

    print(json.dumps(await workload()), flush=True)
    sys.stdin.readline()
    print(json.dumps(await workload()), flush=True)
    await ledger.close()


async def measure(path: Path, entries: int, work: int = 500) -> dict[str, float]:
    """RSS at start and after `entries` entries (kB), their ratio, and the ledger file's size (MB) after.

    Blocks the event loop while it waits for the child (a benchmark runs nothing else meanwhile)."""
    await allocate(path)
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(path), "--work", str(work)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdin and process.stdout
    try:
        start = json.loads(process.stdout.readline())
        seed_history(path, entries)
        process.stdin.write("go\n")
        process.stdin.flush()
        after = json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        assert process.wait(timeout=120) == 0
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return {
        "entries": entries,
        "rss_start_kb": start["VmRSS"],
        "rss_after_kb": after["VmRSS"],
        "hwm_after_kb": after["VmHWM"],
        "decided_ratio": after["decided"] / start["decided"],
        "rss_ratio": after["VmRSS"] / start["VmRSS"],
        "file_mb": size / 1e6,
    }


def describe(found: dict[str, float]) -> str:
    return (
        f"engine RSS at start {found['rss_start_kb'] / 1024:.1f} MB, after {found['entries']:,.0f} entries "
        f"{found['rss_after_kb'] / 1024:.1f} MB (peak {found['hwm_after_kb'] / 1024:.1f} MB): "
        f"{found['rss_ratio']:.2f}x (before the ledger listing, after charges, checks and pairs alone: "
        f"{found['decided_ratio']:.2f}x); ledger file {found['file_mb']:.0f} MB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k entries")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=int, default=500, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        asyncio.run(child(options.child, options.work))
    else:
        with tempfile.TemporaryDirectory() as folder:
            entries = 100_000 if options.quick else options.entries
            print(describe(asyncio.run(measure(Path(folder) / "memory.db", entries))))
