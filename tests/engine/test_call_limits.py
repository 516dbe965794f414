"""Call limits (`limit_calls`, SPEC 13): the charges of a window, counted like money on both backends.

A check counts the call it asks about, a hold holds one call until it is settled, released or expires,
and a child's call limit is carved out of its parent's limit of the same period. The second server's
engine is where a kept snapshot that forgot a call or a hold would show.
"""

from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.errors import InsufficientFundsError, InvalidInputError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_with_three_calls_allowed_and_three_charged_the_next_check_is_denied(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="100", limit_calls=3, period="daily")
    for _ in range(3):
        assert (await engine.check("acme", estimated_cost_usd="1")).allowed
        await engine.charge("acme", cost_usd="1")
    denied = await engine.check("acme", estimated_cost_usd="0.01")
    assert (denied.allowed, denied.decided_by, denied.decided_period) == (False, "acme", "daily")
    assert denied.reason.startswith("1 call needed but no calls left in acme (daily, resets 2026-11-26 00:00 UTC)")
    status = await engine.status("acme")
    assert (status.calls, status.limit_calls, status.limits[0].calls, status.limits[0].limit_calls) == (3, 3, 3, 3)
    assert await engine.ledger.reconcile() == []


async def test_a_charge_over_the_call_limit_is_recorded_and_said_over_limit(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_calls=1)
    assert not (await engine.charge("acme", cost_usd="1")).over_limit
    second = await engine.charge("acme", cost_usd="1")
    assert second.over_limit and Decimal(second.spent_usd) == 2


async def test_a_hold_holds_one_call_until_it_is_settled_released_or_expires(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="100", limit_calls=2)
    first = await engine.check("acme", estimated_cost_usd="1", reserve=True)
    second = await other_engine.check("acme", estimated_cost_usd="1", reserve=True)
    assert first.allowed and second.allowed
    assert not (await engine.check("acme", estimated_cost_usd="1")).allowed  # two calls held
    assert not (await other_engine.check("acme", estimated_cost_usd="1")).allowed
    assert second.reservation_id is not None and first.reservation_id is not None
    await other_engine.release(reservation_id=second.reservation_id)
    assert (await engine.check("acme", estimated_cost_usd="1")).allowed
    await engine.charge("acme", cost_usd="1", reservation_id=first.reservation_id)  # held call becomes spent
    status = await other_engine.status("acme")
    assert (status.calls, status.limit_calls) == (1, 2)
    third = await other_engine.check("acme", estimated_cost_usd="1", reserve=True)
    assert third.allowed and not (await engine.check("acme", estimated_cost_usd="1")).allowed
    clock.advance(seconds=601)  # the hold expires and stops holding its call
    assert (await engine.check("acme", estimated_cost_usd="1")).allowed
    assert await engine.ledger.reconcile() == []


async def test_charges_through_either_server_count_in_the_other_s_call_limit(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_calls=4, extra_limits=[{"period": "monthly", "limit_calls": 10}])
    for n in range(4):
        server = engine if n % 2 else other_engine
        assert (await server.check("acme", estimated_cost_usd="1")).allowed
        await server.charge("acme", cost_usd="1")
    for server in (engine, other_engine):
        denied = await server.check("acme", estimated_cost_usd="1")
        assert (denied.allowed, denied.decided_period) == (False, "total")
    limits = {lim.period: (lim.calls, lim.limit_calls) for lim in (await other_engine.status("acme")).limits}
    assert limits == {"total": (4, 4), "monthly": (4, 10)}


async def test_a_child_s_call_limit_is_carved_from_its_parent_s(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_calls=10)
    await engine.allocate("acme/a", limit_calls=6)
    parent = await engine.status("acme")
    assert parent.limits[0].limit_calls == 10
    with pytest.raises(InsufficientFundsError, match=r"'acme' has only 4 calls available .* limit_calls=4"):
        await engine.allocate("acme/b", limit_calls=5)
    await engine.allocate("acme/b", limit_calls=4)
    assert not (await engine.check("acme", estimated_cost_usd="1")).allowed  # all ten handed out
    with pytest.raises(InsufficientFundsError, match="limit_calls=10"):
        await engine.allocate("acme", limit_calls=9)  # its children could then make more calls than it allows
    for _ in range(6):
        assert (await engine.check("acme/a", estimated_cost_usd="1")).allowed
        await engine.charge("acme/a", cost_usd="1")
    assert not (await engine.check("acme/a", estimated_cost_usd="1")).allowed
    await engine.release(budget_id="acme/b")  # its four calls return to acme
    assert (await engine.check("acme", estimated_cost_usd="1")).allowed
    assert (await engine.status("acme")).limits[0].calls == 6


async def test_a_resize_that_names_no_limit_keeps_the_call_limit(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="5", limit_calls=3)
    kept = await engine.allocate("acme", description="same limits")
    assert (kept.limit_usd, kept.limit_calls) == ("5.000000", 3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit_calls": -1}, "limit_calls must be a whole number of calls from 0 to"),
        ({"limit_calls": True}, "limit_calls must be a whole number of calls"),
        ({"limit_calls": 1.5}, "limit_calls must be a whole number of calls"),
        ({"extra_limits": [{"period": "daily", "limit_calls": -3}]}, "extra_limits.limit_calls must be a whole"),
        ({"extra_limits": [{"period": "daily"}]}, "each extra limit needs limit_usd, limit_tokens and/or limit_calls"),
    ],
)
async def test_a_bad_call_limit_is_refused_and_writes_nothing(
    engine: BudgetEngine, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await engine.allocate("acme", limit_usd="5", **fields)  # type: ignore[arg-type]
    assert await engine.ledger.budget_ids() == []
