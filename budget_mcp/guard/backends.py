"""Where a guard keeps its budgets: the ledger itself (embedded, the same engine the servers run) or a running
budget-mcp server reached over MCP (remote.py). Both answer with the same result models."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio

from budget_mcp.domain.results import BudgetStatus, ChargeResult, CheckResult, ReleaseResult
from budget_mcp.engine import BudgetEngine, Clock, utc_now
from budget_mcp.errors import ConfigError
from budget_mcp.ledger import Ledger, open_ledger
from budget_mcp.pricing import PriceCatalog

REMOTE_SCHEMES = ("http://", "https://")


class Backend(Protocol):
    """The operations a guard needs, with the tools' arguments and results."""

    async def check(self, budget_id: str, **arguments: Any) -> CheckResult: ...

    async def charge(self, budget_id: str, **arguments: Any) -> ChargeResult: ...

    async def release(self, **arguments: Any) -> ReleaseResult: ...

    async def allocate(self, budget_id: str, **arguments: Any) -> BudgetStatus: ...

    async def aclose(self) -> None: ...


class EmbeddedBackend:
    """The engine on a ledger this process opened (a SQLite file servers may share, or PostgreSQL)."""

    def __init__(self, ledger: Ledger, engine: BudgetEngine) -> None:
        self.ledger = ledger
        self.engine = engine

    @classmethod
    async def open(cls, location: str | Path, clock: Clock = utc_now) -> "EmbeddedBackend":
        """Open the ledger at `location` with the bundled price catalog."""
        ledger = await open_ledger(location)
        return cls(ledger, BudgetEngine(ledger, PriceCatalog(), clock))

    async def check(self, budget_id: str, **arguments: Any) -> CheckResult:
        return await self.engine.check(budget_id, **arguments)

    async def charge(self, budget_id: str, **arguments: Any) -> ChargeResult:
        return await self.engine.charge(budget_id, **arguments)

    async def release(self, **arguments: Any) -> ReleaseResult:
        return await self.engine.release(**arguments)

    async def allocate(self, budget_id: str, **arguments: Any) -> BudgetStatus:
        return await self.engine.allocate(budget_id, **arguments)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # closing after a cancellation still closes the ledger
            await self.ledger.close()


async def open_backend(
    location: str | Path, *, token: str | None = None, clock: Clock = utc_now, timeout_seconds: float = 30.0
) -> Backend:
    """The backend for `location`: an http(s) MCP URL (remote, with `token`), else a ledger (embedded)."""
    if isinstance(location, str) and location.startswith(REMOTE_SCHEMES):
        from budget_mcp.guard.remote import RemoteBackend

        return await RemoteBackend.open(location, token=token, timeout_seconds=timeout_seconds)
    if token is not None:
        raise ConfigError("a token is for a remote budget-mcp (an http:// or https:// URL), not a ledger file")
    return await EmbeddedBackend.open(location, clock)


def present(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments that were given (a tool call leaves the others to their defaults)."""
    return {name: value for name, value in arguments.items() if value is not None}
