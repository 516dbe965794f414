"""Filtered limits with holds against a brute-force model, on both backends (SPEC 13).

A blocking budget with a USD cap on one provider and a call cap on one model; random holds, charges,
settlements, releases and waits (holds expire) for five kinds of call, through two servers on one ledger.
The model keeps every hold with the model and provider its check named: a filtered limit counts the live
holds of checks it decides (a name not given may be any) and the charges it counts (a name must match).
"""

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_mcp import BudgetEngine, PriceCatalog
from tests.conftest import FakeClock
from tests.engine.test_rolling_properties import emptied, two_servers

PRICES = PriceCatalog()
TOTAL, OPENAI_CAP, GPT4O_CALLS = 1000, 300, 4  # cents, cents, calls
KINDS = [  # (model, provider) a call names
    ("gpt-4o", "openai"), ("claude-sonnet-4-5", "anthropic"), (None, None), ("gpt-4o-mini", "openai"),
    (None, "anthropic"),
]  # fmt: skip
TTL = 60
START = datetime(2026, 11, 25, 1, tzinfo=UTC)


def in_cap(model: str | None, provider: str | None, check: bool) -> tuple[bool, bool]:
    """Whether the openai USD cap and the gpt-4o call cap count (or, for a check, decide) a call of this kind."""
    if check:
        return provider in (None, "openai"), model in (None, "gpt-4o")
    return provider == "openai", model == "gpt-4o"


@dataclass
class Model:
    """Charges (cents, kind) and holds (reservation id, cents, kind, expires_at)."""

    charges: list[tuple[int, int]] = field(default_factory=list)
    holds: list[tuple[str, int, int, datetime]] = field(default_factory=list)

    def live(self, now: datetime) -> list[tuple[int, int]]:
        return [(cents, kind) for _, cents, kind, expires in self.holds if expires > now]

    def figures(self, now: datetime) -> tuple[int, int, int, int, int]:
        """Spent and held in all, spent and held in the openai cap, calls counted in the gpt-4o cap."""
        spent = sum(c for c, _ in self.charges)
        held = sum(c for c, _ in self.live(now))
        cap_spent = sum(c for c, k in self.charges if in_cap(*KINDS[k], check=False)[0])
        cap_held = sum(c for c, k in self.live(now) if in_cap(*KINDS[k], check=True)[0])
        calls = sum(1 for _, k in self.charges if in_cap(*KINDS[k], check=False)[1])
        calls += sum(1 for _, k in self.live(now) if in_cap(*KINDS[k], check=True)[1])
        return spent, held, cap_spent, cap_held, calls

    def allows(self, cents: int, kind: int, now: datetime) -> bool:
        spent, held, cap_spent, cap_held, calls = self.figures(now)
        usd_cap, call_cap = in_cap(*KINDS[kind], check=True)
        return (
            cents <= TOTAL - spent - held
            and (not usd_cap or cents <= OPENAI_CAP - cap_spent - cap_held)
            and (not call_cap or calls < GPT4O_CALLS)
        )


operations = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "reserve", "charge", "settle", "settle", "release", "wait", "wait"]),
        st.integers(0, 1),  # which server
        st.integers(0, len(KINDS) - 1),  # which kind of call; which hold
        st.integers(0, 200),  # cents; seconds to wait
    ),
    max_size=25,
)


def cents(n: int) -> str:
    return str(Decimal(n) / 100)


async def check_against_model(location: str, ops: list[tuple[str, int, int, int]]) -> None:
    clock = FakeClock(START)
    async with two_servers(location) as ledgers:
        engines = [BudgetEngine(ledger, PRICES, clock) for ledger in ledgers]
        await engines[0].allocate(
            "r", limit_usd=cents(TOTAL), period="monthly", enforcement="block",
            extra_limits=[{"period": "daily", "limit_usd": cents(OPENAI_CAP), "providers": ["openai"]},
                          {"period": "daily", "limit_calls": GPT4O_CALLS, "models": ["gpt-4o"]}],
        )  # fmt: skip
        model = Model()
        for op, server, which, amount in ops:
            engine = engines[server]
            if op == "wait":
                clock.advance(seconds=amount // 2)
            elif op == "reserve":
                name, provider = KINDS[which]
                answer = await engine.check(
                    "r", estimated_cost_usd=cents(amount), model=name, provider=provider, reserve=True, ttl_seconds=TTL
                )
                assert answer.allowed == model.allows(amount, which, clock.now), (amount, which, model)
                if answer.reservation_id:
                    model.holds.append((answer.reservation_id, amount, which, clock.now + timedelta(seconds=TTL)))
            elif op == "charge":
                name, provider = KINDS[which]
                await engine.charge("r", model=name, provider=provider, cost_usd=cents(amount))
                model.charges.append((amount, which))
            elif model.holds:
                reservation_id, _, kind, _ = model.holds.pop(which % len(model.holds))
                if op == "settle":
                    name, provider = KINDS[kind]
                    await engine.charge(
                        "r", model=name, provider=provider, cost_usd=cents(amount), reservation_id=reservation_id
                    )
                    model.charges.append((amount, kind))
                else:
                    await engine.release(reservation_id=reservation_id)
            await assert_agrees(engine, model, clock.now)
        assert await ledgers[0].reconcile() == []


async def assert_agrees(engine: BudgetEngine, model: Model, now: datetime) -> None:
    status = await engine.status("r")
    spent, held, cap_spent, cap_held, calls = model.figures(now)
    usd_cap = next(lim for lim in status.limits if lim.providers)
    call_cap = next(lim for lim in status.limits if lim.models)
    figures = [Decimal(x) * 100 for x in (status.spent_usd, status.held_usd, usd_cap.spent_usd, usd_cap.held_usd)]
    assert figures == [spent, held, cap_spent, cap_held]
    assert Decimal(usd_cap.available_usd or "0") * 100 == OPENAI_CAP - cap_spent - cap_held
    assert call_cap.calls == sum(1 for _, k in model.charges if in_cap(*KINDS[k], check=False)[1])
    assert calls >= call_cap.calls


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_filtered_limits_with_holds_match_the_brute_force_model_on_sqlite(ops: list[tuple[str, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check_against_model(str(Path(tmp) / "ledger.db"), ops))


@pytest.fixture(scope="module")
def dsn(postgres_dsn: str) -> str:
    return postgres_dsn


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_filtered_limits_with_holds_match_the_brute_force_model_on_postgres(
    dsn: str, ops: list[tuple[str, int, int, int]]
) -> None:
    async def run() -> None:
        await check_against_model(await emptied(dsn), ops)

    asyncio.run(run())
