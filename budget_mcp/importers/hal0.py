"""hal0's persona ledger: one append-only `spend.jsonl` per agent and persona (hal0 PR #411).

A row: `{"ts", "persona_id", "surface", "model", "cost_usd", "request_id"}`. The budget is
`{agent_id}/{persona_id}` when the file sits at `.../agents/{agent_id}/personas/{persona_id}/spend.jsonl`,
else `hal0/{persona_id}`. Limits come from `persona.toml` beside the file (`[persona.budget]`: `daily_usd`,
`monthly_usd`, `lifetime_usd`, `per_call_max_usd`, `hard_cap`). A row is keyed by its `request_id`, or by
its line number and a digest of the line (the file is append-only, so both stay put). `surface` is not kept.
"""

import json
import tomllib
from collections.abc import Iterator
from datetime import tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from budget_mcp.errors import BudgetMcpError
from budget_mcp.importers.record import Invalid, SourceBudget, SourceRecord, digest, segment, text, usd, utc_time

_PERIODS = (("daily_usd", "daily"), ("monthly_usd", "monthly"), ("lifetime_usd", "total"))
_DECODER = json.JSONDecoder(parse_float=Decimal)


class Hal0Source:
    """One persona's `spend.jsonl`."""

    format = "hal0"

    def __init__(self, path: Path, naive_zone: tzinfo) -> None:
        self.path = path
        self.naive_zone = naive_zone
        parts = path.resolve().parts
        self.agent = self.persona = None
        self._budgets: dict[str, str] = {}
        if len(parts) >= 5 and parts[-5] == "agents" and parts[-3] == "personas":
            self.agent, self.persona = segment(parts[-4]), segment(parts[-2])

    def budget_of(self, persona_id: object) -> str:
        if self.agent and self.persona:
            return f"{self.agent}/{self.persona}"
        name = str(persona_id)
        if name not in self._budgets:
            self._budgets[name] = f"hal0/{segment(name)}"
        return self._budgets[name]

    def budgets(self) -> list[SourceBudget]:
        toml = self.path.parent / "persona.toml"
        if not toml.is_file():
            return []
        try:
            caps = tomllib.loads(toml.read_text()).get("persona", {}).get("budget", {})
        except (OSError, tomllib.TOMLDecodeError, AttributeError):
            return []
        limits = [
            (period, usd(caps[name], f"{toml} {name}")) for name, period in _PERIODS if caps.get(name) is not None
        ]
        per_call = caps.get("per_call_max_usd")
        if not limits and per_call is None:
            return []
        first = limits[0] if limits else ("total", None)
        return [
            SourceBudget(
                self.budget_of(self.persona or toml.parent.name),
                period=first[0],
                limit_usd=first[1],
                extra_limits=tuple({"period": p, "limit_usd": str(v)} for p, v in limits[1:]),
                per_call_usd=None if per_call is None else usd(per_call, f"{toml} per_call_max_usd"),
                enforcement="block" if caps.get("hard_cap", True) else "warn",
                description=f"hal0 persona (imported from {toml})",
            )
        ]

    def count(self) -> int:
        with self.path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def records(self) -> Iterator[SourceRecord | Invalid]:
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    yield self._record(number, raw)
                except ValueError:
                    yield Invalid(
                        f"line {number}",
                        "not a JSON object (a torn write?); hal0 skips such lines: --skip-invalid does too",
                    )
                except BudgetMcpError as exc:
                    yield Invalid(f"line {number}", str(exc))

    def _record(self, number: int, raw: bytes) -> SourceRecord:
        row: Any = _DECODER.decode(raw.decode())
        if not isinstance(row, dict):
            raise ValueError("not an object")
        request_id = text(row.get("request_id"))
        return SourceRecord(
            where=f"line {number}",
            key=request_id or f"{number}:{digest(raw)}",
            budget_id=self.budget_of(row.get("persona_id")),
            at=utc_time(row.get("ts"), "ts", self.naive_zone),
            cost_usd=usd(row.get("cost_usd"), "cost_usd"),
            model=text(row.get("model")),
        )
