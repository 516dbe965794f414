"""The MCP resources: budget statuses and the price catalog as JSON, budgets addressed by raw ids."""

import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from pydantic import TypeAdapter

from budget_mcp.domain.models import BudgetNode
from budget_mcp.errors import BudgetMcpError
from budget_mcp.server.state import AppState

_TREE = TypeAdapter(list[BudgetNode])


def register_resources(server: MCPServer[Any], state_of: Callable[[], AppState]) -> None:
    """Add the budget resources to `server`; `state_of()` returns the running AppState."""

    @server.resource(
        "budget://budgets", name="budgets", mime_type="application/json",
        description="Every budget's status, as a tree (children nested under parents).",
    )  # fmt: skip
    async def all_budgets() -> str:
        state = state_of()
        return _TREE.dump_json(await state.engine.tree(), indent=2).decode()

    @server.resource(
        "budget://budgets/{+budget_id}", name="budget", mime_type="application/json",
        description="One budget: limits, spent, held, allocated, available, window, burn rate and forecast.",
    )  # fmt: skip
    async def one_budget(budget_id: str) -> str:
        state = state_of()
        try:
            status = await state.engine.status(budget_id)
        except BudgetMcpError as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return status.model_dump_json(indent=2)

    @server.resource(
        "budget://prices", name="prices", mime_type="application/json",
        description="The price catalog in use: sources and when fetched, each recommendable model's prices, "
        "context window, capabilities and tier, local overrides, and rates the sources disagree on by over 5%.",
    )  # fmt: skip
    async def prices() -> str:
        return json.dumps(state_of().engine.prices.describe(), indent=1)
