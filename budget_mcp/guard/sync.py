"""SyncGuard: the guard for blocking code, with the same API as Guard, safe to share between threads.

It runs a Guard on an event loop of its own, in a thread (anyio's blocking portal); every method
hands its work to that loop and waits for the answer, so any number of threads may call at once.
"""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from budget_mcp.domain.results import ChargeResult
from budget_mcp.engine import Clock, utc_now
from budget_mcp.guard.core import Guard, GuardedCall
from budget_mcp.guard.usage import Usage


class SyncGuard:
    """Budgets around blocking LLM calls; open one with `SyncGuard.open(...)`. Thread-safe."""

    def __init__(self, guard: Guard, portal: BlockingPortal) -> None:
        self.guard = guard
        self.portal = portal

    @classmethod
    @contextmanager
    def open(
        cls, location: str | Path, *, token: str | None = None, budget_id: str | None = None, clock: Clock = utc_now
    ) -> Iterator["SyncGuard"]:
        """A guard on a SQLite file, a `postgresql://` URL or a server's `http(s)://.../mcp` URL."""
        with (
            start_blocking_portal("asyncio") as portal,
            portal.wrap_async_context_manager(Guard.open(location, token=token, budget_id=budget_id, clock=clock)) as g,
        ):
            yield cls(g, portal)

    @property
    def budget_id(self) -> str | None:
        """The budget this guard is bound to, if any."""
        return self.guard.budget_id

    def bound(self, budget_id: str) -> "SyncGuard":
        """A guard whose `call()` and `wrap()` use `budget_id` unless told otherwise."""
        return SyncGuard(self.guard.bound(budget_id), self.portal)

    @contextmanager
    def child(self, budget_id: str, limit_usd: object = None, **fields: Any) -> Iterator["SyncGuard"]:
        """Allocate the sub-budget on enter, close it on exit; yield a guard bound to it."""
        with self.portal.wrap_async_context_manager(self.guard.child(budget_id, limit_usd, **fields)) as sub:
            yield SyncGuard(sub, self.portal)

    def call(self, budget_id: str | None = None, **check: Any) -> "SyncGuardedCall":
        """`with guard.call(...) as call:` holds on enter, `call.settle(response)` charges (see Guard.call)."""
        return SyncGuardedCall(self.guard.call(budget_id, **check), self.portal)

    def wrap(self, client: Any, budget_id: str | None = None) -> Any:
        """A drop-in proxy of a blocking `anthropic` or `openai` client whose calls are guarded."""
        from budget_mcp.guard.wrappers import wrap_sync

        return wrap_sync(self, client, self.guard.resolve(budget_id))


class SyncGuardedCall:
    """One blocking LLM call between its hold and its charge."""

    def __init__(self, call: GuardedCall, portal: BlockingPortal) -> None:
        self.call = call
        self.portal = portal

    @property
    def result(self) -> ChargeResult | None:
        """The charge, once settled."""
        return self.call.result

    def __enter__(self) -> "SyncGuardedCall":
        self.portal.call(self.call.__aenter__)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.portal.call(self.call.__aexit__, kind, error, tb)

    def settle(self, response: Any = None, **usage: Any) -> ChargeResult:
        """Charge the call's real cost against its hold (see GuardedCall.settle)."""
        return self.portal.call(functools.partial(self.call.settle, response, **usage))

    def charge(self, usage: Usage) -> ChargeResult:
        """Charge `usage` against the hold (see GuardedCall.charge)."""
        return self.portal.call(self.call.charge, usage)

    def charge_held(self) -> ChargeResult:
        """Charge what the hold held."""
        return self.portal.call(self.call.charge_held)
