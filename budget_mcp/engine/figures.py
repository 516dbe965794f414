"""Pure arithmetic over a snapshot: what each limit has spent, held, carved out and left, and what a request would do.

Carving: an open child with a limit of period P holds its unspent part
(`limit - spent - held`, never below zero) out of its parent's limit of period P. A
request arriving at a parent through that child may use the child's unspent part plus
whatever the parent has available beyond its allocations. P may be a rolling window ("5h"):
its spend is the sum of the buckets still inside it (see domain/windows.py).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from budget_mcp.domain.ids import parent_of
from budget_mcp.domain.money import format_usd, human_usd
from budget_mcp.domain.records import Enforcement, Limit
from budget_mcp.domain.results import BudgetStatus, Forecast, LimitStatus
from budget_mcp.domain.windows import AnyPeriod, Period, window
from budget_mcp.errors import BudgetNotFoundError
from budget_mcp.ledger import BudgetState, Snapshot, WindowUsage


@dataclass(frozen=True)
class Figures:
    """One limit of one budget in its current window; `available_*` is None where there is no limit."""

    budget_id: str
    limit: Limit
    window_start: datetime
    resets_at: datetime | None
    spent_nanos: int
    spent_tokens: int
    held_nanos: int
    held_tokens: int
    allocated_nanos: int
    allocated_tokens: int
    spent_calls: int = 0
    held_calls: int = 0
    allocated_calls: int = 0

    @property
    def available_nanos(self) -> int | None:
        if self.limit.limit_nanos is None:
            return None
        return self.limit.limit_nanos - self.spent_nanos - self.held_nanos - self.allocated_nanos

    @property
    def available_tokens(self) -> int | None:
        if self.limit.limit_tokens is None:
            return None
        return self.limit.limit_tokens - self.spent_tokens - self.held_tokens - self.allocated_tokens

    @property
    def available_calls(self) -> int | None:
        if self.limit.limit_calls is None:
            return None
        return self.limit.limit_calls - self.spent_calls - self.held_calls - self.allocated_calls


@dataclass(frozen=True)
class Constraint:
    """How much one limit (or per-call cap) on the path lets a request through; headroom None = unlimited."""

    budget_id: str
    period: AnyPeriod | None  # None for a per-call cap
    enforcement: Enforcement
    headroom_nanos: int | None
    headroom_tokens: int | None
    resets_at: datetime | None
    headroom_calls: int | None = None  # calls (charges) the limit has room for; a check needs one
    only: str | None = None  # a filtered limit's models and providers, as said in a denial


def state_of(snapshot: Snapshot, budget_id: str) -> BudgetState:
    """The loaded state of a budget, or BudgetNotFoundError with the way to create it."""
    state = snapshot.budgets.get(budget_id)
    if state is None:
        parent = parent_of(budget_id)
        how = "allocate(budget_id=..., limit_usd=...)" if parent is None else f"allocate under '{parent}'"
        raise BudgetNotFoundError(
            f"budget '{budget_id}' does not exist; create it first with {how} (list_budgets shows what exists)"
        )
    return state


def unspent(state: BudgetState, period: AnyPeriod, now: datetime | None = None) -> tuple[int, int, int]:
    """The part (nanos, tokens, calls) of an open child's limit of `period` it has not used: what it holds out of
    its parent (nothing once it has expired at `now`, though not yet closed)."""
    limit = state.config.limit_for(period)
    if limit is None or state.config.closed or (now is not None and state.config.expired(now)):
        return 0, 0, 0
    used = state.used(limit.key)
    nanos = max(0, limit.limit_nanos - used.spent_nanos - state.held_nanos) if limit.limit_nanos is not None else 0
    tokens = max(0, limit.limit_tokens - used.spent_tokens - state.held_tokens) if limit.limit_tokens is not None else 0
    calls = max(0, limit.limit_calls - used.calls - state.held_calls) if limit.limit_calls is not None else 0
    return nanos, tokens, calls


def figures(snapshot: Snapshot, budget_id: str, limit: Limit) -> Figures:
    """Spent, held, allocated and available for one limit of a budget, in its current window.

    A filtered limit (some models or providers) counts its own matching spend and the live holds of checks it
    decides (`BudgetState.held_in`: a hold naming no model or provider counts in every one); it carves nothing
    (allocations are not kept per model or provider).
    """
    state = state_of(snapshot, budget_id)
    start, end = window(limit.period, state.config.timezone, snapshot.now)
    if limit.rolling is not None:
        end = _rolling_reset(state, limit, snapshot.now)
    if limit.filtered:
        own = state.filtered.get(limit.key) or WindowUsage()
        held_nanos, held_tokens, held_calls = state.held_in(limit)
        return Figures(
            budget_id, limit, start, end, own.spent_nanos, own.spent_tokens, held_nanos, held_tokens, 0, 0,
            own.calls, held_calls,
        )  # fmt: skip
    allocated_nanos = allocated_tokens = allocated_calls = 0
    for child in state.children:
        nanos, tokens, calls = unspent(snapshot.budgets[child], limit.period, snapshot.now)
        allocated_nanos += nanos
        allocated_tokens += tokens
        allocated_calls += calls
    used = state.used(limit.key)
    return Figures(
        budget_id, limit, start, end, used.spent_nanos, used.spent_tokens,
        state.held_nanos, state.held_tokens, allocated_nanos, allocated_tokens,
        used.calls, state.held_calls, allocated_calls,
    )  # fmt: skip


def _rolling_reset(state: BudgetState, limit: Limit, now: datetime) -> datetime | None:
    """When the oldest spend inside a rolling limit drops out of it; None when nothing is inside."""
    rolling = limit.rolling
    assert rolling is not None
    oldest = state.oldest.get(limit.key)
    if oldest is None:
        used = state.used(limit.key)
        if not (used.spent_nanos or used.spent_tokens or used.calls):
            return None
        oldest = rolling.bucket(now)  # spend added on this snapshot, not yet stored: it is in the current bucket
    return rolling.drops_out(oldest)


def constraints(
    snapshot: Snapshot, path: tuple[str, ...], model: str | None = None, provider: str | None = None
) -> list[Constraint]:
    """Every limit and per-call cap on `path` that decides a call of `model` and `provider` (None: may be any),
    from the root down to the budget it ends with."""
    found: list[Constraint] = []
    for depth, current in enumerate(path):
        config = state_of(snapshot, current).config
        via = snapshot.budgets.get(path[depth + 1]) if depth + 1 < len(path) else None
        for limit in config.limits:
            if not limit.decides(model, provider):
                continue
            fig = figures(snapshot, current, limit)
            carried_nanos, carried_tokens, carried_calls = (
                unspent(via, limit.period, snapshot.now) if via and not limit.filtered else (0, 0, 0)
            )
            found.append(
                Constraint(
                    current,
                    limit.period,
                    config.enforcement,
                    _headroom(fig.available_nanos, carried_nanos, via is not None),
                    _headroom(fig.available_tokens, carried_tokens, via is not None),
                    fig.resets_at,
                    _headroom(fig.available_calls, carried_calls, via is not None),
                    ", ".join(limit.models + limit.providers) or None,
                )
            )
        if config.per_call_nanos is not None:
            found.append(Constraint(current, None, config.enforcement, config.per_call_nanos, None, None))
    return found


def _headroom(available: int | None, carried: int, through_child: bool) -> int | None:
    # Through a child, the child's unspent allocation is usable even when the parent itself is over.
    if available is None:
        return None
    return max(available, 0) + carried if through_child else available


def with_usage(
    snapshot: Snapshot,
    path: tuple[str, ...],
    *,
    spent: tuple[int, int, int] = (0, 0, 0),
    held: tuple[int, int, int] = (0, 0, 0),
    model: str | None = None,
    provider: str | None = None,
) -> Snapshot:
    """A copy of the snapshot with spend and/or holds (nanos, tokens, calls) added on every budget of `path`;
    spend of `model` and `provider` also in the filtered limits it counts in, holds as held for them."""
    if spent == (0, 0, 0) and held == (0, 0, 0):
        return snapshot
    windows: dict[str, tuple[int, int, int]] = dict.fromkeys(Period, spent) if spent != (0, 0, 0) else {}
    budgets = dict(snapshot.budgets)
    holding = {(model, provider): held} if held != (0, 0, 0) else None
    for current in path:
        own = windows
        if windows and any(lim.keeps_own for lim in budgets[current].config.limits):
            own = {**windows, **{lim.key: spent for lim in budgets[current].config.limits
                                 if lim.keeps_own and lim.counts(model, provider)}}  # fmt: skip
        budgets[current] = budgets[current].plus(own, holding)
    return Snapshot(
        now=snapshot.now, budgets=budgets, reservation=snapshot.reservation,
        stored_result=snapshot.stored_result, alerts_raised=snapshot.alerts_raised,
        rolling_alerts=snapshot.rolling_alerts,
    )  # fmt: skip


def remaining(found: list[Constraint]) -> tuple[int | None, int | None]:
    """The smallest USD and token headroom on the path (None when nothing limits that dimension)."""
    nanos = [c.headroom_nanos for c in found if c.period is not None and c.headroom_nanos is not None]
    tokens = [c.headroom_tokens for c in found if c.headroom_tokens is not None]
    return (min(nanos) if nanos else None), (min(tokens) if tokens else None)


def status(snapshot: Snapshot, budget_id: str) -> BudgetStatus:
    """A budget's full status: definition, every limit's figures, burn rate and forecast."""
    state = state_of(snapshot, budget_id)
    config = state.config
    limits = [figures(snapshot, budget_id, limit) for limit in config.limits]
    primary = next((f for f in limits if f.limit.period == config.period and not f.limit.filtered), None) or figures(
        snapshot, budget_id, config.primary
    )
    burn_per_hour, forecast = _burn(snapshot, state, primary)
    return BudgetStatus(
        **_limit_status(primary).model_dump(),
        budget_id=budget_id,
        parent_id=parent_of(budget_id),
        description=config.description,
        enforcement=config.enforcement,
        timezone=config.timezone,
        closed=config.closed or config.expired(snapshot.now),
        per_call_usd=_usd(config.per_call_nanos),
        alert_at=[str(a) for a in config.alert_at],
        burn_rate_usd_per_hour=format_usd(burn_per_hour),
        forecast=forecast,
        limits=[_limit_status(f) for f in limits],
        metadata=config.metadata,
    )


def _limit_status(fig: Figures) -> LimitStatus:
    return LimitStatus(
        period=fig.limit.period,
        limit_usd=_usd(fig.limit.limit_nanos),
        limit_tokens=fig.limit.limit_tokens,
        window_start=fig.window_start,
        resets_at=fig.resets_at,
        spent_usd=format_usd(fig.spent_nanos),
        spent_tokens=fig.spent_tokens,
        held_usd=format_usd(fig.held_nanos),
        held_tokens=fig.held_tokens,
        allocated_usd=format_usd(fig.allocated_nanos),
        allocated_tokens=fig.allocated_tokens,
        available_usd=_usd(fig.available_nanos),
        available_tokens=fig.available_tokens,
        limit_calls=fig.limit.limit_calls,
        calls=fig.spent_calls,
        models=list(fig.limit.models),
        providers=list(fig.limit.providers),
    )


def _burn(snapshot: Snapshot, state: BudgetState, primary: Figures) -> tuple[int, Forecast]:
    """Spend per hour since the window opened (or the budget was created), and where that leads.

    Children spend their carved allocations without touching the budget's own available amount, so
    the run-out time divides that amount by the rest of the spend only: the budget's own, and what its
    children spend beyond (or without) an allocation of this period.
    """
    config, now = state.config, snapshot.now
    start = primary.window_start
    if config.period is Period.TOTAL and config.created_at is not None:
        start = config.created_at
    elapsed_us = (now - start) // timedelta(microseconds=1)
    if elapsed_us <= 0 or primary.spent_nanos <= 0:
        return 0, Forecast(
            projected_spend_usd=format_usd(primary.spent_nanos) if primary.resets_at else None, exhausted_at=None
        )
    projected = None
    if primary.resets_at is not None:
        window_us = (primary.resets_at - primary.window_start) // timedelta(microseconds=1)
        projected = format_usd(primary.spent_nanos * window_us // elapsed_us)
    exhausted_at = None
    available = primary.available_nanos
    if available is not None:
        drawing = primary.spent_nanos - _spent_within_allocations(snapshot, state, primary.limit.period)
        exhausted_at = _run_out(now, available, drawing, elapsed_us, primary.resets_at)
    return primary.spent_nanos * _US_PER_HOUR // elapsed_us, Forecast(
        projected_spend_usd=projected, exhausted_at=exhausted_at
    )


_US_PER_HOUR = 3_600_000_000
_LATEST = datetime.max.replace(tzinfo=UTC)


def _spent_within_allocations(snapshot: Snapshot, state: BudgetState, period: AnyPeriod) -> int:
    """What the open children spent of their own limits of `period` (spend that draws on their allocation)."""
    total = 0
    for child in state.children:
        child_state = snapshot.budgets[child]
        limit = child_state.config.limit_for(period)
        if limit is not None and limit.limit_nanos is not None:
            total += min(max(child_state.used(limit.key).spent_nanos, 0), limit.limit_nanos)
    return total


def _run_out(
    now: datetime, available: int, drawing: int, elapsed_us: int, resets_at: datetime | None
) -> datetime | None:
    """When spending `drawing` nanos per `elapsed_us` uses up `available`; None if not before the window ends."""
    if available <= 0:
        return now
    if drawing <= 0:
        return None
    horizon_us = ((resets_at or _LATEST) - now) // timedelta(microseconds=1)
    left_us = available * elapsed_us // drawing
    return None if left_us >= horizon_us else now + timedelta(microseconds=left_us)


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd(nanos)


def describe_headroom(nanos: int | None) -> str:
    """'$1.50' or 'unlimited'."""
    return "unlimited" if nanos is None else human_usd(nanos)
