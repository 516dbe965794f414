"""BudgetEngine.record_past_charges, the engine's entry point for imports, on both backends."""

from datetime import timedelta

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.records import Entry, EntryKind
from budget_mcp.errors import BudgetNotFoundError, InvalidInputError
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


def charge(entry_id: str, budget_id: str, clock: FakeClock, *, days: float, nanos: int = 1_000) -> Entry:
    return Entry(entry_id, EntryKind.CHARGE, budget_id, clock.now - timedelta(days=days), nanos)


async def test_each_charge_counts_once_in_the_windows_of_its_time(engine: BudgetEngine, clock: FakeClock) -> None:
    await engine.allocate("acme", limit_usd="1", period="daily")
    batch = [charge("imp_a", "acme", clock, days=3), charge("imp_b", "acme", clock, days=0.01, nanos=7)]
    first = await engine.record_past_charges([*batch, batch[0]])  # a record repeated in one batch is stored once
    assert (first.imported, first.already) == (2, 1)
    again = await engine.record_past_charges(batch)
    assert (again.imported, again.already, again.stored) == (0, 2, frozenset())
    status = await engine.status("acme")
    assert status.spent_usd == "0.000000007" and await engine.reconcile() == []
    listed = (await engine.ledger_entries("acme")).entries
    assert sorted((e.entry_id, e.at) for e in listed if e.kind == "charge") == sorted((e.entry_id, e.at) for e in batch)


async def test_a_future_charge_or_an_unknown_budget_refuses_the_whole_batch(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme")
    good = charge("imp_ok", "acme", clock, days=1)
    with pytest.raises(InvalidInputError, match="in the future"):
        await engine.record_past_charges([good, charge("imp_later", "acme", clock, days=-0.001)])
    with pytest.raises(BudgetNotFoundError):
        await engine.record_past_charges([good, charge("imp_ghost", "ghost", clock, days=1)])
    assert (await engine.status("acme")).spent_usd == "0.000000"
    assert await engine.known_entries(["imp_ok", "imp_ghost"]) == set()
