"""What the engine answers: results of the tools, statuses and reports, with USD as decimal strings (`*_usd`),
which is how they travel in JSON without losing a digit."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from budget_mcp.domain.records import Decision, Enforcement, EntryKind


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # built at first use, not at import


class LimitStatus(_Result):
    """One limit's figures for its own current window."""

    period: str
    limit_usd: str | None
    limit_tokens: int | None
    window_start: datetime
    resets_at: datetime | None
    spent_usd: str
    spent_tokens: int
    held_usd: str
    held_tokens: int
    allocated_usd: str
    allocated_tokens: int
    available_usd: str | None = Field(description="limit - spent - held - allocated; null when no USD limit")
    available_tokens: int | None
    limit_calls: int | None = None
    calls: int = 0  # charges in the window; with what is held and allocated, never above limit_calls for a check
    models: list[str] = []  # only charges for these count (empty: all)
    providers: list[str] = []


class Forecast(_Result):
    """Where the primary window ends up at the current burn rate."""

    projected_spend_usd: str | None
    exhausted_at: datetime | None


class BudgetStatus(LimitStatus):
    """A budget's definition, and the figures of its primary limit's current window (every limit in `limits`)."""

    budget_id: str
    parent_id: str | None
    description: str | None
    enforcement: Enforcement
    timezone: str
    closed: bool
    per_call_usd: str | None
    alert_at: list[str]
    burn_rate_usd_per_hour: str
    forecast: Forecast
    limits: list[LimitStatus]
    metadata: dict[str, Any]


class AllocationStatus(BudgetStatus):
    """The answer of allocate: the budget's status, and what to double-check (an unknown provider)."""

    warnings: list[str] = []
    expires_at: datetime | None = None


class BudgetNode(BudgetStatus):
    """A budget's status with its children, for tree listings."""

    children: list["BudgetNode"] = []


class CheckResult(_Result):
    """The answer of check_budget."""

    allowed: bool
    decision: Decision
    reason: str
    budget_id: str
    decided_by: str | None
    decided_period: str | None
    estimated_cost_usd: str
    estimated_tokens: int
    remaining_usd: str | None
    remaining_tokens: int | None
    resets_at: datetime | None
    warnings: list[str]
    price_source: str | None = None
    reservation_id: str | None = None
    expires_at: datetime | None = None
    suggested_model: str | None = None
    suggested_cost_usd: str | None = None


class ApprovalNeeded(_Result):
    """A check an `ask` limit would deny, before anyone was asked: the question, and the answer if nobody approves."""

    question: str
    denied: CheckResult


class AlertInfo(_Result):
    """An alert threshold crossed by a charge."""

    budget_id: str
    period: str = Field(description="the limit's period: hourly, daily, weekly, monthly, total, or rolling ('5h')")
    threshold: str
    spent_usd: str
    limit_usd: str | None
    spent_tokens: int
    limit_tokens: int | None
    window_start: datetime
    models: list[str] = []  # a filtered limit's: only spend on these counts toward it (empty: all)
    providers: list[str] = []

    def limit_name(self) -> str:
        """'daily limit', or 'daily limit (anthropic only)' for a limit on some models or providers."""
        only = ", ".join([*self.models, *self.providers])
        return f"{self.period} limit ({only} only)" if only else f"{self.period} limit"


class ChargeResult(_Result):
    """The answer of charge."""

    charge_id: str
    budget_id: str
    cost_usd: str
    tokens: int
    model: str | None
    price_source: str | None
    spent_usd: str
    remaining_usd: str | None
    remaining_tokens: int | None
    over_limit: bool
    alerts: list[AlertInfo]
    warnings: list[str]
    duplicate: bool = False
    reservation_id: str | None = None


class ReleaseResult(_Result):
    """What release freed: a hold, or a closed allocation."""

    released: str = Field(description="'reservation' or 'allocation'")
    reservation_id: str | None = None
    budget_id: str
    released_usd: str
    released_tokens: int
    message: str


class AdjustResult(_Result):
    """A correction entry written to the ledger."""

    entry_id: str
    budget_id: str
    amount_usd: str
    spent_usd: str


class EstimateResult(_Result):
    """The answer of estimate_cost: the exact cost and the price that produced it."""

    model: str
    provider: str
    cost_usd: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    input_usd_per_mtok: str | None
    output_usd_per_mtok: str | None
    cache_read_usd_per_mtok: str | None
    cache_write_usd_per_mtok: str | None
    source: str


class Recommendation(_Result):
    """One model recommend_model proposes, with its estimated cost and why."""

    model: str
    provider: str
    tier: str
    estimated_cost_usd: str
    fits_budget: bool
    context_window: int
    capabilities: list[str]
    why: str
    price_source: str
    savings_usd: str | None = None


class RecommendResult(_Result):
    """The answer of recommend_model."""

    recommendations: list[Recommendation]
    budget_id: str | None
    remaining_usd: str | None
    input_tokens: int
    output_tokens: int
    needs: list[str]
    min_tier: str | None
    assumptions: list[str] = Field(description="defaults inferred from the task or assumed for missing sizes")
    considered: int
    advice: str | None = Field(default=None, description="what to change when no model fits the budget")


# ---- reports ----


class SpendFigures(_Result):
    """Spend of one slice of a report: USD, tokens and calls (adjustments count in cost, not in calls)."""

    cost_usd: str
    input_tokens: int
    output_tokens: int
    tokens: int
    calls: int


class ModelSpend(SpendFigures):
    """Spend on one model (null: charges recorded without a model), or the window's adjustments."""

    model: str | None
    provider: str | None
    adjustments: bool = Field(default=False, description="true: corrections (refunds), not calls to a model")


class ProviderSpend(SpendFigures):
    """Spend with one provider."""

    provider: str | None


class ChildSpend(SpendFigures):
    """Spend of one child budget and its descendants (the budget's own id: spend charged to it directly)."""

    budget_id: str


class DaySpend(SpendFigures):
    """Spend on one calendar day in the budget's timezone."""

    day: str


class HourSpend(SpendFigures):
    """Spend in one hour, local time of the budget."""

    hour: datetime


class ReportTotals(_Result):
    """A report's totals; `spent_usd` equals the ledger's running total of the window."""

    spent_usd: str
    spent_tokens: int
    held_usd: str
    allocated_usd: str | None
    available_usd: str | None
    limit_usd: str | None
    limit_tokens: int | None
    calls: int
    limit_calls: int | None = None


class AlertRaised(AlertInfo):
    """An alert of the report's window, and what became of its webhook delivery."""

    at: datetime
    webhook: str | None = Field(description="'delivered', 'failed after N attempts', or null when not sent")


class ApprovalInfo(_Result):
    """A person's approval of going over an `ask` limit, as reports show it."""

    entry_id: str
    budget_id: str
    approved_for: str = Field(description="the budget whose limit it went over")
    period: str = Field(description="the limit's period, or 'per_call'")
    at: datetime
    cost_usd: str
    over_usd: str
    over_tokens: int
    client: str | None
    token: str | None
    reason: str | None


class SpendReport(_Result):
    """Where the money of one window went (SPEC section 4)."""

    budget_id: str
    period: str
    timezone: str
    window_start: datetime
    resets_at: datetime | None
    current: bool
    generated_at: datetime
    totals: ReportTotals
    by_model: list[ModelSpend]
    by_provider: list[ProviderSpend]
    by_child: list[ChildSpend]
    by_day: list[DaySpend]
    by_hour: list[HourSpend] = Field(description="for hourly and daily windows only")
    alerts: list[AlertRaised]
    burn_rate_usd_per_hour: str
    forecast: Forecast
    approvals: list[ApprovalInfo] = []


class LedgerEntry(_Result):
    """One ledger entry as the budget://ledger resource shows it; `seq` is its place in the log (`?before=` pages)."""

    seq: int
    entry_id: str
    kind: EntryKind
    budget_id: str
    at: datetime
    cost_usd: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    model: str | None
    provider: str | None
    price_source: str | None
    reservation_id: str | None
    metadata: dict[str, Any]


class LedgerListing(_Result):
    """The latest entries of a budget and its descendants (below seq `before`, if given), newest first."""

    budget_id: str
    limit: int
    before: int | None = None
    entries: list[LedgerEntry]
