"""What each SQLite commit is made durable against: a charge against a crash of the machine (synchronous=FULL), a
batch of holds only against a crash of the process (NORMAL), the pragma set only when the mode changes."""

from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog
from budget_mcp.ledger.sqlite import SqliteLedger
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_charge_after_a_batch_of_holds_commits_with_synchronous_full(
    ledger_path: Path, clock: FakeClock
) -> None:
    ledger = await SqliteLedger.open(ledger_path)
    try:
        engine = BudgetEngine(ledger, PriceCatalog(), clock)
        await engine.allocate("acme", limit_usd="10")
        statements: list[str] = []
        ledger._writer.set_trace_callback(statements.append)  # the writing connection's statements, in order
        held = await engine.check("acme", estimated_cost_usd="1", reserve=True)
        await engine.charge("acme", cost_usd="0.5", reservation_id=held.reservation_id)
        await engine.charge("acme", cost_usd="0.5")
        await engine.check("acme", estimated_cost_usd="1", reserve=True)
        ledger._writer.set_trace_callback(None)
        modes_and_begins = [s for s in statements if s.startswith(("PRAGMA synchronous", "BEGIN IMMEDIATE"))]
        assert modes_and_begins == [
            "PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE",  # the hold
            "PRAGMA synchronous = FULL", "BEGIN IMMEDIATE",  # the charge settling it
            "BEGIN IMMEDIATE",  # a second charge: still FULL, no pragma
            "PRAGMA synchronous = NORMAL", "BEGIN IMMEDIATE",
        ]  # fmt: skip
        assert ledger._writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        await ledger.close()
