"""Group commit, shared by both backends: writes that arrive while a batch is being stored wait, and go
together in the next batch, paying for one commit (one fsync) instead of one each.

Writes queue per key (SQLite: one queue for the file; PostgreSQL: one per budget tree). The first
writer of an idle queue stores batches until the queue is empty; the others wait for their own
outcome. Storing runs shielded from cancellation: a batch holds other callers' writes.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import anyio

from budget_mcp.ledger.base import Decide, Scope

T = TypeVar("T")


@dataclass
class Pending:
    """One write waiting for its batch: what it needs, its decision, and its caller's future."""

    scope: Scope
    now: datetime
    decide: Decide[Any]
    future: "asyncio.Future[Any]"


P = TypeVar("P", bound=Pending)


class GroupCommit(Generic[P]):
    """Queues of pending writes, each drained in batches by `store` (which settles every write it is given)."""

    def __init__(
        self, store: Callable[[list[P]], Awaitable[None]], *, max_batch: int | None = None, gather: bool = False
    ) -> None:
        """`gather`: before storing the first batch, let the writers that are ready to run queue up (for a
        `store` that may not yield to the event loop while it works)."""
        self._store = store
        self._gather = gather
        self._max_batch = max_batch
        self._queues: dict[Hashable, list[P]] = {}
        self._idle: asyncio.Event | None = None  # made only while someone waits for `drained`

    async def submit(self, key: Hashable, pending: P) -> Any:
        """Queue `pending` under `key`, store batches if nobody is, and return its outcome."""
        queue = self._queues.setdefault(key, [])
        queue.append(pending)
        if len(queue) == 1:
            with anyio.CancelScope(shield=True):
                try:
                    if self._gather:
                        await asyncio.sleep(0)
                    while queue:
                        batch = queue[: self._max_batch]
                        try:
                            await self._store(batch)
                        except Exception as exc:  # a failure of the store itself: no caller may wait forever
                            settle(batch, [(False, exc)] * len(batch))
                        del queue[: len(batch)]  # more may have queued meanwhile: they go in the next batch
                finally:
                    del self._queues[key]
                    if not self._queues and self._idle is not None:
                        self._idle.set()
                        self._idle = None
        return await pending.future

    async def drained(self) -> None:
        """Return once no batch is being stored or queued (for closing: stop taking writes first, as under a steady
        flow of them this waits on)."""
        while self._queues:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()


def settle(batch: Sequence[Pending], outcomes: Sequence[tuple[bool, Any]]) -> None:
    """Hand each waiting caller its result (True, value) or its exception (False, exc)."""
    for pending, (ok, value) in zip(batch, outcomes, strict=True):
        if pending.future.done():
            continue
        if ok:
            pending.future.set_result(value)
        else:
            pending.future.set_exception(value)
