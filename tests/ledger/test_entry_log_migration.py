"""A SQLite ledger from before schema step 6 (its entry log keyed with AUTOINCREMENT): opened by this version, the log
is rebuilt on a plain rowid key with every entry, sequence number, index and append-only trigger kept, and new
entries carry on from the last number."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.ledger import sqlite as sqlite_ledger
from budget_mcp.ledger.schema import STEPS
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def entries_table(path: Path) -> tuple[int, str, dict[str, str], list[str]]:
    """user_version, the entries table's DDL, its indexes' and triggers' DDL by name, and the tables sqlite_sequence
    counts."""
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'").fetchone()[0]
        named = conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'entries' AND type != 'table'")
        attached: dict[str, str] = dict(named.fetchall())
        has_sequence = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
        counted = [row[0] for row in conn.execute("SELECT name FROM sqlite_sequence")] if has_sequence else []
        return version, ddl, attached, counted
    finally:
        conn.close()


def raw_entries(path: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT seq, entry_id, kind FROM entries ORDER BY seq").fetchall()
    finally:
        conn.close()


def insert_at(path: Path, seq: int) -> None:
    """A copy of the allocation entry at sequence number `seq` (a gap below it, as a rolled-back insert leaves)."""
    conn = sqlite3.connect(path)
    try:
        info = conn.execute("PRAGMA table_info(entries)")
        columns = ", ".join(c[1] for c in info if c[1] not in {"seq", "entry_id"})
        conn.execute(
            f"INSERT INTO entries (seq, entry_id, {columns}) SELECT ?, 'alc_gap', {columns} FROM entries "
            "WHERE kind = 'allocate'",
            (seq,),
        )
        conn.commit()
    finally:
        conn.close()


async def test_an_autoincrement_entry_log_is_rebuilt_with_its_entries_and_numbers(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(AT)
    with monkeypatch.context() as patched:  # a ledger as the version before step 6 left it
        patched.setattr(sqlite_ledger, "STEPS", STEPS[:5])
        ledger = await open_ledger(ledger_path)
        engine = BudgetEngine(ledger, PriceCatalog(), clock)
        await engine.allocate("acme", limit_usd="10")
        held = await engine.check("acme", estimated_cost_usd="2", reserve=True)
        await engine.charge("acme", cost_usd="1.25", reservation_id=held.reservation_id)
        await engine.charge("acme", cost_usd="0.50")
        await ledger.close()
    insert_at(ledger_path, 100)
    before = raw_entries(ledger_path)
    version, ddl, attached, counted = entries_table(ledger_path)
    assert (version, "AUTOINCREMENT" in ddl, counted, before[-1][0]) == (5, True, ["entries"], 100)

    keeper = sqlite3.connect(ledger_path)  # another process's connection: the WAL is not removed at close
    keeper.execute("SELECT count(*) FROM entries").fetchone()
    ledger = await open_ledger(ledger_path)
    try:
        wal = ledger_path.with_name(ledger_path.name + "-wal")
        assert wal.stat().st_size == 0  # the rebuilt log was checkpointed into the file, the WAL emptied
        engine = BudgetEngine(ledger, PriceCatalog(), clock)
        version, ddl, after_attached, counted = entries_table(ledger_path)
        assert (version, "AUTOINCREMENT" in ddl, counted) == (len(STEPS), False, [])
        assert after_attached == attached and len(attached) == 6  # the ids' unique index, 3 more, 2 triggers: same DDL
        assert raw_entries(ledger_path) == before
        charged = await engine.charge("acme", cost_usd="0.25")
        newest = (await ledger.entries("acme", limit=1))[0]
        assert (newest.entry_id, newest.seq) == (charged.charge_id, 101)  # newest first, after the largest
        assert (await engine.status("acme")).spent_usd == "2.000000"
        assert await ledger.reconcile() == []
    finally:
        await ledger.close()
        keeper.close()
    conn = sqlite3.connect(ledger_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM entries")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE entries SET cost_nanos = 0")
    finally:
        conn.close()
