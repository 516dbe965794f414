"""Applying declared budgets (the budgets file): parents first, each only when its entry changed.

A budget remembers the digest of the file entry last applied to it. At start an entry is applied only if
its digest differs, so a limit changed at run time (tool, CLI) survives restarts with an unchanged file,
and editing one budget's entry changes that budget only (fields the entry omits keep their values).
"""

import hashlib
import json
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
    """Allocate each declared budget whose entry changed since it was last applied; leave the others untouched."""
    applied: list[BudgetStatus] = []
    for declaration in declarations:
        fields = dict(declaration)
        budget_id = str(fields.pop("budget_id"))
        unknown = set(fields) - FIELDS
        if unknown:
            raise InvalidInputError(
                f"budget '{budget_id}' has unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}"
            )
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]
        applied.append(await engine.allocate(budget_id, **fields, declared=digest))
    return applied
