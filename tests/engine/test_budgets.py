"""The engine on a real SQLite file: hierarchy, carving, windows, holds, idempotency, enforcement."""

from decimal import Decimal

import anyio
import pytest

from budget_mcp import BudgetEngine
from budget_mcp.errors import (
    BudgetNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidInputError,
    ReservationNotFoundError,
    UnknownModelError,
)
from budget_mcp.ledger import Ledger
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


def usd(text: str | None) -> Decimal:
    assert text is not None
    return Decimal(text)


async def test_charge_counts_on_every_budget_of_the_path(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="100")
    await engine.allocate("acme/research", limit_usd="40")
    await engine.allocate("acme/research/web", limit_usd="10")
    await engine.charge("acme/research/web", cost_usd="2.5")
    for budget_id in ("acme", "acme/research", "acme/research/web"):
        assert usd((await engine.status(budget_id)).spent_usd) == Decimal("2.5")


async def test_child_allocation_is_carved_from_parent_and_returned_on_close(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="4")
    parent = await engine.status("acme")
    assert (usd(parent.allocated_usd), usd(parent.available_usd)) == (Decimal(4), Decimal(6))
    await engine.charge("acme/a", cost_usd="1")
    parent = await engine.status("acme")
    # The child's spend moved from allocated to spent: the parent's available is unchanged.
    assert (usd(parent.spent_usd), usd(parent.allocated_usd), usd(parent.available_usd)) == (1, 3, 6)
    released = await engine.release(budget_id="acme/a")
    assert usd(released.released_usd) == 3
    parent = await engine.status("acme")
    assert (usd(parent.allocated_usd), usd(parent.available_usd)) == (0, 9)


async def test_over_allocation_is_refused_and_says_how_much_is_available(engine: BudgetEngine, ledger: Ledger) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="7")
    with pytest.raises(InsufficientFundsError, match=r"'acme' has only \$3.00 available in its total limit") as err:
        await engine.allocate("acme/b", limit_usd="5")
    assert 'limit_usd="3.000000"' in str(err.value)
    with pytest.raises(BudgetNotFoundError):
        await engine.status("acme/b")
    assert [e.budget_id for e in await ledger.entries("acme")] == ["acme/a", "acme"]


async def test_resizing_a_child_counts_only_the_increase_against_the_parent(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="6")
    await engine.charge("acme/a", cost_usd="2")
    resized = await engine.allocate("acme/a", limit_usd="10")
    assert usd(resized.available_usd) == 8
    with pytest.raises(InsufficientFundsError, match=r'limit_usd="10.000000"'):
        await engine.allocate("acme/a", limit_usd="10.01")


async def test_child_can_spend_its_whole_allocation_even_when_parent_is_otherwise_spent(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="4")
    await engine.charge("acme", cost_usd="6")
    assert not (await engine.check("acme", estimated_cost_usd="0.01")).allowed
    check = await engine.check("acme/a", estimated_cost_usd="4")
    assert check.allowed
    assert not (await engine.check("acme/a", estimated_cost_usd="4.01")).allowed


async def test_child_needs_an_existing_parent(engine: BudgetEngine) -> None:
    with pytest.raises(BudgetNotFoundError, match="budget 'acme' does not exist; create it first"):
        await engine.allocate("acme/a", limit_usd="1")


async def test_most_restrictive_budget_on_the_path_decides(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="100")
    await engine.allocate("acme/r", limit_usd="5")
    await engine.allocate("acme/r/w", limit_usd="4")
    await engine.charge("acme/r", cost_usd="0.5")
    denied = await engine.check("acme/r/w", estimated_cost_usd="4.6")
    assert (denied.allowed, denied.decision, denied.decided_by, denied.decided_period) == (
        False,
        "deny",
        "acme/r/w",
        "total",
    )
    allowed = await engine.check("acme/r/w", estimated_cost_usd="1")
    assert allowed.allowed
    assert usd(allowed.remaining_usd) == 4


async def test_limits_of_several_periods_are_all_enforced(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate(
        "bot", limit_usd="5", period="daily",
        extra_limits=[{"period": "monthly", "limit_usd": "7"}, {"period": "total", "limit_usd": "500"}],
    )  # fmt: skip
    await engine.charge("bot", cost_usd="4.5")
    daily = await engine.check("bot", estimated_cost_usd="1")
    assert (daily.allowed, daily.decided_period) == (False, "daily")
    clock.advance(days=1)
    await engine.charge("bot", cost_usd="2")
    monthly = await engine.check("bot", estimated_cost_usd="1")
    assert (monthly.allowed, monthly.decided_by, monthly.decided_period) == (False, "bot", "monthly")
    status = await engine.status("bot")
    by_period = {lim.period: lim for lim in status.limits}
    assert usd(by_period["daily"].spent_usd) == 2
    assert usd(by_period["monthly"].spent_usd) == Decimal("6.5")
    assert usd(by_period["total"].available_usd) == Decimal("493.5")


async def test_daily_window_resets_at_local_midnight(engine: BudgetEngine, clock: FakeClock) -> None:
    status = await engine.allocate("tokyo", limit_usd="1", period="daily", timezone="Asia/Tokyo")
    assert status.resets_at is not None and status.resets_at.hour == 15  # midnight in Tokyo is 15:00 UTC
    await engine.charge("tokyo", cost_usd="1")
    assert not (await engine.check("tokyo", estimated_cost_usd="0.1")).allowed
    clock.now = status.resets_at
    assert (await engine.check("tokyo", estimated_cost_usd="0.1")).allowed


async def test_warn_budget_allows_with_a_warning_and_block_denies(engine: BudgetEngine) -> None:
    await engine.allocate("soft", limit_usd="1", enforcement="warn")
    await engine.allocate("hard", limit_usd="1")
    soft = await engine.check("soft", estimated_cost_usd="2")
    assert (soft.allowed, soft.decision, soft.decided_by) == (True, "warn", "soft")
    assert soft.warnings and "only $1.00 left in soft" in soft.warnings[0]
    hard = await engine.check("hard", estimated_cost_usd="2")
    assert (hard.allowed, hard.decision) == (False, "deny")


async def test_per_call_cap_denies_a_single_large_call(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="100", per_call_usd="0.50")
    denied = await engine.check("acme", estimated_cost_usd="0.51")
    assert (denied.allowed, denied.decided_by, denied.decided_period) == (False, "acme", None)
    assert "per-call cap of $0.50" in denied.reason
    assert (await engine.check("acme", estimated_cost_usd="0.50")).allowed


async def test_token_limits_count_every_kind_of_token(engine: BudgetEngine) -> None:
    await engine.allocate("tok", limit_tokens=1000)
    result = await engine.charge(
        "tok", cost_usd="0", input_tokens=100, output_tokens=200, cache_read_tokens=300,
        cache_write_tokens=50, reasoning_tokens=50,
    )  # fmt: skip
    assert (result.tokens, result.remaining_tokens) == (700, 300)
    check = await engine.check("tok", estimated_cost_usd="0", input_tokens=200, max_output_tokens=101)
    assert (check.allowed, check.remaining_tokens) == (False, 300)
    assert "301 tokens needed but only 300 left" in check.reason


async def test_reservation_holds_then_settles_at_actual_cost(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    reserved = await engine.check("acme", estimated_cost_usd="4", reserve=True)
    assert reserved.reservation_id and reserved.expires_at
    assert usd(reserved.remaining_usd) == 6
    status = await engine.status("acme")
    assert (usd(status.held_usd), usd(status.spent_usd), usd(status.available_usd)) == (4, 0, 6)
    charged = await engine.charge("acme", cost_usd="3.25", reservation_id=reserved.reservation_id)
    assert usd(charged.remaining_usd) == Decimal("6.75")
    status = await engine.status("acme")
    assert (usd(status.held_usd), usd(status.spent_usd)) == (0, Decimal("3.25"))
    again = await engine.charge("acme", cost_usd="1", reservation_id=reserved.reservation_id)  # a fact all the same
    assert usd((await engine.status("acme")).spent_usd) == Decimal("4.25")
    assert f"already settled by charge {charged.charge_id}" in again.warnings[0]


async def test_concurrent_holds_cannot_overcommit_a_block_budget(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    start = anyio.Event()
    answers = []

    async def reserve() -> None:
        await start.wait()  # every task is parked here before any of them asks
        answers.append(await engine.check("acme", estimated_cost_usd="0.6", reserve=True))

    async with anyio.create_task_group() as tasks:
        for _ in range(40):
            tasks.start_soon(reserve)
        await anyio.sleep(0)
        start.set()
    granted = [a for a in answers if a.allowed]
    assert len(answers) == 40 and len(granted) == 16  # 16 x $0.60 = $9.60; a 17th would need $10.20
    assert all(a.reservation_id for a in granted) and not any(a.reservation_id for a in answers if not a.allowed)
    assert usd((await engine.status("acme")).held_usd) == Decimal("9.6")


async def test_expired_holds_stop_counting_without_any_job(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.check("acme", estimated_cost_usd="8", reserve=True, ttl_seconds=60)
    assert not (await engine.check("acme", estimated_cost_usd="5")).allowed
    clock.advance(seconds=61)
    assert usd((await engine.status("acme")).held_usd) == 0
    assert (await engine.check("acme", estimated_cost_usd="5")).allowed


async def test_released_hold_frees_the_money(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    reserved = await engine.check("acme", estimated_cost_usd="8", reserve=True)
    assert reserved.reservation_id
    released = await engine.release(reservation_id=reserved.reservation_id)
    assert (released.released, usd(released.released_usd)) == ("reservation", 8)
    assert usd((await engine.status("acme")).available_usd) == 10
    with pytest.raises(ReservationNotFoundError, match="already released"):
        await engine.release(reservation_id=reserved.reservation_id)


async def test_unpriceable_settlement_is_charged_at_the_held_amount(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    reserved = await engine.check("acme", estimated_cost_usd="2", reserve=True)
    charged = await engine.charge(
        "acme", model="no-such-model-xyz", input_tokens=10, reservation_id=reserved.reservation_id
    )
    assert (usd(charged.cost_usd), charged.price_source) == (2, "reservation")
    assert "charged the reserved $2.00" in charged.warnings[0]


async def test_unknown_model_without_cost_is_an_error_naming_close_models(engine: BudgetEngine, ledger: Ledger) -> None:
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(UnknownModelError, match="close names: gpt-4o"):
        await engine.charge("acme", model="gpt-4oo", input_tokens=10, output_tokens=10)
    assert [e.kind for e in await ledger.entries("acme")] == ["allocate"]


async def test_priced_charge_records_model_and_source(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    charged = await engine.charge("acme", model="gpt-4o", provider="openai", input_tokens=1000, output_tokens=500)
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
    assert usd(charged.cost_usd) == Decimal("0.0075")
    assert charged.price_source and charged.price_source.startswith("openai/gpt-4o (genai-prices")


async def test_provider_reported_cost_wins_over_the_catalog(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    charged = await engine.charge("acme", model="gpt-4o", input_tokens=1000, output_tokens=500, cost_usd="0.001")
    assert (usd(charged.cost_usd), charged.price_source) == (Decimal("0.001"), "cost_usd")


async def test_retried_charge_with_same_key_records_once(engine: BudgetEngine, ledger: Ledger) -> None:
    await engine.allocate("acme", limit_usd="10")
    first = await engine.charge("acme", cost_usd="1.5", idempotency_key="call-1")
    again = await engine.charge("acme", cost_usd="1.5", idempotency_key="call-1")
    assert (first.duplicate, again.duplicate, again.charge_id) == (False, True, first.charge_id)
    assert usd((await engine.status("acme")).spent_usd) == Decimal("1.5")
    with pytest.raises(IdempotencyConflictError, match="already used for a different charge"):
        await engine.charge("acme", cost_usd="2", idempotency_key="call-1")
    assert len([e for e in await ledger.entries("acme") if e.kind == "charge"]) == 1


async def test_charges_over_the_limit_are_recorded_and_flagged(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="1")
    charged = await engine.charge("acme", cost_usd="1.5")
    assert charged.over_limit and usd(charged.spent_usd) == Decimal("1.5")
    assert usd(charged.remaining_usd) == Decimal("-0.5")
    assert not (await engine.check("acme", estimated_cost_usd="0.000001")).allowed


async def test_alert_thresholds_are_reported_once_per_window(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10", period="daily")
    crossed = await engine.charge("acme", cost_usd="9.5")
    assert [a.threshold for a in crossed.alerts] == ["0.5", "0.8", "0.9"]
    assert (await engine.charge("acme", cost_usd="0.1")).alerts == []
    assert [a.threshold for a in (await engine.charge("acme", cost_usd="0.4")).alerts] == ["1.0"]
    clock.advance(days=1)
    assert [a.threshold for a in (await engine.charge("acme", cost_usd="6")).alerts] == ["0.5"]


async def test_ten_thousand_micro_charges_add_up_exactly(engine: BudgetEngine, ledger: Ledger) -> None:
    await engine.allocate("acme", limit_usd="1")
    await engine.allocate("acme/a", limit_usd="0.5")
    for _ in range(10_000):
        await engine.charge("acme/a", cost_usd="0.000001")
    assert (await engine.status("acme")).spent_usd == "0.010000"
    assert (await engine.status("acme/a")).spent_usd == "0.010000"
    assert await ledger.reconcile() == []


async def test_adjustment_is_a_new_entry_that_corrects_spend(engine: BudgetEngine, ledger: Ledger) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="3")
    adjusted = await engine.adjust("acme", "-1.25", "provider refund")
    assert usd(adjusted.spent_usd) == Decimal("1.75")
    kinds = [e.kind for e in await ledger.entries("acme")]
    assert kinds == ["adjust", "charge", "allocate"]
    assert await ledger.reconcile() == []


async def test_closed_budget_denies_checks_but_still_records_charges(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="2")
    await engine.release(budget_id="acme/a")
    assert not (await engine.check("acme/a", estimated_cost_usd="0.1")).allowed
    late = await engine.charge("acme/a", cost_usd="0.1")
    assert "is closed" in late.warnings[0]
    reopened = await engine.allocate("acme/a", limit_usd="2")
    assert not reopened.closed


async def test_tree_lists_children_under_parents(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/a", limit_usd="1")
    await engine.allocate("acme/a/x", limit_usd="1")
    await engine.allocate("other")
    tree = await engine.tree()
    assert [(n.budget_id, [c.budget_id for c in n.children]) for n in tree] == [("acme", ["acme/a"]), ("other", [])]
    assert tree[0].children[0].children[0].budget_id == "acme/a/x"
    assert [n.budget_id for n in await engine.tree("acme/a")] == ["acme/a"]


async def test_track_only_budget_allows_everything_and_counts(engine: BudgetEngine) -> None:
    status = await engine.allocate("free")
    assert status.limit_usd is None and status.available_usd is None
    await engine.charge("free", cost_usd="1000")
    check = await engine.check("free", estimated_cost_usd="1000000")
    assert (check.allowed, check.remaining_usd, check.decided_by) == (True, None, None)


async def test_allocate_resize_keeps_fields_not_given(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10", period="monthly", description="team", per_call_usd="1")
    resized = await engine.allocate("acme", limit_usd="20")
    assert (resized.limit_usd, resized.period, resized.description, resized.per_call_usd) == (
        "20.000000", "monthly", "team", "1.000000",
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match="timezone cannot change"):
        await engine.allocate("acme", timezone="Europe/Paris")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimated_cost_usd": "NaN"}, "finite"),
        ({"estimated_cost_usd": "-1"}, "must not be negative"),
        ({"estimated_cost_usd": "1e20"}, "too large"),
        ({}, "give estimated_cost_usd, or model"),
        ({"estimated_cost_usd": "1", "ttl_seconds": 0}, "ttl_seconds"),
    ],
)
async def test_bad_check_input_is_refused_and_writes_nothing(
    engine: BudgetEngine, ledger: Ledger, kwargs: dict[str, object], message: str
) -> None:
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(InvalidInputError, match=message):
        await engine.check("acme", reserve=True, **kwargs)  # type: ignore[arg-type]
    assert [e.kind for e in await ledger.entries("acme")] == ["allocate"]


async def test_charge_on_unknown_budget_is_refused(engine: BudgetEngine) -> None:
    with pytest.raises(BudgetNotFoundError, match="budget 'ghost' does not exist"):
        await engine.charge("ghost", cost_usd="1")


async def test_long_expired_holds_are_forgotten_but_recent_ones_can_still_be_settled(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10")
    old = await engine.check("acme", estimated_cost_usd="1", reserve=True, ttl_seconds=60)
    recent = await engine.check("acme", estimated_cost_usd="1", reserve=True, ttl_seconds=60)
    assert old.reservation_id and recent.reservation_id
    clock.advance(minutes=5)
    late = await engine.charge("acme", cost_usd="0.5", reservation_id=recent.reservation_id)
    assert "had expired" in late.warnings[0]
    clock.advance(days=2)
    for _ in range(300):  # enough write batches for the ledger to prune
        await engine.charge("acme", cost_usd="0")
    with pytest.raises(ReservationNotFoundError, match="does not exist"):
        await engine.release(reservation_id=old.reservation_id)
    forgotten = await engine.charge("acme", cost_usd="0.5", reservation_id=old.reservation_id)  # still a fact
    assert "is not open" in forgotten.warnings[0] and forgotten.cost_usd == "0.500000"


async def test_many_concurrent_agents_in_one_process_spend_exactly_the_limit(engine: BudgetEngine) -> None:
    await engine.allocate("crowd", limit_usd="100")
    await engine.allocate("crowd/team", limit_usd="60")
    acknowledged: list[str] = []

    async def agent(budget_id: str) -> None:
        while True:
            check = await engine.check(budget_id, estimated_cost_usd="1", reserve=True)
            if not check.allowed:
                return
            charged = await engine.charge(budget_id, cost_usd="1", reservation_id=check.reservation_id)
            acknowledged.append(charged.charge_id)

    async with anyio.create_task_group() as agents:  # their writes queue and commit together
        for n in range(48):
            agents.start_soon(agent, "crowd/team" if n % 2 else "crowd")

    assert len(acknowledged) == len(set(acknowledged)) == 100
    assert usd((await engine.status("crowd")).spent_usd) == Decimal(100)
    assert usd((await engine.status("crowd/team")).spent_usd) == Decimal(60)
    assert await engine.ledger.reconcile() == []


async def test_a_token_only_budget_is_checked_on_tokens_alone(engine: BudgetEngine) -> None:
    await engine.allocate("tok", limit_tokens=1_000)
    fits = await engine.check("tok", input_tokens=600, max_output_tokens=300)
    too_many = await engine.check("tok", input_tokens=900, max_output_tokens=300)
    assert fits.allowed and fits.remaining_tokens == 1_000 and "only token limits were checked" in fits.warnings[0]
    assert not too_many.allowed and "1200 tokens needed but only 1000 left" in too_many.reason
