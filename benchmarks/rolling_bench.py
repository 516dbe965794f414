"""Rolling windows (SPEC 13): check latency on a budget with a 5-hour rolling limit at a small and a large
ledger, and charge throughput with that limit against the same budgets without it, measured in one run.

    python benchmarks/rolling_bench.py [--quick]    # standalone; `make bench` runs it too

The large ledger holds one past charge a minute going back (`seed_history`), and the 5-hour limit's
per-minute buckets for all of them, as if the limit had been in place the whole time: a check must still
read only the buckets inside the window. Throughput alternates chunks of sequential charges on two
ledgers (one with the 5-hour limit on both budgets of the path, one with daily limits instead), the order
reversed every other round; the ratio is the median of the per-round ratios.
"""

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_bench import seed_history

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.windows import Rolling
from budget_mcp.ledger import Ledger
from budget_mcp.ledger.sqlite import rolling_usage


async def open_engine(path: Path, period: str) -> tuple[Ledger, BudgetEngine]:
    ledger = await open_ledger(path)
    engine = BudgetEngine(ledger, PriceCatalog())
    if not await engine.budget_ids():
        await engine.allocate("bench", limit_usd="100000000", period=period)
        await engine.allocate("bench/agent", limit_usd="10000000", period=period)
    return ledger, engine


def seed_rolling(path: Path, entries: int) -> None:
    """`seed_history`, and the 5-hour limit's per-minute buckets of those charges on both budgets."""
    seed_history(path, entries)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(
        "INSERT OR IGNORE INTO totals SELECT b.budget_id, '5h', e.at_us / 60000000 * 60, SUM(e.cost_nanos), "
        "SUM(e.input_tokens + e.output_tokens), COUNT(*) FROM entries e JOIN (SELECT 'bench' AS budget_id "
        "UNION ALL SELECT 'bench/agent') b WHERE e.kind = 'charge' GROUP BY b.budget_id, e.at_us / 60000000"
    )
    conn.execute("COMMIT")
    conn.close()


def bucket_sum_latency(path: Path, samples: int) -> float:
    """p50 (ms) of what a fresh load adds for the 5-hour limit: the sum of its buckets inside the window."""
    conn = sqlite3.connect(path)
    rolling, now = Rolling(300), datetime.now(UTC)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        rolling_usage(conn, "bench/agent", "5h", rolling, now)
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()
    return statistics.median(timings)


async def charges_per_second(engine: BudgetEngine, charges: int) -> float:
    started = time.perf_counter()
    for _ in range(charges):
        await engine.charge("bench/agent", cost_usd="0.000001")
    return charges / (time.perf_counter() - started)


async def throughput(base: Path, quick: bool) -> dict[str, float]:
    """Sequential charges per second with a 5-hour limit and with daily ones, and their per-round ratio."""
    rounds, chunk = (15, 100) if quick else (41, 200)
    engines = {name: await open_engine(base / f"throughput_{name}.db", period) for name, period in
               (("rolling", "5h"), ("calendar", "daily"))}  # fmt: skip
    for _, engine in engines.values():
        await charges_per_second(engine, 600)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(rounds):
        for name in list(engines)[:: -1 if i % 2 else 1]:
            rates[name].append(await charges_per_second(engines[name][1], chunk))
    for ledger, _ in engines.values():
        assert await ledger.reconcile() == []
        await ledger.close()
    ratio = statistics.median(r / c for r, c in zip(rates["rolling"], rates["calendar"], strict=True))
    return {"rolling": statistics.median(rates["rolling"]), "calendar": statistics.median(rates["calendar"]),
            "ratio": ratio}  # fmt: skip


async def measure(base: Path, quick: bool) -> dict[str, Any]:
    """Every rolling-window figure: check p50 at each size, throughput with and without the limit."""
    sizes = (1_000, 100_000) if quick else (1_000, 1_000_000)
    paths = {}
    for size in sizes:
        paths[size] = base / f"rolling_{size}.db"
        ledger, _ = await open_engine(paths[size], "5h")
        await ledger.close()
        seed_rolling(paths[size], size)
    from ledger_bench import check_latency  # here: ledger_bench imports this module

    found = await check_latency(paths, 1000 if quick else 2000, lambda path: open_engine(path, "5h"))
    latencies = {size: p50 for size, (p50, _) in found.items()}
    sums = {size: bucket_sum_latency(path, 1000) for size, path in paths.items()}
    return {"sizes": sizes, "p50": latencies, "flat": latencies[sizes[1]] / latencies[sizes[0]], "sums": sums,
            "sums_flat": sums[sizes[1]] / sums[sizes[0]],
            **await throughput(base, quick)}  # fmt: skip


def describe(found: dict[str, Any]) -> list[str]:
    small, large = found["sizes"]
    return [
        f"check at {small:>9,} entries   p50 {found['p50'][small]:.3f} ms",
        f"check at {large:>9,} entries   p50 {found['p50'][large]:.3f} ms",
        f"fresh load's 5h bucket sum p50: {found['sums'][small]:.3f} ms at {small:,}, "
        f"{found['sums'][large]:.3f} ms at {large:,}",
        f"sequential charges: 5h limit {found['rolling']:.0f}/s, daily limit {found['calendar']:.0f}/s",
    ]


def targets(found: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    small, large = found["sizes"]
    return [
        (f"5h rolling check p50 at {large:,} / at {small:,}", f"{found['flat']:.2f}x", "<= 1.3x", found["flat"] <= 1.3),
        (
            f"5h bucket sum (fresh load) at {large:,} / {small:,}",
            f"{found['sums_flat']:.2f}x",
            "<= 1.3x",
            found["sums_flat"] <= 1.3,
        ),
        ("charges with a 5h limit / with daily", f"{found['ratio']:.2f}x", ">= 0.8x", found["ratio"] >= 0.8),
    ]


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = await measure(Path(tmp), quick)
    for line in describe(found):
        print(f"  {line}")
    for name, measured, goal, met in targets(found):
        print(f"  {name}: {measured} (goal {goal}) {'met' if met else 'NOT MET'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller ledger and fewer rounds")
    asyncio.run(main(parser.parse_args().quick))
