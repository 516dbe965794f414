"""What the server's lifespan holds, how a request reaches it, and its background price refresh."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from budget_mcp.alerts import AlertWebhook
from budget_mcp.config import Settings
from budget_mcp.engine import BudgetEngine
from budget_mcp.pricing import refresh_sources, remote_sources
from budget_mcp.server.access import Grant, TokenTable
from budget_mcp.server.events import EventHub
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
    events: EventHub | None = None  # the live event stream (HTTP transport)

    async def caller(self) -> Grant:
        """What the caller of the request being served may use."""
        return await self.tokens.caller(self.engine)


_current: ContextVar[AppState] = ContextVar("budget_mcp_state")


def current_state() -> AppState:
    """The state of the lifespan serving the current request (tools, resources and prompts all reach it so)."""
    return _current.get()


@contextmanager
def using_state(state: AppState) -> Iterator[None]:
    """Run the block with `state` as `current_state()`."""
    token = _current.set(state)
    try:
        yield
    finally:
        _current.reset(token)


class CurrentState:
    """Middleware: each request runs with its lifespan's state as `current_state()`."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if not isinstance(ctx.lifespan_context, AppState):
            return await call_next(ctx)
        with using_state(ctx.lifespan_context):
            return await call_next(ctx)


class LiveState:
    """The state of the lifespan now running, for HTTP routes that no MCP request carries (the API).

    On streamable HTTP the lifespan is entered once per process, when the web app starts.
    """

    def __init__(self) -> None:
        self.state: AppState | None = None

    @contextmanager
    def running(self, state: AppState) -> Iterator[None]:
        """Publish `state` while the block runs (the lifespan's body)."""
        before, self.state = self.state, state
        try:
            yield
        finally:
            self.state = before


async def refresh_prices_periodically(state: AppState, interval_seconds: float) -> None:
    """Refresh the remote price sources now and every interval; failures keep the last good copies."""
    settings = state.settings
    while True:
        try:
            outcomes = await refresh_sources(remote_sources(settings.price_urls), settings.prices_cache_dir)
            for outcome in outcomes:
                if outcome.error:
                    logger.warning("price refresh: %s", outcome.error)
            await anyio.to_thread.run_sync(state.engine.reload_prices)
            state.announcer.resource_changed("budget://prices")
        except Exception:  # a background task logs its own failures and keeps going
            logger.exception("refreshing prices failed")
        await anyio.sleep(interval_seconds)
