"""Spend reports on a real ledger, against figures computed by hand: breakdowns add up to the ledger's totals."""

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.results import SpendFigures, SpendReport
from budget_mcp.errors import BudgetNotFoundError, InvalidInputError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


def total(lines: Sequence[SpendFigures]) -> Decimal:
    return sum((Decimal(line.cost_usd) for line in lines), Decimal(0))


def costs(lines: Sequence[SpendFigures], key: str) -> dict[object, str]:
    return {getattr(line, key): line.cost_usd for line in lines}


async def build_month(engine: BudgetEngine, clock: FakeClock) -> None:
    """October: one charge. November 25 and 26: two models, two children, a direct charge, a refund, a live hold."""
    clock.now = datetime(2026, 10, 15, 9, 0, tzinfo=UTC)
    await engine.allocate("acme", limit_usd="100", period="monthly")
    await engine.allocate("acme/research", limit_usd="30")
    await engine.allocate("acme/support", limit_usd="10")
    await engine.charge("acme/research", model="gpt-4o", input_tokens=40_000, output_tokens=0)  # $0.10
    clock.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    # 100k x $2.50 + 10k x $10 per million = $0.35
    await engine.charge("acme/research", model="gpt-4o", input_tokens=100_000, output_tokens=10_000)
    # 200k x $1 + 20k x $5 + 100k cached x $0.10 per million = $0.31
    await engine.charge(
        "acme/research", model="claude-haiku-4-5", input_tokens=200_000, output_tokens=20_000, cache_read_tokens=100_000
    )
    await engine.charge("acme", cost_usd="1.5")
    clock.now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    # 20k x $2.50 + 2k x $10 per million = $0.07
    await engine.charge("acme/support", model="gpt-4o", input_tokens=20_000, output_tokens=2_000)
    await engine.adjust("acme/support", "-0.02", "refund of a failed call")
    await engine.check("acme/research", estimated_cost_usd="2", reserve=True)


async def test_current_window_report_matches_hand_computed_figures(engine: BudgetEngine, clock: FakeClock) -> None:
    await build_month(engine, clock)

    report = await engine.report("acme")

    status = await engine.status("acme")
    assert report.current and report.window_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert report.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert report.totals.spent_usd == status.spent_usd == "2.210000"  # 0.35 + 0.31 + 1.5 + 0.07 - 0.02
    assert report.totals.held_usd == "2.000000" and report.totals.calls == 4
    assert report.totals.spent_tokens == 100_000 + 10_000 + 200_000 + 20_000 + 100_000 + 20_000 + 2_000
    assert {(m.model, m.adjustments): m.cost_usd for m in report.by_model} == {
        (None, False): "1.500000",
        (None, True): "-0.020000",  # the refund has a row of its own
        ("gpt-4o", False): "0.420000",
        ("claude-haiku-4-5", False): "0.310000",
    }
    assert costs(report.by_provider, "provider") == {None: "1.480000", "openai": "0.420000", "anthropic": "0.310000"}
    assert costs(report.by_child, "budget_id") == {
        "acme": "1.500000",
        "acme/research": "0.660000",
        "acme/support": "0.050000",
    }
    assert costs(report.by_day, "day") == {"2026-11-25": "2.160000", "2026-11-26": "0.050000"}
    assert report.by_hour == []  # monthly windows break down by day only
    gpt4o = next(m for m in report.by_model if m.model == "gpt-4o")
    assert (gpt4o.input_tokens, gpt4o.output_tokens, gpt4o.calls) == (120_000, 12_000, 2)
    assert_breakdowns_add_up(report)


async def test_past_window_report_holds_only_that_window(engine: BudgetEngine, clock: FakeClock) -> None:
    await build_month(engine, clock)

    october = await engine.report("acme", window_of=date(2026, 10, 3))

    assert not october.current
    assert october.window_start == datetime(2026, 10, 1, tzinfo=UTC) and october.resets_at == datetime(
        2026, 11, 1, tzinfo=UTC
    )
    assert (october.totals.spent_usd, october.totals.held_usd, october.totals.available_usd) == (
        "0.100000", "0.000000", "99.900000",
    )  # fmt: skip
    assert costs(october.by_child, "budget_id") == {"acme/research": "0.100000"}
    assert october.forecast.projected_spend_usd == "0.100000" and october.forecast.exhausted_at is None
    assert_breakdowns_add_up(october)


async def test_child_report_and_hourly_detail_for_daily_budgets(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("bot", limit_usd="5", period="daily", timezone="Asia/Kolkata")  # UTC+05:30
    clock.now = datetime(2026, 11, 25, 18, 20, tzinfo=UTC)  # 23:50 in Kolkata
    await engine.charge("bot", cost_usd="0.40")
    clock.now = datetime(2026, 11, 25, 18, 40, tzinfo=UTC)  # 00:10 the next day in Kolkata: a new window
    await engine.charge("bot", cost_usd="0.25")
    await engine.charge("bot", cost_usd="0.05")

    report = await engine.report("bot")

    assert report.totals.spent_usd == "0.300000"
    assert [(h.hour.isoformat(), h.cost_usd) for h in report.by_hour] == [("2026-11-26T00:00:00+05:30", "0.300000")]
    assert costs(report.by_day, "day") == {"2026-11-26": "0.300000"}
    assert_breakdowns_add_up(report)


async def test_alerts_of_the_window_are_listed(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.charge("acme", cost_usd="9.5")  # crosses 50%, 80% and 90% at once

    report = await engine.report("acme")

    assert [(a.threshold, a.spent_usd, a.webhook) for a in report.alerts] == [
        ("0.5", "9.500000", None), ("0.8", "9.500000", None), ("0.9", "9.500000", None),
    ]  # fmt: skip


async def test_report_errors_are_clear(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(BudgetNotFoundError, match="budget 'ghost' does not exist"):
        await engine.report("ghost")
    with pytest.raises(InvalidInputError, match="is in the future"):
        await engine.report("acme", window_of=date(2027, 1, 1))


async def test_ledger_entries_are_newest_first_with_a_limit(engine: BudgetEngine, clock: FakeClock) -> None:
    await build_month(engine, clock)

    listing = await engine.ledger_entries("acme", limit=3)

    assert [(e.kind, e.budget_id, e.cost_usd) for e in listing.entries] == [
        ("hold", "acme/research", "2.000000"),
        ("adjust", "acme/support", "-0.020000"),
        ("charge", "acme/support", "0.070000"),
    ]
    with pytest.raises(InvalidInputError, match="limit must be between 1 and 1000"):
        await engine.ledger_entries("acme", limit=0)


async def test_ledger_pages_before_a_seq_go_on_where_the_last_page_ended(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    await build_month(engine, clock)
    everything = (await engine.ledger_entries("acme", limit=1000)).entries
    pages = [(await engine.ledger_entries("acme", limit=4)).entries]
    while pages[-1] and len(pages) < 10:  # bounded: a page that does not move on must fail, not hang
        pages.append((await engine.ledger_entries("acme", limit=4, before=pages[-1][-1].seq)).entries)
    assert [e.entry_id for page in pages for e in page] == [e.entry_id for e in everything]
    assert [e.seq for e in everything] == sorted({e.seq for e in everything}, reverse=True)
    assert (await engine.ledger_entries("acme", before=everything[0].seq + 1)).entries == everything[:100]
    for bad in (0, -1, 2**63):
        with pytest.raises(InvalidInputError, match="before must be an entry's seq, from 1 to 9223372036854775807"):
            await engine.ledger_entries("acme", before=bad)


def assert_breakdowns_add_up(report: SpendReport) -> None:
    spent = Decimal(report.totals.spent_usd)
    for lines in (report.by_model, report.by_provider, report.by_child, report.by_day):
        assert total(lines) == spent
    if report.by_hour:
        assert total(report.by_hour) == spent


async def test_a_parents_report_shows_the_alerts_its_children_crossed(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="100", period="monthly")
    await engine.allocate("acme/kid", limit_usd="10")
    charged = await engine.charge("acme/kid", cost_usd="6")  # 60% of the kid's limit, 6% of acme's
    report = await engine.report("acme")
    assert [(a.budget_id, a.threshold) for a in charged.alerts] == [("acme/kid", "0.5")]
    assert [(a.budget_id, a.threshold) for a in report.alerts] == [("acme/kid", "0.5")]
    assert (await engine.report("acme/kid")).alerts == report.alerts
