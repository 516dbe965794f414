"""Rolling windows (SPEC 13): spend in the last N minutes, hours or days counts, on both backends."""

import sqlite3
from contextlib import closing
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.records import Entry, EntryKind, TokenCounts
from budget_mcp.domain.windows import Rolling
from budget_mcp.ledger import Scope
from budget_mcp.ledger.postgres.ledger import PRUNE_EVERY_WRITES
from budget_mcp.ledger.sqlite import PRUNE_EVERY_BATCHES
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_spend_leaves_a_rolling_window_once_its_bucket_has_left_it(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10", period="5h")
    start = clock.now
    await engine.charge("acme", cost_usd="6")
    clock.advance(hours=2)
    await engine.charge("acme", cost_usd="3")
    status = await engine.status("acme")
    assert (status.period, status.spent_usd, status.available_usd) == ("5h", "9.000000", "1.000000")
    assert status.resets_at == start + timedelta(hours=5, minutes=1)  # the first charge's bucket leaves then
    assert not (await engine.check("acme", estimated_cost_usd="2")).allowed
    clock.advance(hours=3, seconds=30)  # 5h after the first charge: its minute has not wholly left the window yet
    assert not (await engine.check("acme", estimated_cost_usd="2")).allowed
    assert (await other_engine.status("acme")).spent_usd == "9.000000"  # a fresh load agrees
    clock.advance(seconds=-30)
    clock.advance(minutes=1)
    status = await engine.status("acme")
    assert (status.spent_usd, status.resets_at) == ("3.000000", start + timedelta(hours=7, minutes=1))
    assert (await engine.check("acme", estimated_cost_usd="2")).allowed
    clock.advance(hours=2)
    status = await engine.status("acme")
    assert (status.spent_usd, status.resets_at) == ("0.000000", None)
    assert await engine.ledger.reconcile() == []


async def test_holds_and_calls_count_in_a_rolling_window(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", extra_limits=[{"period": "30m", "limit_calls": 2, "limit_usd": "5"}])
    await engine.charge("acme", cost_usd="1")
    held = await engine.check("acme", estimated_cost_usd="1", reserve=True)
    assert held.allowed
    denied = await engine.check("acme", estimated_cost_usd="1")
    assert (denied.allowed, denied.decided_period) == (False, "30m")
    limit = (await engine.status("acme")).limits[0]
    assert (limit.period, limit.calls, Decimal(limit.held_usd), Decimal(limit.available_usd or 0)) == ("30m", 1, 1, 3)
    clock.advance(minutes=31)
    limit = (await engine.status("acme")).limits[0]
    assert (limit.calls, limit.spent_usd, limit.resets_at) == (0, "0.000000", None)


async def test_a_rolling_budget_without_a_limit_tracks_its_spend(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", period="2h")
    await engine.charge("acme", cost_usd="1.25")
    status = await engine.status("acme")
    assert (status.period, status.spent_usd, status.available_usd) == ("2h", "1.250000", None)
    clock.advance(hours=2, minutes=1)
    assert (await engine.status("acme")).spent_usd == "0.000000"
    assert await engine.ledger.reconcile() == []


async def _rolling_rows(location: str, budget_id: str, key: str) -> list[int]:
    """The window starts of a budget's running totals under `key`, as stored (SQLite file or PostgreSQL)."""
    query = "SELECT window_start FROM totals WHERE budget_id = {0} AND period = {1} ORDER BY window_start"
    if location.startswith("postgresql://"):
        conn = await asyncpg.connect(location)
        try:
            return [r[0] for r in await conn.fetch(query.format("$1", "$2"), budget_id, key)]
        finally:
            await conn.close()
    with closing(sqlite3.connect(location)) as db:
        return [r[0] for r in db.execute(query.format("?", "?"), (budget_id, key))]


async def test_buckets_long_outside_the_window_are_pruned_and_reconcile_still_agrees(
    engine: BudgetEngine, ledger_location: str, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="1000", period="30m")
    for _ in range(10):  # ten buckets, one a minute
        await engine.charge("acme", cost_usd="1")
        clock.advance(minutes=1)
    clock.advance(days=3)
    await engine.charge("acme", cost_usd="1")  # outside the window, but within the day kept for a clock stepped back
    recent = Rolling(30).bucket(clock.now)
    clock.advance(hours=12)
    for _ in range(max(PRUNE_EVERY_BATCHES, PRUNE_EVERY_WRITES)):  # enough writes for either backend to prune
        await engine.charge("acme", cost_usd="0.01")
    assert await _rolling_rows(ledger_location, "acme", "30m") == [recent, Rolling(30).bucket(clock.now)]
    status = await engine.status("acme")
    assert (status.spent_usd, status.available_usd) == ("2.560000", "997.440000")
    assert await engine.reconcile() == []


async def test_a_rolling_limit_alerts_once_while_its_alert_is_inside_the_window(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10", period="5h", alert_at=["0.5"], enforcement="warn")
    assert (await engine.charge("acme", cost_usd="4")).alerts == []
    first = (await engine.charge("acme", cost_usd="2")).alerts
    assert [(a.period, a.threshold, a.spent_usd, a.limit_usd) for a in first] == [
        ("5h", "0.5", "6.000000", "10.000000")
    ]
    clock.advance(hours=1)
    assert (await engine.charge("acme", cost_usd="1")).alerts == []  # its alert is still inside the window
    assert (await other_engine.charge("acme", cost_usd="1")).alerts == []  # so for a fresh load too
    clock.advance(hours=4, minutes=2)  # the first charges and their alert have left the window: 2 of 10 spent
    assert (await engine.status("acme")).spent_usd == "2.000000"
    assert (await engine.charge("acme", cost_usd="2")).alerts == []
    again = (await other_engine.charge("acme", cost_usd="1")).alerts  # crossed again: 5 of 10
    assert [(a.period, a.spent_usd) for a in again] == [("5h", "5.000000")]
    assert (await engine.charge("acme", cost_usd="1")).alerts == []  # the kept snapshot knows it was raised
    report = await engine.report("acme")  # the alerts of the window now: the first one has left it
    assert [(a.period, a.threshold, a.spent_usd) for a in report.alerts] == [("5h", "0.5", "5.000000")]
    assert await engine.ledger.reconcile() == []


async def test_a_rolling_alert_does_not_repeat_while_spend_stays_above_its_threshold(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10", period="5h", alert_at=["0.5"], enforcement="warn")
    seen = []
    for i in range(24):  # 0.60 every 30 minutes for 12 hours: from hour 4 the window holds 5.40 or more
        seen += [(i, a.spent_usd) for a in (await engine.charge("acme", cost_usd="0.6")).alerts]
        clock.advance(minutes=30)
    assert seen == [(8, "5.400000")]
    clock.advance(hours=5)  # all of it leaves the window; crossing again alerts again
    assert [a.spent_usd for a in (await engine.charge("acme", cost_usd="6")).alerts] == ["6.000000"]


async def test_a_fresh_load_knows_only_the_latest_rolling_alert_inside_the_window(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="1", period="1m", alert_at=["0.5"], enforcement="warn")
    raised = 0
    for _ in range(40):
        raised += len((await engine.charge("acme", cost_usd="0.6")).alerts)
        clock.advance(minutes=3)
    assert raised == 40
    snapshot = await other_engine.ledger.read(Scope(budget_ids=("acme",)), clock.now)
    assert snapshot.rolling_alerts == {}  # the last one left the window two minutes ago
    await engine.charge("acme", cost_usd="0.6")
    snapshot = await other_engine.ledger.read(Scope(budget_ids=("acme",)), clock.now)
    assert snapshot.rolling_alerts == {("acme", "1m", "0.5"): Rolling(1).bucket(clock.now)}


async def test_an_imported_charge_inside_a_rolling_window_alerts_there(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate(
        "acme", limit_usd="10", period="5h", alert_at=["0.5"], enforcement="warn",
        extra_limits=[{"period": "daily", "limit_usd": "10"}],
    )  # fmt: skip
    past = clock.now - timedelta(minutes=10)
    result = await engine.record_past_charges(
        [Entry("chg_past1", EntryKind.CHARGE, "acme", past, 6 * 10**9, TokenCounts())]
    )
    assert sorted(a.period for a in result.alerts) == ["5h", "daily"]
    assert (await engine.charge("acme", cost_usd="1")).alerts == []
