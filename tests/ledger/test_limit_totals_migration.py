"""A ledger from before SQLite step 8 / PostgreSQL step 6 kept a provider cap set mid-day from zero, and kept the
totals of a lifted cap: once opened by this version every running total is recomputed from the entries, so the
cap counts the day's matching spend and reconcile finds nothing to report."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.records import BudgetConfig, Entry, EntryKind, Limit, limit_key
from budget_mcp.domain.windows import Period
from budget_mcp.ledger.codec import config_to_json, limit_to_json, to_us
from budget_mcp.ledger.rows import ENTRY_COLUMNS, entry_to_row
from tests.conftest import FakeClock
from tests.ledger.conftest import fresh_database, postgres_ledger_at, sqlite_ledger_at

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MONTHLY = Limit(Period.MONTHLY, 100 * 10**9)
OPENAI = Limit(Period.DAILY, 5 * 10**9, providers=("openai",))
ANTHROPIC = Limit(Period.DAILY, 5 * 10**9, providers=("anthropic",))
DAY_START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())


def allocation(n: int, at: datetime, *limits: Limit) -> Entry:
    return Entry(f"alc_{n}", EntryKind.ALLOCATE, "acme", at, metadata={"limits": [limit_to_json(x) for x in limits]})


def charge(n: int, at: datetime, provider: str, nanos: int) -> Entry:
    return Entry(f"chg_{n}", EntryKind.CHARGE, "acme", at, nanos, model="some-model", provider=provider)


def old_rows() -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    """$1 of openai before its cap was set, $2 after; an anthropic cap set and lifted: as the old version kept it."""
    created = AT - timedelta(hours=3)
    config = BudgetConfig("acme", Period.MONTHLY, (MONTHLY, OPENAI), created_at=created)
    entries = [
        allocation(1, created, MONTHLY, ANTHROPIC),
        charge(2, AT - timedelta(hours=2), "anthropic", 7 * 10**8),
        charge(3, AT - timedelta(hours=2), "openai", 10**9),
        allocation(4, AT - timedelta(hours=1), MONTHLY, OPENAI),
        charge(5, AT - timedelta(minutes=30), "openai", 2 * 10**9),
    ]
    return [
        ("budgets", "budget_id, parent_id, config, closed, created_at_us, updated_at_us",
         [("acme", None, config_to_json(config), False, to_us(created), to_us(AT))]),
        ("entries", ENTRY_COLUMNS, [entry_to_row(e) for e in entries]),
        ("totals", "budget_id, period, window_start, spent_nanos, spent_tokens, calls",
         [("acme", limit_key(Period.DAILY, (), ("openai",)), DAY_START, 2 * 10**9, 0, 1),
          ("acme", limit_key(Period.DAILY, (), ("anthropic",)), DAY_START, 7 * 10**8, 0, 1)]),
    ]  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
async def old_ledger(request: pytest.FixtureRequest, ledger_path: Path) -> str:
    """Where a ledger at the previous schema step lives, for each backend."""
    if request.param == "sqlite":
        return sqlite_ledger_at(ledger_path, 7, old_rows())
    dsn = await fresh_database(request.getfixturevalue("postgres_dsn"))
    return await postgres_ledger_at(dsn, 5, old_rows())


async def test_an_older_ledgers_totals_are_recomputed_as_this_version_keeps_them(old_ledger: str) -> None:
    ledger = await open_ledger(old_ledger)
    try:
        assert await ledger.reconcile(AT) == []
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(AT))
        status = await engine.status("acme")
        capped = next(lim for lim in status.limits if lim.providers)
        assert (capped.providers, capped.spent_usd) == (["openai"], "3.000000")
        assert status.spent_usd == "3.700000"
    finally:
        await ledger.close()
