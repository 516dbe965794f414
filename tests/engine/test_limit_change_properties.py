"""Limits with totals of their own set, lifted and changed on a budget that has spent, against a brute-force
model, on both backends (SPEC 13).

Random charges (now, or imported with an earlier time) of a few kinds of call on a budget and its child, clock
moves of seconds to hours (across local midnights), and allocations that put in place, lift or change a daily
provider cap, a 5-hour rolling limit, both, or others; two servers on one ledger take turns, and a third
sometimes reads fresh. The model keeps every charge (time, budget, kind, cents) and knows nothing of when a
limit was set: a limit in place counts the matching spend of the subtree in its current window, the calendar
one in the budget's timezone or, for a rolling one, every charge whose minute bucket has not wholly left the
last 5 hours. Each step's status, and each allocation's own answer, must agree; reconcile finds nothing.
"""

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.domain.records import Entry, EntryKind
from budget_mcp.domain.results import BudgetStatus, LimitStatus
from tests.conftest import FakeClock
from tests.engine.test_rolling_properties import emptied, two_servers

PRICES = PriceCatalog()
START = datetime(2026, 11, 25, 16, tzinfo=UTC)  # local midnights come within hours: 18:30 (Kolkata), 00:00, 05:00
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONTHLY = 100_000  # cents, the primary limit of "acme"; its child "acme/bot" has 100 dollars of it
BUDGETS = ["acme", "acme/bot"]
KINDS = [  # (model, provider) a charge names
    ("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("claude-sonnet-4-5", "anthropic"), (None, "openai"),
    (None, None),
]  # fmt: skip
NANOS_PER_CENT = 10_000_000


@dataclass(frozen=True)
class Cap:
    """An extra limit: "daily" or a rolling window of `minutes`, a USD amount, and the names it counts."""

    period: str
    cents: int
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    minutes: int = 0  # a rolling window's length; 0 for the calendar day

    def extra(self) -> dict[str, object]:
        given: dict[str, object] = {"period": self.period, "limit_usd": cents(self.cents)}
        if self.providers:
            given["providers"] = list(self.providers)
        if self.models:
            given["models"] = list(self.models)
        return given

    def counts(self, kind: int) -> bool:
        model, provider = KINDS[kind]
        return (not self.models or model in self.models) and (not self.providers or provider in self.providers)

    @property
    def shown(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """How the status names it: period, providers, models."""
        return self.period, self.providers, self.models


OPENAI_DAILY = Cap("daily", 500, providers=("openai",))
ROLLING = Cap("5h", 1000, minutes=300)
CONFIGS: list[list[Cap]] = [
    [],
    [OPENAI_DAILY],
    [ROLLING],
    [OPENAI_DAILY, ROLLING],
    [Cap("daily", 700, providers=("openai",)), ROLLING],  # the same cap, another amount
    [OPENAI_DAILY, Cap("5h", 1200, minutes=300)],  # the same rolling limit, another amount
    [  # a rolling limit with a filter, a model cap, and an unfiltered daily limit beside it
        Cap("5h", 300, providers=("anthropic",), minutes=300),
        Cap("daily", 400, models=("gpt-4o",)),
        Cap("daily", 2000),
    ],
]


@dataclass
class Model:
    """Every charge (time, budget, kind, cents) made, and the budget's timezone."""

    timezone: str
    charges: list[tuple[datetime, int, int, int]] = field(default_factory=list)

    def counted(self, cap: Cap, now: datetime) -> list[tuple[datetime, int]]:
        """The (time, cents) of the charges `cap` counts at `now`: the child's too, as they are the subtree's."""
        start = self._local_midnight(now.astimezone(ZoneInfo(self.timezone)).date())

        def inside(at: datetime) -> bool:
            return self.bucket_end(at) + timedelta(minutes=cap.minutes) > now if cap.minutes else at >= start

        return [(at, c) for at, _, kind, c in self.charges if inside(at) and cap.counts(kind)]

    def resets_at(self, cap: Cap, now: datetime) -> datetime | None:
        if cap.minutes:
            ends = [self.bucket_end(at) for at, _ in self.counted(cap, now)]
            return min(ends) + timedelta(minutes=cap.minutes) if ends else None
        return self._local_midnight(now.astimezone(ZoneInfo(self.timezone)).date() + timedelta(days=1))

    def month_spent(self, now: datetime) -> int:
        local = now.astimezone(ZoneInfo(self.timezone))
        start = self._local_midnight(local.date().replace(day=1))
        return sum(c for at, _, _, c in self.charges if at >= start)

    def _local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=ZoneInfo(self.timezone)).astimezone(UTC)

    @staticmethod
    def bucket_end(at: datetime) -> datetime:
        seconds = int((at - EPOCH).total_seconds() // 1)
        return EPOCH + timedelta(seconds=seconds // 60 * 60 + 60)


operations = st.lists(
    st.tuples(
        st.sampled_from(
            ["charge", "charge", "charge", "past", "wait", "wait", "jump", "edge", "edge", "set", "set", "fresh"]
        ),
        st.integers(0, 1),  # which budget is charged
        st.integers(0, len(CONFIGS) * len(KINDS) - 1),  # which limits are set; which kind of call
        st.integers(0, 300),  # cents; seconds or minutes to move the clock; minutes before now
    ),
    max_size=25,
)
timezones = st.sampled_from(["UTC", "UTC", "Asia/Kolkata", "America/New_York"])
offsets = st.integers(0, 3600 * 1_000_000)  # microseconds after START


def cents(n: int) -> str:
    return str(Decimal(n) / 100)


def in_cents(usd: str | None) -> int | None:
    return None if usd is None else int(Decimal(usd) * 100)


async def check_against_model(
    location: str, timezone: str, first: int, offset_us: int, ops: list[tuple[str, int, int, int]]
) -> None:
    clock = FakeClock(START + timedelta(microseconds=offset_us))
    created = clock.now
    async with two_servers(location) as ledgers:
        engines = [BudgetEngine(ledger, PRICES, clock) for ledger in ledgers]
        model = Model(timezone)
        caps = CONFIGS[first]
        answer = await engines[0].allocate(
            "acme",
            limit_usd=cents(MONTHLY),
            period="monthly",
            timezone=timezone,
            extra_limits=[c.extra() for c in caps],
        )
        assert_agrees(answer, model, caps, clock.now)
        await engines[1].allocate("acme/bot", limit_usd="100")
        for step, (op, child, which, amount) in enumerate(ops):
            engine = engines[step % 2]  # the two servers take turns
            budget, kind = BUDGETS[child], which % len(KINDS)
            if op == "charge":
                name, provider = KINDS[kind]
                await engine.charge(budget, model=name, provider=provider, cost_usd=cents(amount))
                model.charges.append((clock.now, child, kind, amount))
            elif op == "past":  # an import: a charge of `amount` minutes ago (not before the budget was made)
                at = max(created, clock.now - timedelta(minutes=amount, microseconds=amount * 3_333))
                name, provider = KINDS[kind]
                entry = Entry(
                    f"imp-{step}", EntryKind.CHARGE, budget, at, amount * NANOS_PER_CENT, model=name, provider=provider
                )
                await engine.record_past_charges([entry])
                model.charges.append((at, child, kind, amount))
            elif op == "wait":
                clock.advance(seconds=amount, microseconds=amount * 7_777)
            elif op == "jump":  # up to 10 hours: out of the rolling window, over a local midnight
                clock.advance(minutes=2 * amount, microseconds=amount * 9_999)
            elif op == "edge":  # to within 150 s of when a charge's bucket leaves the 5 hours, or of a midnight
                if which % 2 and model.charges:
                    at = model.charges[which // 2 % len(model.charges)][0]
                    edge = model.bucket_end(at) + timedelta(minutes=ROLLING.minutes)
                else:
                    edge = model.resets_at(OPENAI_DAILY, clock.now) or clock.now
                target = edge + timedelta(seconds=amount - 150, microseconds=amount * 3_001)
                clock.now = max(clock.now, target)
            elif op == "set":
                caps = CONFIGS[which % len(CONFIGS)]
                answer = await engine.allocate("acme", extra_limits=[c.extra() for c in caps])
                assert_agrees(answer, model, caps, clock.now)
                await assert_reconciled(engine, clock.now)
            else:  # a third server, whose first read is a fresh load
                fresh = await open_ledger(location)
                try:
                    assert_agrees(await BudgetEngine(fresh, PRICES, clock).status("acme"), model, caps, clock.now)
                finally:
                    await fresh.close()
            assert_agrees(await engine.status("acme"), model, caps, clock.now)
        for engine in engines:
            assert_agrees(await engine.status("acme"), model, caps, clock.now)
            await assert_reconciled(engine, clock.now)


async def assert_reconciled(engine: BudgetEngine, now: datetime) -> None:
    """Reconcile finds nothing, on the wall clock and on the test's: the wall clock may be past these windows,
    and only buckets still inside the window at the `now` given are compared."""
    assert await engine.ledger.reconcile() == []
    assert await engine.ledger.reconcile(now) == []


def assert_agrees(status: BudgetStatus, model: Model, caps: list[Cap], now: datetime) -> None:
    assert in_cents(status.spent_usd) == model.month_spent(now)
    shown: dict[tuple[str, tuple[str, ...], tuple[str, ...]], LimitStatus] = {
        (lim.period, tuple(lim.providers), tuple(lim.models)): lim for lim in status.limits
    }
    assert shown.keys() == {("monthly", (), ())} | {cap.shown for cap in caps}
    for cap in caps:
        lim = shown[cap.shown]
        counted = model.counted(cap, now)
        spent = sum(c for _, c in counted)
        want = (cap.cents, spent, len(counted), cap.cents - spent, model.resets_at(cap, now))
        got = (in_cents(lim.limit_usd), in_cents(lim.spent_usd), lim.calls, in_cents(lim.available_usd), lim.resets_at)
        assert got == want, (cap, now, model)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timezones, st.integers(0, len(CONFIGS) - 1), offsets, operations)
def test_limits_set_lifted_and_changed_count_their_window_as_the_brute_force_model_on_sqlite(
    timezone: str, first: int, offset_us: int, ops: list[tuple[str, int, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check_against_model(str(Path(tmp) / "ledger.db"), timezone, first, offset_us, ops))


@pytest.fixture(scope="module")
def dsn(postgres_dsn: str) -> str:
    return postgres_dsn


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(timezones, st.integers(0, len(CONFIGS) - 1), offsets, operations)
def test_limits_set_lifted_and_changed_count_their_window_as_the_brute_force_model_on_postgres(
    dsn: str, timezone: str, first: int, offset_us: int, ops: list[tuple[str, int, int, int]]
) -> None:
    async def run() -> None:
        await check_against_model(await emptied(dsn), timezone, first, offset_us, ops)

    asyncio.run(run())
