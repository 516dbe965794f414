"""Pooled connections whose driver errors reach the ledger as LedgerError (a lost connection said so)."""

from typing import Any

import asyncpg

from budget_mcp.errors import BudgetMcpError, LedgerError


class Lender:
    """The pool, with the connections it lent kept aside for the next request once a request ends cleanly.

    Through asyncpg's pool each acquire and release costs a task and a few turns of the event loop (about
    0.1 ms a request on the benchmark's machine, a tenth of a guarded call); taking a kept connection is a
    list pop. A request that ended with an error (or a cancellation), or left a transaction open, gives its
    connection back through the pool, which rolls back and waits out a cancelled query; so does any request
    while others wait for the pool (with every connection lent, a kept one would never reach them).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._kept: list[Any] = []
        self._waiting = 0  # requests inside pool.acquire()

    async def acquire(self) -> Any:
        """A kept connection that is still open, else one from the pool."""
        while self._kept:
            conn = self._kept.pop()
            try:
                if not conn.is_closed():
                    return conn
            except asyncpg.InterfaceError:  # closed by the server while kept: the pool took it back already
                continue
            await self.pool.release(conn)
        self._waiting += 1
        try:
            return await self.pool.acquire()
        finally:
            self._waiting -= 1

    async def release(self, conn: Any, clean: bool) -> None:
        """Keep `conn` for the next request if it ended `clean`ly, is idle and nobody waits for the pool; else give
        it back to the pool."""
        if clean and not self._waiting and not conn.is_closed() and not conn.is_in_transaction():
            self._kept.append(conn)
        else:
            await self.pool.release(conn)

    async def close(self) -> None:
        """Give every kept connection back, then close the pool (it waits for connections still lent)."""
        kept, self._kept = self._kept, []
        for conn in kept:
            await self.pool.release(conn)
        await self.pool.close()


class Translated:
    """A lent connection whose driver errors leave as LedgerError (domain errors pass through untouched)."""

    def __init__(self, lender: Lender) -> None:
        self._lender = lender
        self._conn: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._conn = await self._lender.acquire()
            return self._conn
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _ledger_error(exc) from exc

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        try:
            await self._lender.release(self._conn, clean=exc is None)
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
