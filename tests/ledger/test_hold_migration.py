"""A ledger whose holds predate schema step 5 (SQLite) / 4 (PostgreSQL), which keeps the model and provider a hold
is for: once opened by this version, its open holds count in the filtered limits of the checks they were for."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.records import BudgetConfig, Entry, EntryKind, Limit
from budget_mcp.domain.windows import Period
from budget_mcp.ledger.codec import config_to_json, to_us
from budget_mcp.ledger.rows import ENTRY_COLUMNS, entry_to_row
from tests.conftest import FakeClock
from tests.ledger.conftest import fresh_database, postgres_ledger_at, sqlite_ledger_at

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CAPPED = BudgetConfig(
    "acme", Period.MONTHLY,
    (Limit(Period.MONTHLY, 10 * 10**9), Limit(Period.DAILY, 10**9, providers=("openai",))), created_at=AT,
)  # fmt: skip
OPENAI, UNNAMED, ANTHROPIC = (f"res_{n:024x}" for n in range(3))
HOLDS = [  # reservation id, $ held in nanos, model, provider
    (OPENAI, 500_000_000, "gpt-4o", "openai"),
    (UNNAMED, 300_000_000, None, None),  # a check that named neither: it may be for openai
    (ANTHROPIC, 2_000_000_000, "claude-sonnet-4-5", "anthropic"),
]


def old_rows() -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    """The rows of a budget with a provider cap and three open holds, as the previous schema stored them."""
    expires = to_us(AT + timedelta(hours=1))
    entries = [
        entry_to_row(Entry(f"hld_{n}", EntryKind.HOLD, "acme", AT, nanos, model=model, provider=provider,
                           reservation_id=reservation_id))
        for n, (reservation_id, nanos, model, provider) in enumerate(HOLDS)
    ]  # fmt: skip
    return [
        ("budgets", "budget_id, parent_id, config, closed, created_at_us, updated_at_us",
         [("acme", None, config_to_json(CAPPED), False, to_us(AT), to_us(AT))]),
        ("entries", ENTRY_COLUMNS, entries),
        ("holds", "reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us",
         [(r, "acme", nanos, 0, to_us(AT), expires) for r, nanos, _, _ in HOLDS]),
        ("hold_budgets", "budget_id, reservation_id, cost_nanos, tokens, expires_at_us",
         [("acme", r, nanos, 0, expires) for r, nanos, _, _ in HOLDS]),
    ]  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
async def old_ledger(request: pytest.FixtureRequest, ledger_path: Path) -> str:
    """Where a ledger at the previous schema step lives, for each backend."""
    if request.param == "sqlite":
        return sqlite_ledger_at(ledger_path, 4, old_rows())
    dsn = await fresh_database(request.getfixturevalue("postgres_dsn"))
    return await postgres_ledger_at(dsn, 3, old_rows())


async def test_open_holds_of_an_older_ledger_count_in_the_provider_cap_of_their_checks(old_ledger: str) -> None:
    ledger = await open_ledger(old_ledger)
    try:
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(AT + timedelta(minutes=1)))
        status = await engine.status("acme")
        capped = next(lim for lim in status.limits if lim.providers)
        assert (status.held_usd, capped.held_usd, capped.available_usd) == ("2.800000", "0.800000", "0.200000")
        assert not (await engine.check("acme", estimated_cost_usd="0.25", provider="openai")).allowed
        await engine.release(reservation_id=UNNAMED)
        assert (await engine.check("acme", estimated_cost_usd="0.50", provider="openai", reserve=True)).allowed
        await engine.charge("acme", provider="openai", cost_usd="0.40", reservation_id=OPENAI)
        capped = next(lim for lim in (await engine.status("acme")).limits if lim.providers)
        assert (capped.spent_usd, capped.held_usd, capped.available_usd) == ("0.400000", "0.500000", "0.100000")
    finally:
        await ledger.close()
