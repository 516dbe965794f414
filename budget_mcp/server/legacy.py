"""Change notifications for clients of the 2025-11-25 protocol: `resources/subscribe` and list changes.

Those clients never open a `subscriptions/listen` stream; they hear only what is sent on their own
connection. So every legacy connection is remembered from its `notifications/initialized`, with the
URIs it subscribed to, and forgotten when it closes. Each one gets a bounded queue and a task that
sends from it: a change is dropped into the queues without waiting, and a connection whose queue is
full (a client that stopped reading) is dropped, so no client can stall the writers or the others.
The SDK hands handlers a per-request session; the connection behind it (`session._connection`,
private in mcp 2.3, pinned and checked by tests/server/test_sdk_shape.py) is the identity that lasts.
"""

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import MCPError, types
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import MCPServer
from mcp.types import INVALID_PARAMS

from budget_mcp.errors import BudgetMcpError

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # notifications a connection may have unsent before it counts as not reading
Notice = tuple[str, dict[str, Any] | None]


@dataclass
class _Listener:
    uris: set[str]
    queue: MemoryObjectSendStream[Notice]
    sender: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class LegacySubscribers:
    """2025-11-25 connections of one server lifespan, the resource URIs each subscribed to, and their queues."""

    def __init__(self, may_read: Callable[[str], Awaitable[None]]) -> None:
        self.may_read = may_read  # raises BudgetMcpError for a URI the caller's token may not read
        self._connections: dict[Any, _Listener] = {}
        self._tasks: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the senders' tasks until cancelled (start it in the lifespan's task group with `start`)."""
        async with anyio.create_task_group() as self._tasks:
            task_status.started()
            await anyio.sleep_forever()

    def updated(self, uris: Iterable[str]) -> None:
        """Queue `resources/updated` for each connection subscribed to one of `uris`; never waits."""
        changed = set(uris)
        for connection, listener in list(self._connections.items()):
            for uri in sorted(changed & listener.uris):
                if not self._queue(connection, listener, ("notifications/resources/updated", {"uri": uri})):
                    break

    def list_changed(self) -> None:
        """Queue `resources/list_changed` for every connection; never waits."""
        for connection, listener in list(self._connections.items()):
            self._queue(connection, listener, ("notifications/resources/list_changed", None))

    def _queue(self, connection: Any, listener: _Listener, notice: Notice) -> bool:
        try:
            listener.queue.send_nowait(notice)
        except anyio.WouldBlock:
            logger.warning("a 2025-11-25 client stopped reading its notifications; no longer sending it any")
            self._forget(connection)
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._forget(connection)
            return False
        return True

    def _forget(self, connection: Any) -> None:
        listener = self._connections.pop(connection, None)
        if listener is not None:
            listener.sender.cancel()
            listener.queue.close()

    def _remember(self, ctx: Any) -> _Listener:
        connection = ctx.session._connection
        listener = self._connections.get(connection)
        if listener is None:
            send, receive = anyio.create_memory_object_stream[Notice](QUEUE_SIZE)
            listener = self._connections[connection] = _Listener(set(), send)
            connection.exit_stack.callback(self._forget, connection)
            if self._tasks is not None:
                self._tasks.start_soon(self._send, connection, listener, receive)
        return listener

    async def _send(self, connection: Any, listener: _Listener, receive: MemoryObjectReceiveStream[Notice]) -> None:
        with listener.sender, receive:
            async for method, params in receive:
                try:
                    await connection.outbound.notify(method, params)
                except Exception as exc:  # a connection that is gone; the change itself stands
                    logger.debug("forgetting a legacy connection that could not be notified: %s", type(exc).__name__)
                    self._forget(connection)
                    return


def _subscribers(ctx: Any) -> LegacySubscribers:
    subscribers: LegacySubscribers = ctx.lifespan_context.legacy
    return subscribers


async def _joined(ctx: Any, _: types.NotificationParams) -> None:
    _subscribers(ctx)._remember(ctx)


async def _subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscribers = _subscribers(ctx)
    try:
        await subscribers.may_read(str(params.uri))
    except BudgetMcpError as exc:
        raise MCPError(INVALID_PARAMS, str(exc)) from exc
    subscribers._remember(ctx).uris.add(str(params.uri))
    return types.EmptyResult()


async def _unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    _subscribers(ctx)._remember(ctx).uris.discard(str(params.uri))
    return types.EmptyResult()


def install(server: MCPServer[Any]) -> None:
    """Serve resources/subscribe and unsubscribe, and advertise resource list changes to legacy clients.

    The handlers find their lifespan's `LegacySubscribers` as `lifespan_context.legacy`.
    """
    low = server._lowlevel_server
    low.add_notification_handler("notifications/initialized", types.NotificationParams, _joined)
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, _subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, _unsubscribe)
    original = low.create_initialization_options

    def with_list_changes(notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any) -> Any:
        return original(notification_options or NotificationOptions(resources_changed=True), *args, **kwargs)

    low.create_initialization_options = with_list_changes  # type: ignore[method-assign]
