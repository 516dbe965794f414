"""PostgreSQL benchmark: engine charges per second and check latency, beside raw asyncpg loops in the same run.

    python benchmarks/postgres_bench.py            # full run
    python benchmarks/postgres_bench.py --quick    # a short smoke run

It starts its own PostgreSQL 15 server (durable defaults: fsync on, synchronous commit) in a temp
folder. Beside the engine, two raw asyncpg loops run in the same run on a pool with no reset query:
"ledger SQL" sends the very statement the ledger sends for a charge, and "one-row SQL" the cheapest
charge there is, one conditional statement on one row (`WITH t AS (UPDATE totals ... WHERE spent +
cost <= cap RETURNING ...) INSERT INTO entries ... SELECT ... FROM t`). "hot" is 32 tasks charging one
budget; "spread" is 32 tasks, each charging a budget of its own; "sub-agents" is 32 tasks, each
charging its own child budget of one limited root (so every charge counts on two budgets of one tree).
check_budget's p50 is compared with its read statement's, once on a budget this server charged last,
once with another server charging it before every check.
"""

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budget_mcp import BudgetEngine, PriceCatalog
from budget_mcp.domain.ids import new_entry_id
from budget_mcp.domain.records import Entry, EntryKind
from budget_mcp.ledger import Scope, Writes
from budget_mcp.ledger.postgres import PostgresLedger, statements
from budget_mcp.ledger.rows import total_deltas
from tests.postgres_server import postgres_server

TASKS = 32
POOL = 8
ROUNDS = 10
ONE_ROW_CHARGE = (
    "WITH t AS (UPDATE raw_totals SET spent = spent + $2 WHERE budget_id = $1 AND spent + $2 <= cap "
    "RETURNING budget_id) INSERT INTO raw_entries (budget_id, cost) SELECT budget_id, $2 FROM t"
)


async def _no_reset(_: asyncpg.Connection) -> None:
    pass


Charge = Callable[[int], Awaitable[None]]


async def timed(charges: int, tasks: int, charge: Charge) -> float:
    """Charges per second with `tasks` concurrent callers, task n charging through `charge(n)`."""
    per_task = charges // tasks

    async def worker(n: int) -> None:
        for _ in range(per_task):
            await charge(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)


def paths(shape: str) -> list[str]:
    """The budget each task charges (after a letter naming the contender): all one, one each, or one child each."""
    if shape == "one":
        return ["0"] * TASKS
    if shape == "spread":
        return [str(n) for n in range(TASKS)]
    return [f"0/agent-{n}" for n in range(TASKS)]


async def one_row_sql(dsn: str, shape: str) -> tuple[Charge, asyncpg.Pool]:
    """The cheapest charge there is: one conditional statement on one row, on a pool of its own."""
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "DROP TABLE IF EXISTS raw_entries, raw_totals;"
        "CREATE TABLE raw_totals (budget_id TEXT PRIMARY KEY, spent BIGINT NOT NULL, cap BIGINT NOT NULL);"
        "CREATE TABLE raw_entries (seq BIGSERIAL PRIMARY KEY, budget_id TEXT NOT NULL, cost BIGINT NOT NULL);"
    )
    await setup.executemany("INSERT INTO raw_totals VALUES ($1, 0, 1000000000000)", [(f"b{n}",) for n in range(TASKS)])
    await setup.close()
    pool = await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL, reset=_no_reset)

    async def charge(n: int) -> None:
        async with pool.acquire() as conn:
            await conn.execute(ONE_ROW_CHARGE, f"b{0 if shape == 'one' else n}", 1000)

    return charge, pool


def ledger_sql(ledger: PostgresLedger, shape: str) -> Charge:
    """A raw asyncpg loop sending the ledger's own SQL for one charge of budget s<n>: no engine, no ledger code.

    The statement is the one a charge's write sends (move the tree's version, append the entry, add to
    its running totals, notify), built once by the ledger; only the entry id changes per call, and its
    version guard is made to always pass (`version <> -1`), since these callers keep no snapshot.
    """
    now, template = datetime.now(UTC), "chg_00000000000000000000000000000000"
    prepared: dict[str, list[object]] = {}
    statement = ""
    for path in set(paths(shape)):
        budget_id = "s" + path
        writes = [Writes(entries=[Entry(template, EntryKind.CHARGE, budget_id, now, 1000)])]
        statement, prepared[budget_id] = statements.write_statement(
            statements.rows_of(writes, total_deltas(writes[0].entries, lambda _: "UTC"), 0),
            statements.notice(writes),
            guard=(budget_id.split("/")[0], -1),
        )
    assert "AND version = $2" in statement
    statement = statement.replace("AND version = $2", "AND version <> $2")
    entry_ids = prepared["s" + paths(shape)[0]].index([template])

    async def charge(n: int) -> None:
        args = list(prepared["s" + paths(shape)[n]])
        args[entry_ids] = [new_entry_id("chg")]  # random, as the ledger's are (the unique index sees the same)
        async with ledger._lender.pool.acquire() as conn:
            await conn.fetchval(statement, *args)

    return charge


async def scenario(dsn: str, charges: int, tasks: int, shape: str) -> dict[str, float]:
    """Median charges per second of each contender, measured in interleaved rounds so drift hits all alike."""
    ledger = await PostgresLedger.open(dsn, max_connections=POOL)
    await ledger.truncate()
    budgets = BudgetEngine(ledger, PriceCatalog())
    targets = paths(shape)
    for contender in "es":  # the engine's budgets, and the ledger-SQL loop's (other trees)
        for path in sorted(set(targets) | {path.split("/")[0] for path in targets}):
            await budgets.allocate(contender + path, limit_usd=None if "/" in path else "1000000")

    async def engine(n: int) -> None:
        await budgets.charge("e" + targets[n], cost_usd="0.000001")

    one_row, pool = await one_row_sql(dsn, shape)
    contenders = {"ledger SQL": ledger_sql(ledger, shape), "one-row SQL": one_row, "engine": engine}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, charge in contenders.items():
            rates[name].append(await timed(charges // ROUNDS, tasks, charge))
    assert await ledger.reconcile() == []
    await pool.close()
    await ledger.close()
    return {name: statistics.median(found) for name, found in rates.items()}


async def check_latency(dsn: str, checks: int, *, other_writes: bool) -> tuple[float, float]:
    """check_budget p50 through the engine, and p50 of the same read statement by raw asyncpg (ms), interleaved.

    The budget checked has one daily limit and a thousand charges behind it. With `other_writes`, another
    server charges it before every check (and before every raw read), so no check finds what it last wrote.
    """
    ledger = await PostgresLedger.open(dsn, max_connections=POOL)
    other = await PostgresLedger.open(dsn, max_connections=2)
    await ledger.truncate()
    budgets, elsewhere = BudgetEngine(ledger, PriceCatalog()), BudgetEngine(other, PriceCatalog())
    await budgets.allocate("e0", limit_usd="1000000", period="daily")
    for _ in range(1_000):
        await budgets.charge("e0", cost_usd="0.01")
    statement, args = statements.load_statement(Scope(budget_ids=("e0",)), datetime.now(UTC))

    async def raw_read() -> None:
        async with ledger._lender.pool.acquire() as conn:
            await conn.fetchrow(statement, *args)

    async def check() -> None:
        await budgets.check("e0", estimated_cost_usd="0.01")

    samples: dict[str, list[float]] = {"engine": [], "raw": []}
    for _ in range(ROUNDS):
        for name, read in (("engine", check), ("raw", raw_read)):
            for _ in range(checks // ROUNDS):
                if other_writes:
                    await elsewhere.charge("e0", cost_usd="0.01")
                started = time.perf_counter()
                await read()
                samples[name].append(time.perf_counter() - started)
    await other.close()
    await ledger.close()
    return statistics.median(samples["engine"]) * 1000, statistics.median(samples["raw"]) * 1000


async def main(quick: bool) -> None:
    charges = 2_000 if quick else 20_000
    with postgres_server(durable=True) as dsn:
        print(f"PostgreSQL benchmark, {charges:,} charges per line in {ROUNDS} interleaved rounds, pool of {POOL},")
        print("durable commits; charges/s (median of the rounds)")
        print(f"{'':26} {'ledger SQL':>10} {'one-row SQL':>11} {'engine':>8}   vs ledger SQL   vs one-row")
        for label, tasks, shape in (("sequential", 1, "one"), ("32 tasks, one budget", TASKS, "one"),
                                    ("32 tasks, spread budgets", TASKS, "spread"),
                                    ("32 tasks, sub-agents", TASKS, "sub-agents")):  # fmt: skip
            r = await scenario(dsn, charges, tasks, shape)
            same, minimal, ours = r["ledger SQL"], r["one-row SQL"], r["engine"]
            print(f"{label:26} {same:10.0f} {minimal:11.0f} {ours:8.0f}   {ours / same:12.2f}x {ours / minimal:9.2f}x")
        for label, other_writes in (("", False), (", another server charging between checks", True)):
            p50, raw = await check_latency(dsn, 1_000 if quick else 10_000, other_writes=other_writes)
            print(f"check_budget p50 {p50:.3f} ms, its read by raw asyncpg {raw:.3f} ms ({raw / p50:.2f}x){label}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    asyncio.run(main(parser.parse_args().quick))
