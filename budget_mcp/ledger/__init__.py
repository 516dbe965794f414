"""Storage for budgets and the append-only ledger, behind the `Ledger` interface."""

from pathlib import Path

from budget_mcp.errors import ConfigError
from budget_mcp.ledger.base import (
    BudgetState,
    Decide,
    Ledger,
    LoggedEntry,
    LogPage,
    Position,
    ReservationState,
    Scope,
    Snapshot,
    SpendRow,
    StoredResult,
    WindowUsage,
    Writes,
)
from budget_mcp.ledger.codec import redact_url
from budget_mcp.ledger.sqlite import SqliteLedger

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

__all__ = [
    "BudgetState",
    "Decide",
    "Ledger",
    "LoggedEntry",
    "LogPage",
    "Position",
    "ReservationState",
    "Scope",
    "Snapshot",
    "SpendRow",
    "SqliteLedger",
    "StoredResult",
    "WindowUsage",
    "Writes",
    "POSTGRES_SCHEMES",
    "open_ledger",
    "redact_url",
]


async def open_ledger(location: str | Path) -> Ledger:
    """Open the ledger at `location`: a `postgresql://` URL, or a SQLite file path (created and migrated as needed)."""
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        try:
            from budget_mcp.ledger.postgres import PostgresLedger
        except ImportError as exc:
            raise ConfigError("the PostgreSQL backend needs asyncpg: pip install 'budget-mcp[postgres]'") from exc
        return await PostgresLedger.open(location)
    return await SqliteLedger.open(location)
