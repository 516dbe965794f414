"""Pooled connections whose driver errors reach the ledger as LedgerError (a lost connection said so)."""

from typing import Any

import asyncpg

from budget_mcp.errors import BudgetMcpError, LedgerError


class Translated:
    """A pooled connection whose driver errors leave as LedgerError (domain errors pass through untouched)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._acquired: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._acquired = self._pool.acquire()
            return await self._acquired.__aenter__()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _ledger_error(exc) from exc

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        try:
            await self._acquired.__aexit__(kind, exc, traceback)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as released:
            if exc is None:
                raise _ledger_error(released) from released
        if exc is not None and not isinstance(exc, BudgetMcpError) and _is_driver_error(exc):
            raise _ledger_error(exc) from exc
        return False


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError)


def _ledger_error(exc: BaseException) -> LedgerError:
    if isinstance(exc, OSError | asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError):
        return LedgerError(
            "the connection to PostgreSQL was lost during this request; it was not recorded unless it had "
            "committed: retry it (with the same idempotency_key a charge is recorded once)"
        )
    return LedgerError(f"ledger storage failed: {exc}")
