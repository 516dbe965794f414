"""Rhetor's budget database (`rhetor.db`: `usage`, `budget_settings`).

A `usage` row costs `cost` at `timestamp` on `rhetor/{component}` (`rhetor` without a component), keyed by
its `id` and time. Limits: active `budget_settings` of `provider = 'all'` become limits of the root `rhetor`
(`enforce` is `block`, `warn` is `warn`; `ignore` ones do not), one per period. Settings of one provider do
not (a budget here limits a path of budgets, not a provider). Times without an offset: pass `--timezone`.
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

_ENFORCEMENT = {"enforce": "block", "warn": "warn"}
_PERIODS = ("daily", "weekly", "monthly")


class RhetorSource:
    """A Rhetor budget database."""

    format = "rhetor"

    def __init__(self, path: Path, naive_zone: tzinfo) -> None:
        self.db = ForeignDb(path)
        self.naive_zone = naive_zone
        if "usage" not in self.db.tables():
            raise InvalidInputError(f"{path} has no usage table: is it Rhetor's budget database?")

    def budgets(self) -> list[SourceBudget]:
        limits: dict[str, dict[str, Any]] = {}
        enforcement = "warn"
        for row in self.db.rows("budget_settings", order_by="id"):
            period, how = row.get("period"), _ENFORCEMENT.get(str(row.get("enforcement")))
            if row.get("provider") != "all" or not row.get("active") or how is None or period not in _PERIODS:
                continue
            if row.get("limit_amount") is None or period in limits:
                continue
            amount = usd(row["limit_amount"], f"budget_settings id {row.get('id')} limit_amount")
            limits[period] = {"period": period, "limit_usd": str(amount)}
            if how == "block":
                enforcement = "block"
        if not limits:
            return []
        return [budget_with_limits("rhetor", limits, enforcement, "Rhetor (imported)")]

    def count(self) -> int:
        return self.db.count("usage")

    def records(self) -> Iterator[SourceRecord | Invalid]:
        for row in self.db.rows("usage", order_by="id"):
            where = f"usage row id {row.get('id')}"
            try:
                at = utc_time(row.get("timestamp"), "timestamp", self.naive_zone)
                component = text(row.get("component"))
                meta = {"task_type": str(row["task_type"])} if text(row.get("task_type")) else {}
                yield SourceRecord(
                    where=where,
                    key=f"{row.get('id')}@{at.isoformat()}",
                    budget_id=f"rhetor/{segment(component)}" if component else "rhetor",
                    at=at,
                    cost_usd=usd(row.get("cost"), "cost"),
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
