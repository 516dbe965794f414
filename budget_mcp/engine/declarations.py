"""Applying declared budgets (the budgets file): parents first, idempotently."""

from collections.abc import Iterable
from typing import Any

from budget_mcp.domain.results import BudgetStatus
from budget_mcp.engine.budgets import BudgetEngine
from budget_mcp.errors import InvalidInputError

FIELDS = frozenset(
    {"limit_usd", "limit_tokens", "limit_calls", "period", "extra_limits", "per_call_usd", "enforcement", "alert_at",
     "timezone", "description", "metadata"}
)  # fmt: skip


async def apply_declarations(engine: BudgetEngine, declarations: Iterable[dict[str, Any]]) -> list[BudgetStatus]:
    """Allocate each declared budget; a budget already declared the same way is left untouched."""
    applied: list[BudgetStatus] = []
    for declaration in declarations:
        fields = dict(declaration)
        budget_id = str(fields.pop("budget_id"))
        unknown = set(fields) - FIELDS
        if unknown:
            raise InvalidInputError(
                f"budget '{budget_id}' has unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}"
            )
        applied.append(await engine.allocate(budget_id, **fields))
    return applied
