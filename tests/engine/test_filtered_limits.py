"""Limits on some models or providers (SPEC 13): only their charges count, only their checks are decided by them.

On both backends, through two servers on one ledger (where a kept snapshot missing a filtered total would
show), and with reconcile() recomputing every filtered total from the entries.
"""

import asyncio
from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.results import BudgetStatus
from budget_mcp.errors import InvalidInputError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


OPENAI_DAILY = {"period": "daily", "limit_usd": "5", "providers": ["openai"]}


async def test_a_provider_cap_counts_only_that_provider_s_charges_and_decides_only_its_checks(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="100", period="monthly", extra_limits=[OPENAI_DAILY])
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="3")
    await other_engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="20")
    status = await other_engine.status("acme")
    capped = next(lim for lim in status.limits if lim.providers)
    assert (capped.providers, capped.spent_usd, capped.available_usd) == (["openai"], "3.000000", "2.000000")
    assert Decimal(status.spent_usd) == 23  # the monthly limit counts everything
    over = await engine.check("acme", estimated_cost_usd="2.5")  # a check that names no provider may be for openai
    assert (over.allowed, over.decided_period) == (False, "daily")
    assert "openai" in over.reason
    anthropic = await other_engine.check(
        "acme", estimated_cost_usd="2.5", provider="anthropic", model="claude-sonnet-4-5"
    )
    assert anthropic.allowed
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="2")
    assert (
        await other_engine.check("acme", estimated_cost_usd="0.01", provider="openai", model="gpt-4o")
    ).allowed is False
    assert await engine.ledger.reconcile() == []


async def test_a_model_list_counts_only_charges_for_those_models(engine: BudgetEngine) -> None:
    await engine.allocate("acme", extra_limits=[{"period": "total", "limit_calls": 2, "models": ["gpt-4o"]}])
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
        await engine.charge("acme", model=model, cost_usd="0.1")
    assert not (await engine.check("acme", estimated_cost_usd="0.1", model="gpt-4o")).allowed
    assert (await engine.check("acme", estimated_cost_usd="0.1", model="gpt-4o-mini")).allowed
    capped = (await engine.status("acme")).limits[0]
    assert (capped.models, capped.calls, capped.limit_calls) == (["gpt-4o"], 2, 2)
    assert await engine.ledger.reconcile() == []


async def test_a_filtered_limit_counts_its_children_s_matching_charges(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="50", extra_limits=[OPENAI_DAILY])
    await engine.allocate("acme/bot", limit_usd="10")
    await engine.charge("acme/bot", model="gpt-4o", provider="openai", cost_usd="4")
    await engine.charge("acme/bot", model="claude-sonnet-4-5", provider="anthropic", cost_usd="4")
    capped = next(lim for lim in (await engine.status("acme")).limits if lim.providers)
    assert capped.spent_usd == "4.000000"
    denied = await engine.check("acme/bot", estimated_cost_usd="1.5", provider="openai", model="gpt-4o")
    assert (denied.allowed, denied.decided_by) == (False, "acme")
    assert await engine.ledger.reconcile() == []


async def test_a_daily_and_a_provider_daily_limit_live_side_by_side(engine: BudgetEngine, clock: FakeClock) -> None:
    created = await engine.allocate("acme", limit_usd="20", period="daily", extra_limits=[OPENAI_DAILY])
    assert [(lim.period, lim.providers) for lim in created.limits] == [("daily", []), ("daily", ["openai"])]
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="5")
    assert not (await engine.check("acme", estimated_cost_usd="1", provider="openai", model="gpt-4o")).allowed
    clock.advance(days=1)
    assert (await engine.check("acme", estimated_cost_usd="1", provider="openai", model="gpt-4o")).allowed
    with pytest.raises(InvalidInputError, match="two limits of the same period"):
        await engine.allocate("acme", extra_limits=[OPENAI_DAILY, OPENAI_DAILY])


async def test_an_unknown_provider_is_allowed_and_said_in_warnings(engine: BudgetEngine) -> None:
    created = await engine.allocate(
        "acme", extra_limits=[{"period": "daily", "limit_usd": "1", "providers": ["opnai"]}]
    )
    assert created.limits[0].providers == ["opnai"]
    assert any("opnai" in w for w in created.warnings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"period": "daily", "limit_usd": "1", "providers": []}, "providers"),
        ({"period": "daily", "limit_usd": "1", "models": "gpt-4o"}, "models"),
        ({"period": "daily", "limit_usd": "1", "models": [""]}, "models"),
    ],
)
async def test_a_bad_filter_is_refused_and_writes_nothing(
    engine: BudgetEngine, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await engine.allocate("acme", extra_limits=[extra])
    assert await engine.ledger.budget_ids() == []


async def test_a_filtered_limit_set_later_counts_the_matching_spend_already_in_its_window(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="100", period="monthly")
    await engine.allocate("acme/bot", limit_usd="50", period="monthly")
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="8")  # yesterday: another window
    clock.advance(days=1)
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="1")
    await other_engine.charge("acme/bot", model="gpt-4o", provider="openai", cost_usd="2")  # a child's counts too
    await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="16")  # not for openai
    allocated = await engine.allocate("acme", extra_limits=[OPENAI_DAILY])
    assert next(lim for lim in allocated.limits if lim.providers).spent_usd == "3.000000"
    denied = await other_engine.check("acme", estimated_cost_usd="2.5", provider="openai")
    assert (denied.allowed, denied.decided_period) == (False, "daily")
    await engine.allocate("acme", extra_limits=[])  # lifted: its totals go
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="0.25")
    await other_engine.allocate("acme", extra_limits=[OPENAI_DAILY])  # set again: today's spend, the gap included
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="0.5")
    capped = next(lim for lim in (await other_engine.status("acme")).limits if lim.providers)
    assert capped.spent_usd == "3.750000"
    assert await engine.ledger.reconcile() == []
    assert await other_engine.ledger.reconcile() == []


async def test_a_rolling_limit_set_later_counts_the_spend_of_its_last_hours(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="100", period="monthly")
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="4")  # 6 h before: outside 5 h
    clock.advance(hours=2)
    await engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="1")
    clock.advance(hours=4)
    allocated = await engine.allocate("acme", extra_limits=[{"period": "5h", "limit_usd": "10"}])
    assert next(lim for lim in allocated.limits if lim.period == "5h").spent_usd == "1.000000"
    clock.advance(hours=1, minutes=1)  # the 1-dollar charge has left the window
    await other_engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="2")
    rolling = next(lim for lim in (await engine.status("acme")).limits if lim.period == "5h")
    assert rolling.spent_usd == "2.000000"
    assert await engine.ledger.reconcile() == []


OPENAI_CAP = {"period": "daily", "limit_usd": "1", "providers": ["openai"]}


async def capped_budget(engine: BudgetEngine) -> None:
    """A blocking $10 budget with a $1.00 daily cap on openai inside it."""
    await engine.allocate("acme", limit_usd="10", period="monthly", enforcement="block", extra_limits=[OPENAI_CAP])


def capped_figures(status: BudgetStatus) -> tuple[str, str, str | None]:
    capped = next(lim for lim in status.limits if lim.providers)
    return capped.spent_usd, capped.held_usd, capped.available_usd


async def test_concurrent_holds_for_a_provider_never_hold_more_than_its_cap(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await capped_budget(engine)
    checks = await asyncio.gather(
        *(
            (engine if n % 2 else other_engine).check(
                "acme", estimated_cost_usd="0.10", model="gpt-4o", provider="openai", reserve=True
            )
            for n in range(20)
        )
    )
    granted = [c.reservation_id for c in checks if c.allowed]
    assert len(granted) == 10  # $1.00 of $0.10 holds, whichever server made them
    assert all(c.decided_period == "daily" for c in checks if not c.allowed)
    assert capped_figures(await other_engine.status("acme")) == ("0.000000", "1.000000", "0.000000")
    await asyncio.gather(
        *(
            (engine if n % 2 else other_engine).charge(
                "acme", model="gpt-4o", provider="openai", cost_usd="0.10", reservation_id=reservation_id
            )
            for n, reservation_id in enumerate(granted)
        )
    )
    assert capped_figures(await engine.status("acme")) == ("1.000000", "0.000000", "0.000000")
    assert not (await engine.check("acme", estimated_cost_usd="0.01", provider="openai", reserve=True)).allowed
    other = await other_engine.check(
        "acme", estimated_cost_usd="5", model="claude-sonnet-4-5", provider="anthropic", reserve=True
    )
    assert other.allowed  # another provider's hold is not limited by the cap, only by the $10
    assert capped_figures(await engine.status("acme"))[1] == "0.000000"  # nor counted in it
    assert (await engine.status("acme")).held_usd == "5.000000"
    assert await engine.ledger.reconcile() == []


async def test_a_hold_that_names_no_provider_counts_against_the_provider_cap(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await capped_budget(engine)
    unnamed = await engine.check("acme", estimated_cost_usd="0.60", reserve=True)  # it may be for openai
    assert capped_figures(await other_engine.status("acme")) == ("0.000000", "0.600000", "0.400000")
    denied = await other_engine.check("acme", estimated_cost_usd="0.50", provider="openai", reserve=True)
    assert (denied.allowed, denied.decided_period) == (False, "daily")
    mini = await engine.check("acme", estimated_cost_usd="0.40", model="gpt-4o-mini", reserve=True)
    assert mini.allowed  # a model without a provider may be openai's too: it takes the rest of the cap
    assert not (await other_engine.check("acme", estimated_cost_usd="0.01", provider="openai")).allowed
    await other_engine.release(reservation_id=unnamed.reservation_id)
    assert capped_figures(await engine.status("acme")) == ("0.000000", "0.400000", "0.600000")
    assert (await engine.check("acme", estimated_cost_usd="0.60", provider="openai", reserve=True)).allowed


async def test_a_provider_cap_gets_its_room_back_when_holds_expire_or_are_released(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await capped_budget(engine)
    first = await engine.check(
        "acme", estimated_cost_usd="0.70", provider="openai", model="gpt-4o", reserve=True, ttl_seconds=60
    )
    assert first.remaining_usd == "0.300000"  # the answer counts its own hold in the cap
    assert not (await other_engine.check("acme", estimated_cost_usd="0.50", provider="openai")).allowed
    clock.advance(seconds=61)
    assert capped_figures(await other_engine.status("acme")) == ("0.000000", "0.000000", "1.000000")
    second = await other_engine.check("acme", estimated_cost_usd="0.90", provider="openai", reserve=True)
    assert second.allowed
    assert not (await engine.check("acme", estimated_cost_usd="0.20", provider="openai", reserve=True)).allowed
    await engine.release(reservation_id=second.reservation_id)
    assert capped_figures(await other_engine.status("acme")) == ("0.000000", "0.000000", "1.000000")
    charged = await other_engine.charge(
        "acme", provider="openai", model="gpt-4o", cost_usd="0.20", reservation_id=first.reservation_id
    )
    assert charged.warnings  # the first hold had expired; the charge counts, the hold no longer does
    assert capped_figures(await engine.status("acme")) == ("0.200000", "0.000000", "0.800000")
    assert await engine.ledger.reconcile() == []


async def test_a_child_s_holds_count_in_its_parent_s_provider_cap(engine: BudgetEngine) -> None:
    await capped_budget(engine)
    await engine.allocate("acme/bot", limit_usd="5", period="monthly")
    assert (await engine.check("acme/bot", estimated_cost_usd="0.80", provider="openai", reserve=True)).allowed
    denied = await engine.check("acme/bot", estimated_cost_usd="0.30", provider="openai", reserve=True)
    assert (denied.allowed, denied.decided_by) == (False, "acme")
    assert capped_figures(await engine.status("acme")) == ("0.000000", "0.800000", "0.200000")


async def test_a_call_cap_on_a_model_counts_live_holds_as_calls(engine: BudgetEngine) -> None:
    await engine.allocate("acme", extra_limits=[{"period": "daily", "limit_calls": 2, "models": ["gpt-4o"]}])
    assert (await engine.check("acme", estimated_cost_usd="0.1", model="gpt-4o", reserve=True)).allowed
    assert (await engine.check("acme", estimated_cost_usd="0.1", model="GPT-4o", reserve=True)).allowed
    assert not (await engine.check("acme", estimated_cost_usd="0.1", model="gpt-4o")).allowed
    assert (await engine.check("acme", estimated_cost_usd="0.1", model="gpt-4o-mini", reserve=True)).allowed


async def test_a_settled_hold_leaves_the_provider_caps_it_was_not_for_as_they_were(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await capped_budget(engine)
    anthropic = await other_engine.check("acme", estimated_cost_usd="0.50", provider="anthropic", reserve=True)
    assert (await engine.check("acme", estimated_cost_usd="0.10", provider="openai", reserve=True)).allowed
    await engine.charge("acme", provider="anthropic", cost_usd="0.50", reservation_id=anthropic.reservation_id)
    assert capped_figures(await engine.status("acme")) == ("0.000000", "0.100000", "0.900000")
    assert not (await engine.check("acme", estimated_cost_usd="0.95", provider="openai", reserve=True)).allowed
    assert (await engine.check("acme", estimated_cost_usd="0.90", provider="openai", reserve=True)).allowed
