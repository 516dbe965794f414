"""What crosses the MCP wire: shared parameter types, error translation and one-line summaries."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from budget_mcp.domain.inputs import MAX_NAME, MAX_TEXT
from budget_mcp.domain.money import MAX_TOKENS
from budget_mcp.domain.money import human_amount as money
from budget_mcp.domain.results import BudgetStatus, ChargeResult, CheckResult
from budget_mcp.errors import BudgetMcpError

logger = logging.getLogger(__name__)


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number here; pass a number")
    return value


BudgetId = Annotated[str, Field(description="e.g. 'acme' or 'acme/research'", max_length=600)]
# Money: a decimal string is exact; a JSON number reaches us through the JSON parser's float (the tool
# descriptions say so once). Token counts are bounded by MAX_TOKENS here and in the engine.
Usd = Annotated[str | int | float, BeforeValidator(_not_a_boolean), WithJsonSchema({"type": ["string", "number"]})]
Tokens = Annotated[
    int,
    BeforeValidator(_not_a_boolean),
    Field(ge=0, le=MAX_TOKENS),
    WithJsonSchema({"type": "integer", "minimum": 0}),
]
Count = Annotated[int, BeforeValidator(_not_a_boolean), WithJsonSchema({"type": "integer"})]
Name = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Metadata = dict[str, Any]


@contextmanager
def tool_errors() -> Iterator[None]:
    """Turn an expected budget-mcp error into a tool error whose text the agent can read and act on.

    Anything else is a bug: it is logged with its traceback, and the agent still learns what failed.
    """
    try:
        yield
    except BudgetMcpError as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:
        logger.exception("a tool failed unexpectedly")
        raise ToolError(f"internal error ({type(exc).__name__}); the server logged it, please report it") from exc


def result(model: BaseModel, summary: str) -> CallToolResult:
    """Structured content plus a one-line text summary."""
    return CallToolResult(
        content=[TextContent(type="text", text=summary)], structured_content=model.model_dump(mode="json")
    )


def when(at: datetime | None) -> str:
    """'2026-11-26 00:00 UTC', or 'never' for a total window."""
    return "never" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


def check_summary(check: CheckResult) -> str:
    text = check.reason if check.allowed else f"denied: {check.reason}"
    if check.allowed and check.resets_at:
        text += f"; resets {when(check.resets_at)}"
    if check.reservation_id:
        text += f"; reserved as {check.reservation_id} until {when(check.expires_at)}"
    return text


def charge_summary(charge: ChargeResult) -> str:
    if charge.duplicate:
        return f"already recorded as {charge.charge_id} ({money(charge.cost_usd)}); nothing new was charged"
    text = f"charged {money(charge.cost_usd)} to {charge.budget_id}"
    text += f"; spent {money(charge.spent_usd)}, {money(charge.remaining_usd)} left"
    if charge.over_limit:
        text += "; OVER LIMIT: further checks on a blocking budget will be denied"
    if charge.alerts:
        text += "; alerts: " + ", ".join(
            f"{a.budget_id} reached {Decimal(a.threshold) * 100:.0f}% of its {a.limit_name()}" for a in charge.alerts
        )
    return text


def status_summary(status: BudgetStatus) -> str:
    calls = f"; {status.calls} of {status.limit_calls} calls" if status.limit_calls is not None else ""
    if status.limit_usd is None and status.limit_tokens is None:
        tracking = "" if calls else ", no limit: tracking only"
        return f"{status.budget_id}: spent {money(status.spent_usd)} ({status.period}{tracking}){calls}"
    limit = money(status.limit_usd) if status.limit_usd is not None else f"{status.limit_tokens} tokens"
    left = money(status.available_usd) if status.limit_usd is not None else f"{status.available_tokens} tokens"
    closed = " (closed)" if status.closed else ""
    return (
        f"{status.budget_id}{closed}: spent {money(status.spent_usd)} of {limit} ({status.period}), "
        f"{left} available, resets {when(status.resets_at)}{calls}"
    )
