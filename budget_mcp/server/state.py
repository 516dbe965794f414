"""What the server's lifespan holds, and its background price refresh."""

import logging
from dataclasses import dataclass

import anyio

from budget_mcp.alerts import AlertWebhook
from budget_mcp.config import Settings
from budget_mcp.engine import BudgetEngine
from budget_mcp.pricing import refresh_sources, remote_sources
from budget_mcp.server.access import Grant, TokenTable
from budget_mcp.server.legacy import LegacySubscribers
from budget_mcp.server.notify import Announcer

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """The lifespan object tools and resources reach through their context."""

    settings: Settings
    engine: BudgetEngine
    announcer: Announcer
    legacy: LegacySubscribers
    tokens: TokenTable
    webhook: AlertWebhook | None = None

    async def caller(self) -> Grant:
        """What the caller of the request being served may use."""
        return await self.tokens.caller(self.engine)


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
            state.announcer.resource_changed("budget://prices")
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("refreshing prices failed")
        await anyio.sleep(interval_seconds)
