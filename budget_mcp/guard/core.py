"""Guard: budgets around the LLM calls of a Python program (SPEC section 9), async.

`call()` holds the worst case before the call and charges the real cost after it; `wrap()` does
that around every call of an official SDK client; `child()` and `bound()` hand a slice of the budget
to a sub-agent. The hold is what keeps concurrent calls inside a `block` budget: every call that
costs no more than its hold fits, however many run at once.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from budget_mcp.domain.money import parse_usd
from budget_mcp.domain.results import ChargeResult, CheckResult
from budget_mcp.engine import Clock, utc_now
from budget_mcp.errors import BudgetExceededError, InvalidInputError
from budget_mcp.guard.backends import Backend, open_backend, present
from budget_mcp.guard.usage import Usage, usage_of


class Guard:
    """Budgets around LLM calls; open one with `Guard.open(...)`. Any number of tasks may share it."""

    def __init__(self, backend: Backend, budget_id: str | None = None) -> None:
        self.backend = backend
        self.budget_id = budget_id

    @classmethod
    @asynccontextmanager
    async def open(
        cls, location: str | Path, *, token: str | None = None, budget_id: str | None = None, clock: Clock = utc_now
    ) -> AsyncIterator["Guard"]:
        """A guard on a SQLite file, a `postgresql://` URL (embedded) or a server's `http(s)://.../mcp` URL."""
        backend = await open_backend(location, token=token, clock=clock)
        try:
            yield cls(backend, budget_id)
        finally:
            await backend.aclose()

    def bound(self, budget_id: str) -> "Guard":
        """A guard whose `call()` and `wrap()` use `budget_id` unless told otherwise (for a sub-agent)."""
        return Guard(self.backend, budget_id)

    @asynccontextmanager
    async def child(self, budget_id: str, limit_usd: object = None, **fields: Any) -> AsyncIterator["Guard"]:
        """Allocate the sub-budget `budget_id` on enter (carved from its parent), close it on exit; yield a
        guard bound to it. What the child did not spend returns to the parent."""
        await self.backend.allocate(budget_id, **present({"limit_usd": limit_usd, **fields}))
        try:
            yield self.bound(budget_id)
        finally:
            with anyio.CancelScope(shield=True):
                await self.backend.release(budget_id=budget_id)

    def call(
        self,
        budget_id: str | None = None,
        *,
        model: str | None = None,
        provider: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        estimated_cost_usd: object = None,
        ttl_seconds: int | None = None,
    ) -> "GuardedCall":
        """`async with guard.call(...) as call:` holds the worst case on enter (BudgetExceededError if denied);
        settle it with `await call.settle(response)`. Leaving on an exception releases the hold; leaving
        without settling charges the held amount."""
        check = present({
            "model": model, "provider": provider, "input_tokens": input_tokens, "max_output_tokens": max_output_tokens,
            "estimated_cost_usd": estimated_cost_usd, "ttl_seconds": ttl_seconds,
        })  # fmt: skip
        return GuardedCall(self.backend, self.resolve(budget_id), check, model=model, provider=provider)

    def wrap(self, client: Any, budget_id: str | None = None) -> Any:
        """A drop-in proxy of an async `anthropic` or `openai` client whose calls are guarded (see wrappers.py)."""
        from budget_mcp.guard.wrappers import wrap_async

        return wrap_async(self, client, self.resolve(budget_id))

    def resolve(self, budget_id: str | None) -> str:
        """The budget a call is for: the one given, else the one this guard is bound to."""
        chosen = budget_id or self.budget_id
        if not chosen:
            raise InvalidInputError(
                "give budget_id, or use a guard bound to one (guard.bound(...) or guard.child(...))"
            )
        return chosen


class GuardedCall:
    """One LLM call between its hold and its charge (async)."""

    def __init__(
        self, backend: Backend, budget_id: str, check: Mapping[str, Any], *, model: str | None, provider: str | None
    ) -> None:
        self.backend = backend
        self.budget_id = budget_id
        self.model = model
        self.provider = provider
        self._check = check
        self.hold: CheckResult | None = None
        self.result: ChargeResult | None = None

    async def __aenter__(self) -> "GuardedCall":
        hold = await self.backend.check(self.budget_id, reserve=True, **self._check)
        if not hold.allowed:
            raise exceeded(hold)
        self.hold = hold
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.result is not None or self.hold is None:
            return
        with anyio.CancelScope(shield=True):  # a cancelled task still gives its hold back
            if error is not None:
                await self.backend.release(reservation_id=self.hold.reservation_id)
            else:
                await self.charge_held()

    async def settle(self, response: Any = None, **usage: Any) -> ChargeResult:
        """Charge the call's real cost against its hold: from an SDK `response`, or from token counts and/or
        `cost_usd` given as keywords. A response without usage is charged at the hold."""
        found = usage_of(response) if response is not None else None
        if found is None and usage:
            found = given_usage(**usage)
        if found is None:
            return await self.charge_held()
        return await self.charge(found)

    async def charge(self, usage: Usage) -> ChargeResult:
        """Charge `usage` against the hold (the catalog prices it unless the provider's cost is known)."""
        assert self.hold is not None, "a call is charged inside its `async with`"
        self.result = await self.backend.charge(
            self.budget_id,
            reservation_id=self.hold.reservation_id,
            **charge_arguments(usage, self.model, self.provider),
        )
        return self.result

    async def charge_held(self) -> ChargeResult:
        """Charge what the hold held: the call happened, its cost is not known (never charged as zero)."""
        assert self.hold is not None, "a call is charged inside its `async with`"
        self.result = await self.backend.charge(self.budget_id, reservation_id=self.hold.reservation_id)
        return self.result


def given_usage(
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cost_usd: object = None,
    model: str | None = None,
) -> Usage:
    """Usage told by the caller (an unknown keyword is a TypeError, as for any function)."""
    cost = None if cost_usd is None else parse_usd(cost_usd, "cost_usd")
    return Usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost, model)


def charge_arguments(usage: Usage, model: str | None, provider: str | None) -> dict[str, Any]:
    """The charge tool's arguments for `usage` (the request's model, unless only the response names one)."""
    return present({
        "model": model or usage.model, "provider": provider, "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens, "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens, "reasoning_tokens": usage.reasoning_tokens,
        "cost_usd": usage.cost_usd,
    })  # fmt: skip


def exceeded(check: CheckResult) -> BudgetExceededError:
    """The error of a denied check, with its figures."""
    return BudgetExceededError(
        check.reason, budget_id=check.budget_id, decided_by=check.decided_by,
        decided_period=check.decided_period or None,
        needed_usd=check.estimated_cost_usd, remaining_usd=check.remaining_usd, resets_at=check.resets_at,
    )  # fmt: skip
