"""The MCP resources: budget statuses, spend reports, ledger entries and the price catalog; budgets by raw id."""

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from pydantic import TypeAdapter

from budget_mcp.domain.results import BudgetNode
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import BudgetMcpError
from budget_mcp.render import report_markdown
from budget_mcp.server.access import visible_tree
from budget_mcp.server.state import AppState, current_state

T = TypeVar("T")
_TREE = TypeAdapter(list[BudgetNode])


def register_resources(server: MCPServer[Any]) -> None:
    """Add the budget resources to `server`."""

    async def read(budget_id: str, reader: Callable[[BudgetEngine], Awaitable[T]]) -> T:
        """What `reader` finds, once the caller's token is known to cover the budget; errors are resource errors."""
        state = current_state()
        try:
            (await state.caller()).check(budget_id)
            return await reader(state.engine)
        except BudgetMcpError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    @server.resource(
        "budget://budgets", name="budgets", mime_type="application/json",
        description="Every budget's status, as a tree (children nested under parents).",
    )  # fmt: skip
    async def all_budgets() -> str:
        state = current_state()
        return _TREE.dump_json(await visible_tree(state.engine, await state.caller()), indent=2).decode()

    @server.resource(
        "budget://budgets/{+budget_id}", name="budget", mime_type="application/json",
        description="One budget: limits, spent, held, allocated, available, window, burn rate and forecast.",
    )  # fmt: skip
    async def one_budget(budget_id: str) -> str:
        return (await read(budget_id, lambda engine: engine.status(budget_id))).model_dump_json(indent=2)

    @server.resource(
        "budget://reports/{+budget_id}.md", name="report-markdown", mime_type="text/markdown",
        description="The spend report of a budget's current window, rendered as Markdown.",
    )  # fmt: skip
    async def report_markdown_resource(budget_id: str) -> str:
        return report_markdown(await read(budget_id, lambda engine: engine.report(budget_id)))

    @server.resource(
        "budget://reports/{+budget_id}", name="report", mime_type="application/json",
        description="Spend report of a budget's current window: totals, by model, provider, child budget, day "
        "(and hour), alerts raised, burn rate and forecast. Breakdowns add up to the total.",
    )  # fmt: skip
    async def report(budget_id: str) -> str:
        return (await read(budget_id, lambda engine: engine.report(budget_id))).model_dump_json(indent=1)

    @server.resource(
        "budget://ledger/{+budget_id}{?limit,before}", name="ledger", mime_type="application/json",
        description="The latest ledger entries (charges, holds, releases, adjustments) of a budget and its "
        "descendants, newest first, each with its seq; ?limit=N (default 100, at most 1000); ?before=SEQ for the "
        "next page: the entries older than the last one shown (before = its seq).",
    )  # fmt: skip
    async def ledger(budget_id: str, limit: str = "100", before: str | None = None) -> str:
        count, below = _whole(limit, "limit"), None if before is None else _whole(before, "before")
        listing = await read(budget_id, lambda engine: engine.ledger_entries(budget_id, limit=count, before=below))
        return listing.model_dump_json(indent=1)

    @server.resource(
        "budget://prices", name="prices", mime_type="application/json",
        description="The price catalog in use: sources and when fetched, each recommendable model's prices, "
        "context window, capabilities and tier, local overrides, and rates the sources disagree on by over 5%.",
    )  # fmt: skip
    async def prices() -> str:
        return json.dumps(current_state().engine.describe_prices(), indent=1)


MAX_LISTED = 1_000


def _whole(text: str, name: str) -> int:
    """A query parameter that must be a whole number (at most 20 digits: the engine says what range it takes)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ResourceNotFoundError(f"{name} must be a whole number, got {text[:24]!r}")
    return int(text)


class BudgetResourceList:
    """Middleware: `resources/list` also names each budget the caller may read (at most MAX_LISTED), so the list
    changes when budgets are added, as its change notices say."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        listed = await call_next(ctx)
        state = ctx.lifespan_context
        if ctx.method != "resources/list" or not isinstance(listed, dict) or not isinstance(state, AppState):
            return listed
        caller = await state.caller()
        ids = [b for b in await state.engine.budget_ids() if caller.allows(b)][:MAX_LISTED]
        budgets = [
            {"uri": f"budget://budgets/{b}", "name": b, "mimeType": "application/json", "description": f"status of {b}"}
            for b in ids
        ]
        return {**listed, "resources": [*listed.get("resources", []), *budgets]}
