"""Telling listening clients what changed, without ever making a write wait for them.

A tool only marks what its write changed (`budgets_changed`, synchronous, no I/O); a background task
sends it: on the `subscriptions/listen` bus (2026-07-28 clients; the SDK ends a stream whose backlog
is full) and to each legacy (2025-11-25) connection through its own bounded queue (legacy.py). Marks
that pile up while a send is under way go out together, so a burst of charges costs one notice per
changed resource, not one per charge. Writes by other processes come from the ledger, which knows
which budgets they touched.
"""

import logging
from collections.abc import Callable, Iterable

import anyio
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent

from budget_mcp.domain.ids import path_of
from budget_mcp.engine import BudgetEngine
from budget_mcp.server.legacy import LegacySubscribers

logger = logging.getLogger(__name__)

LIST_URI = "budget://budgets"


def budget_uris(budget_id: str) -> list[str]:
    """Every resource that shows this budget's figures."""
    return [
        f"budget://budgets/{budget_id}",
        f"budget://reports/{budget_id}",
        f"budget://reports/{budget_id}.md",
        f"budget://ledger/{budget_id}",
    ]


class ListenedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, counting its listeners: a change nobody listens for is not published (each
    publish ends with a pass through the event loop, five of them for every charge)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register `listener`; the callable returned unsubscribes it (once, however often it is called)."""
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        subscribed = True

        def once() -> None:
            nonlocal subscribed
            if subscribed:
                subscribed = False
                self.listeners -= 1
                unsubscribe()

        return once


class Announcer:
    """Collects what changed and sends it from `run`, in the server's task group."""

    def __init__(self, bus: ListenedBus, legacy: LegacySubscribers, budget_ids: Iterable[str]) -> None:
        self.bus = bus
        self.legacy = legacy
        self._known = set(budget_ids)  # the resource list names every budget: a new one changes it
        self._uris: set[str] = set()
        self._list_changed = False
        self._pending = anyio.Event()
        self.listeners: list[Callable[[], None]] = []  # told of every change at once, without waiting (events)

    def budgets_changed(self, budget_ids: Iterable[str]) -> None:
        """Mark the budgets (and every ancestor: spend counts up the path) as changed, and the list if one is new."""
        for budget_id in budget_ids:
            if budget_id not in self._known:
                self._known.add(budget_id)
                self._list_changed = True
            for current in path_of(budget_id):
                self._uris.update(budget_uris(current))
        self._uris.add(LIST_URI)
        self._pending.set()
        for listener in self.listeners:
            listener()

    def resource_changed(self, uri: str) -> None:
        """Mark one resource (the price catalog, say) as changed."""
        self._uris.add(uri)
        self._pending.set()

    async def run(self) -> None:
        """Send what was marked, as it is marked, until cancelled."""
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            uris, self._uris = sorted(self._uris), set()
            list_changed, self._list_changed = self._list_changed, False
            try:
                if self.bus.listeners:
                    for uri in uris:
                        await self.bus.publish(ResourceUpdated(uri=uri))
                    if list_changed:
                        await self.bus.publish(ResourcesListChanged())
                self.legacy.updated(uris)
                if list_changed:
                    self.legacy.list_changed()
            except Exception:  # a background task logs its own failures and keeps going
                logger.exception("announcing changes failed")


async def close_expired_periodically(engine: BudgetEngine, announcer: Announcer, interval_seconds: float) -> None:
    """Close the sub-budgets whose time ran out, now and every interval, so they close without traffic."""
    while True:
        try:
            closed = await engine.close_expired()
            if closed:
                announcer.budgets_changed(closed)
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("closing expired budgets failed")
        await anyio.sleep(interval_seconds)


async def watch_other_processes(engine: BudgetEngine, announcer: Announcer, poll_seconds: float) -> None:
    """Announce the budgets other processes wrote to (the ledger says which)."""
    await engine.changed_budgets()  # from here on
    while True:
        await anyio.sleep(poll_seconds)
        try:
            changed = await engine.changed_budgets()
            if changed is None:  # anything may have changed (PostgreSQL: the listener reconnected)
                changed = set(await engine.budget_ids())
            if changed:
                announcer.budgets_changed(changed)
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("watching the ledger for changes failed")
