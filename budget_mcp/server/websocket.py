"""`GET /ws`: the event stream (events.py) over a WebSocket, one text message per event, the same JSON as SSE's data.

Authentication is the bearer token in the Authorization header of the upgrade request, as everywhere else; the
token is not accepted in the URL (it would land in access logs) nor as a first message. Tekton's components and
other programs set the header; a browser page uses the SSE stream through `fetch`, which can send the header,
instead. A refused upgrade is answered with the API's problem+json (401, 403 without budget:read or outside the
token's budgets, 400 bad input). `?after=SEQ` resumes after an event id, `?prefix=` narrows as on SSE. A socket
that falls too far behind is closed with code 1013 (try again later): reconnect with `after` the last id seen.
"""

import logging
from typing import Any, cast

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from budget_mcp.errors import BudgetMcpError
from budget_mcp.server.api import Problem, refusal
from budget_mcp.server.events import KEEPALIVE_SECONDS, TooFarBehind, event_view
from budget_mcp.server.scopes import BudgetScope, implied_scopes
from budget_mcp.server.state import LiveState, using_state

logger = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
_QUERY = frozenset({"prefix", "after"})


class EventSocket:
    """The /ws endpoint of one server."""

    def __init__(
        self, live: LiveState, *, require_token: bool, security: TransportSecuritySettings | None = None
    ) -> None:
        self._live = live
        self._require_token = require_token
        self._security = TransportSecurityMiddleware(security) if security is not None else None

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one WebSocket: refuse the upgrade, or send events until either side closes."""
        try:
            state, view, start = await self._admit(websocket)
        except Problem as problem:
            await _deny(websocket, problem)
            return
        hub = state.events
        assert hub is not None
        subscription = await hub.subscribe(view, start)
        try:
            await websocket.accept()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_until_closed, websocket, tasks.cancel_scope)
                while True:
                    for event in await subscription.receive(KEEPALIVE_SECONDS):
                        await websocket.send_text(event.data)
        except* TooFarBehind:
            await websocket.close(TRY_AGAIN_LATER, "too far behind; reconnect with ?after=<the last id received>")
        except* (WebSocketDisconnect, OSError):
            pass  # the client went away
        finally:
            subscription.close()

    async def _admit(self, websocket: WebSocket) -> tuple[Any, Any, int | None]:
        """The state, view and start of an acceptable upgrade request; raises the Problem that refuses it."""
        if self._security is not None:
            refused = await self._security.validate_request(cast(Request, websocket))
            if refused is not None:
                raise Problem(refused.status_code, "refused-origin", bytes(refused.body).decode())
        user = websocket.scope.get("user")
        if self._require_token and not isinstance(user, AuthenticatedUser):
            raise Problem(401, "unauthorized", "this server needs a token; send it in Authorization: Bearer <token>")
        if isinstance(user, AuthenticatedUser) and BudgetScope.READ not in implied_scopes(user.scopes):
            raise Problem(403, "insufficient-scope", f"this request needs the scope {BudgetScope.READ}")
        state = self._live.state
        if state is None or state.events is None:
            raise Problem(503, "not-ready", "the server is starting or stopping; try again in a moment")
        unknown = sorted(set(websocket.query_params) - _QUERY)
        if unknown:
            raise Problem(400, "invalid-input", f"unknown query parameter {unknown[0][:40]!r}; it takes after, prefix")
        params = websocket.query_params
        with using_state(state):
            try:
                view, start = event_view(await state.caller(), params.get("prefix"), params.get("after"))
            except BudgetMcpError as exc:
                raise refusal(exc) from exc
        return state, view, start


async def _until_closed(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and ignore) what the client sends until it closes, then stop the sending loop."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        scope.cancel()


async def _deny(websocket: WebSocket, problem: Problem) -> None:
    """Refuse the upgrade with the problem as an HTTP response, where the server can send one; else close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(problem.response())
    else:
        await websocket.close(1008, problem.detail[:120])
