"""Change notifications for clients of the 2025-11-25 protocol: `resources/subscribe` and list changes.

Those clients never open a `subscriptions/listen` stream; they hear only what is sent on their own
connection. mcp 2.3 no longer serves `resources/subscribe`, so a middleware (the SDK's public seam)
does: it answers subscribe and unsubscribe, advertises both in the handshake, and remembers each
legacy connection (by its HTTP session id; stdio, SSE and in-memory have one per lifespan) with the
session to notify it through. Each connection gets a bounded queue and a task that sends from it:
a change is dropped into the queues without waiting, and a connection whose queue is full (a client
that stopped reading) or whose sends fail is forgotten, so no client can stall the writers or the others.
"""

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from budget_mcp.errors import BudgetMcpError

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1024  # notices a connection may have unsent before it counts as not reading
Notice = str | None  # the URI that was updated, or None: the resource list changed


@dataclass
class _Listener:
    session: ServerSession
    uris: set[str]
    queue: MemoryObjectSendStream[Notice]
    sender: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class LegacySubscribers:
    """2025-11-25 connections of one server lifespan, the resource URIs each subscribed to, and their queues."""

    def __init__(self, may_read: Callable[[str], Awaitable[None]]) -> None:
        self.may_read = may_read  # raises BudgetMcpError for a URI the caller's token may not read
        self._connections: dict[str | None, _Listener] = {}
        self._tasks: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the senders' tasks until cancelled (start it in the lifespan's task group with `start`)."""
        try:
            async with anyio.create_task_group() as self._tasks:
                task_status.started()
                await anyio.sleep_forever()
        finally:
            for key in list(self._connections):
                self._forget(key)

    def updated(self, uris: Iterable[str]) -> None:
        """Queue `resources/updated` for each connection subscribed to one of `uris`; never waits."""
        changed = set(uris)
        for key, listener in list(self._connections.items()):
            for uri in sorted(changed & listener.uris):
                if not self._queue(key, listener, uri):
                    break

    def list_changed(self) -> None:
        """Queue `resources/list_changed` for every connection; never waits."""
        for key, listener in list(self._connections.items()):
            self._queue(key, listener, None)

    def remember(self, key: str | None, session: ServerSession) -> _Listener:
        """The listener of connection `key`, started on first sight."""
        listener = self._connections.get(key)
        if listener is None:
            send, receive = anyio.create_memory_object_stream[Notice](QUEUE_SIZE)
            listener = self._connections[key] = _Listener(session, set(), send)
            assert self._tasks is not None, "LegacySubscribers.run must be started first"
            self._tasks.start_soon(self._send, key, listener, receive)
        return listener

    def _queue(self, key: str | None, listener: _Listener, notice: Notice) -> bool:
        try:
            listener.queue.send_nowait(notice)
        except anyio.WouldBlock:
            logger.warning("a 2025-11-25 client stopped reading its notifications; no longer sending it any")
            self._forget(key)
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._forget(key)
            return False
        return True

    def _forget(self, key: str | None) -> None:
        listener = self._connections.pop(key, None)
        if listener is not None:
            listener.sender.cancel()
            listener.queue.close()

    async def _send(self, key: str | None, listener: _Listener, receive: MemoryObjectReceiveStream[Notice]) -> None:
        with listener.sender, receive:
            async for uri in receive:
                try:
                    if uri is not None:
                        await listener.session.send_resource_updated(uri)
                    else:
                        await listener.session.send_resource_list_changed()
                except Exception as exc:  # a connection that is gone; the change itself stands
                    logger.debug("forgetting a legacy connection that could not be notified: %s", type(exc).__name__)
                    self._forget(key)
                    return


class LegacySubscriptions:
    """Middleware serving what 2025-11-25 clients need to hear about changes (see the module docstring)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        subscribers = getattr(ctx.lifespan_context, "legacy", None)
        if not isinstance(subscribers, LegacySubscribers) or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await call_next(ctx)
        if ctx.method == "initialize":
            return _advertised(await call_next(ctx))
        if ctx.method == "notifications/initialized":
            subscribers.remember(_connection_key(ctx), ctx.session)
        elif ctx.method in {"resources/subscribe", "resources/unsubscribe"}:
            uri = str((ctx.params or {}).get("uri", ""))
            listener = subscribers.remember(_connection_key(ctx), ctx.session)
            if ctx.method == "resources/unsubscribe":
                listener.uris.discard(uri)
                return {}
            try:
                await subscribers.may_read(uri)
            except BudgetMcpError as exc:
                raise MCPError(INVALID_PARAMS, str(exc)) from exc
            listener.uris.add(uri)
            return {}
        return await call_next(ctx)


def _advertised(result: HandlerResult) -> HandlerResult:
    """The handshake's answer, saying that resources can be subscribed to and that their list may change."""
    if not isinstance(result, dict) or result.get("protocolVersion") in MODERN_PROTOCOL_VERSIONS:
        return result
    capabilities = dict(result.get("capabilities") or {})
    capabilities["resources"] = {**(capabilities.get("resources") or {}), "subscribe": True, "listChanged": True}
    return {**result, "capabilities": capabilities}


def _connection_key(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """Which connection a request came on: its HTTP session id (one connection per lifespan without one)."""
    headers = getattr(ctx.request, "headers", None)
    return None if headers is None else headers.get("mcp-session-id")
