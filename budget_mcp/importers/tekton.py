"""Tekton's Budget component database (SQLAlchemy on SQLite: `budget`, `budget_policy`, `usage_record`).

Each `budget` row becomes `tekton/{name}` (its `budget_id` when it has no name); a `usage_record` costs
`total_cost` at `timestamp` on the budget of its `budget_id`, keyed by `record_id`. Policies that become limits:
enabled `warn`, `soft_limit` (both `warn`) and `hard_limit` (`block`) ones of an hourly, daily, weekly or monthly
`period` that apply to the whole budget (no `provider`, `component`, `task_type` or `tier`): `cost_limit` and
`token_limit`, one per period. Per-session and per-task policies, and `ignore` ones, do not.
Times are naive local times of the machine Tekton ran on: pass `--timezone`.
"""

from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path
from typing import Any

from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import BudgetMcpError, InvalidInputError
from budget_mcp.importers.foreign_db import ForeignDb
from budget_mcp.importers.record import (
    Invalid,
    SourceBudget,
    SourceRecord,
    budget_with_limits,
    segment,
    text,
    tokens,
    usd,
    utc_time,
)

_ENFORCEMENT = {"warn": "warn", "soft_limit": "warn", "hard_limit": "block"}
_PERIODS = ("hourly", "daily", "weekly", "monthly")
_SCOPED = ("provider", "component", "task_type", "tier")


class TektonSource:
    """A Tekton Budget database."""

    format = "tekton"

    def __init__(self, path: Path, naive_zone: tzinfo) -> None:
        self.db = ForeignDb(path)
        self.naive_zone = naive_zone
        if "usage_record" not in self.db.tables():
            raise InvalidInputError(f"{path} has no usage_record table: is it Tekton Budget's database?")
        self.names = {row["budget_id"]: self._name(row) for row in self.db.rows("budget")}

    def _name(self, row: dict[str, Any]) -> str:
        return f"tekton/{segment(row.get('name') or row['budget_id'])}"

    def budget_of(self, tekton_id: object) -> str:
        return self.names.get(tekton_id) or f"tekton/{segment(tekton_id)}"

    def budgets(self) -> list[SourceBudget]:
        limits: dict[str, dict[str, dict[str, Any]]] = {}
        enforcement: dict[str, str] = {}
        for policy in self.db.rows("budget_policy"):
            kind, period = policy.get("type"), policy.get("period")
            if kind not in _ENFORCEMENT or period not in _PERIODS or not _truthy(policy.get("enabled", 1)):
                continue
            if any(policy.get(name) for name in _SCOPED):
                continue
            budget_id = self.budget_of(policy.get("budget_id"))
            limit: dict[str, Any] = {"period": period}
            where = f"budget_policy {policy.get('policy_id')}"
            if policy.get("cost_limit") is not None:
                limit["limit_usd"] = str(usd(policy["cost_limit"], f"{where} cost_limit"))
            if policy.get("token_limit") is not None:
                limit["limit_tokens"] = tokens(policy["token_limit"], f"{where} token_limit")
            if len(limit) > 1:
                limits.setdefault(budget_id, {}).setdefault(period, limit)
                if _ENFORCEMENT[kind] == "block" or budget_id not in enforcement:
                    enforcement[budget_id] = _ENFORCEMENT[kind]
        return [
            budget_with_limits(budget_id, by_period, enforcement[budget_id], "Tekton Budget (imported)")
            for budget_id, by_period in limits.items()
        ]

    def count(self) -> int:
        return self.db.count("usage_record")

    def records(self) -> Iterator[SourceRecord | Invalid]:
        for number, row in enumerate(self.db.rows("usage_record"), 1):
            where = f"usage_record row {number} (record_id {row.get('record_id')})"
            try:
                record_id = text(row.get("record_id"))
                if record_id is None:
                    raise InvalidInputError("record_id is missing")
                if row.get("budget_id") is None:
                    raise InvalidInputError("budget_id is missing; pass --budget to import it anyway")
                meta = {k: str(row[k]) for k in ("component", "task_type", "context_id") if text(row.get(k))}
                yield SourceRecord(
                    where=where,
                    key=record_id,
                    budget_id=self.budget_of(row["budget_id"]),
                    at=utc_time(row.get("timestamp"), "timestamp", self.naive_zone),
                    cost_usd=usd(row.get("total_cost"), "total_cost"),
                    tokens=TokenCounts(
                        input=tokens(row.get("input_tokens"), "input_tokens"),
                        output=tokens(row.get("output_tokens"), "output_tokens"),
                    ),
                    model=text(row.get("model")),
                    provider=text(row.get("provider")),
                    metadata=meta,
                )
            except BudgetMcpError as exc:
                yield Invalid(where, str(exc))


def _truthy(value: object) -> bool:
    return value not in (0, "0", False, "false", None)
