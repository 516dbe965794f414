"""A ledger whose alerts predate schema step 7 (SQLite) / 5 (PostgreSQL), which stores a filtered limit's models and
providers with each of its alerts: once opened by this version, an old alert of a provider cap still counts as
raised and reads with its provider, and a new one is stored with it."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.records import BudgetConfig, Limit, limit_key
from budget_mcp.domain.windows import Period
from budget_mcp.ledger.codec import config_to_json, to_us
from tests.conftest import FakeClock
from tests.ledger.conftest import fresh_database, postgres_ledger_at, sqlite_ledger_at

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CAPPED = BudgetConfig(
    "acme", Period.MONTHLY,
    (Limit(Period.MONTHLY, 10 * 10**9), Limit(Period.DAILY, 10**9, providers=("openai",))),
    alert_at=(Decimal("0.5"), Decimal("0.8")), created_at=AT,
)  # fmt: skip
DAY_START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())


def old_rows() -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    """A budget with an openai cap and that cap's 50% alert of today, as the previous schema stored them."""
    return [
        ("budgets", "budget_id, parent_id, config, closed, created_at_us, updated_at_us",
         [("acme", None, config_to_json(CAPPED), False, to_us(AT), to_us(AT))]),
        ("alerts", "budget_id, period, window_start, threshold, at_us, spent_nanos, limit_nanos, spent_tokens, "
         "limit_tokens, entry_id",
         [("acme", limit_key(Period.DAILY, (), ("openai",)), DAY_START, "0.5", to_us(AT), 600_000_000, 10**9, 0, None,
           None)]),
    ]  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
async def old_ledger(request: pytest.FixtureRequest, ledger_path: Path) -> str:
    """Where a ledger at the previous schema step lives, for each backend."""
    if request.param == "sqlite":
        return sqlite_ledger_at(ledger_path, 6, old_rows())
    dsn = await fresh_database(request.getfixturevalue("postgres_dsn"))
    return await postgres_ledger_at(dsn, 4, old_rows())


async def test_an_older_ledgers_cap_alert_keeps_counting_and_a_new_one_keeps_its_provider(old_ledger: str) -> None:
    ledger = await open_ledger(old_ledger)
    try:
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(AT + timedelta(minutes=1)))
        # The stored 50% alert is still the cap's, raised today: 0.85 crosses only 80% now.
        charged = await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="0.85")
        assert [(a.threshold, a.providers) for a in charged.alerts] == [("0.8", ["openai"])]
        alerts = (await engine.report("acme")).alerts  # the old one named from the budget's limits
        assert sorted((a.threshold, a.providers) for a in alerts) == [("0.5", ["openai"]), ("0.8", ["openai"])]
        await engine.allocate("acme", extra_limits=[])  # the cap is gone
        alerts = (await engine.report("acme")).alerts
        # The old alert no longer has a limit to name its provider; the new one was stored with it.
        assert sorted((a.threshold, a.period, a.providers) for a in alerts) == [
            ("0.5", "daily", []),
            ("0.8", "daily", ["openai"]),
        ]
    finally:
        await ledger.close()
