"""LiteLLM proxy spend logs (`LiteLLM_SpendLogs`), exported as CSV or JSON rows (an array, `{"data": [...]}`, or
one object a line).

A row costs `spend` (USD) at `startTime`, on budget `litellm/{team_id}` (`litellm/default` without a team),
with `prompt_tokens` and `completion_tokens`, `model` and `custom_llm_provider`; it is keyed by `request_id`.
LiteLLM has no limits in its spend logs, so none become limits.
"""

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
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
    segment,
    text,
    tokens,
    usd,
    utc_time,
)


def rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    """(where, row) for each row of a CSV or JSON export; row None when it is not an object."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    if head[:1] in (b"[", b"{"):
        try:
            document: Any = json.loads(path.read_bytes(), parse_float=Decimal)
        except ValueError:
            yield from _json_lines(path)
            return
        items: Iterable[Any] = document.get("data", [document]) if isinstance(document, dict) else document
        for number, item in enumerate(items, 1):
            yield f"item {number}", item if isinstance(item, dict) else None
        return
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield f"line {reader.line_num}", row


def _json_lines(path: Path) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    row = json.loads(raw, parse_float=Decimal)
                except ValueError:
                    row = None
                yield f"line {number}", row if isinstance(row, dict) else None


class LiteLLMSource:
    """A LiteLLM spend-log export."""

    format = "litellm"

    def __init__(self, path: Path, naive_zone: tzinfo) -> None:
        self.path = path
        self.naive_zone = naive_zone

    def budgets(self) -> list[SourceBudget]:
        return []

    def count(self) -> int:
        return sum(1 for _ in rows(self.path))

    def records(self) -> Iterator[SourceRecord | Invalid]:
        for where, row in rows(self.path):
            if row is None:
                yield Invalid(where, "not a spend-log row (a JSON object or CSV row)")
                continue
            try:
                yield self.record(where, row)
            except BudgetMcpError as exc:
                yield Invalid(where, str(exc))

    def record(self, where: str, row: Mapping[str, Any]) -> SourceRecord:
        request_id = text(row.get("request_id"))
        if request_id is None:
            raise InvalidInputError("request_id is missing")
        return SourceRecord(
            where=where,
            key=request_id,
            budget_id=f"litellm/{segment(row.get('team_id') or 'default')}",
            at=utc_time(row.get("startTime"), "startTime", self.naive_zone),
            cost_usd=usd(row.get("spend"), "spend"),
            tokens=TokenCounts(
                input=tokens(row.get("prompt_tokens"), "prompt_tokens"),
                output=tokens(row.get("completion_tokens"), "completion_tokens"),
            ),
            model=text(row.get("model")),
            provider=text(row.get("custom_llm_provider")),
            metadata={k: str(row[k]) for k in ("user", "end_user", "call_type") if text(row.get(k))},
        )
