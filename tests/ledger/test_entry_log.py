"""The entry log in commit order, as the event stream reads it: pages, prefixes, alerts with their entry, and on
PostgreSQL an entry whose lower sequence number commits last."""

from datetime import UTC, datetime

import asyncpg
import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.records import Entry, EntryKind
from budget_mcp.ledger.base import START
from budget_mcp.ledger.rows import ENTRY_COLUMNS, entry_to_row
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def read_all(engine: BudgetEngine, prefixes: list[str] | None = None, limit: int = 3) -> list[tuple[int, str]]:
    """(seq, kind) of every entry from the start, page by page."""
    position, seen = START, []
    while True:
        page = await engine.entries_after(position, prefixes=prefixes, limit=limit)
        seen += [(e.seq, e.entry.kind.value) for e in page.entries]
        assert page.end >= position
        if page.end == position:
            return seen
        position = page.end


async def test_pages_read_every_entry_once_in_order_with_the_alerts_each_crossed(
    engine: BudgetEngine, clock: FakeClock
) -> None:
    await engine.allocate("acme", limit_usd="10")
    await engine.allocate("acme/research", limit_usd="4")
    await engine.allocate("globex", limit_usd="10")
    for _ in range(3):
        await engine.charge("acme/research", cost_usd="1")
        await engine.charge("globex", cost_usd="1")
    everything = await read_all(engine)
    assert [seq for seq, _ in everything] == sorted(seq for seq, _ in everything)
    assert [kind for _, kind in everything] == ["allocate"] * 3 + ["charge"] * 6
    assert len({seq for seq, _ in everything}) == 9
    under_acme = await read_all(engine, ["acme"], limit=2)
    assert [k for _, k in under_acme] == ["allocate", "allocate", "charge", "charge", "charge"]
    assert await read_all(engine, ["acme/research", "globex"]) == [
        e for e in everything if e != everything[0]
    ]  # both prefixes, not the root above them
    assert await read_all(engine, ["initech"]) == []
    # Charges of 1 on 4 cross 50% (the second) and 80% (the fourth is not made): alerts come with their entry.
    page = await engine.entries_after(START, prefixes=["acme/research"], limit=100)
    crossed = {e.entry.entry_id: [(a.budget_id, str(a.threshold)) for a in e.alerts] for e in page.entries}
    charges = [e.entry.entry_id for e in page.entries if e.entry.kind is EntryKind.CHARGE]
    assert [crossed[c] for c in charges] == [[], [("acme/research", "0.5")], []]
    assert (await engine.log_position())[1] == everything[-1][0]


async def test_reading_from_now_starts_after_the_newest_entry(engine: BudgetEngine) -> None:
    assert await engine.log_position() == START
    await engine.allocate("acme", limit_usd="10")
    now = await engine.log_position()
    await engine.charge("acme", cost_usd="1")
    page = await engine.entries_after(now)
    assert [e.entry.kind for e in page.entries] == [EntryKind.CHARGE]
    assert await engine.log_position(page.entries[0].seq) == page.entries[0].position == page.end


def _entry(n: int) -> tuple[object, ...]:
    return entry_to_row(Entry(f"late-{n}", EntryKind.ADJUST, "acme", datetime(2026, 1, 1, tzinfo=UTC), cost_nanos=0))


async def _insert(conn: asyncpg.Connection, n: int) -> int:
    holders = ", ".join(f"${i + 1}" for i in range(16))
    return int(
        await conn.fetchval(f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({holders}) RETURNING seq", *_entry(n))
    )


async def test_on_postgres_an_entry_whose_lower_seq_commits_last_is_never_skipped(postgres_dsn: str) -> None:
    from budget_mcp.ledger.postgres import PostgresLedger

    ledger = await PostgresLedger.open(postgres_dsn)
    await ledger.truncate()
    slow, quick = await asyncpg.connect(postgres_dsn), await asyncpg.connect(postgres_dsn)
    try:
        # The quick transaction gets its id first, the slow one takes the lower seq, the quick one commits first.
        await quick.execute("BEGIN")
        await quick.fetchval("SELECT pg_current_xact_id()")
        await slow.execute("BEGIN")
        low = await _insert(slow, 1)
        high = await _insert(quick, 2)
        assert low < high
        await quick.execute("COMMIT")
        first = await ledger.entries_after(START)
        assert [e.seq for e in first.entries] == [high]  # its transaction is older than any still running
        resumed_at = await ledger.log_position(high)  # a client that saw `high` reconnects with it
        assert (await ledger.entries_after(resumed_at)).entries == []
        await slow.execute("COMMIT")
        late = await ledger.entries_after(resumed_at)
        assert [e.seq for e in late.entries] == [low]  # committed last: delivered after, not skipped
        assert (await ledger.entries_after(late.end)).entries == []
        # The other way round: the lower seq's transaction is older, so nothing passes it while it runs.
        await slow.execute("BEGIN")
        low = await _insert(slow, 3)
        await quick.execute("BEGIN")
        high = await _insert(quick, 4)
        await quick.execute("COMMIT")
        assert (await ledger.entries_after(late.end)).entries == []
        assert await ledger.log_position() == late.end
        await slow.execute("COMMIT")
        assert [e.seq for e in (await ledger.entries_after(late.end)).entries] == [low, high]
    finally:
        await slow.close()
        await quick.close()
        await ledger.truncate()
        await ledger.close()
