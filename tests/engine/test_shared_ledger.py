"""Two servers on one ledger, and the passing of time: every answer counts every write made before it.

A PostgreSQL server decides a write on the snapshot it kept from its own last write to the tree when
nobody changed the tree since; these tests are where a stale or outlived snapshot would show.
"""

from datetime import UTC, datetime
from decimal import Decimal

import anyio
import pytest

from budget_mcp import BudgetEngine
from budget_mcp.errors import ReservationNotFoundError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_charge_through_one_server_counts_in_the_next_answer_of_the_other(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="4")
    await other_engine.charge("acme", cost_usd="4")
    third = await engine.charge("acme", cost_usd="1")
    assert (third.spent_usd, third.remaining_usd) == ("9.000000", "1.000000")
    assert [a.threshold for a in third.alerts] == ["0.9"]
    fourth = await other_engine.charge("acme", cost_usd="1")
    assert (fourth.spent_usd, fourth.remaining_usd, fourth.over_limit) == ("10.000000", "0.000000", False)
    assert [a.threshold for a in fourth.alerts] == ["1.0"]
    assert await engine.ledger.reconcile() == []


async def test_agents_on_two_servers_each_see_every_earlier_charge(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="1000")
    reported: list[Decimal] = []

    async def agent(server: BudgetEngine, holds_first: bool) -> None:
        hold = (
            (await server.check("acme", estimated_cost_usd="1", reserve=True)).reservation_id if holds_first else None
        )
        reported.append(Decimal((await server.charge("acme", cost_usd="1", reservation_id=hold)).spent_usd))

    for _ in range(25):  # in rounds, so that both servers write between any server's two batches
        async with anyio.create_task_group() as agents:
            for n in range(16):  # a quarter hold first: their writes take the locked way, beside plain charges
                agents.start_soon(agent, engine if n % 2 else other_engine, n % 4 == 0)

    # Charges are serialised: each one reports the spend after it, so the 400 answers are exactly 1..400.
    assert sorted(reported) == [Decimal(n) for n in range(1, 401)]
    assert (await other_engine.status("acme")).spent_usd == "400.000000"
    assert await engine.ledger.reconcile() == []


async def test_a_hold_stops_counting_in_charges_once_it_expires(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.check("acme", estimated_cost_usd="5", reserve=True, ttl_seconds=60)
    assert (await engine.charge("acme", cost_usd="1")).remaining_usd == "4.000000"
    assert (await engine.charge("acme", cost_usd="1")).remaining_usd == "3.000000"
    clock.advance(seconds=61)
    assert (await engine.charge("acme", cost_usd="1")).remaining_usd == "7.000000"


async def test_charging_an_expired_hold_leaves_what_the_live_holds_hold(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10", enforcement="block")
    expired = await engine.check("acme", estimated_cost_usd="0.70", reserve=True, ttl_seconds=60)
    clock.advance(seconds=61)
    await engine.check("acme", estimated_cost_usd="0.10", reserve=True)
    await engine.charge("acme", cost_usd="0.20", reservation_id=expired.reservation_id)
    status = await engine.status("acme")  # read on what this server kept from its writes
    assert (status.held_usd, status.available_usd) == ("0.100000", "9.700000")
    assert not (await engine.check("acme", estimated_cost_usd="9.75", reserve=True)).allowed
    assert (await engine.check("acme", estimated_cost_usd="9.70", reserve=True)).allowed


async def test_a_charge_after_midnight_starts_the_new_day(engine: BudgetEngine, clock: FakeClock) -> None:
    clock.now = datetime(2026, 11, 25, 23, 59, 58, tzinfo=UTC)
    await engine.allocate("acme", limit_usd="10", period="daily")
    await engine.charge("acme", cost_usd="3")
    assert (await engine.charge("acme", cost_usd="3")).spent_usd == "6.000000"
    clock.advance(seconds=3)
    assert (await engine.charge("acme", cost_usd="1")).spent_usd == "1.000000"


async def test_a_retried_charge_is_recorded_once_whichever_server_gets_the_retry(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="1")
    first = await engine.charge("acme", cost_usd="2", idempotency_key="call-7")
    again_here = await engine.charge("acme", cost_usd="2", idempotency_key="call-7")
    again_there = await other_engine.charge("acme", cost_usd="2", idempotency_key="call-7")
    assert not first.duplicate and again_here.duplicate and again_there.duplicate
    assert again_here.charge_id == again_there.charge_id == first.charge_id
    assert (await engine.status("acme")).spent_usd == "3.000000"


async def test_a_limit_changed_through_one_server_governs_the_next_charge_through_the_other(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="2")
    await other_engine.allocate("acme", limit_usd="20")
    assert (await engine.charge("acme", cost_usd="2")).remaining_usd == "16.000000"
    await other_engine.allocate("acme/web", limit_usd="5")  # carved out of acme's 20
    assert (await engine.charge("acme", cost_usd="1")).remaining_usd == "10.000000"


@pytest.mark.parametrize("agents", [10, 20])  # fewer, and more, paths than a server keeps snapshots of per tree
async def test_sub_agents_of_one_tree_each_see_the_whole_tree_spend(engine: BudgetEngine, agents: int) -> None:
    await engine.allocate("crowd", limit_usd="100")
    children = [f"crowd/agent-{n}" for n in range(agents)]
    for child in children:
        await engine.allocate(child)
    spent = 0
    for _ in range(3):
        for child in children:
            spent += 1
            assert (await engine.charge(child, cost_usd="1")).remaining_usd == f"{100 - spent}.000000", child
    assert await engine.ledger.reconcile() == []


async def test_checks_and_statuses_on_one_server_count_charges_made_through_the_other(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="3")
    assert (await engine.check("acme", estimated_cost_usd="1")).remaining_usd == "7.000000"
    await other_engine.charge("acme", cost_usd="4")
    assert (await engine.check("acme", estimated_cost_usd="1")).remaining_usd == "3.000000"
    assert (await engine.status("acme")).spent_usd == "7.000000"
    await other_engine.check("acme", estimated_cost_usd="2", reserve=True, ttl_seconds=60)
    assert (await engine.status("acme")).held_usd == "2.000000"
    clock.advance(seconds=61)
    assert (await engine.status("acme")).held_usd == "0.000000"


async def test_holds_made_settled_or_released_on_either_server_count_on_both(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="10")
    first = await engine.check("acme", estimated_cost_usd="2", reserve=True)
    second = await engine.check("acme", estimated_cost_usd="3", reserve=True)
    assert (second.remaining_usd, (await other_engine.status("acme")).held_usd) == ("5.000000", "5.000000")
    settled = await other_engine.charge("acme", cost_usd="1", reservation_id=first.reservation_id)
    assert settled.remaining_usd == "6.000000"  # 10 - 1 spent - 3 still held
    with pytest.raises(ReservationNotFoundError, match="already settled"):
        await engine.release(reservation_id=first.reservation_id)
    assert (await engine.charge("acme", cost_usd="3", reservation_id=second.reservation_id)).remaining_usd == "6.000000"
    third = await engine.check("acme", estimated_cost_usd="4", reserve=True)
    await other_engine.release(reservation_id=third.reservation_id)
    with pytest.raises(ReservationNotFoundError, match="already released"):
        await engine.release(reservation_id=third.reservation_id)
    status = await engine.status("acme")
    assert (status.spent_usd, status.held_usd) == ("4.000000", "0.000000")
    assert await engine.ledger.reconcile() == []


async def test_the_ledger_names_the_budgets_another_server_wrote(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    for root in ("acme", "beta", "gamma"):
        await engine.allocate(root, limit_usd="10")
    await other_engine.changed_budgets()  # from here on
    await other_engine.changed_budgets()
    await engine.charge("beta", cost_usd="1")
    await engine.allocate("gamma/kid", limit_usd="1")
    heard: set[str] = set()
    with anyio.fail_after(5):
        while heard != {"beta", "gamma/kid"}:
            heard |= await other_engine.changed_budgets() or set()
            await anyio.sleep(0.01)
    assert await other_engine.changed_budgets() == set()  # nothing more: acme was not touched
