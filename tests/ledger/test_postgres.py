"""What only the PostgreSQL backend has to prove: concurrent migrations, notifications, connection loss."""

import functools

import anyio
import asyncpg
import pytest

from budget_mcp import BudgetEngine, PriceCatalog
from budget_mcp.errors import LedgerError
from budget_mcp.ledger.postgres import STEPS, PostgresLedger, lock_key, migrate
from budget_mcp.ledger.postgres.statements import begin_statement, write_statement

pytestmark = pytest.mark.anyio


SCHEMA = """
SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
WHERE table_schema = 'public' ORDER BY table_name, column_name
"""


async def test_servers_starting_at_once_migrate_safely_and_a_second_run_changes_nothing(fresh_dsn: str) -> None:
    async with anyio.create_task_group() as tasks:
        for _ in range(6):
            tasks.start_soon(migrate, fresh_dsn)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        applied = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        schema = [tuple(r) for r in await conn.fetch(SCHEMA)]
        ledger = await PostgresLedger.open(fresh_dsn)
        await BudgetEngine(ledger, PriceCatalog()).allocate("acme", limit_usd="5")
        await ledger.close()
        await migrate(fresh_dsn)
        applied_again = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        schema_again = [tuple(r) for r in await conn.fetch(SCHEMA)]
        budgets = await conn.fetchval("SELECT count(*) FROM budgets")
    finally:
        await conn.close()
    tables = {row[0] for row in schema}
    assert applied == list(range(1, len(STEPS) + 1))  # each step once, though six servers raced
    assert tables >= {"budgets", "entries", "totals", "holds", "hold_budgets", "alerts", "idempotency", "trees"}
    assert ("entries", "cost_nanos", "bigint", "NO") in schema
    assert (applied_again, schema_again, budgets) == (applied, schema, 1)


async def test_a_write_on_one_server_is_heard_by_another(fresh_dsn: str) -> None:
    one, other = await PostgresLedger.open(fresh_dsn), await PostgresLedger.open(fresh_dsn)
    try:
        assert await other.changed_budgets() is None  # listening starts: what came before is unknown
        assert await other.changed_budgets() == set()
        await BudgetEngine(one, PriceCatalog()).allocate("acme", limit_usd="5")
        await BudgetEngine(one, PriceCatalog()).allocate("beta", limit_usd="5")
        heard: set[str] = set()
        with anyio.fail_after(5):
            while heard != {"acme", "beta"}:
                heard |= await other.changed_budgets() or set()
                await anyio.sleep(0.01)
    finally:
        await one.close()
        await other.close()


async def test_a_lost_connection_fails_the_request_in_flight_cleanly_and_the_next_one_works(fresh_dsn: str) -> None:
    ledger = await PostgresLedger.open(fresh_dsn)
    engine = BudgetEngine(ledger, PriceCatalog())
    await engine.allocate("acme", limit_usd="5")
    admin = await asyncpg.connect(fresh_dsn)
    try:
        # Hold the idempotency key's lock, so the charge waits inside its transaction; then cut its connection.
        await admin.execute("BEGIN")
        await admin.execute("SELECT pg_advisory_xact_lock($1)", lock_key("key:retry-me"))
        failure: list[BaseException] = []

        async def charge() -> None:
            try:
                await engine.charge("acme", cost_usd="1", idempotency_key="retry-me")
            except LedgerError as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(charge)
            with anyio.fail_after(10):
                while not await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ):
                    await anyio.sleep(0.01)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        await admin.execute("ROLLBACK")
        assert len(failure) == 1 and "connection to PostgreSQL was lost" in str(failure[0])
        assert (await engine.status("acme")).spent_usd == "0.000000"  # nothing half-written

        retried = await engine.charge("acme", cost_usd="1", idempotency_key="retry-me")
        again = await engine.charge("acme", cost_usd="1", idempotency_key="retry-me")
        assert not retried.duplicate and again.duplicate
        assert (await engine.status("acme")).spent_usd == "1.000000"
        assert await ledger.reconcile() == []
    finally:
        await admin.close()
        await ledger.close()


async def test_a_hold_commits_without_waiting_for_the_disk_and_leaves_no_setting_on_the_connection(
    fresh_dsn: str,
) -> None:
    """Both ways a batch is stored (one version-guarded statement; a locked transaction) turn synchronous_commit
    off for their own transaction when it holds only holds, and only then: pooled connections keep no setting."""
    ledger = await PostgresLedger.open(fresh_dsn)
    await BudgetEngine(ledger, PriceCatalog()).allocate("acme", limit_usd="5")
    await ledger.close()
    conn = await asyncpg.connect(fresh_dsn)
    try:
        seen = []
        for durable in (False, True):
            version = await conn.fetchval("SELECT version FROM trees WHERE root = 'acme'")
            statement, args = write_statement({}, None, guard=("acme", version), durable=durable)
            async with conn.transaction():  # to read the setting inside the statement's transaction
                assert await conn.fetchval(statement, *args) > version
                seen.append(await conn.fetchval("SHOW synchronous_commit"))
            seen.append(await conn.fetchval("SHOW synchronous_commit"))
            await conn.execute(begin_statement([lock_key("key:k")], ("acme",), durable=durable))
            seen.append(await conn.fetchval("SHOW synchronous_commit"))
            await conn.execute("ROLLBACK")
            seen.append(await conn.fetchval("SHOW synchronous_commit"))
    finally:
        await conn.close()
    assert seen == ["off", "on", "off", "on"] + ["on"] * 4


async def test_a_kept_connection_the_server_closed_while_idle_is_not_used_again(fresh_dsn: str) -> None:
    ledger = await PostgresLedger.open(fresh_dsn)
    engine = BudgetEngine(ledger, PriceCatalog())
    admin = await asyncpg.connect(fresh_dsn)
    try:
        await engine.allocate("acme", limit_usd="5")
        await engine.charge("acme", cost_usd="1")  # its connection is kept for the next request
        ledger_pids = await admin.fetchval(
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )  # not an autovacuum worker that may be busy in this database meanwhile
        assert ledger_pids
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", ledger_pids)
        with anyio.fail_after(10):
            while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", ledger_pids):
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # the client side has read the end of each closed connection
        assert (await engine.charge("acme", cost_usd="1")).spent_usd == "2.000000"
    finally:
        await admin.close()
        await ledger.close()


async def test_requests_waiting_for_a_connection_get_one_when_all_are_lent(fresh_dsn: str) -> None:
    """More requests at once than connections: those that wait for one get it as the others finish, though the
    others would keep theirs for the next request."""
    ledger = await PostgresLedger.open(fresh_dsn, max_connections=2)
    engine = BudgetEngine(ledger, PriceCatalog())
    try:
        for n in range(8):
            await engine.allocate(f"tree{n}", limit_usd="5")
        with anyio.fail_after(30):
            for _ in range(3):
                async with anyio.create_task_group() as tasks:
                    for n in range(8):  # separate trees: their writes do not queue behind each other
                        tasks.start_soon(functools.partial(engine.charge, f"tree{n}", cost_usd="1"))
        assert [(await engine.status(f"tree{n}")).spent_usd for n in range(8)] == ["3.000000"] * 8
    finally:
        await ledger.close()
