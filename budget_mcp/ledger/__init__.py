"""Storage for budgets and the append-only ledger, behind the `Ledger` interface."""

from pathlib import Path

from budget_mcp.ledger.base import (
    BudgetState,
    Decide,
    Ledger,
    ReservationState,
    Scope,
    Snapshot,
    StoredResult,
    WindowUsage,
    Writes,
)
from budget_mcp.ledger.sqlite import SqliteLedger

__all__ = [
    "BudgetState",
    "Decide",
    "Ledger",
    "ReservationState",
    "Scope",
    "Snapshot",
    "SqliteLedger",
    "StoredResult",
    "WindowUsage",
    "Writes",
    "open_ledger",
]


async def open_ledger(path: str | Path) -> Ledger:
    """Open the ledger at `path` (a SQLite file, created and migrated as needed)."""
    return await SqliteLedger.open(path)
