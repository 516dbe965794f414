"""Storage for budgets and the append-only ledger, behind the `Ledger` interface."""

from pathlib import Path

from budget_mcp.ledger.base import (
    BudgetState,
    Decide,
    DeliveryAttempt,
    Ledger,
    ReservationState,
    Scope,
    Snapshot,
    SpendRow,
    StoredResult,
    WindowUsage,
    Writes,
)
from budget_mcp.ledger.sqlite import SqliteLedger

__all__ = [
    "BudgetState",
    "Decide",
    "DeliveryAttempt",
    "Ledger",
    "ReservationState",
    "Scope",
    "Snapshot",
    "SpendRow",
    "SqliteLedger",
    "StoredResult",
    "WindowUsage",
    "Writes",
    "open_ledger",
]


async def open_ledger(path: str | Path) -> Ledger:
    """Open the ledger at `path` (a SQLite file, created and migrated as needed)."""
    return await SqliteLedger.open(path)
