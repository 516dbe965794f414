"""Import benchmark: rows/s of `budget-mcp import hal0` against a raw sqlite3 executemany of the same rows.

    python benchmarks/import_bench.py            # a 100,000-row hal0 file, 3 rounds each
    python benchmarks/import_bench.py --quick    # 20,000 rows, 1 round

Both sides read and parse the same file and store the same entry rows (the import's ids, nano-USD, columns)
into a fresh ledger file with the same schema and indexes, WAL journal and synchronous=FULL. The raw side
does nothing else (one transaction, no checks, no running totals); the import checks the whole file first,
then stores it in batches with the running totals, through the engine. They take turns; medians are compared.
"""

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.money import to_nanos
from budget_mcp.importers import Importer, entry_id, open_source
from budget_mcp.ledger.codec import to_us

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
COLUMNS = (
    "entry_id, kind, budget_id, at_us, cost_nanos, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, reasoning_tokens, model, provider, price_source, reservation_id, idempotency_key, metadata"
)


def write_file(path: Path, rows: int) -> None:
    start = NOW - timedelta(seconds=30 * rows)
    with path.open("w") as f:
        for i in range(rows):
            ts = (start + timedelta(seconds=30 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(
                f'{{"ts": "{ts}", "persona_id": "bench", "surface": "api", "model": "gpt-4o-mini", '
                f'"cost_usd": {("0.000125", "0.0042", "0.013")[i % 3]}, "request_id": "req-{i}"}}\n'
            )


async def fresh_ledger(path: Path) -> None:
    ledger = await open_ledger(path)
    await ledger.close()


def raw_insert(source: Path, db: Path) -> float:
    """Seconds to parse the file and executemany its entry rows in one durable transaction."""
    asyncio.run(fresh_ledger(db))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    started = time.perf_counter()
    rows = []
    with source.open("rb") as f:
        for line in f:
            row = json.loads(line, parse_float=Decimal)
            at = datetime.fromisoformat(row["ts"])
            key = row["request_id"]
            rows.append((
                entry_id("hal0", key, at), "charge", "hal0/bench", to_us(at), to_nanos(row["cost_usd"]), 0, 0, 0, 0, 0,
                row["model"], None, "import:hal0", None, f"hal0:{key}", None,
            ))  # fmt: skip
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO entries ({COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


async def engine_import(source: Path, db: Path) -> float:
    """Seconds for the import through the engine (its budgets created on the way)."""
    ledger = await open_ledger(db)
    engine = BudgetEngine(ledger, PriceCatalog(), lambda: NOW)
    started = time.perf_counter()
    summary = await Importer(engine, open_source("hal0", source, naive_zone=UTC)).run()
    elapsed = time.perf_counter() - started
    assert await ledger.reconcile() == []
    await ledger.close()
    assert summary.imported == summary.read
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, one round")
    args = parser.parse_args()
    rows, rounds = (20_000, 1) if args.quick else (100_000, 3)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "spend.jsonl"
        write_file(source, rows)
        raw, imported = [], []
        for n in range(rounds):
            raw.append(raw_insert(source, Path(folder) / f"raw{n}.db"))
            imported.append(asyncio.run(engine_import(source, Path(folder) / f"import{n}.db")))
    raw_rate, import_rate = rows / statistics.median(raw), rows / statistics.median(imported)
    print(f"hal0 file of {rows:,} rows, {rounds} rounds, medians")
    print(f"raw sqlite3 executemany: {raw_rate:>10,.0f} rows/s")
    print(f"budget-mcp import:       {import_rate:>10,.0f} rows/s  ({import_rate / raw_rate:.2f}x the raw insert)")


if __name__ == "__main__":
    main()
