"""budget-mcp's own CSV: `timestamp,budget_id,model,provider,input_tokens,output_tokens,cost_usd,id`, header required.

`budget_id` names the budget (or `--budget` does); an empty `cost_usd` is priced from the model and tokens;
a row is keyed by its `id`, else by its row number and a digest of the row.
"""

import csv
from collections.abc import Iterator
from datetime import tzinfo
from pathlib import Path

from budget_mcp.domain.ids import validate_budget_id
from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import BudgetMcpError
from budget_mcp.importers.record import Invalid, SourceBudget, SourceRecord, digest, text, tokens, usd, utc_time

COLUMNS = ("timestamp", "budget_id", "model", "provider", "input_tokens", "output_tokens", "cost_usd", "id")


class CsvSource:
    """A CSV of spend rows in budget-mcp's columns."""

    format = "csv"

    def __init__(self, path: Path, naive_zone: tzinfo, default_budget: str | None) -> None:
        self.path = path
        self.naive_zone = naive_zone
        self.default_budget = default_budget

    def budgets(self) -> list[SourceBudget]:
        return []

    def count(self) -> int:
        with self.path.open("rb") as f:
            return max(sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1, 0)

    def records(self) -> Iterator[SourceRecord | Invalid]:
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                yield Invalid("line 1", f"the header lacks {', '.join(missing)}; it must name {','.join(COLUMNS)}")
                return
            for row in reader:
                where = f"line {reader.line_num}"
                try:
                    budget_id = text(row["budget_id"]) or self.default_budget
                    if budget_id is None:
                        raise ValueError("budget_id is empty; fill it in, or pass --budget")
                    cost = text(row["cost_usd"])
                    yield SourceRecord(
                        where=where,
                        key=text(row["id"]) or f"{reader.line_num}:{digest(*row.values())}",
                        budget_id=validate_budget_id(budget_id),
                        at=utc_time(row["timestamp"], "timestamp", self.naive_zone),
                        cost_usd=None if cost is None else usd(cost, "cost_usd"),
                        tokens=TokenCounts(
                            input=tokens(row["input_tokens"], "input_tokens"),
                            output=tokens(row["output_tokens"], "output_tokens"),
                        ),
                        model=text(row["model"]),
                        provider=text(row["provider"]),
                    )
                except (BudgetMcpError, ValueError) as exc:
                    yield Invalid(where, str(exc))
