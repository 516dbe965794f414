"""A guard's backend on a running budget-mcp server, through the MCP SDK's client over streamable HTTP.

This is the second home of `mcp` (beside `server/`). The tools' structured results come back as the
same result models the engine returns, and their errors as the same exception classes (read from the
message, which is the only thing a tool error carries).
"""

from contextlib import AsyncExitStack
from typing import Any, TypeVar

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel

from budget_mcp.domain.results import BudgetStatus, ChargeResult, CheckResult, ReleaseResult
from budget_mcp.errors import (
    AccessDeniedError,
    BudgetMcpError,
    BudgetNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidInputError,
    LedgerError,
    ReservationNotFoundError,
    UnknownModelError,
)
from budget_mcp.guard.backends import present

M = TypeVar("M", bound=BaseModel)
# What each error class says, most specific first (a tool error carries only its text).
_KINDS: list[tuple[str, type[BudgetMcpError]]] = [
    ("may not use budget", AccessDeniedError),
    ("is the budget the token", AccessDeniedError),
    ("reservation res_", ReservationNotFoundError),
    ("idempotency_key", IdempotencyConflictError),
    ("has only", InsufficientFundsError),
    ("does not exist", BudgetNotFoundError),
    ("no price known", UnknownModelError),
]


class RemoteBackend:
    """The tools of a budget-mcp server at an `/mcp` URL, called as a client with a bearer token."""

    def __init__(self, url: str, client: Client, stack: AsyncExitStack) -> None:
        self.url = url
        self._client = client
        self._stack = stack

    @classmethod
    async def open(cls, url: str, *, token: str | None, timeout_seconds: float) -> "RemoteBackend":
        """Connect to the server (a clear LedgerError, at once, when it does not answer)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        stack = AsyncExitStack()
        try:
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout_seconds))
            client = await stack.enter_async_context(Client(streamable_http_client(url, http_client=http)))
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise LedgerError(f"cannot reach budget-mcp at {url}: {_cause(exc)}") from exc
            raise
        return cls(url, client, stack)

    async def check(self, budget_id: str, **arguments: Any) -> CheckResult:
        return await self._call("check_budget", CheckResult, budget_id=budget_id, **arguments)

    async def charge(self, budget_id: str, **arguments: Any) -> ChargeResult:
        return await self._call("charge", ChargeResult, budget_id=budget_id, **arguments)

    async def release(self, **arguments: Any) -> ReleaseResult:
        return await self._call("release", ReleaseResult, **arguments)

    async def allocate(self, budget_id: str, **arguments: Any) -> BudgetStatus:
        return await self._call("allocate", BudgetStatus, budget_id=budget_id, **arguments)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def _call(self, tool: str, result: type[M], **arguments: Any) -> M:
        try:
            answer = await self._client.call_tool(tool, _wire(present(arguments)))
        except MCPError as exc:
            raise LedgerError(f"budget-mcp at {self.url} refused {tool}: {exc}") from exc
        except httpx2.HTTPError as exc:
            raise LedgerError(f"budget-mcp at {self.url} did not answer {tool}: {_cause(exc)}") from exc
        if answer.is_error:
            raise _error(str(getattr(answer.content[0], "text", "")) if answer.content else "")
        return result.model_validate(answer.structured_content)


def _wire(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as JSON carries them (money as exact decimal strings)."""
    return {name: str(value) if name.endswith("_usd") else value for name, value in arguments.items()}


def _error(text: str) -> BudgetMcpError:
    message = text.split(": ", 1)[1] if text.startswith("Error executing tool ") and ": " in text else text
    kind = next((kind for marker, kind in _KINDS if marker in message), InvalidInputError)
    return kind(message)


def _cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]
