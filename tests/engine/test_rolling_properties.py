"""Rolling windows against a brute-force model, on both backends (SPEC 13).

Random charges at random times on a budget with a rolling limit of random length; two servers on one ledger
take turns (one decides on kept snapshots, the other often loads fresh). The model keeps every charge and its
exact time: a charge counts while its whole bucket has not left the window (`bucketed`), and the exact window
counts it while it is younger than the window (`exact`). The engine must agree with `bucketed` on every
answer and figure, and `bucketed` is never below `exact`: the rounding never lets an agent spend more.
"""

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.ledger import Ledger
from budget_mcp.ledger.postgres import PostgresLedger
from tests.conftest import FakeClock

PRICES = PriceCatalog()
LIMIT = 1000  # cents
START = datetime(2026, 11, 25, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Model:
    """Every charge (time, cents), and the rolling window's length and bucket size in seconds."""

    window_s: int
    bucket_s: int
    charges: list[tuple[datetime, int]] = field(default_factory=list)

    def bucketed(self, now: datetime) -> int:
        return sum(c for at, c in self.charges if self._bucket_end(at) > now - timedelta(seconds=self.window_s))

    def exact(self, now: datetime) -> int:
        return sum(c for at, c in self.charges if at > now - timedelta(seconds=self.window_s))

    def resets_at(self, now: datetime) -> datetime | None:
        """When the oldest charge inside drops out (each charge is a call, so even one of $0 is inside)."""
        inside = [end for end in map(self._bucket_end, (at for at, _ in self.charges))
                  if end > now - timedelta(seconds=self.window_s)]  # fmt: skip
        return min(inside) + timedelta(seconds=self.window_s) if inside else None

    def _bucket_end(self, at: datetime) -> datetime:
        seconds = int((at - EPOCH).total_seconds() // 1)
        return EPOCH + timedelta(seconds=seconds // self.bucket_s * self.bucket_s + self.bucket_s)


windows = st.one_of(st.integers(1, 180), st.integers(1441, 3 * 1440))  # minutes: minute buckets, hour buckets
operations = st.lists(
    st.tuples(
        st.sampled_from(["wait", "jump", "charge", "charge", "check", "fresh"]),
        st.integers(0, 1),  # which server
        st.integers(0, 400),  # cents; seconds to wait; a share of the window to jump
    ),
    max_size=20,
)
offsets = st.integers(0, 7200 * 1_000_000)  # microseconds after START: windows start anywhere in a bucket


@asynccontextmanager
async def two_servers(location: str) -> AsyncIterator[list[Ledger]]:
    """Two ledgers on one location, as two servers have them; closed when done."""
    ledgers = [await open_ledger(location), await open_ledger(location)]
    try:
        yield ledgers
    finally:
        for ledger in ledgers:
            await ledger.close()


def cents(n: int) -> str:
    return str(Decimal(n) / 100)


async def check_against_model(location: str, minutes: int, offset_us: int, ops: list[tuple[str, int, int]]) -> None:
    clock = FakeClock(START + timedelta(microseconds=offset_us))
    async with two_servers(location) as ledgers:
        engines = [BudgetEngine(ledger, PRICES, clock) for ledger in ledgers]
        await engines[0].allocate("r", limit_usd=cents(LIMIT), period=f"{minutes}m")
        model = Model(minutes * 60, 60 if minutes <= 1440 else 3600)
        for op, server, amount in ops:
            engine = engines[server]
            if op == "wait":
                clock.advance(seconds=amount, microseconds=amount * 7_777)
            elif op == "jump":
                clock.advance(microseconds=model.window_s * 1_000_000 * amount // 300)
            elif op == "fresh":  # a third server, whose first read is a fresh load
                fresh = await open_ledger(location)
                try:
                    engine = BudgetEngine(fresh, PRICES, clock)
                    await assert_agrees(engine, model, clock.now)
                finally:
                    await fresh.close()
            elif op == "charge":
                await engine.charge("r", cost_usd=cents(amount))
                model.charges.append((clock.now, amount))
            else:
                answer = await engine.check("r", estimated_cost_usd=cents(amount))
                available = LIMIT - model.bucketed(clock.now)
                assert answer.allowed == (amount <= available), (amount, available, model)
                if answer.allowed:  # never more permissive than the exact window
                    assert amount <= LIMIT - model.exact(clock.now)
            await assert_agrees(engines[server], model, clock.now)
        assert await ledgers[0].reconcile() == []


async def assert_agrees(engine: BudgetEngine, model: Model, now: datetime) -> None:
    status = await engine.status("r")
    spent = model.bucketed(now)
    assert Decimal(status.spent_usd) * 100 == spent
    assert Decimal(status.available_usd or "0") * 100 == LIMIT - spent
    assert spent >= model.exact(now)
    assert status.resets_at == model.resets_at(now)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(windows, offsets, operations)
def test_rolling_windows_match_the_brute_force_model_on_sqlite(
    minutes: int, offset_us: int, ops: list[tuple[str, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check_against_model(str(Path(tmp) / "ledger.db"), minutes, offset_us, ops))


@pytest.fixture(scope="module")
def dsn(postgres_dsn: str) -> str:
    return postgres_dsn


async def emptied(dsn: str) -> str:
    ledger = await PostgresLedger.open(dsn)
    await ledger.truncate()
    await ledger.close()
    return dsn


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(windows, offsets, operations)
def test_rolling_windows_match_the_brute_force_model_on_postgres(
    dsn: str, minutes: int, offset_us: int, ops: list[tuple[str, int, int]]
) -> None:
    async def run() -> None:
        await check_against_model(await emptied(dsn), minutes, offset_us, ops)

    asyncio.run(run())
