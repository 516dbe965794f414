"""Change notifications for clients of the 2025-11-25 protocol: `resources/subscribe` and list changes.

Those clients never open a `subscriptions/listen` stream; they hear only what is sent on their own
connection. So every legacy connection is remembered from its `notifications/initialized`, with the
URIs it subscribed to, and forgotten when it closes (or fails a send); each change is sent to them
as well as published on the listen bus. The SDK hands handlers a per-request session; the connection
behind it (`session._connection`, private in mcp 2.3) is the one identity that lasts.
"""

import logging
from collections.abc import Iterable
from typing import Any
from weakref import WeakKeyDictionary

from mcp import types
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer

logger = logging.getLogger(__name__)


class LegacySubscribers:
    """2025-11-25 connections and the resource URIs each subscribed to."""

    def __init__(self) -> None:
        self._connections: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()

    def install(self, server: MCPServer[Any]) -> None:
        """Serve resources/subscribe and unsubscribe, and advertise resource list changes to legacy clients."""
        low = server._lowlevel_server
        low.add_notification_handler("notifications/initialized", types.NotificationParams, self._joined)
        low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)
        original = low.create_initialization_options

        def with_list_changes(
            notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
        ) -> Any:
            return original(notification_options or NotificationOptions(resources_changed=True), *args, **kwargs)

        low.create_initialization_options = with_list_changes  # type: ignore[method-assign]

    async def updated(self, uris: Iterable[str]) -> None:
        """Tell each legacy connection subscribed to one of `uris` that it changed."""
        changed = set(uris)
        for connection, subscribed in list(self._connections.items()):
            for uri in sorted(changed & subscribed):
                if not await self._notify(connection, "notifications/resources/updated", {"uri": uri}):
                    break

    async def list_changed(self) -> None:
        """Tell every legacy connection that the resource list changed (budgets were added)."""
        for connection in list(self._connections):
            await self._notify(connection, "notifications/resources/list_changed", None)

    async def _notify(self, connection: Any, method: str, params: dict[str, Any] | None) -> bool:
        try:
            await connection.outbound.notify(method, params)
        except Exception as exc:  # a connection that is gone; the change itself stands
            logger.debug("forgetting a legacy connection that could not be notified: %s", type(exc).__name__)
            self._connections.pop(connection, None)
            return False
        return True

    def _remember(self, ctx: Any) -> set[str]:
        connection = ctx.session._connection
        if connection not in self._connections:
            self._connections[connection] = set()
            connection.exit_stack.callback(self._connections.pop, connection, None)
        return self._connections[connection]

    async def _joined(self, ctx: Any, _: types.NotificationParams) -> None:
        self._remember(ctx)

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        self._remember(ctx).add(str(params.uri))
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self._remember(ctx).discard(str(params.uri))
        return types.EmptyResult()
