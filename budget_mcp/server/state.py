"""What the server's lifespan holds, and how it tells clients that budgets changed."""

import logging
from dataclasses import dataclass

import anyio
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated

from budget_mcp.alerts import AlertWebhook
from budget_mcp.config import Settings
from budget_mcp.domain.ids import path_of
from budget_mcp.domain.models import BudgetNode
from budget_mcp.engine import BudgetEngine
from budget_mcp.pricing import refresh_sources, remote_sources
from budget_mcp.server.access import Grant, TokenTable
from budget_mcp.server.legacy import LegacySubscribers

logger = logging.getLogger(__name__)


def budget_uris(budget_id: str) -> list[str]:
    """Every resource that shows this budget's figures."""
    return [
        f"budget://budgets/{budget_id}",
        f"budget://reports/{budget_id}",
        f"budget://reports/{budget_id}.md",
        f"budget://ledger/{budget_id}",
    ]


class Announcer:
    """Publishes resource changes: on the `subscriptions/listen` bus, and to legacy (2025-11-25) sessions."""

    def __init__(self, bus: SubscriptionBus, legacy: LegacySubscribers | None = None) -> None:
        self.bus = bus
        self.legacy = legacy

    async def budget_changed(self, budget_id: str, *, added: bool = False) -> None:
        """The budget and every ancestor changed (spend counts up the path); `added` also changes the list."""
        await self._changed([uri for current in path_of(budget_id) for uri in budget_uris(current)], added)

    async def everything_changed(self, budget_ids: list[str]) -> None:
        """Another process committed: we do not know what, so every budget may have changed."""
        await self._changed([uri for budget_id in budget_ids for uri in budget_uris(budget_id)], True)

    async def _changed(self, uris: list[str], list_changed: bool) -> None:
        uris.append("budget://budgets")
        for uri in uris:
            await self.bus.publish(ResourceUpdated(uri=uri))
        if list_changed:
            await self.bus.publish(ResourcesListChanged())
        if self.legacy is not None:
            await self.legacy.updated(uris)
            if list_changed:
                await self.legacy.list_changed()


@dataclass
class AppState:
    """The lifespan object tools and resources reach through their context."""

    settings: Settings
    engine: BudgetEngine
    announcer: Announcer
    tokens: TokenTable
    webhook: AlertWebhook | None = None

    def grant(self) -> Grant:
        """What the caller of the request being served may use."""
        return self.tokens.current()


async def watch_other_processes(state: AppState) -> None:
    """Announce commits made by other processes on the same ledger (seen through a change counter)."""
    last = await state.engine.ledger.change_counter()
    while True:
        await anyio.sleep(state.settings.change_poll_seconds)
        try:
            current = await state.engine.ledger.change_counter()
            if current != last:
                last = current
                nodes = await state.engine.tree()
                await state.announcer.everything_changed(_ids(nodes))
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("watching the ledger for changes failed")


async def refresh_prices_periodically(state: AppState, interval_seconds: float) -> None:
    """Refresh the remote price sources now and every interval; failures keep the last good copies."""
    settings, catalog = state.settings, state.engine.prices
    while True:
        try:
            outcomes = await refresh_sources(remote_sources(settings.price_urls), settings.prices_cache_dir)
            for outcome in outcomes:
                if outcome.error:
                    logger.warning("price refresh: %s", outcome.error)
            await anyio.to_thread.run_sync(catalog.reload)
            await state.announcer.bus.publish(ResourceUpdated(uri="budget://prices"))
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("refreshing prices failed")
        await anyio.sleep(interval_seconds)


def _ids(nodes: list[BudgetNode]) -> list[str]:
    return [id_ for node in nodes for id_ in [node.budget_id, *_ids(node.children)]]
