"""Schema-legal input that once corrupted the ledger or broke every status: each now refused or handled, on both
backends, with nothing written by a refusal."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.money import MAX_TOTAL
from budget_mcp.domain.windows import Period, window
from budget_mcp.errors import InsufficientFundsError, InvalidInputError, ReservationNotFoundError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_running_totals_never_leave_the_integer_range(engine: BudgetEngine) -> None:
    await engine.allocate("acme")  # tracking only: nothing but the ledger's own bound stops it
    for _ in range(9):
        await engine.charge("acme", cost_usd="999999999")  # each under the bound of one amount
    with pytest.raises(InvalidInputError, match=f"past the ledger's bound of {MAX_TOTAL:,}"):
        await engine.charge("acme", cost_usd="999999999")
    for _ in range(9):
        await engine.check("acme", estimated_cost_usd="999999999", reserve=True)
    with pytest.raises(InvalidInputError, match="past the ledger's bound"):
        await engine.check("acme", estimated_cost_usd="999999999", reserve=True)
    nodes = await engine.tree()  # every listing still works
    assert (nodes[0].spent_usd, nodes[0].held_usd) == ("8999999991.000000", "8999999991.000000")
    assert await engine.ledger.reconcile() == []


async def test_a_call_priced_beyond_one_amount_is_refused_before_anything_is_stored(engine: BudgetEngine) -> None:
    await engine.allocate("acme")
    with pytest.raises(InvalidInputError, match="prices at .* check the token counts"):
        await engine.charge("acme", model="gpt-4o", input_tokens=10**15, output_tokens=10**15)
    with pytest.raises(InvalidInputError, match="prices at"):
        await engine.check("acme", model="gpt-4o", input_tokens=10**15, max_output_tokens=10**15)
    assert (await engine.status("acme")).calls == 0


@pytest.mark.parametrize(
    ("limit", "spent", "minutes"),
    [("1000", "0.0001", 10 * 24 * 60), ("1", "0.000000001", 5)],  # tiny spend against a large remaining amount
)
async def test_a_forecast_beyond_any_date_is_no_run_out_never_an_error(
    engine: BudgetEngine, clock: FakeClock, limit: str, spent: str, minutes: int
) -> None:
    clock.now = datetime(2026, 11, 1, tzinfo=UTC)
    await engine.allocate("acme", limit_usd=limit, period="monthly")
    await engine.allocate("acme/total", limit_usd=limit, period="total")
    clock.advance(minutes=minutes)
    await engine.charge("acme", cost_usd=spent)
    await engine.charge("acme/total", cost_usd=spent)
    assert (await engine.status("acme")).forecast.exhausted_at is None
    assert (await engine.status("acme/total")).forecast.exhausted_at is None
    assert len(await engine.tree()) == 1
    assert (await engine.report("acme")).forecast.exhausted_at is None


async def test_run_out_counts_only_spend_that_draws_on_the_budgets_own_amount(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    clock.now = datetime(2026, 11, 1, tzinfo=UTC)
    await engine.allocate("acme", limit_usd="100", period="monthly")
    await engine.allocate("acme/kid", limit_usd="80")
    clock.advance(days=10)
    await engine.charge("acme/kid", cost_usd="11")  # from its own allocation: acme's $20 are untouched
    await engine.charge("acme", cost_usd="1")
    status = await engine.status("acme")
    assert status.available_usd == "19.000000" and status.forecast.projected_spend_usd == "36.000000"
    # $1 in 10 days draws on acme's own $19: that lasts 190 days, beyond the month, so no run-out.
    assert status.forecast.exhausted_at is None
    await engine.charge("acme", cost_usd="9")  # now $10 in 10 days: the other $10 go in 10 more days
    assert (await engine.status("acme")).forecast.exhausted_at == datetime(2026, 11, 21, tzinfo=UTC)


async def test_a_parent_cannot_shrink_below_what_its_children_hold(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/kid", limit_usd="8")
    with pytest.raises(InsufficientFundsError, match=r'\$8.00 allocated .* limit_usd="8.000000"'):
        await engine.allocate("acme", limit_usd="5")
    await engine.charge("acme", cost_usd="1")
    with pytest.raises(InsufficientFundsError, match='at least that|limit_usd="9.000000"'):
        await engine.allocate("acme", limit_usd="8.5")
    assert (await engine.status("acme")).limit_usd == "10.000000"
    await engine.allocate("acme", limit_usd="9")  # exactly what is spent plus what the kid holds
    for _ in range(8):
        assert (await engine.check("acme/kid", estimated_cost_usd="1")).allowed
        await engine.charge("acme/kid", cost_usd="1")
    assert not (await engine.check("acme/kid", estimated_cost_usd="0.01")).allowed
    status = await engine.status("acme")
    assert Decimal(status.spent_usd) <= Decimal(status.limit_usd or "0")  # the block parent stayed within its limit
    await engine.allocate("acme", limit_usd="20")  # raising is always fine


async def test_a_charge_that_names_a_released_hold_is_recorded_with_a_warning(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    hold = await engine.check("acme", estimated_cost_usd="2", reserve=True)
    assert hold.reservation_id
    await engine.release(reservation_id=hold.reservation_id)
    charged = await engine.charge("acme", cost_usd="1.5", reservation_id=hold.reservation_id)
    assert charged.cost_usd == "1.500000" and "was already released by rel_" in charged.warnings[0]
    unknown = await engine.charge("acme", cost_usd="0.5", reservation_id="res_" + "0" * 24)
    assert "is not open" in unknown.warnings[0]
    status = await engine.status("acme")
    assert (status.spent_usd, status.held_usd) == ("2.000000", "0.000000")
    with pytest.raises(ReservationNotFoundError, match="cost is unknown"):  # nothing held and nothing to price it by
        await engine.charge("acme", reservation_id=hold.reservation_id)


@pytest.mark.parametrize("text", ["1_000", "１", "٣", "0x10", "1e", " ", "1.2.3", "9" * 65])
async def test_amounts_are_ascii_decimal_text_only(engine: BudgetEngine, text: str) -> None:
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(InvalidInputError, match="cost_usd"):
        await engine.charge("acme", cost_usd=text)
    with pytest.raises(InvalidInputError, match="limit_usd"):
        await engine.allocate("acme", limit_usd=text)
    assert (await engine.status("acme")).calls == 0


async def test_lists_and_names_are_bounded(engine: BudgetEngine) -> None:
    with pytest.raises(InvalidInputError, match="at most 20"):
        await engine.allocate("acme", limit_usd="10", alert_at=[f"0.{n:04d}" for n in range(1, 20_001)])
    await engine.allocate("acme", limit_usd="10")
    with pytest.raises(InvalidInputError, match="provider is 1048576 characters long; at most 100"):
        await engine.charge("acme", model="gpt-4o", provider="x" * 2**20, input_tokens=1)
    with pytest.raises(InvalidInputError, match="provider is"):
        await engine.check("acme", model="gpt-4o", provider="x" * 2**20, input_tokens=1)
    with pytest.raises(InvalidInputError, match=r"cost_usd 9{40} is too large"):
        await engine.charge("acme", cost_usd=int("9" * 4000))
    with pytest.raises(InvalidInputError, match="cost_usd is 5000 characters long"):
        await engine.charge("acme", cost_usd="9" * 5000)


@pytest.mark.parametrize("name", ["Europe", "America/Argentina", "x" * 300, "../../etc/passwd", "Europe/Paris\n"])
async def test_a_timezone_that_is_not_a_zone_is_a_clear_error(engine: BudgetEngine, name: str) -> None:
    with pytest.raises(InvalidInputError, match="is not an IANA timezone name"):
        await engine.allocate("acme", limit_usd="1", timezone=name)


async def test_lord_howes_repeated_half_hour_is_an_hourly_window_of_its_own(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    clock.now = datetime(2027, 4, 3, 14, 40, tzinfo=UTC)  # 01:40 local (+11), before the clock goes back at 02:00
    await engine.allocate("lh", limit_usd="10", period="hourly", timezone="Australia/Lord_Howe")
    await engine.charge("lh", cost_usd="1")
    clock.now = datetime(2027, 4, 3, 15, 1, 30, tzinfo=UTC)  # 01:31:30 local again (+10:30)
    await engine.charge("lh", cost_usd="2")
    status = await engine.status("lh")
    assert (status.window_start, status.resets_at) == (
        datetime(2027, 4, 3, 15, 0, tzinfo=UTC),
        datetime(2027, 4, 3, 15, 30, tzinfo=UTC),
    )
    assert status.resets_at is not None and status.resets_at > clock.now and status.spent_usd == "2.000000"
    report = await engine.report("lh")
    assert report.totals.spent_usd == "2.000000" and sum(Decimal(h.cost_usd) for h in report.by_hour) == 2
    assert window(Period.HOURLY, "Australia/Lord_Howe", datetime(2027, 4, 3, 15, 30, tzinfo=UTC)) == (
        datetime(2027, 4, 3, 15, 30, tzinfo=UTC),
        datetime(2027, 4, 3, 16, 30, tzinfo=UTC),
    )
