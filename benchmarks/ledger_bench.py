"""Ledger benchmark: every target of issue 21 as a ratio against a baseline measured in the same run.

    python benchmarks/ledger_bench.py            # full run (1k, 100k and 1M entries)
    python benchmarks/ledger_bench.py --quick    # smaller sizes, for a smoke run

Throughput runs in rounds: each round times a chunk of every contender (the order reversed every other
round, so drift on a shared machine hits all alike), and a ratio is the median of its per-round ratios.
Durability is the same on every side: one fsync per charge (WAL journal, synchronous=FULL, one
BEGIN IMMEDIATE per charge for SQLite; write, flush, os.fsync per line for the JSONL ledger).
Check latency alternates checks on ledgers of every size, open side by side. The stdio targets
(stdio_bench.py), the memory targets (memory_bench.py) and the rolling-window ones (rolling_bench.py) run
after, and one table ends the run.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory_bench
import rolling_bench
import stdio_bench
from memory_bench import seed_history

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.ids import new_entry_id
from budget_mcp.ledger import Ledger
from budget_mcp.ledger.sqlite import ADD_TO_TOTAL, INSERT_ENTRY


class RawLoop:
    """A bare sqlite3 loop: one insert and one running-total update per BEGIN IMMEDIATE transaction."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute(
            "CREATE TABLE entries (seq INTEGER PRIMARY KEY, budget_id TEXT, at_us INTEGER, cost_nanos INTEGER)"
        )
        self.conn.execute("CREATE TABLE totals (budget_id TEXT PRIMARY KEY, spent_nanos INTEGER)")
        self.conn.execute("INSERT INTO totals VALUES ('bench', 0)")

    async def run(self, charges: int) -> float:
        conn = self.conn
        started = time.perf_counter()
        for _ in range(charges):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO entries (budget_id, at_us, cost_nanos) VALUES ('bench', 0, 1000)")
            conn.execute("UPDATE totals SET spent_nanos = spent_nanos + 1000 WHERE budget_id = 'bench'")
            conn.execute("COMMIT")
        return charges / (time.perf_counter() - started)

    def close(self) -> None:
        self.conn.close()


class JsonlLedger:
    """hal0's ledger: one JSON line per charge appended to spend.jsonl, written, flushed and fsynced per charge.

    A line has hal0's fields (see budget_mcp/importers/hal0.py): ts, persona_id, surface, model, cost_usd,
    request_id."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    async def run(self, charges: int) -> float:
        file = self.file
        started = time.perf_counter()
        for n in range(charges):
            record = {
                "ts": datetime.now(UTC).isoformat(), "persona_id": "bench", "surface": "api", "model": "gpt-4o",
                "cost_usd": 0.000001, "request_id": f"req-{n}",
            }  # fmt: skip
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
        return charges / (time.perf_counter() - started)

    def close(self) -> None:
        self.file.close()


class SchemaFloor:
    """The engine's own statements for a lone charge, with no Python around them: BEGIN IMMEDIATE, the
    data_version read, one entry (its table and three indexes) and the running totals of bench/agent's path,
    COMMIT, on a ledger file the engine made. What the engine could reach on this schema if its Python cost
    nothing; the raw loop (two pages a commit) is the disk's own floor."""

    def __init__(self, conn: sqlite3.Connection, keys: list[tuple[str, str, int]]) -> None:
        self.conn, self.keys = conn, keys

    @classmethod
    async def open(cls, path: Path) -> "SchemaFloor":
        ledger, engine = await open_engine(path)
        await engine.charge("bench/agent", cost_usd="0.000001")  # the totals a charge moves now exist
        await ledger.close()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")  # the file stays in WAL mode
        keys = conn.execute("SELECT budget_id, period, window_start FROM totals").fetchall()
        return cls(conn, keys)

    async def run(self, charges: int) -> float:
        conn, at_us = self.conn, int(time.time() * 1_000_000)
        started = time.perf_counter()
        for _ in range(charges):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("PRAGMA data_version").fetchone()
            row = (new_entry_id("chg"), "charge", "bench/agent", at_us, 1000, 0, 0, 0, 0, 0, None, None, "cost_usd")
            conn.execute(INSERT_ENTRY, (*row, None, None, None))
            conn.executemany(ADD_TO_TOTAL, [(*key, 1000, 0, 1) for key in self.keys])
            conn.execute("COMMIT")
        return charges / (time.perf_counter() - started)

    def close(self) -> None:
        self.conn.close()


async def open_engine(path: Path) -> tuple[Ledger, BudgetEngine]:
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    if not await engine.budget_ids():
        await engine.allocate("bench", limit_usd="1000000")
        await engine.allocate("bench/agent", limit_usd="1000")
    return ledger, engine


async def engine_charges(engine: BudgetEngine, charges: int, concurrency: int) -> float:
    """Charges per second of `concurrency` tasks charging bench/agent, `charges` in all."""
    per_task = charges // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await engine.charge("bench/agent", cost_usd="0.000001")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - started)


async def engine_pairs(engine: BudgetEngine, pairs: int) -> float:
    """Pairs per second of check_budget(reserve=True) then charge(reservation_id=...), one after the other."""
    started = time.perf_counter()
    for _ in range(pairs):
        held = await engine.check("bench/agent", estimated_cost_usd="0.00001", reserve=True)
        assert held.allowed and held.reservation_id
        await engine.charge("bench/agent", cost_usd="0.000001", reservation_id=held.reservation_id)
    return pairs / (time.perf_counter() - started)


SPREADS = (
    ("sequential", "raw"), ("sequential", "jsonl"), ("concurrent", "raw"), ("pairs", "sequential"), ("floor", "raw"),
    ("sequential", "floor"),
)  # fmt: skip


async def throughput(base: Path, quick: bool) -> dict[str, Any]:
    rounds, chunk = (15, 100) if quick else (41, 200)  # short chunks, many rounds: a burst hits few
    raw, jsonl = RawLoop(base / "raw.db"), JsonlLedger(base / "spend.jsonl")
    floor = await SchemaFloor.open(base / "floor.db")
    engines = {name: await open_engine(base / f"{name}.db") for name in ("sequential", "concurrent", "pairs")}
    contenders: dict[str, Callable[[int], Awaitable[float]]] = {
        "raw": raw.run,
        "jsonl": jsonl.run,
        "floor": floor.run,
        "sequential": lambda n: engine_charges(engines["sequential"][1], n, 1),
        "concurrent": lambda n: engine_charges(engines["concurrent"][1], 8 * n, 32),
        "pairs": lambda n: engine_pairs(engines["pairs"][1], n // 2),
    }
    # Warm-up: connections, statements, kept snapshots, and each SQLite WAL past its first checkpoint (1000
    # pages), so every side commits into a WAL it reuses: one that still grows pays for its size change on
    # every fsync, and the raw loop (fewer pages a charge) would get there later than the engine.
    for name, run in contenders.items():
        await run(1500 if name in {"raw", "floor"} else 600)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name in list(contenders)[:: -1 if i % 2 else 1]:
            rates[name].append(await contenders[name](chunk))
    for ledger, _ in engines.values():
        assert await ledger.reconcile() == []
        await ledger.close()
    raw.close()
    jsonl.close()
    floor.close()

    def ratio(subject: str, baseline: str) -> float:
        return statistics.median(s / b for s, b in zip(rates[subject], rates[baseline], strict=True))

    def spread(subject: str, baseline: str) -> str:
        found = sorted(s / b for s, b in zip(rates[subject], rates[baseline], strict=True))
        return f"{found[0]:.2f}-{found[-1]:.2f}x"

    return {
        "rates": {name: statistics.median(found) for name, found in rates.items()},
        "per_round": rates,
        "spreads": {pair: spread(*pair) for pair in SPREADS},
        "rounds": rounds,
        "seq_raw": ratio("sequential", "raw"),
        "seq_jsonl": ratio("sequential", "jsonl"),
        "conc_raw": ratio("concurrent", "raw"),
        "pairs_seq": ratio("pairs", "sequential"),
        "floor_raw": ratio("floor", "raw"),
        "seq_floor": ratio("sequential", "floor"),
        "floor_keys": len(floor.keys),
    }


async def check_latency(
    paths: dict[int, Path], samples: int, opener: Callable[[Path], Awaitable[tuple[Ledger, BudgetEngine]]] = open_engine
) -> dict[int, tuple[float, float]]:
    """p50 and p99 (ms) of engine.check on each ledger, the ledgers open side by side and checked in turn."""
    opened = {size: await opener(path) for size, path in paths.items()}
    for _ in range(50):  # warm-up
        for _, engine in opened.values():
            await engine.check("bench/agent", estimated_cost_usd="0.01")
    timings: dict[int, list[float]] = {size: [] for size in paths}
    for _ in range(samples):
        for size, (_, engine) in opened.items():
            started = time.perf_counter()
            await engine.check("bench/agent", estimated_cost_usd="0.01")
            timings[size].append((time.perf_counter() - started) * 1000)
    for ledger, _ in opened.values():
        await ledger.close()
    latencies = {}
    for size, found in timings.items():
        quantiles = statistics.quantiles(found, n=100)
        latencies[size] = (quantiles[49], quantiles[98])
    return latencies


def section(title: str) -> None:
    print(f"\n{title}", flush=True)


async def main(quick: bool) -> None:
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    largest = sizes[-1]
    table: list[tuple[str, str, str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)

        section("throughput (medians of per-round rates; ratios: medians of per-round ratios)")
        found = await throughput(base, quick)
        rates = found["rates"]
        print(f"  {found['rounds']} rounds")
        print(f"  raw sqlite3 loop            {rates['raw']:9.0f} charges/s")
        print(f"  JSONL append+fsync (hal0)   {rates['jsonl']:9.0f} charges/s")
        print(f"  the engine's SQL, no Python {rates['floor']:9.0f} charges/s  ({found['floor_keys']} running totals)")
        print(f"  engine, sequential          {rates['sequential']:9.0f} charges/s")
        print(f"  engine, 32 concurrent       {rates['concurrent']:9.0f} charges/s")
        print(f"  engine, reserve+charge      {rates['pairs']:9.0f} pairs/s")
        spreads = "; ".join(f"{a}/{b} {found['spreads'][a, b]}" for a, b in SPREADS)
        print(f"  per-round ratios, lowest-highest: {spreads}")
        print(
            f"  where a sequential charge's time goes: the schema's SQL alone runs at {found['floor_raw']:.2f}x the raw"
            f" loop; the engine at {found['seq_floor']:.2f}x its own SQL"
        )
        table += [
            ("sequential charge / raw sqlite3 loop", f"{found['seq_raw']:.2f}x", ">= 0.8x", found["seq_raw"] >= 0.8),
            ("sequential charge / JSONL append+fsync", f"{found['seq_jsonl']:.2f}x", ">= 0.8x",
             found["seq_jsonl"] >= 0.8),
            ("32 concurrent / raw sequential loop", f"{found['conc_raw']:.2f}x", ">= 3x", found["conc_raw"] >= 3),
            ("reserve+charge pairs / plain charges", f"{found['pairs_seq']:.2f}x", ">= 0.5x",
             found["pairs_seq"] >= 0.5),
        ]  # fmt: skip

        section(f"memory (a child process; {largest:,} entries seeded while it waits)")
        memory = await memory_bench.measure(base / f"check_{largest}.db", largest)
        print(f"  {memory_bench.describe(memory)}")
        file_mb_1m = memory["file_mb"] * 1_000_000 / largest
        file_label = "1M-entry ledger file" if largest == 1_000_000 else f"ledger file, {largest:,} entries x10"

        section("check latency (engine.check, in-process; ledgers checked in turn)")
        paths = {largest: base / f"check_{largest}.db"}
        for size in sizes[:-1]:
            paths[size] = base / f"check_{size}.db"
            await memory_bench.allocate(paths[size])
            seed_history(paths[size], size)
        latencies = await check_latency(dict(sorted(paths.items())), 1000 if quick else 2000)
        for size, (p50, p99) in latencies.items():
            print(f"  check at {size:>9,} entries   p50 {p50:.3f} ms   p99 {p99:.3f} ms")
        worst = max(p50 for p50, _ in latencies.values())
        flat = latencies[largest][0] / latencies[sizes[0]][0]

        section("stdio (the SDK's client; budget-mcp serve and a bare MCP SDK server, spawned in turn)")
        stdio = await stdio_bench.measure(base, quick)
        for line in stdio_bench.describe(stdio):
            print(f"  {line}")

        section("rolling windows (a 5-hour limit: check latency by ledger size, charges with and without it)")
        rolling = await rolling_bench.measure(base, quick)
        for line in rolling_bench.describe(rolling):
            print(f"  {line}")
        table += rolling_bench.targets(rolling)

        table += [
            ("check p50 in-process (worst size)", f"{worst:.3f} ms", "<= 0.15 ms", worst <= 0.15),
            (f"check p50 at {largest:,} / at {sizes[0]:,} entries", f"{flat:.2f}x", "<= 1.3x", flat <= 1.3),
            ("stdio check_budget p50 / tools/list p50", f"{stdio['check_ratio']:.2f}x", "<= 1.2x",
             stdio["check_ratio"] <= 1.2),
            ("stdio spawn->initialize / bare SDK server", f"{stdio['spawn_ratio']:.2f}x", "<= 1.2x",
             stdio["spawn_ratio"] <= 1.2),
            (f"engine RSS after {largest:,} entries / at start", f"{memory['rss_ratio']:.2f}x", "<= 1.5x",
             memory["rss_ratio"] <= 1.5),
            (file_label, f"{file_mb_1m:.0f} MB", "< 400 MB", file_mb_1m < 400),
        ]  # fmt: skip

    section("issue 21 targets" + (" (--quick: smaller sizes)" if quick else ""))
    width = max(len(row[0]) for row in table)
    print(f"  {'target':<{width}}  {'measured':>10}  {'goal':<10}  met")
    for name, measured, goal, met in table:
        print(f"  {name:<{width}}  {measured:>10}  {goal:<10}  {'yes' if met else 'NO'}")
    count = sum(row[3] for row in table)
    print(f"  {count} of {len(table)} met; the PostgreSQL target (>= 0.7x its raw loop): make bench-postgres")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    asyncio.run(main(parser.parse_args().quick))
