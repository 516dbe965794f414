"""Ledger benchmark: engine charge throughput and check latency, against a raw sqlite3 baseline in the same run.

    python benchmarks/ledger_bench.py            # full run (1k, 100k and 1M entries)
    python benchmarks/ledger_bench.py --quick    # smaller sizes, for a smoke run

Durability is the same on both sides: WAL journal, synchronous=FULL, one BEGIN IMMEDIATE per charge.
"""

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.ledger.codec import to_us


def raw_baseline(path: Path, charges: int) -> float:
    """Charges per second of a bare sqlite3 loop: one insert and one running-total update per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, budget_id TEXT, at_us INTEGER, cost_nanos INTEGER)")
    conn.execute("CREATE TABLE totals (budget_id TEXT PRIMARY KEY, spent_nanos INTEGER)")
    conn.execute("INSERT INTO totals VALUES ('bench', 0)")
    started = time.perf_counter()
    for _ in range(charges):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO entries (budget_id, at_us, cost_nanos) VALUES ('bench', 0, 1000)")
        conn.execute("UPDATE totals SET spent_nanos = spent_nanos + 1000 WHERE budget_id = 'bench'")
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return charges / elapsed


async def engine_throughput(path: Path, charges: int, concurrency: int) -> float:
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate("bench", limit_usd="1000000")
    await engine.allocate("bench/agent", limit_usd="1000")
    per_task = charges // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await engine.charge("bench/agent", cost_usd="0.000001")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert await ledger.reconcile() == []
    await ledger.close()
    return per_task * concurrency / elapsed


def seed_history(path: Path, entries: int) -> None:
    """Append `entries` past charges (one a minute, going back) to bench/agent, with their hourly totals."""
    now = datetime.now(UTC)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rows = (
        (f"seed_{i}", "charge", "bench/agent", to_us(now - timedelta(minutes=i + 1)), 1000, 1, 1, 0, 0, 0)
        for i in range(entries)
    )
    conn.executemany(
        "INSERT INTO entries (entry_id, kind, budget_id, at_us, cost_nanos, input_tokens, output_tokens, "
        "cache_read_tokens, cache_write_tokens, reasoning_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    hours = {(to_us(now - timedelta(minutes=i + 1)) // 3_600_000_000) * 3600 for i in range(entries)}
    conn.executemany(
        "INSERT OR IGNORE INTO totals VALUES ('bench/agent', 'hourly', ?, 60000, 120, 60)", ((h,) for h in hours)
    )
    conn.execute("COMMIT")
    conn.close()


async def check_latency(path: Path, entries: int, samples: int) -> tuple[float, float]:
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate("bench", limit_usd="1000000")
    await engine.allocate("bench/agent", limit_usd="1000")
    await ledger.close()
    seed_history(path, entries)
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    for _ in range(50):  # warm-up
        await engine.check("bench/agent", estimated_cost_usd="0.01")
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        await engine.check("bench/agent", estimated_cost_usd="0.01")
        timings.append((time.perf_counter() - started) * 1000)
    await ledger.close()
    quantiles = statistics.quantiles(timings, n=100)
    return quantiles[49], quantiles[98]


async def main(quick: bool) -> None:
    charges = 1000 if quick else 4000
    sizes = [1_000, 10_000] if quick else [1_000, 100_000, 1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        baseline = raw_baseline(base / "raw.db", charges)
        sequential = await engine_throughput(base / "seq.db", charges // 4, 1)
        concurrent = await engine_throughput(base / "conc.db", charges, 32)
        print(f"raw sqlite3 baseline      {baseline:9.0f} charges/s")
        print(f"engine, sequential        {sequential:9.0f} charges/s   ratio {sequential / baseline:.2f}x")
        ratio = concurrent / baseline
        print(f"engine, 32 concurrent     {concurrent:9.0f} charges/s   ratio {ratio:.2f}x (target >= 0.5x)")
        latencies = {}
        for size in sizes:
            latencies[size] = await check_latency(base / f"check_{size}.db", size, 2000)
            p50, p99 = latencies[size]
            print(f"check at {size:>9,} entries   p50 {p50:.3f} ms   p99 {p99:.3f} ms")
        first, last = sizes[0], sizes[-1]
        ratio = latencies[last][0] / latencies[first][0]
        print(f"check p50 at {last:,} / at {first:,} entries: {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
