"""Alerts of limits on some models or providers (SPEC 7b, 13): thresholds are fractions of each limit, those too.

On both backends, with a second server on the same ledger (which knows the alerts raised only from the store).
"""

from datetime import timedelta

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.records import Entry, EntryKind, TokenCounts
from budget_mcp.domain.results import AlertInfo
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio

ANTHROPIC_DAILY = {"period": "daily", "limit_usd": "1", "providers": ["anthropic"]}


def shown(alerts: list[AlertInfo]) -> list[tuple[str, str, list[str], str | None]]:
    return [(a.period, a.threshold, a.providers, a.limit_usd) for a in alerts]


async def test_a_provider_cap_alerts_at_its_own_thresholds_once_a_window(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate(
        "acme", limit_usd="10", period="daily", extra_limits=[ANTHROPIC_DAILY], alert_at=["0.5", "0.8"]
    )
    first = await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.85")
    assert shown(first.alerts) == [
        ("daily", "0.5", ["anthropic"], "1.000000"),
        ("daily", "0.8", ["anthropic"], "1.000000"),
    ]
    assert (
        await other_engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.05")
    ).alerts == []  # raised once a window
    # The budget's own daily limit crosses the same threshold in the same window: an alert of its own.
    own = await other_engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="4.2")
    assert shown(own.alerts) == [("daily", "0.5", [], "10.000000")]
    report = await other_engine.report("acme")
    assert sorted((a.threshold, a.providers, a.spent_usd) for a in report.alerts) == [
        ("0.5", [], "5.100000"),
        ("0.5", ["anthropic"], "0.850000"),
        ("0.8", ["anthropic"], "0.850000"),
    ]
    clock.advance(days=1)
    next_day = await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.6")
    assert shown(next_day.alerts) == [("daily", "0.5", ["anthropic"], "1.000000")]


async def test_a_rolling_model_cap_alerts_again_once_its_spend_has_left_the_window(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    capped = {"period": "5h", "limit_usd": "2", "models": ["claude-sonnet-4-5"]}
    await engine.allocate("acme", limit_usd="100", period="monthly", extra_limits=[capped], alert_at=["0.5"])
    crossed = await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="1.5")
    assert [(a.period, a.models) for a in crossed.alerts] == [("5h", ["claude-sonnet-4-5"])]
    assert (
        await other_engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.1")
    ).alerts == []
    assert (await other_engine.charge("acme", model="gpt-4o", provider="openai", cost_usd="1.5")).alerts == []
    clock.advance(hours=6)  # the spend has left the window: below the threshold again
    again = await other_engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="1.2")
    assert [(a.period, a.models, a.spent_usd) for a in again.alerts] == [("5h", ["claude-sonnet-4-5"], "1.200000")]


async def test_a_rolling_cap_whose_last_alert_is_inside_the_window_does_not_alert_again(
    engine: BudgetEngine, other_engine: BudgetEngine, clock: FakeClock
) -> None:
    capped = {"period": "5h", "limit_usd": "2", "providers": ["anthropic"]}
    await engine.allocate("acme", limit_usd="100", period="monthly", extra_limits=[capped], alert_at=["0.5"])
    assert (await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.6")).alerts == []
    clock.advance(hours=3)
    assert (
        len((await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.6")).alerts) == 1
    )  # 1.2 of 2
    clock.advance(hours=2, minutes=30)  # the first 0.6 has left: 0.6, below the threshold again
    # Back over it from below, but the alert of 2.5 hours ago is still inside the window: not again.
    assert (
        await other_engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.5")
    ).alerts == []


async def test_imported_charges_for_a_capped_provider_alert_as_live_ones_do(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    caps = [{"period": "daily", "limit_usd": "1", "providers": ["anthropic"]},
            {"period": "5h", "limit_usd": "1", "providers": ["anthropic"]}]  # fmt: skip
    await engine.allocate("acme", limit_usd="100", period="monthly", extra_limits=caps, alert_at=["0.5"])
    earlier = clock.now - timedelta(minutes=10)
    imported = await engine.record_past_charges(
        [
            Entry("chg_past1", EntryKind.CHARGE, "acme", earlier, 8 * 10**8, TokenCounts(), provider="anthropic"),
            Entry("chg_past2", EntryKind.CHARGE, "acme", earlier, 9 * 10**8, TokenCounts(), provider="openai"),
        ]
    )
    assert sorted((a.period, a.providers) for a in imported.alerts) == [
        ("5h", ("anthropic",)),
        ("daily", ("anthropic",)),
    ]
    again = await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.1")
    assert again.alerts == []


async def test_an_alert_names_its_limit_after_the_limit_is_removed(
    engine: BudgetEngine, other_engine: BudgetEngine
) -> None:
    await engine.allocate("acme", limit_usd="10", period="daily", extra_limits=[ANTHROPIC_DAILY], alert_at=["0.5"])
    await engine.charge("acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="0.6")
    await engine.allocate("acme", extra_limits=[])  # the cap is gone; its alert stays in the report
    assert [lim.providers for lim in (await other_engine.status("acme")).limits] == [[]]
    report = await other_engine.report("acme")
    assert [(a.period, a.threshold, a.providers, a.limit_usd) for a in report.alerts] == [
        ("daily", "0.5", ["anthropic"], "1.000000")
    ]
