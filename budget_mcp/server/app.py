"""build_server: the MCPServer with budget-mcp's tools and resources, and a lifespan that opens the ledger."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from budget_mcp import __version__
from budget_mcp.alerts import AlertWebhook
from budget_mcp.config import Settings, load_budgets_file
from budget_mcp.engine import BudgetEngine, Clock, utc_now
from budget_mcp.engine.declarations import apply_declarations
from budget_mcp.ledger import open_ledger
from budget_mcp.pricing import PriceCatalog
from budget_mcp.server.access import ScopedSubscriptions, TokenTable
from budget_mcp.server.events import EventHub
from budget_mcp.server.legacy import LegacySubscribers, LegacySubscriptions
from budget_mcp.server.notify import Announcer, ListenedBus, close_expired_periodically, watch_other_processes
from budget_mcp.server.prompts import register_prompts
from budget_mcp.server.resources import BudgetResourceList, register_resources
from budget_mcp.server.state import AppState, CurrentState, LiveState, refresh_prices_periodically
from budget_mcp.server.strict import PromptArguments
from budget_mcp.server.tools import BudgetToolManager

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
budget-mcp keeps you inside a spending budget. Before an expensive LLM call, call check_budget
(reserve=true to hold the money when other agents share the budget); after it, call charge with the
model and token counts (and the reservation_id). Give sub-agents their own sub-budget with allocate,
and close it with release when they finish. Amounts are USD decimal strings such as "0.25".
"""


def build_server(settings: Settings, *, clock: Clock = utc_now) -> MCPServer[AppState]:
    """The MCP server for `settings`; the ledger is opened by its lifespan, once per process or client.

    `clock` is what "now" is for the engine and for OAuth token lifetimes (tests pass one they move by hand).
    """
    bus = ListenedBus()
    http = settings.transport != "stdio"
    oauth = None
    if http and settings.oauth_issuer:
        # HTTP-only parts are imported when served over HTTP: a stdio server starts without them (JOSE, uvicorn).
        from budget_mcp.server.http import resource_url
        from budget_mcp.server.oauth import OAuthVerifier

        oauth = OAuthVerifier(settings.oauth_issuer, settings.oauth_audience or resource_url(settings), clock=clock)
    tokens = TokenTable.from_settings(settings, oauth)
    live = LiveState()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        ledger = await open_ledger(settings.ledger_location)
        try:
            catalog = PriceCatalog(cache_dir=settings.prices_cache_dir, overrides_file=settings.price_overrides)
            engine = BudgetEngine(ledger, catalog, clock)
            if settings.budgets_file is not None:
                applied = await apply_declarations(engine, load_budgets_file(settings.budgets_file))
                logger.info("applied %d budgets from %s", len(applied), settings.budgets_file)
            webhook = None
            if settings.alert_webhook:
                webhook = AlertWebhook(
                    settings.alert_webhook, engine, attempts=settings.alert_attempts,
                    backoff_seconds=settings.alert_backoff_seconds, timeout_seconds=settings.alert_timeout_seconds,
                )  # fmt: skip

            async def may_read(uri: str) -> None:
                (await tokens.caller(engine)).check_uri(uri)

            subscribers = LegacySubscribers(may_read)
            announcer = Announcer(bus, subscribers, await engine.budget_ids())
            hub = EventHub(engine) if settings.transport == "http" else None
            if hub is not None:
                announcer.listeners.append(hub.wake)
            state = AppState(settings, engine, announcer, subscribers, tokens, webhook, hub)
            async with anyio.create_task_group() as tasks:
                await tasks.start(subscribers.run)
                tasks.start_soon(announcer.run)
                tasks.start_soon(watch_other_processes, engine, announcer, settings.change_poll_seconds)
                tasks.start_soon(close_expired_periodically, engine, announcer, settings.expiry_sweep_seconds)
                if webhook is not None:
                    tasks.start_soon(webhook.run)
                if hub is not None:
                    tasks.start_soon(hub.run)
                if settings.prices_refresh_hours:
                    tasks.start_soon(refresh_prices_periodically, state, settings.prices_refresh_hours * 3600)
                try:
                    with live.running(state):
                        yield state
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await ledger.close()

    auth: dict[str, Any] = {}
    metadata_url = None
    if oauth is not None:
        from budget_mcp.server.http import resource_url

        # Our verifier checks each token's audience itself (the SDK would want aud to be the URL exactly).
        resource_auth = AuthSettings(
            issuer_url=oauth.issuer, resource_server_url=resource_url(settings), validate_token_resource=False
        )
        auth = {"token_verifier": tokens, "auth": resource_auth}
        assert resource_auth.resource_server_url is not None
        metadata_url = str(build_resource_metadata_url(resource_auth.resource_server_url))
    elif tokens and http:
        auth = {
            "token_verifier": tokens,
            "auth": AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None),
        }
    server: MCPServer[AppState] = MCPServer(
        "budget-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        subscriptions=bus,
        **auth,
    )
    # The SDK takes built tools only; ours are built at the first request that needs one, so a stdio server answers
    # `initialize` sooner. Over HTTP they are built now: a build inside a request would pause every connection.
    assert not server._tool_manager.list_tools(), "the SDK registered tools of its own"
    tools = BudgetToolManager(warn_on_duplicate_tools=server.settings.warn_on_duplicate_tools)
    if http:
        tools.build()
    server._tool_manager = tools
    register_resources(server)
    register_prompts(server)
    server.middleware.extend(
        [CurrentState(), LegacySubscriptions(), PromptArguments(server), BudgetResourceList(), ScopedSubscriptions()]
    )

    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    if settings.transport == "http":
        from starlette.routing import WebSocketRoute

        from budget_mcp.server.api import API_ROUTE, HttpApi, loopback_security
        from budget_mcp.server.dashboard import register_dashboard
        from budget_mcp.server.websocket import EventSocket

        api = HttpApi(
            server, live, tools.list_tools(), require_token=bool(tokens), metadata_url=metadata_url,
            security=loopback_security(settings.host),
        )  # fmt: skip
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        server.custom_route(API_ROUTE, methods=methods)(api.handle)
        register_dashboard(server, require_token=bool(tokens))
        socket = EventSocket(live, require_token=bool(tokens), security=loopback_security(settings.host))
        # The SDK adds its custom routes to the app it builds; it has no decorator for a WebSocket route.
        server._custom_starlette_routes.append(cast(Any, WebSocketRoute("/ws", socket.handle)))

    return server
