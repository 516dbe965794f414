"""Apollo's token-budget data folder: `budget_policies.json` and `usage_records_<unix seconds>.json` files.

Tokens only: a record of `tokens_used` (`usage_type` input, output, or total, counted as input) on
`apollo/{component}` (`apollo` without one), at `timestamp`, keyed by `record_id`; its cost is priced from
the catalog by `model`, or zero when the model is unknown (the summary says so). Limits: enabled policies of
type `warn`, `soft_limit` (`warn`) or `hard_limit` (`block`), of an hourly, daily, weekly or monthly period and
no `tier` or `task_type`, become token limits (`limit`) of `apollo/{component}`, or of `apollo` without one.
"""

import json
from collections.abc import Iterator
from datetime import tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import BudgetMcpError, InvalidInputError
from budget_mcp.importers.record import (
    Invalid,
    SourceBudget,
    SourceRecord,
    budget_with_limits,
    segment,
    text,
    tokens,
    utc_time,
)

_ENFORCEMENT = {"warn": "warn", "soft_limit": "warn", "hard_limit": "block"}
_PERIODS = ("hourly", "daily", "weekly", "monthly")


def _budget(component: object) -> str:
    name = text(component)
    return f"apollo/{segment(name)}" if name else "apollo"


class ApolloSource:
    """An Apollo data folder."""

    format = "apollo"

    def __init__(self, folder: Path, naive_zone: tzinfo) -> None:
        if not folder.is_dir():
            raise InvalidInputError(f"{folder} is not a folder; pass Apollo's data folder")
        self.folder = folder
        self.naive_zone = naive_zone
        self.files = sorted(folder.glob("usage_records_*.json"))
        if not self.files and not (folder / "budget_policies.json").exists():
            raise InvalidInputError(f"{folder} holds no budget_policies.json or usage_records_*.json files")

    def budgets(self) -> list[SourceBudget]:
        path = self.folder / "budget_policies.json"
        if not path.exists():
            return []
        try:
            policies = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{path} is not JSON: {exc}") from exc
        limits: dict[str, dict[str, dict[str, Any]]] = {}
        enforcement: dict[str, str] = {}
        for policy in policies if isinstance(policies, list) else []:
            if not isinstance(policy, dict):
                continue
            kind, period = policy.get("type"), policy.get("period")
            if kind not in _ENFORCEMENT or period not in _PERIODS or policy.get("enabled") is False:
                continue
            if policy.get("tier") or policy.get("task_type") or not isinstance(policy.get("limit"), int):
                continue
            budget_id = _budget(policy.get("component"))
            limits.setdefault(budget_id, {}).setdefault(period, {"period": period, "limit_tokens": policy["limit"]})
            if _ENFORCEMENT[kind] == "block" or budget_id not in enforcement:
                enforcement[budget_id] = _ENFORCEMENT[kind]
        return [
            budget_with_limits(budget_id, by_period, enforcement[budget_id], "Apollo token budget (imported)")
            for budget_id, by_period in limits.items()
        ]

    def count(self) -> int:
        return sum(len(self._load(path)) for path in self.files)

    def _load(self, path: Path) -> list[Any]:
        try:
            data = json.loads(path.read_text(), parse_float=Decimal)
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def records(self) -> Iterator[SourceRecord | Invalid]:
        for path in self.files:
            try:
                items = json.loads(path.read_text(), parse_float=Decimal)
            except (OSError, ValueError) as exc:
                yield Invalid(path.name, f"not JSON: {exc}")
                continue
            if not isinstance(items, list):
                yield Invalid(path.name, "not a JSON list of usage records")
                continue
            for number, item in enumerate(items, 1):
                where = f"{path.name} item {number}"
                try:
                    yield self._record(where, item)
                except BudgetMcpError as exc:
                    yield Invalid(where, str(exc))

    def _record(self, where: str, item: Any) -> SourceRecord:
        if not isinstance(item, dict):
            raise InvalidInputError("not a JSON object")
        record_id = text(item.get("record_id"))
        if record_id is None:
            raise InvalidInputError("record_id is missing")
        used = tokens(item.get("tokens_used"), "tokens_used")
        kind = item.get("usage_type", "total")
        if kind not in ("input", "output", "total"):
            raise InvalidInputError(f"usage_type {str(kind)[:20]!r} is not input, output or total")
        meta = {k: str(item[k]) for k in ("task_type", "context_id", "operation_id") if text(item.get(k))}
        return SourceRecord(
            where=where,
            key=record_id,
            budget_id=_budget(item.get("component")),
            at=utc_time(item.get("timestamp"), "timestamp", self.naive_zone),
            cost_usd=None,
            tokens=TokenCounts(output=used) if kind == "output" else TokenCounts(input=used),
            model=text(item.get("model")),
            provider=text(item.get("provider")),
            metadata=meta,
        )
