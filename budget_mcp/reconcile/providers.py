"""The provider's own figures, per UTC day and item (model or line item): what `reconcile` compares against.

- `openai-costs`: pages of `GET /v1/organization/costs` (daily buckets; `amount.value` in USD, `line_item`).
- `anthropic-costs`: pages of `GET /v1/organizations/cost_report`; `amount` is in cents, as a decimal string.
- `litellm`: a LiteLLM spend-log export (CSV or JSON), `spend` per request.
- `csv`: `day,cost_usd[,model]` with a header.
Pages may come as several files, or as one file holding a JSON array of pages.
"""

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from budget_mcp.domain.money import parse_usd
from budget_mcp.errors import BudgetMcpError, InvalidInputError
from budget_mcp.importers.litellm import rows as litellm_rows
from budget_mcp.importers.record import utc_time

FORMATS = ("openai-costs", "anthropic-costs", "litellm", "csv")
BILLED_BY = {"openai-costs": "openai", "anthropic-costs": "anthropic"}  # whose charges a format's bill holds
_DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True)
class ProviderCost:
    """What the provider bills for one item on one UTC day (item None: not broken down)."""

    day: date
    item: str | None
    cost_usd: Decimal


def model_key(name: str | None) -> str | None:
    """A model or line-item name as both sides are matched on: lowercase, no provider prefix, no date suffix,
    no ', input' / ', output' part ('openai/gpt-4o-2024-08-06, input' -> 'gpt-4o')."""
    if not name:
        return None
    key = name.split(",")[0].strip().lower().rsplit("/", 1)[-1]
    return _DATED.sub("", key) or None


def read(format_name: str, paths: Iterable[Path]) -> list[ProviderCost]:
    """Every cost in the files, in the format named; a malformed file or page is an error naming it."""
    found: list[ProviderCost] = []
    for path in paths:
        try:
            found.extend(_read_one(format_name, path))
        except BudgetMcpError as exc:
            raise InvalidInputError(f"{path.name}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"{path.name}: not a {format_name} export ({type(exc).__name__}: {exc})") from None
    return found


def _read_one(format_name: str, path: Path) -> Iterator[ProviderCost]:
    if format_name == "litellm":
        for where, row in litellm_rows(path):
            if row is None:
                raise InvalidInputError(f"{where} is not a spend-log row")
            yield ProviderCost(
                utc_time(row.get("startTime"), "startTime").date(), model_key(row.get("model")),
                parse_usd(row.get("spend"), f"{where} spend"),
            )  # fmt: skip
        return
    if format_name == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"day", "cost_usd"} <= set(reader.fieldnames or []):
                raise InvalidInputError("the header must name day,cost_usd[,model]")
            for row in reader:
                try:
                    day = date.fromisoformat(row["day"].strip())
                except ValueError:
                    raise InvalidInputError(f"line {reader.line_num}: day {row['day']!r} is not YYYY-MM-DD") from None
                cost = parse_usd(row["cost_usd"], f"line {reader.line_num} cost_usd")
                yield ProviderCost(day, model_key(row.get("model")), cost)
        return
    if format_name not in FORMATS:
        raise InvalidInputError(f"unknown format {format_name!r}; use one of {', '.join(FORMATS)}")
    document: Any = json.loads(path.read_bytes(), parse_float=Decimal)
    for page in document if isinstance(document, list) else [document]:
        for bucket in page["data"]:
            if format_name == "openai-costs":
                day = datetime.fromtimestamp(int(bucket["start_time"]), UTC).date()
                for result in bucket.get("results", []):
                    amount = result["amount"]
                    if str(amount.get("currency", "usd")).lower() != "usd":
                        raise InvalidInputError(f"a cost in {amount.get('currency')}; only USD is compared")
                    yield ProviderCost(day, model_key(result.get("line_item")), parse_usd(amount["value"], "amount"))
            else:
                day = utc_time(bucket["starting_at"], "starting_at").date()
                for result in bucket.get("results", []):
                    if str(result.get("currency", "USD")).upper() != "USD":
                        raise InvalidInputError(f"a cost in {result.get('currency')}; only USD is compared")
                    if not isinstance(result["amount"], str):
                        raise InvalidInputError("amount must be a decimal string of cents")
                    cents = parse_usd(result["amount"], "amount")
                    yield ProviderCost(day, model_key(result.get("model")), cents / 100)
