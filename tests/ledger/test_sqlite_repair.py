"""A ledger file an older budget-mcp let overflow is repaired when a current one opens it (schema step 3)."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.records import BudgetConfig, Entry, EntryKind, Limit
from budget_mcp.domain.windows import Period, window_key
from budget_mcp.ledger.codec import config_to_json, to_us
from budget_mcp.ledger.rows import ENTRY_COLUMNS, entry_to_row
from budget_mcp.ledger.schema import STEPS
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def damaged_v2_ledger(path: Path, charges: list[int]) -> None:
    """A ledger at schema version 2 whose running totals were stored as REAL, as SQLite does when a sum overflows."""
    conn = sqlite3.connect(path, isolation_level=None)
    for step in STEPS[:2]:
        conn.executescript(step)
    conn.execute("PRAGMA user_version = 2")
    config = BudgetConfig("acme", Period.MONTHLY, (Limit(Period.MONTHLY, 10 * 10**9),), created_at=AT)
    conn.execute(
        "INSERT INTO budgets VALUES ('acme', NULL, ?, 0, ?, ?)", (config_to_json(config), to_us(AT), to_us(AT))
    )
    for n, nanos in enumerate(charges):
        entry = Entry(f"chg_{n:024x}", EntryKind.CHARGE, "acme", AT, nanos)
        conn.execute(f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join('?' * 16)})", entry_to_row(entry))
    for period in Period:
        conn.execute(  # the damage: floats (and a wrong one) where integers belong
            "INSERT INTO totals VALUES ('acme', ?, ?, CAST(? AS REAL), 0, ?)",
            (period.value, window_key(period, "UTC", AT), float(sum(charges)) + 0.5, len(charges)),
        )
    conn.close()


async def test_opening_a_damaged_ledger_recomputes_its_totals_as_integers(ledger_path: Path) -> None:
    damaged_v2_ledger(ledger_path, [1_500_000_000, 2_250_000_000])
    ledger = await open_ledger(ledger_path)
    try:
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(AT))
        assert (await engine.tree())[0].spent_usd == "3.750000"  # listing works again, to the nano
        assert await ledger.reconcile() == []
        await engine.charge("acme", cost_usd="0.25")
        assert (await engine.status("acme")).spent_usd == "4.000000"
    finally:
        await ledger.close()
    conn = sqlite3.connect(ledger_path)
    types = {row[0] for row in conn.execute("SELECT DISTINCT typeof(spent_nanos) FROM totals")}
    strict = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'totals'").fetchone()[0]
    conn.close()
    assert types == {"integer"} and "STRICT" in strict


async def test_a_sum_beyond_the_range_is_kept_at_the_bound_and_reported(ledger_path: Path) -> None:
    damaged_v2_ledger(ledger_path, [999_999_999 * 10**9] * 10)  # ten charges of $999,999,999, accepted once
    ledger = await open_ledger(ledger_path)
    try:
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(AT))
        assert (await engine.status("acme")).spent_usd == "9000000000.000000"
        differences = await ledger.reconcile()
    finally:
        await ledger.close()
    assert differences and all("acme" in line for line in differences)


async def test_a_strict_table_refuses_a_sum_that_sqlite_would_turn_into_a_float(ledger_path: Path) -> None:
    await (await open_ledger(ledger_path)).close()
    conn = sqlite3.connect(ledger_path, isolation_level=None)
    conn.execute("INSERT INTO totals VALUES ('acme', 'total', 0, 9000000000000000000, 0, 0)")
    with pytest.raises(sqlite3.IntegrityError, match="cannot store REAL value in INTEGER column"):
        conn.execute("UPDATE totals SET spent_nanos = spent_nanos + 9000000000000000000")
    conn.close()
