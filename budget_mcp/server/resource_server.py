"""The HTTP side of an OAuth resource server: the protected resource metadata, and a 403 per operation.

The SDK answers 401 (no token, or one the verifier refused) with `WWW-Authenticate` pointing at
the metadata, and serves that metadata (RFC 9728) from `AuthSettings`. Two things are added here:
the metadata lists every budget scope (the SDK would list only its `required_scopes`, which every
token must hold), and `ScopeGate` reads each JSON-RPC request before the transport does, answering
403 `insufficient_scope` naming the scope it lacks (MCP's step-up challenge), and adding the scope a
request needs to the SDK's 401, so a client first asks its provider for budget:read only and steps
up when an operation needs more. It runs on the MCP paths only, after the bearer middleware, so it
sees the verified token. It gates the HTTP API (`/api/v1/`) too, by the scope of each route's tool, and
refuses there in the API's own format (problem+json).
"""

import json
from collections.abc import Sequence
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from budget_mcp.server.scopes import API_PREFIX, BUDGET_SCOPES, BudgetScope, api_scope, implied_scopes, required_scope


def protect(app: Starlette, auth: AuthSettings, mcp_paths: Sequence[str], max_body_bytes: int) -> None:
    """Serve the full metadata document and gate the MCP paths (and the HTTP API) by scope, on an app the SDK built
    with `auth`."""
    assert auth.resource_server_url is not None
    routes = create_protected_resource_routes(
        resource_url=auth.resource_server_url,
        authorization_servers=[auth.issuer_url],
        scopes_supported=list(BUDGET_SCOPES),
        resource_name="budget-mcp",
    )
    replaced = {route.path for route in routes}
    kept: list[BaseRoute] = [r for r in app.router.routes if not (isinstance(r, Route) and r.path in replaced)]
    app.router.routes[:] = [*routes, *kept]
    metadata_url = str(build_resource_metadata_url(auth.resource_server_url))
    # Appended, not add_middleware (which puts it first): it must run after the SDK's bearer middleware.
    app.user_middleware.append(
        Middleware(ScopeGate, paths=tuple(mcp_paths), metadata_url=metadata_url, max_body_bytes=max_body_bytes)
    )


class ScopeGate:
    """ASGI middleware: a request on an MCP path whose token lacks the scope its messages need gets 403."""

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...], metadata_url: str, max_body_bytes: int) -> None:
        self.app = app
        self.paths = paths
        self.metadata_url = metadata_url
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        api = path.startswith(API_PREFIX)
        if not (api or self._gated(path)):
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        needed = BudgetScope.READ
        if scope["method"] == "POST":
            body = await self._read_body(receive, received)
            if api:
                needed = api_scope(scope["method"], path, body)
            else:
                needed = _needed(body) if body is not None else BudgetScope.READ

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            await self.app(scope, replay, _naming_scope(send, needed))  # the SDK's 401, with the scope to ask for
        elif needed not in implied_scopes(user.scopes):
            await self._refuse(send, needed, problem=api)
        else:
            await self.app(scope, replay, send)

    def _gated(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in self.paths)

    async def _read_body(self, receive: Receive, received: list[Message]) -> bytes | None:
        """The whole body, keeping the messages for the app; None when it is larger than the transport accepts."""
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                return None
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None  # the transport refuses it (413) on its own
            if not message.get("more_body", False):
                return b"".join(m.get("body", b"") for m in received)

    async def _refuse(self, send: Send, needed: BudgetScope, *, problem: bool = False) -> None:
        description = f"this request needs the scope {needed}"
        challenge = (
            f'Bearer error="insufficient_scope", scope="{needed}", '
            f'resource_metadata="{self.metadata_url}", error_description="{description}"'
        )
        refusal: dict[str, Any] = {"error": "insufficient_scope", "error_description": description}
        if problem:  # RFC 9457, as every other refusal of the HTTP API
            refusal = {"type": "urn:budget-mcp:problem:insufficient-scope", "title": "Forbidden", "status": 403,
                       "detail": f"{description}; ask your provider for a token with it"}  # fmt: skip
        body = json.dumps(refusal).encode()
        headers = [
            (b"content-type", b"application/problem+json" if problem else b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _naming_scope(send: Send, needed: BudgetScope) -> Send:
    """`send`, adding `scope="..."` to the challenge of a 401 so a client asks its provider for just that."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            headers = [
                (name, value + f', scope="{needed}"'.encode() if name.lower() == b"www-authenticate" else value)
                for name, value in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _needed(body: bytes) -> BudgetScope:
    """The highest scope any message of a JSON-RPC body needs (budget:read when it is not JSON: the
    transport answers that with a parse error)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return BudgetScope.READ
    messages = parsed if isinstance(parsed, list) else [parsed]
    return max((required_scope(m) for m in messages), key=BUDGET_SCOPES.index, default=BudgetScope.READ)
