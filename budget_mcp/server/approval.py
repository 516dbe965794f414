"""Asking the person at the client before a check goes over an `ask` limit (MCP elicitation).

`check_or_ask` is the resolver of `check_budget`'s `answer` parameter: it runs the check, and when only
`ask` limits would deny it (nothing written yet) it returns the question instead. The SDK asks it in the
client's protocol generation: on 2026-07-28 the call returns the question and the client retries with
the answer (the resolver runs again then, and the question is asked again if the figures changed since);
on 2025-11-25 the server sends `elicitation/create` in the middle of the call. The tool then re-runs the
check with the person's answer: approved, one write records the approval (and the hold). A client that
declared no form elicitation is never asked: its check is denied, saying approval could not be asked.
"""

from contextvars import ContextVar
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, CancelledElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from budget_mcp.domain.inputs import MAX_TEXT
from budget_mcp.domain.records import Answer, Approval
from budget_mcp.domain.results import CheckResult
from budget_mcp.server.access import Grant
from budget_mcp.server.state import current_state
from budget_mcp.server.wire import tool_errors


class ApprovalForm(BaseModel):
    """What the person may add when approving: accepting the question is the approval."""

    reason: str | None = Field(default=None, description="why you approve (optional)", max_length=MAX_TEXT)


def can_elicit(ctx: Context[Any, Any]) -> bool:
    """Whether the client declared form elicitation, and this request can carry a question to it."""
    try:
        capabilities = ctx.client_capabilities
    except ValueError:  # no MCP request: the HTTP API, which has nobody to ask
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False  # a bare `elicitation: {}` means form; url-only clients cannot answer a form
    version = ctx.protocol_version
    # 2026-07-28 asks in the tool's own answer; before it, the server needs a channel to send elicitation/create.
    return (version is not None and is_version_at_least(version, "2026-07-28")) or bool(ctx.session.can_send_request)


async def check_or_ask(
    ctx: Context[Any, Any],
    budget_id: str,
    estimated_cost_usd: str | int | float | None,
    model: str | None,
    provider: str | None,
    input_tokens: int | None,
    max_output_tokens: int | None,
    reserve: bool,
    ttl_seconds: int | None,
) -> CheckResult | Elicit[ApprovalForm]:
    """The check's answer, or the question to ask when only `ask` limits would deny it (then nothing is written)."""
    state = current_state()
    with tool_errors():
        (await state.caller()).check(budget_id)
        arguments: dict[str, Any] = {
            "estimated_cost_usd": estimated_cost_usd, "model": model, "provider": provider,
            "input_tokens": input_tokens, "max_output_tokens": max_output_tokens, "reserve": reserve,
            "ttl_seconds": ttl_seconds,
        }  # fmt: skip
        if not can_elicit(ctx):
            return await state.engine.check(budget_id, **arguments)
        found = await state.engine.check_or_ask(budget_id, **arguments)
    if isinstance(found, CheckResult):
        return found
    _asked.set(found.question)
    return Elicit(found.question, ApprovalForm)


# The question the person was shown, for the approval's record. The SDK awaits a resolver in the tool call's own
# context, so what it sets here is what the tool body reads: the last question asked is the one answered.
_asked: ContextVar[str | None] = ContextVar("budget_mcp_asked", default=None)


Asked = Annotated[ElicitationResult[BaseModel], Resolve(check_or_ask)]
"""check_budget's answer so far: the check itself, or the person's answer to its question."""


def approval_of(ctx: Context[Any, Any], caller: Grant, outcome: ElicitationResult[BaseModel]) -> Approval:
    """The person's answer, with who gave it: the client's name and version, the caller's token."""
    info = ctx.session.client_params.client_info if ctx.session.client_params is not None else None
    who = {
        "client_name": info.name if info else None,
        "client_version": info.version if info else None,
        "token_name": caller.name,
        "question": _asked.get(),
    }
    if isinstance(outcome, AcceptedElicitation):
        form = outcome.data
        reason = form.reason.strip() if isinstance(form, ApprovalForm) and form.reason else None
        return Approval(Answer.APPROVED, reason=reason or None, **who)
    return Approval(Answer.CANCELLED if isinstance(outcome, CancelledElicitation) else Answer.DECLINED, **who)
