"""Sub-budgets that expire (SPEC 13): closed at their time, at the next write to their tree or by the sweep,
with what they did not spend back in their parent; on both backends, time moved by the FakeClock."""

from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.errors import InvalidInputError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_sub_budget_closes_at_its_time_and_its_unspent_part_returns_to_the_parent(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/task", limit_usd="4", ttl_seconds=60)
    await other_engine.charge("acme/task", cost_usd="1")
    assert (await engine.status("acme")).available_usd == "6.000000"
    clock.advance(seconds=59)
    assert (await other_engine.check("acme/task", estimated_cost_usd="1")).allowed
    clock.advance(seconds=1)
    assert (await engine.status("acme")).available_usd == "9.000000"  # a read counts it back at once
    assert (await other_engine.check("acme", estimated_cost_usd="9")).allowed
    denied = await engine.check("acme/task", estimated_cost_usd="0.5")
    assert not denied.allowed and "closed" in denied.reason
    task = await other_engine.status("acme/task")
    assert task.closed and Decimal(task.spent_usd) == 1
    assert [e for e in await engine.ledger.entries("acme/task") if e.kind == "close"] == []  # nothing wrote yet
    await other_engine.charge("acme", cost_usd="2")  # the next write to the tree closes it
    closes = [e for e in await engine.ledger.entries("acme/task") if e.kind == "close"]
    assert [(e.metadata["expired"], e.metadata["returned_nanos"]) for e in closes] == [(True, 3_000_000_000)]
    assert await engine.ledger.reconcile() == []


async def test_the_sweep_closes_what_expired_without_other_traffic(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="2", expires_at="2026-11-25T12:30:00+00:00")
    await engine.allocate("acme/b", limit_usd="2", ttl_seconds=3600)
    assert await engine.close_expired() == []
    clock.advance(minutes=30)
    assert await engine.close_expired() == ["acme/a"]
    assert (await engine.status("acme/a")).closed and not (await engine.status("acme/b")).closed
    assert await engine.close_expired() == []
    assert (await engine.status("acme")).available_usd == "8.000000"


async def test_a_charge_after_expiry_is_recorded_with_a_warning(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/task", limit_usd="4", ttl_seconds=60)
    clock.advance(minutes=5)
    charged = await engine.charge("acme/task", cost_usd="1")
    assert any("closed" in w for w in charged.warnings)
    assert (await engine.status("acme")).spent_usd == "1.000000"


async def test_reopening_an_expired_budget_keeps_no_old_expiry(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/task", limit_usd="4", ttl_seconds=60)
    clock.advance(minutes=5)
    reopened = await engine.allocate("acme/task", limit_usd="3")
    assert not reopened.closed
    clock.advance(days=1)
    assert not (await engine.status("acme/task")).closed
    assert await engine.close_expired() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ttl_seconds": 0}, "ttl_seconds must be a whole number of seconds from 1 to 7776000"),
        ({"ttl_seconds": -5}, "ttl_seconds must be a whole number"),
        ({"ttl_seconds": 91 * 86_400}, "at most 90 days ahead"),
        ({"expires_at": "2026-11-25T11:00:00Z"}, "is not in the future"),
        ({"expires_at": "2026-11-25T13:00:00"}, "needs a UTC offset"),
        ({"expires_at": "tomorrow"}, "must be an ISO 8601 time"),
        ({"expires_at": "2026-11-25T13:00:00Z", "ttl_seconds": 60}, "not both"),
    ],
)
async def test_a_bad_expiry_is_refused_and_writes_nothing(
    engine: BudgetEngine, fields: dict[str, object], message: str
) -> None:
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(InvalidInputError, match=message):
        await engine.allocate("acme/task", limit_usd="1", **fields)  # type: ignore[arg-type]
    assert await engine.ledger.budget_ids() == ["acme"]


async def test_an_expiring_budget_takes_no_sub_budgets(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/task", limit_usd="4", ttl_seconds=600)
    with pytest.raises(InvalidInputError, match="'acme/task' expires at .* so it takes no sub-budgets"):
        await engine.allocate("acme/task/sub", limit_usd="1")
    await engine.allocate("acme/team", limit_usd="4")
    await engine.allocate("acme/team/x", limit_usd="1")
    with pytest.raises(InvalidInputError, match="only a budget without sub-budgets may expire"):
        await engine.allocate("acme/team", ttl_seconds=600)
