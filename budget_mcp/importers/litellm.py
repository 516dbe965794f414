"""LiteLLM proxy spend logs (`LiteLLM_SpendLogs`), exported as CSV or JSON rows (an array, `{"data": [...]}`, or
one object a line).

A row costs `spend` (USD) at `startTime`, on budget `litellm/{team_id}` (`litellm/default` without a team),
with `prompt_tokens` and `completion_tokens`, `model` and `custom_llm_provider`; it is keyed by `request_id`.
LiteLLM has no limits in its spend logs, so none become limits.
"""

import csv
import json
import re
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

_DECODER = json.JSONDecoder(parse_float=Decimal)
_SPACE = re.compile(r"[ \t\n\r]*")
_CHUNK = 1 << 16


def rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    """(where, row) for each row of a CSV or JSON export; row None when it is not an object."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    if head[:1] == b"[":
        for number, item in enumerate(_json_array(path), 1):
            yield f"item {number}", item if isinstance(item, dict) else None
        return
    if head[:1] == b"{":
        try:
            document: Any = json.loads(path.read_bytes(), parse_float=Decimal)
        except ValueError:
            yield from _json_lines(path)
            return
        items: Iterable[Any] = document.get("data", [document]) if isinstance(document, dict) else [document]
        for number, item in enumerate(items, 1):
            yield f"item {number}", item if isinstance(item, dict) else None
        return
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield f"line {reader.line_num}", row


def _json_array(path: Path) -> Iterator[Any]:
    """The items of a file holding one JSON array, decoded one at a time: a large export is never whole in memory."""
    with path.open(encoding="utf-8") as f:
        buffer, number = f.read(_CHUNK), 0
        while not buffer.strip() and (more := f.read(_CHUNK)):
            buffer += more
        pos = _skip(buffer, 0) + 1  # past the '[' (rows() saw it first)
        while True:
            pos = _skip(buffer, pos)
            while pos >= len(buffer) - 1 and (more := f.read(_CHUNK)):
                buffer = buffer[pos:] + more
                pos = _skip(buffer, 0)
            if buffer[pos : pos + 1] == "]":
                return
            if number:
                if buffer[pos : pos + 1] != ",":
                    raise InvalidInputError(f"item {number + 1}: not valid JSON (expected ',' or ']' before it)")
                pos = _skip(buffer, pos + 1)
            number += 1
            while True:
                try:
                    item, end = _DECODER.raw_decode(buffer, pos)
                except ValueError as exc:
                    problem: Exception | None = exc
                else:
                    problem = None
                if problem is None and end < len(buffer):
                    break
                more = f.read(_CHUNK)  # the item may go on past what was read: read on and decode it again
                if not more:
                    if problem is None:
                        break
                    raise InvalidInputError(f"item {number}: not valid JSON ({problem})") from None
                buffer = buffer[pos:] + more
                pos = _skip(buffer, 0)
            yield item
            pos = end


def _skip(buffer: str, pos: int) -> int:
    match = _SPACE.match(buffer, pos)
    return match.end() if match else pos


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
