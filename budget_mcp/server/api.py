"""The HTTP API under /api/v1: every tool as `POST /api/v1/{tool}`, every resource as a GET, errors as problem+json.

Each request runs the server's own tools (`Tool.run`, as `MCPServer.call_tool` does, without re-checking the result
the tool built from its own model) and resources (`read_resource`) with the lifespan's state current, so the argument
checks (`strict.py`), the grants (`access.py`), the engine's rules and the error texts are the tools' own; only the
envelope differs, and the cause of a tool error picks its HTTP status (`STATUSES`). There
is nobody to ask here: a check over an `ask` limit is denied, saying approval could not be asked. Tokens are those
of /mcp (the SDK's bearer middleware runs app-wide, so the caller's grant is known the same way); OAuth scopes are
gated per route before this runs (`resource_server.ScopeGate`).
"""

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from mcp import MCPError
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedResourceError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from budget_mcp.domain.ids import validate_budget_id
from budget_mcp.domain.results import SpendReport
from budget_mcp.errors import (
    AccessDeniedError,
    BudgetMcpError,
    BudgetNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    LedgerError,
    PriceSourceError,
    ReservationExpiredError,
    ReservationNotFoundError,
    UnknownModelError,
)
from budget_mcp.render import report_html
from budget_mcp.server.events import KEEPALIVE_SECONDS, EventHub, TooFarBehind, View, event_view, sse_lines
from budget_mcp.server.http import MAX_REQUEST_BYTES
from budget_mcp.server.openapi import RESOURCE_ROUTES, openapi_document
from budget_mcp.server.scopes import API_PREFIX
from budget_mcp.server.state import LiveState, current_state, using_state

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
API_ROUTE = "/api/v1{rest:path}"  # the one route of the whole API
MAX_BODY_BYTES = MAX_REQUEST_BYTES  # as /mcp
# The cause of a tool or resource error, its status and the last part of its problem type (first match wins).
STATUSES: tuple[tuple[type[BudgetMcpError], int, str], ...] = (
    (AccessDeniedError, 403, "access-denied"),
    (BudgetNotFoundError, 404, "budget-not-found"),
    (ReservationNotFoundError, 404, "reservation-not-found"),
    (IdempotencyConflictError, 409, "idempotency-conflict"),
    (ReservationExpiredError, 409, "reservation-expired"),
    (InsufficientFundsError, 422, "insufficient-funds"),
    (UnknownModelError, 400, "unknown-model"),
    (LedgerError, 503, "ledger-unavailable"),
    (PriceSourceError, 503, "prices-unavailable"),
    (BudgetMcpError, 400, "invalid-input"),
)
_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 421: "Misdirected Request",
    422: "Unprocessable Content", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
_QUERY = {"ledger": frozenset({"limit", "before"}), "events": frozenset({"prefix", "after"})}
_RESOURCE_KINDS = frozenset({"budgets", "reports", "ledger", "prices", "openapi.json", "events"})
EVENT_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


class Problem(Exception):
    """An API refusal: RFC 9457's type, title, status and detail."""

    def __init__(self, status: int, kind: str, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, dict(headers or {})

    def response(self) -> Response:
        """The problem as its application/problem+json response."""
        body = {
            "type": f"urn:budget-mcp:problem:{self.kind}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        return JSONResponse(body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers)


def refusal(exc: BudgetMcpError) -> Problem:
    """The problem for a domain error raised outside any tool: its status from its class, its text as the detail."""
    status, kind = next((s, k) for t, s, k in STATUSES if isinstance(exc, t))
    return Problem(status, kind, str(exc))


def error_problem(exc: ToolError | ResourceError, tool: str | None = None) -> Problem:
    """The problem for a tool's or resource's error: its status from what caused it, its text as the detail
    (without the SDK's 'Error executing tool <name>: ', which the route already names)."""
    if isinstance(exc, UnexpectedToolError | UnexpectedResourceError):
        return _internal()
    text = str(exc).removeprefix(f"Error executing tool {tool}: ") if tool else str(exc)
    cause: BaseException | None = exc
    while isinstance(cause, ToolError | ResourceError | ValidationError):
        cause = cause.__cause__
    if cause is None:  # refused by the argument checks themselves, before the tool ran
        return Problem(400, "invalid-arguments", text)
    if not isinstance(cause, BudgetMcpError):
        return _internal()
    found = refusal(cause)
    return Problem(found.status, found.kind, text)


def loopback_security(host: str) -> TransportSecuritySettings | None:
    """The DNS-rebinding protection the SDK gives /mcp on a loopback host (a foreign Host or Origin is refused)."""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


def _internal() -> Problem:
    return Problem(500, "internal", "internal error; the server logged it, please report it")


class HttpApi:
    """The /api/v1 routes of one server: `handle` answers every request under the prefix."""

    def __init__(
        self, server: MCPServer[Any], live: LiveState, tools: Sequence[Tool], *, require_token: bool,
        metadata_url: str | None, security: TransportSecuritySettings | None,
    ) -> None:  # fmt: skip
        self._server = server
        self._tool_list = list(tools)  # the server's own, built: the OpenAPI document describes these
        self._live = live
        self._require_token = require_token
        self._metadata_url = metadata_url
        self._security = TransportSecurityMiddleware(security) if security is not None else None
        self._tools = sorted(tool.name for tool in tools)
        self._tools_by_name = {tool.name: tool for tool in tools}
        self._context: Context[Any, Any] = Context(mcp_server=server)  # no request: nobody to ask
        self._openapi: dict[str, Any] | None = None

    async def handle(self, request: Request) -> Response:
        """Answer one request under /api/v1 (any path, any method): the result, or a problem."""
        try:
            return await self._answer(request)
        except Problem as problem:
            return problem.response()
        except Exception:  # the top of a request: log it, never show a traceback
            logger.exception("an HTTP API request failed unexpectedly")
            return _internal().response()

    async def _answer(self, request: Request) -> Response:
        if self._security is not None:
            refused = await self._security.validate_request(request)
            if refused is not None:
                raise Problem(refused.status_code, "refused-origin", bytes(refused.body).decode())
        self._authenticate(request)
        state = self._live.state
        if state is None:
            raise Problem(503, "not-ready", "the server is starting or stopping; try again in a moment")
        path = request.url.path.removeprefix(API_PREFIX.rstrip("/"))
        if path not in {"", "/"} and not path.startswith("/"):
            raise self._no_route(path)
        path = path.removeprefix("/")
        with using_state(state):
            if request.method == "POST":
                return await self._call_tool(request, path)
            if request.method in {"GET", "HEAD"}:
                return await self._read(request, path)
        allow = "POST" if path in self._tools else "GET"
        raise Problem(405, "method-not-allowed", f"{request.method} is not served here; use {allow}", {"Allow": allow})

    def _authenticate(self, request: Request) -> None:
        if not self._require_token or isinstance(request.scope.get("user"), AuthenticatedUser):
            return
        given = "authorization" in request.headers
        detail = (
            "the bearer token was not accepted; send a valid one in Authorization: Bearer <token>"
            if given
            else "this server needs a token; send it in Authorization: Bearer <token>"
        )
        challenge = f'Bearer error="invalid_token", error_description="{"invalid token" if given else "no token"}"'
        if self._metadata_url:
            challenge += f', resource_metadata="{self._metadata_url}"'
        raise Problem(401, "unauthorized", detail, {"WWW-Authenticate": challenge})

    async def _call_tool(self, request: Request, name: str) -> Response:
        if name.partition("/")[0] in _RESOURCE_KINDS:
            raise Problem(405, "method-not-allowed", f"/api/v1/{name[:80]} is read with GET", {"Allow": "GET"})
        if name not in self._tools:
            raise Problem(
                404, "unknown-tool", f"no tool {name[:60]!r}; POST to /api/v1/<tool>, one of {', '.join(self._tools)}"
            )
        arguments = await _arguments(request)
        key = request.headers.get("idempotency-key")
        if key is not None:
            if name != "charge":
                raise Problem(400, "invalid-arguments", "the Idempotency-Key header is for POST /api/v1/charge only")
            given = arguments.get("idempotency_key")
            if given is not None and given != key:
                raise Problem(
                    400, "invalid-arguments",
                    f"the Idempotency-Key header {key[:60]!r} differs from the body's idempotency_key "
                    f"{str(given)[:60]!r}; send one of them, or the same key in both",
                )  # fmt: skip
            arguments["idempotency_key"] = key
        try:
            answer = await self._tools_by_name[name].run(arguments, self._context)
        except (ToolError, ResourceError) as exc:
            if isinstance(exc, UnexpectedToolError | UnexpectedResourceError):
                logger.error("tool %s failed unexpectedly", name, exc_info=exc.__cause__ or exc)
            raise error_problem(exc, name) from exc
        except MCPError as exc:
            raise Problem(400, "invalid-arguments", str(exc)) from exc
        if not isinstance(answer, CallToolResult) or answer.structured_content is None:
            logger.error("tool %s answered the API without a structured result: %r", name, answer)
            raise _internal()
        return JSONResponse(answer.structured_content)

    async def _read(self, request: Request, path: str) -> Response:
        if path in self._tools:
            raise Problem(405, "method-not-allowed", f"the tool {path} is called with POST", {"Allow": "POST"})
        if path == "events":
            return await self._events(request)
        if path == "openapi.json":
            if self._openapi is None:
                self._openapi = openapi_document(self._tool_list)
            return JSONResponse(self._openapi)
        kind, _, budget_id = path.partition("/")
        if path in {"budgets", "prices"}:
            uri, media = f"budget://{path}", "application/json"
        elif kind in {"budgets", "reports", "ledger"} and budget_id:
            if b"%2f" in bytes(request.scope.get("raw_path") or b"").lower():
                raise Problem(400, "invalid-input", "write a budget id's slashes as they are, not encoded (%2F)")
            suffix = next((s for s in (".md", ".html") if kind == "reports" and budget_id.endswith(s)), "")
            budget_id = budget_id.removesuffix(suffix)
            try:
                validate_budget_id(budget_id)
            except BudgetMcpError as exc:
                raise Problem(400, "invalid-input", str(exc)) from exc
            uri = f"budget://{kind}/{budget_id}{'.md' if suffix == '.md' else ''}"
            media = {".md": "text/markdown; charset=utf-8", ".html": "text/html; charset=utf-8"}.get(
                suffix, "application/json"
            )
            if suffix == ".html":
                uri = f"budget://reports/{budget_id}"
        else:
            raise self._no_route(path)
        uri += _query(request, kind if budget_id else path)
        try:
            found = await self._server.read_resource(uri)
        except ResourceError as exc:
            if isinstance(exc, UnexpectedResourceError):
                logger.error("reading %s failed unexpectedly", uri, exc_info=exc.__cause__ or exc)
            raise error_problem(exc) from exc
        text = None if isinstance(found, InputRequiredResult) else next((c.content for c in found), None)
        if not isinstance(text, str):
            raise _internal()
        if media.startswith("text/html"):
            text = report_html(SpendReport.model_validate_json(text))
        return Response(text, media_type=media)

    async def _events(self, request: Request) -> Response:
        """The Server-Sent Events stream of ledger entries (events.py), from `Last-Event-ID` or `?after=`."""
        _query(request, "events")
        state = current_state()
        if state.events is None:
            raise Problem(404, "no-route", "this server does not stream events")
        after = request.headers.get("last-event-id") or request.query_params.get("after")
        try:
            view, start = event_view(await state.caller(), request.query_params.get("prefix"), after)
        except BudgetMcpError as exc:
            raise refusal(exc) from exc
        return StreamingResponse(
            _event_stream(state.events, view, start), media_type="text/event-stream", headers=EVENT_STREAM_HEADERS
        )

    def _no_route(self, path: str) -> Problem:
        routes = ", ".join(["POST /api/v1/<tool>", *(f"GET /api/v1{route.path}" for route in RESOURCE_ROUTES)])
        return Problem(404, "no-route", f"nothing at /api/v1/{path[:80]}; the routes are {routes}")


async def _event_stream(hub: EventHub, view: View, start: int | None) -> AsyncIterator[str]:
    """The text/event-stream body: a comment once subscribed, then events, a comment line when quiet, until the
    client goes (or falls too far behind: the stream ends and the client resumes with Last-Event-ID)."""
    try:
        subscription = await hub.subscribe(view, start)
    except BudgetMcpError as exc:
        logger.warning("an event stream could not start: %s", exc)
        yield f"retry: 1000\n: {str(exc).splitlines()[0][:200]}; reconnect to try again\n\n"
        return
    try:
        yield "retry: 1000\n: connected\n\n"  # subscribed: what is written from here on is on its way
        while True:
            try:
                events = await subscription.receive(KEEPALIVE_SECONDS)
            except TooFarBehind:
                yield ": too far behind; reconnect with Last-Event-ID to resume\n\n"
                return
            yield sse_lines(events) if events else ": keepalive\n\n"
    finally:
        subscription.close()


async def _arguments(request: Request) -> dict[str, Any]:
    """The JSON object of a tool's arguments (an empty body is no arguments); 413 beyond MAX_BODY_BYTES."""
    length = request.headers.get("content-length", "")
    too_large = Problem(413, "too-large", f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return {}
    media = request.headers.get("content-type", "")
    if media.split(";")[0].strip().lower() != "application/json":
        raise Problem(
            415, "unsupported-media-type",
            f"send the arguments as a JSON object with Content-Type: application/json (got {media[:60] or 'none'})",
        )  # fmt: skip
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise Problem(400, "malformed-json", f"the body is not JSON ({str(exc)[:80]})") from exc
    except RecursionError as exc:
        raise Problem(400, "malformed-json", "the body nests too deeply to be a tool's arguments") from exc
    if not isinstance(parsed, dict):
        raise Problem(400, "invalid-arguments", "the body must be a JSON object of the tool's arguments")
    return parsed


def _query(request: Request, route: str) -> str:
    """The resource URI's query for a route's parameters; an unknown or malformed one is refused."""
    allowed = _QUERY.get(route, frozenset())
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        known = f"; it takes {', '.join(sorted(allowed))}" if allowed else "; it takes none"
        raise Problem(400, "invalid-input", f"unknown query parameter {unknown[0][:40]!r}{known}")
    passed = []
    for name in ("limit", "before"):  # the resource's own query parameters (events reads its own)
        value = request.query_params.get(name) if name in allowed else None
        if value is None:
            continue
        if not value.isdigit() or not value.isascii():
            raise Problem(400, "invalid-input", f"{name} must be a whole number, got {value[:20]!r}")
        passed.append(f"{name}={value}")
    return "?" + "&".join(passed) if passed else ""
