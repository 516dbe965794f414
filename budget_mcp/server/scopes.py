"""The OAuth scopes of budget-mcp, and which one each MCP request needs.

`budget:read` looks (statuses, reports, the ledger, prices, estimates, recommendations, prompts,
subscriptions); `budget:spend` also checks, holds, charges and releases holds; `budget:admin` also
creates, resizes and closes budgets (`allocate`, `release` of a budget). Each scope includes the ones
before it. Static tokens hold all three: their prefixes alone limit them, as before. The HTTP API asks the
same of each route as of its tool: `POST /api/v1/charge` what `tools/call` of `charge` needs.
"""

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any


class BudgetScope(StrEnum):
    """An OAuth scope, in rising order of what it allows."""

    READ = "budget:read"
    SPEND = "budget:spend"
    ADMIN = "budget:admin"


BUDGET_SCOPES = tuple(BudgetScope)
ALL_SCOPES = frozenset(BudgetScope)
PREFIXES_CLAIM = "budget_prefixes"
API_PREFIX = "/api/v1/"

# Every tool, by name. A tool missing here needs budget:admin (closed by default), and a test holds this
# table to the tools the server registers.
TOOL_SCOPES = {
    "get_budget": BudgetScope.READ,
    "list_budgets": BudgetScope.READ,
    "estimate_cost": BudgetScope.READ,
    "recommend_model": BudgetScope.READ,
    "check_budget": BudgetScope.SPEND,
    "charge": BudgetScope.SPEND,
    "release": BudgetScope.SPEND,  # of a reservation; closing a budget (budget_id) is admin
    "allocate": BudgetScope.ADMIN,
}


def implied_scopes(granted: Iterable[str]) -> frozenset[BudgetScope]:
    """The scopes `granted` amounts to: each named budget scope and the ones below it."""
    levels = [BUDGET_SCOPES.index(BudgetScope(s)) for s in granted if s in ALL_SCOPES]
    return frozenset(BUDGET_SCOPES[: max(levels) + 1]) if levels else frozenset()


def required_scope(message: Any) -> BudgetScope:
    """The scope a JSON-RPC message needs: by tool for `tools/call`, budget:read for every other request."""
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return BudgetScope.READ
    params = _object(message.get("params"))
    name = params.get("name")
    if name == "release" and _object(params.get("arguments")).get("budget_id") is not None:
        return BudgetScope.ADMIN
    return TOOL_SCOPES.get(name, BudgetScope.ADMIN) if isinstance(name, str) else BudgetScope.ADMIN


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def api_scope(method: str, path: str, body: bytes | None) -> BudgetScope:
    """The scope a request to the HTTP API needs: its tool's for `POST /api/v1/{tool}`, budget:read otherwise
    (a GET reads a resource; a POST to no tool changes nothing and is answered 404)."""
    name = path.removeprefix(API_PREFIX)
    if method != "POST" or name not in TOOL_SCOPES:
        return BudgetScope.READ
    try:
        arguments = json.loads(body) if body else {}
    except ValueError:
        arguments = {}  # refused as malformed by the API itself
    return required_scope({"method": "tools/call", "params": {"name": name, "arguments": arguments}})
