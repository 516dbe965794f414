"""The OpenAPI 3.1 document of /api/v1, generated from the tools themselves and the result models.

A tool's request body is the input schema `tools/list` publishes (`tool.parameters`), its 200 body the
JSON schema of its result model (`tool.fn_metadata.output_model`, with descriptions); resources are named
with the model they answer. Definitions are hoisted into `components/schemas`, so nothing is written twice.
"""

from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.tools import Tool
from pydantic import BaseModel, TypeAdapter

from budget_mcp import __version__
from budget_mcp.domain.records import MAX_SEQ
from budget_mcp.domain.results import BudgetNode, BudgetStatus, LedgerListing, SpendReport
from budget_mcp.server.events import AlertEvent, EntryEvent
from budget_mcp.server.scopes import TOOL_SCOPES

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class ResourceRoute:
    """A GET of the API: its path under /api/v1, the MCP resource it reads, what it answers."""

    path: str
    operation: str
    resource: str
    summary: str
    model: Any = None
    media: str = "application/json"


RESOURCE_ROUTES = (
    ResourceRoute("/budgets", "get_budgets", "budget://budgets", "every budget's status, as a tree", list[BudgetNode]),
    ResourceRoute(
        "/budgets/{budget_id}",
        "get_budget_status",
        "budget://budgets/{+budget_id}",
        "one budget's status",
        BudgetStatus,
    ),
    ResourceRoute(
        "/reports/{budget_id}",
        "get_report",
        "budget://reports/{+budget_id}",
        "the current window's report",
        SpendReport,
    ),
    ResourceRoute(
        "/reports/{budget_id}.md",
        "get_report_markdown",
        "budget://reports/{+budget_id}.md",
        "the report in Markdown",
        media="text/markdown",
    ),
    ResourceRoute(
        "/reports/{budget_id}.html",
        "get_report_html",
        "budget://reports/{+budget_id}",
        "the report as an HTML page",
        media="text/html",
    ),
    ResourceRoute(
        "/ledger/{budget_id}",
        "get_ledger",
        "budget://ledger/{+budget_id}{?limit,before}",
        "the latest ledger entries, newest first",
        LedgerListing,
    ),  # fmt: skip
    ResourceRoute("/prices", "get_prices", "budget://prices", "the price catalog in use", dict[str, Any]),
)

_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `detail` is the tool error's text",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}  # fmt: skip
_ERRORS = {
    "400": "bad input (unknown or malformed arguments, malformed JSON, an invalid id)",
    "401": "no token, or one that is not accepted",
    "403": "outside the token's budgets, or a scope it lacks",
    "404": "unknown budget, reservation, tool or route",
    "409": "an idempotency key reused with another request, or an expired hold",
    "413": "body over 256 KiB",
    "415": "a body that is not application/json",
    "422": "more than the parent has available",
}


def openapi_document(tools: list[Tool]) -> dict[str, Any]:
    """The whole document: a POST per tool, a GET per resource, problem+json errors, bearer tokens."""
    components: dict[str, Any] = {"Problem": _PROBLEM}
    paths: dict[str, Any] = {}
    for tool in tools:
        paths[f"/api/v1/{tool.name}"] = {"post": _tool_operation(tool, components)}
    for route in RESOURCE_ROUTES:
        paths[f"/api/v1{route.path}"] = {"get": _resource_operation(route, components)}
    paths["/api/v1/events"] = {"get": _events_operation(components)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "budget-mcp HTTP API",
            "version": __version__,
            "description": "The MCP tools and resources of budget-mcp over plain HTTP: the same arguments, results, "
            "tokens and rules as /mcp. A denial is not an error: 200 with allowed false.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def _tool_operation(tool: Tool, components: dict[str, Any]) -> dict[str, Any]:
    output = tool.fn_metadata.output_model
    scope = TOOL_SCOPES.get(tool.name)
    operation: dict[str, Any] = {
        "operationId": tool.name,
        "summary": tool.description.splitlines()[0],
        "description": tool.description + (f"\n\nOAuth scope: {scope}." if scope else ""),
        "x-mcp-tool": tool.name,
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": _hoisted(tool.parameters, components)}},
        },
        "responses": {
            "200": {"description": "the tool's result",
                    "content": {"application/json": {"schema": _model(output, components)}}},
            **_error_responses(),
        },
    }  # fmt: skip
    if tool.name == "charge":
        operation["parameters"] = [
            {
                "name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "the same as idempotency_key (both given and different: 400)",
            }
        ]  # fmt: skip
    return operation


def _resource_operation(route: ResourceRoute, components: dict[str, Any]) -> dict[str, Any]:
    schema = _model(route.model, components) if route.model is not None else {"type": "string"}
    parameters = []
    if "{budget_id}" in route.path:
        parameters.append(
            {
                "name": "budget_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "the budget id, slashes as they are (acme/research)",
            }  # fmt: skip
        )
    if "{?limit,before}" in route.resource:
        parameters += [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                "description": "how many entries (default 100, at most 1000)",
            },
            {
                "name": "before",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
                "description": "only entries with a smaller seq: the seq of the last entry of the previous page",
            },
        ]  # fmt: skip
    return {
        "operationId": route.operation,
        "summary": route.summary,
        "x-mcp-resource": route.resource,
        "parameters": parameters,
        "responses": {"200": {"description": route.summary, "content": {route.media: {"schema": schema}}},
                      **_error_responses()},
    }  # fmt: skip


def _events_operation(components: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/events: a text/event-stream whose every `data:` line is an EntryEvent or an AlertEvent."""
    data = {"oneOf": [_model(EntryEvent, components), _model(AlertEvent, components)]}

    def query(name: str, schema: dict[str, Any], why: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": why}

    return {
        "operationId": "get_events",
        "summary": "live ledger events (Server-Sent Events)",
        "description": "One event per ledger entry (`event:` its kind, `id:` its sequence number, `data:` an "
        "EntryEvent), and one `alert` event (the same id, an AlertEvent) per threshold it crossed, in the "
        "ledger's commit order. `Last-Event-ID` or `after` replays what was missed; without them the stream "
        "starts now. A comment line every 15 s keeps proxies open. `GET /ws` carries the same messages over a "
        "WebSocket (`?after=`, `?prefix=`). OAuth scope: budget:read.",
        "parameters": [
            query("prefix", {"type": "string"}, "only events of budgets under this one"),
            query("after", {"type": "integer", "minimum": 0}, "replay from the event after this id (0: all)"),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "as after; sent by EventSource when it reconnects",
            },
        ],  # fmt: skip
        "responses": {
            "200": {
                "description": "the event stream; each data line is JSON",
                "content": {"text/event-stream": {"schema": {"type": "string"}, "x-data-schema": data}},
            },
            **_error_responses(),
        },  # fmt: skip
    }


def _error_responses() -> dict[str, Any]:
    problem = {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}}
    return {status: {"description": why, "content": problem} for status, why in _ERRORS.items()}


def _model(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a pydantic model (or type), its definitions moved into `components`."""
    schema = _hoisted(TypeAdapter(model).json_schema(mode="serialization", ref_template=_REF), components)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return schema
    _hoisted({"$defs": {model.__name__: schema}}, components)
    return {"$ref": _REF.format(model=model.__name__)}


def _hoisted(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$defs` moved into `components` and its references pointing there."""
    rewritten: dict[str, Any] = _rewrite(schema)
    for name, definition in rewritten.pop("$defs", {}).items():
        if components.setdefault(name, definition) != definition:
            raise ValueError(f"two different schemas are named {name}")
    return rewritten


def _rewrite(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out["$ref"] = _REF.format(model=ref.removeprefix("#/$defs/"))
    return out
