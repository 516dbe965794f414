"""Random operation sequences against a small in-memory model of the budget semantics."""

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from tests.conftest import FakeClock

ROOT_LIMIT, CHILD_LIMIT = 1000, 400  # cents
PRICES = PriceCatalog()


@dataclass
class Model:
    """Cents spent and held per budget; the child's unspent allocation is carved from the root."""

    spent: dict[str, int] = field(default_factory=lambda: {"r": 0, "r/c": 0})
    holds: list[tuple[str, str, int]] = field(default_factory=list)  # (reservation_id, budget, cents)

    def held(self, budget: str) -> int:
        return sum(c for _, b, c in self.holds if b == budget or b.startswith(budget + "/"))

    def unspent_child(self) -> int:
        return max(0, CHILD_LIMIT - self.spent["r/c"] - self.held("r/c"))

    def available(self, budget: str) -> int:
        if budget == "r/c":
            return CHILD_LIMIT - self.spent["r/c"] - self.held("r/c")
        return ROOT_LIMIT - self.spent["r"] - self.held("r") - self.unspent_child()

    def headroom(self, budget: str) -> int:
        if budget == "r":
            return self.available("r")
        return min(self.available("r/c"), max(self.available("r"), 0) + self.unspent_child())

    def charge(self, budget: str, cents: int) -> None:
        self.spent[budget] += cents
        if budget == "r/c":
            self.spent["r"] += cents


budgets = st.sampled_from(["r", "r/c"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), budgets, st.integers(0, 600)),
        st.tuples(st.just("charge"), budgets, st.integers(0, 300)),
        st.tuples(st.just("settle"), st.integers(0, 5), st.integers(0, 600)),
        st.tuples(st.just("release"), st.integers(0, 5), st.just(0)),
    ),
    max_size=25,
)


def cents(n: int) -> str:
    return str(Decimal(n) / 100)


async def run(ops: list[tuple[str, object, int]], db: Path) -> None:
    ledger = await open_ledger(db)
    try:
        await check_against_model(BudgetEngine(ledger, PRICES, FakeClock(datetime(2026, 11, 25, tzinfo=UTC))), ops)
        assert await ledger.reconcile() == []
    finally:
        await ledger.close()


async def check_against_model(engine: BudgetEngine, ops: list[tuple[str, object, int]]) -> None:
    await engine.allocate("r", limit_usd=cents(ROOT_LIMIT))
    await engine.allocate("r/c", limit_usd=cents(CHILD_LIMIT))
    model = Model()
    for op, target, amount in ops:
        if op == "reserve":
            assert isinstance(target, str)
            result = await engine.check(target, estimated_cost_usd=cents(amount), reserve=True)
            assert result.allowed == (amount <= model.headroom(target)), (op, target, amount, model)
            if result.reservation_id:
                model.holds.append((result.reservation_id, target, amount))
        elif op == "charge":
            assert isinstance(target, str)
            await engine.charge(target, cost_usd=cents(amount))
            model.charge(target, amount)
        elif model.holds:
            assert isinstance(target, int)
            reservation_id, budget, _ = model.holds.pop(target % len(model.holds))
            if op == "settle":
                await engine.charge(budget, cost_usd=cents(amount), reservation_id=reservation_id)
                model.charge(budget, amount)
            else:
                await engine.release(reservation_id=reservation_id)
        for budget in ("r", "r/c"):
            status = await engine.status(budget)
            assert Decimal(status.spent_usd) * 100 == model.spent[budget]
            assert Decimal(status.held_usd) * 100 == model.held(budget)
            assert Decimal(status.available_usd or "0") * 100 == model.available(budget)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_random_operations_match_the_model(ops: list[tuple[str, object, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(ops, Path(tmp) / "ledger.db"))
