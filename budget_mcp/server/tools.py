"""The MCP tools: flat arguments in, structured results plus a one-line summary out."""

import inspect
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool, ToolManager
from mcp.types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from budget_mcp.domain.money import human_amount as money
from budget_mcp.domain.records import Decision, Enforcement
from budget_mcp.domain.results import (
    AllocationStatus,
    BudgetNode,
    BudgetStatus,
    ChargeResult,
    CheckResult,
    EstimateResult,
    RecommendResult,
    ReleaseResult,
)
from budget_mcp.domain.windows import Period
from budget_mcp.pricing import Capability, Tier
from budget_mcp.server.access import visible_tree
from budget_mcp.server.approval import Asked, approval_of
from budget_mcp.server.schemas import compact_tool_schema
from budget_mcp.server.state import current_state
from budget_mcp.server.strict import BudgetTool
from budget_mcp.server.wire import (
    BudgetId,
    Count,
    Metadata,
    Name,
    Text,
    Tokens,
    Usd,
    charge_summary,
    check_summary,
    result,
    status_summary,
    tool_errors,
)

PeriodText = Annotated[str, Field(max_length=16)]  # checked, with the valid forms named, by domain.windows


class ExtraLimit(BaseModel):
    # Another period's limit (no docstring: it would be in every tools/list).

    model_config = ConfigDict(extra="forbid")

    period: PeriodText
    limit_usd: Usd | None = None
    limit_tokens: Tokens | None = None
    limit_calls: Tokens | None = None
    models: list[Name] | None = Field(default=None, max_length=20)
    providers: list[Name] | None = Field(default=None, max_length=20)


class BudgetList(BaseModel):
    """Budgets as a tree: each node is a budget's status with its `children`."""

    budgets: list[BudgetNode]
    count: int


async def check_budget(
    budget_id: BudgetId,
    estimated_cost_usd: Annotated[Usd | None, Field(description='USD, e.g. "0.25"')] = None,
    model: Annotated[Name | None, Field(description="e.g. 'gpt-4o'")] = None,
    provider: Annotated[Name | None, Field(description="if the model is ambiguous")] = None,
    input_tokens: Annotated[Tokens | None, Field(description="prompt size")] = None,
    max_output_tokens: Annotated[Tokens | None, Field(description="the call's output limit")] = None,
    reserve: Annotated[bool, Field(description="hold it until charge or release")] = False,
    ttl_seconds: Annotated[Count | None, Field(description="hold seconds, default 600")] = None,
    *,
    ctx: Context[Any, Any],
    answer: Asked,
) -> Annotated[CallToolResult, CheckResult]:
    """Ask before an LLM call whether it fits (every budget up the path must allow it).

    Give estimated_cost_usd, or model + input_tokens (+ max_output_tokens) to price the worst case.
    With reserve=true the amount is held until you charge or release it, so parallel agents cannot
    spend the same money; an 'ask' budget asks the user first. USD as a decimal string is exact.
    """
    state = current_state()
    if isinstance(answer, AcceptedElicitation) and isinstance(answer.data, CheckResult):
        check = answer.data  # nobody had to be asked
    else:
        with tool_errors():
            caller = await state.caller()
            caller.check(budget_id)
            check = await state.engine.check(
                budget_id, estimated_cost_usd=estimated_cost_usd, model=model, provider=provider,
                input_tokens=input_tokens, max_output_tokens=max_output_tokens, reserve=reserve,
                ttl_seconds=ttl_seconds, approval=approval_of(ctx, caller, answer),
            )  # fmt: skip
    if check.reservation_id or (isinstance(answer, AcceptedElicitation) and check.decision is Decision.WARN):
        state.announcer.budgets_changed([budget_id])  # a hold, or perhaps an approval, was written
    return result(check, check_summary(check))


async def charge(
    budget_id: BudgetId,
    model: Annotated[Name | None, Field(description="priced from the catalog")] = None,
    provider: Annotated[Name | None, Field(description="e.g. 'anthropic'")] = None,
    input_tokens: Annotated[Tokens, Field(description="uncached")] = 0,
    output_tokens: Tokens = 0,
    cache_read_tokens: Tokens = 0,
    cache_write_tokens: Tokens = 0,
    reasoning_tokens: Annotated[Tokens, Field(description="only those billed beyond output_tokens")] = 0,
    cost_usd: Annotated[
        Usd | None,
        Field(description="provider-reported (OpenRouter usage.cost); wins over the catalog"),
    ] = None,
    reservation_id: Annotated[Name | None, Field(description="the hold to settle")] = None,
    idempotency_key: Annotated[Name | None, Field(description="unique per call; a retry is recorded once")] = None,
    metadata: Annotated[Metadata | None, Field(description="JSON object, at most 4 KB")] = None,
) -> Annotated[CallToolResult, ChargeResult]:
    """Record what an LLM call cost, right after it returns. Always recorded, even over the limit.

    Give model + token counts (priced from the catalog) and/or cost_usd. Pass the reservation_id from
    check_budget to settle a hold, and an idempotency_key so a retry never charges twice.
    USD as a decimal string is exact; a JSON number passes through a float.
    """
    state = current_state()
    with tool_errors():
        caller = await state.caller()
        caller.check(budget_id)
        charged = await state.engine.charge(
            budget_id, model=model, provider=provider, input_tokens=input_tokens, output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens, cost_usd=cost_usd, reservation_id=reservation_id,
            idempotency_key=idempotency_key, metadata=metadata, key_namespace=caller.key_namespace,
            visible=caller.allows,
        )  # fmt: skip
    if not charged.duplicate:
        if charged.alerts and state.webhook is not None:
            state.webhook.submit(charged.alerts)
        state.announcer.budgets_changed([budget_id])
    return result(charged, charge_summary(charged))


async def allocate(
    budget_id: BudgetId,
    limit_usd: Annotated[Usd | None, Field(description='USD per period, e.g. "5"')] = None,
    limit_tokens: Annotated[Tokens | None, Field(description="all kinds, per period")] = None,
    limit_calls: Annotated[Tokens | None, Field(description="calls per period")] = None,
    period: Annotated[
        PeriodText | None,
        Field(
            description='hourly, daily, weekly, monthly, total, or rolling "30m", "5h", "7d"; default: the parent\'s'
        ),
    ] = None,
    extra_limits: Annotated[
        list[ExtraLimit] | None,
        Field(
            description='other periods, e.g. [{"period": "monthly", "limit_usd": "60"}]',
            max_length=len(Period),
        ),
    ] = None,
    per_call_usd: Annotated[Usd | None, Field(description="cap on one call")] = None,
    enforcement: Annotated[
        Enforcement | None,
        Field(description="block denies, warn flags, soft also suggests a model, ask asks the user"),
    ] = None,
    alert_at: Annotated[
        list[Usd] | None,
        Field(description="fractions of a limit; default [0.5, 0.8, 0.9, 1]", max_length=20),
    ] = None,
    timezone: Annotated[Name | None, Field(description="IANA; default UTC", max_length=64)] = None,
    description: Annotated[Text | None, Field(description="what it is for")] = None,
    metadata: Annotated[Metadata | None, Field(description="JSON object, at most 4 KB")] = None,
    expires_at: Annotated[Name | None, Field(description="ISO time it closes itself", max_length=40)] = None,
    ttl_seconds: Annotated[Count | None, Field(description="or seconds until then")] = None,
) -> Annotated[CallToolResult, AllocationStatus]:
    """Create or resize a budget: a root ('acme') or a sub-budget ('acme/research').

    A child's limit is carved out of its parent's limit of the same period; asking for more than the
    parent has left is an error saying how much it has. Omit the limits to only track spend.
    On a resize, fields you omit keep their values.
    USD as a decimal string is exact.
    """
    state = current_state()
    with tool_errors():
        caller = await state.caller()
        caller.check(budget_id, allocating=True)
        status = await state.engine.allocate(
            budget_id, limit_usd=limit_usd, limit_tokens=limit_tokens, limit_calls=limit_calls, period=period,
            extra_limits=[x.model_dump(exclude_none=True) for x in extra_limits] if extra_limits else None,
            per_call_usd=per_call_usd, enforcement=enforcement, alert_at=alert_at, timezone=timezone,
            description=description, metadata=metadata, owner=caller.new_owner(budget_id),
            guard=caller.allocation_guard(budget_id), expires_at=expires_at, ttl_seconds=ttl_seconds,
        )  # fmt: skip
    state.announcer.budgets_changed([budget_id])
    return result(status, status_summary(status))


async def release(
    reservation_id: Annotated[Name | None, Field(description="a hold to drop")] = None,
    budget_id: Annotated[BudgetId | None, Field(description="a sub-budget to close")] = None,
) -> Annotated[CallToolResult, ReleaseResult]:
    """Give money back: drop a reservation you will not use, or close a finished sub-budget.

    Pass exactly one of reservation_id or budget_id.
    """
    state = current_state()
    with tool_errors():
        caller = await state.caller()
        if budget_id is not None:
            caller.check_close(budget_id)
        released = await state.engine.release(reservation_id=reservation_id, budget_id=budget_id, visible=caller.allows)
    state.announcer.budgets_changed([released.budget_id])
    return result(released, released.message)


async def get_budget(budget_id: BudgetId) -> Annotated[CallToolResult, BudgetStatus]:
    """A budget's status now: each limit's spent, held, allocated, available and reset time."""
    state = current_state()
    with tool_errors():
        (await state.caller()).check(budget_id)
        status = await state.engine.status(budget_id)
    return result(status, status_summary(status))


async def list_budgets(
    prefix: Annotated[BudgetId | None, Field(description="only this subtree")] = None,
) -> Annotated[CallToolResult, BudgetList]:
    """Every budget (or those under prefix) as a tree of statuses."""
    state = current_state()
    with tool_errors():
        tree = await visible_tree(state.engine, await state.caller(), prefix)
    listing = BudgetList(budgets=tree, count=_count(tree))
    roots = ", ".join(f"{n.budget_id} {money(n.available_usd)} left" for n in tree[:10])
    return result(listing, f"{listing.count} budgets; " + (roots or "none yet: create one with allocate"))


async def estimate_cost(
    model: Annotated[Name, Field(description="e.g. 'claude-sonnet-4-5'")],
    input_tokens: Annotated[Tokens, Field(description="uncached")] = 0,
    output_tokens: Annotated[Tokens, Field(description="reasoning included")] = 0,
    cache_read_tokens: Tokens = 0,
    cache_write_tokens: Tokens = 0,
    provider: Annotated[Name | None, Field(description="e.g. 'anthropic'")] = None,
) -> Annotated[CallToolResult, EstimateResult]:
    """What a call would cost, exactly, from the price catalog; nothing is charged or held.

    An unknown model is an error listing close names.
    """
    with tool_errors():
        estimate = current_state().engine.estimate(
            model, provider=provider, input_tokens=input_tokens, output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens,
        )  # fmt: skip
    return result(estimate, f"{estimate.provider}/{estimate.model}: {money(estimate.cost_usd)} ({estimate.source})")


async def recommend_model(
    task: Annotated[Text, Field(description="e.g. 'summarize a 10-page PDF'")],
    budget_id: Annotated[BudgetId | None, Field(description="the budget to fit")] = None,
    input_tokens: Annotated[Tokens | None, Field(description="default 2000")] = None,
    output_tokens: Annotated[Tokens | None, Field(description="default 1000")] = None,
    needs: Annotated[
        list[Capability] | None,
        Field(description="default: inferred from task", max_length=len(Capability)),
    ] = None,
    min_tier: Annotated[Tier | None, Field(description="default: inferred from task")] = None,
    providers: Annotated[list[Name] | None, Field(description="allow-list", max_length=20)] = None,
    limit: Annotated[Count, Field(description="how many, 1 to 50", ge=1, le=50)] = 5,
    current_model: Annotated[Name | None, Field(description="savings_usd against it")] = None,
) -> Annotated[CallToolResult, RecommendResult]:
    """The cheapest models that can do this task within what the budget has left.

    Filters by capabilities, tier, providers and context window, and ranks those that fit the budget
    first, then by cost; assumptions says what was inferred.
    """
    state = current_state()
    with tool_errors():
        if budget_id is not None:
            (await state.caller()).check(budget_id)
        found = await state.engine.recommend(
            task, budget_id=budget_id, input_tokens=input_tokens, output_tokens=output_tokens, needs=needs,
            min_tier=min_tier, providers=providers, limit=limit, current_model=current_model,
        )  # fmt: skip
    best = found.recommendations[0] if found.recommendations else None
    summary = (
        f"best: {best.provider}/{best.model} ({best.tier}) at {money(best.estimated_cost_usd)}"
        + ("" if best.fits_budget else ", but nothing fits the budget")
        if best
        else "no model meets these requirements; relax needs, min_tier, providers or the token sizes"
    )
    return result(found, summary)


def _count(nodes: list[BudgetNode]) -> int:
    return sum(1 + _count(node.children) for node in nodes)


TOOLS = (check_budget, charge, allocate, release, get_budget, list_budgets, estimate_cost, recommend_model)


def budget_tools() -> list[Tool]:
    """The tools, each refusing unknown argument names (also in its published schema)."""
    tools = [BudgetTool.from_function(fn, description=inspect.cleandoc(fn.__doc__ or "")) for fn in TOOLS]
    for tool in tools:
        tool.parameters = {**compact_tool_schema(tool.parameters), "additionalProperties": False}
        output = tool.fn_metadata.output_schema
        tool.fn_metadata.output_schema = output and compact_tool_schema(output, descriptions=False)
    return tools


class BudgetToolManager(ToolManager):
    """The SDK's tool manager holding the budget tools, built when a request first needs a tool, not at start:
    their schemas take most of a server's own start-up time, and `initialize` does not need them."""

    def __init__(self, *, warn_on_duplicate_tools: bool = True) -> None:
        super().__init__(warn_on_duplicate_tools)
        self._built = False

    def build(self) -> None:
        """Build the tools now, if no request has needed one yet (tools added meanwhile come after them)."""
        if not self._built:
            added, self._tools = self._tools, {tool.name: tool for tool in budget_tools()}
            for name, tool in added.items():
                self._tools.setdefault(name, tool)
            self._built = True  # only once built: a build that fails is tried again, never an empty list

    def get_tool(self, name: str) -> Tool | None:
        """The tool called `name`, building the tools first if no request has needed one yet."""
        self.build()
        return super().get_tool(name)

    def list_tools(self) -> list[Tool]:
        """Every tool, building them first if no request has needed one yet."""
        self.build()
        return super().list_tools()
