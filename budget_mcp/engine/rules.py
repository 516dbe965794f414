"""The budget rules, as pure functions of a snapshot: what a check answers, what a charge, a hold, an allocation,
an adjustment or a release writes, and what each refuses.

They run inside the ledger's transaction (or on a snapshot a backend kept, which is why they only read
it) and never do I/O. Each operation's budget path is resolved once, by the caller, and handed down.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from budget_mcp.domain.ids import new_entry_id, new_reservation_id, parent_of
from budget_mcp.domain.inputs import AllocationRequest, ChargeRequest
from budget_mcp.domain.money import MAX_TOTAL, MAX_USD, check_total, exact_usd, format_usd, human_usd
from budget_mcp.domain.records import (
    DEFAULT_ALERT_AT,
    AlertRecord,
    Answer,
    Approval,
    BudgetConfig,
    Decision,
    Enforcement,
    Entry,
    EntryKind,
    Hold,
    Limit,
    TokenCounts,
)
from budget_mcp.domain.results import (
    AdjustResult,
    AllocationStatus,
    ApprovalNeeded,
    ChargeResult,
    CheckResult,
    ReleaseResult,
)
from budget_mcp.domain.windows import AnyPeriod, Period, Rolling, window_key
from budget_mcp.engine import figures as fig
from budget_mcp.engine.reports import alert_info
from budget_mcp.errors import (
    BudgetNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidInputError,
    ReservationNotFoundError,
)
from budget_mcp.ledger import BudgetState, ReservationState, Snapshot, StoredResult, WindowUsage, Writes
from budget_mcp.pricing import PricedCost

Path = tuple[str, ...]
Guard = Callable[[BudgetConfig | None, BudgetConfig], None]


# ---- checking and holding ----


@dataclass(frozen=True)
class CheckRequest:
    """A check as priced before the snapshot: what it costs, which tokens it counts, and whether to hold it."""

    path: Path
    cost_nanos: int
    tokens: TokenCounts
    source: str | None
    model: str | None
    provider: str | None
    reserve: bool
    ttl: timedelta


@dataclass(frozen=True)
class Overspend:
    """How far a check would go over the `ask` limit that decides it, in words a person can decide on."""

    limit: fig.Constraint
    over_nanos: int
    over_tokens: int
    text: str  # "acme/research would go $2.40 over its $5.00 daily limit (resets 00:00 UTC)"
    others: int  # further `ask` limits it would go over

    @property
    def question(self) -> str:
        more = f" (and {self.others} more limit{'s' if self.others > 1 else ''})" if self.others else ""
        return f"{self.text}{more}: approve?"


def check(
    snapshot: Snapshot, request: CheckRequest, approval: Approval | None, can_ask: bool
) -> tuple[CheckResult | ApprovalNeeded, Writes]:
    """A check's answer and writes: the hold when `reserve`, the approval entry when a person approved going over.

    With `can_ask` and no `approval` yet, a check only `ask` limits deny is the question to ask, and writes nothing.
    """
    path, cost_nanos = request.path, request.cost_nanos
    answer, overspend = _answer(
        snapshot, path, cost_nanos, request.tokens.total, request.source, approval, request.model, request.provider
    )
    if overspend is not None and approval is None and can_ask:
        return ApprovalNeeded(question=overspend.question, denied=answer), Writes()
    writes = Writes()
    if request.reserve and answer.allowed:
        answer, writes = reserve(
            snapshot, path, answer, cost_nanos, request.tokens, request.ttl, request.model, request.provider,
            request.source,
        )  # fmt: skip
    if overspend is not None and approval is not None and approval.answer is Answer.APPROVED:
        writes.entries.insert(0, _approval_entry(snapshot, request, approval, overspend, answer.reservation_id))
    return answer, writes


def _approval_entry(
    snapshot: Snapshot, request: CheckRequest, approval: Approval, overspend: Overspend, reservation_id: str | None
) -> Entry:
    """Who approved going how far over which limit (as it stood when recorded, under the lock), and why. The hold's
    id goes in the metadata, not in `reservation_id`: that column names the entries that settle or release a hold."""
    limit = overspend.limit
    metadata: dict[str, object] = {
        "approved_for": limit.budget_id, "period": str(limit.period or "per_call"),
        "over_usd": format_usd(overspend.over_nanos), "over_tokens": overspend.over_tokens,
        "client": approval.client_name, "client_version": approval.client_version, "token": approval.token_name,
        "reason": approval.reason, "question": approval.question, "reservation_id": reservation_id,
    }  # fmt: skip
    return Entry(
        new_entry_id("apv"), EntryKind.APPROVAL, request.path[-1], snapshot.now, request.cost_nanos, request.tokens,
        model=request.model, provider=request.provider, price_source=request.source,
        metadata={k: v for k, v in metadata.items() if v is not None},
    )  # fmt: skip


def soft_exceeded(snapshot: Snapshot, path: Path, cost_nanos: int, tokens: int) -> bool:
    """Whether a check goes over a `soft` limit and is allowed (so a cheaper model is worth suggesting)."""
    found = fig.constraints(snapshot, path)
    if not any(c.enforcement is Enforcement.SOFT and _violates(c, cost_nanos, tokens) for c in found):
        return False
    return _answer(snapshot, path, cost_nanos, tokens, None, None)[0].allowed


def cheapest_fitting(snapshot: Snapshot, path: Path, options: Sequence[tuple[int, int]]) -> int | None:
    """The index of the first of `options` (cost nano-USD, tokens; cheapest first) that fits without a warning."""
    for index, (cost_nanos, tokens) in enumerate(options):
        if _answer(snapshot, path, cost_nanos, tokens, None, None)[0].decision is Decision.ALLOW:
            return index
    return None


def reserve(
    snapshot: Snapshot, path: Path, answer: CheckResult, cost_nanos: int, tokens: TokenCounts, ttl: timedelta,
    model: str | None, provider: str | None, source: str | None,
) -> tuple[CheckResult, Writes]:  # fmt: skip
    """An allowed check's hold on the whole path, and the answer with what remains beside it."""
    budget_id = path[-1]
    hold = Hold(
        new_reservation_id(), budget_id, cost_nanos, tokens.total, snapshot.now, snapshot.now + ttl, model, provider
    )
    held = fig.with_usage(snapshot, path, held=(cost_nanos, tokens.total, 1), model=model, provider=provider)
    check_totals(held, path)
    left_nanos, left_tokens = fig.remaining(fig.constraints(held, path, model, provider))
    entry = Entry(
        new_entry_id("hld"), EntryKind.HOLD, budget_id, snapshot.now, cost_nanos, tokens,
        model=model, provider=provider, price_source=source, reservation_id=hold.reservation_id,
        metadata={"expires_at": hold.expires_at.isoformat()},
    )  # fmt: skip
    reserved = answer.model_copy(
        update={"reservation_id": hold.reservation_id, "expires_at": hold.expires_at,
                "remaining_usd": _usd(left_nanos), "remaining_tokens": left_tokens}
    )  # fmt: skip
    return reserved, Writes(entries=[entry], holds_added=[hold])


# ---- charging ----


@dataclass(frozen=True)
class ChargePrice:
    """What a charge costs, as far as it is known before the snapshot: None with the `problem` when unknown."""

    cost_nanos: int | None
    source: str | None
    model: str | None
    provider: str | None
    problem: str | None = None


def charge(
    snapshot: Snapshot, request: ChargeRequest, price: ChargePrice, visible: Callable[[str], bool] | None
) -> tuple[ChargeResult, Writes]:
    """A charge's entry (always written: the money is spent), the hold it settles, the alerts it crosses."""
    if request.key is not None and snapshot.stored_result is not None:
        return replay(request.key, snapshot.stored_result, request.request_hash)
    path, budget_id = request.path, request.budget_id
    fig.state_of(snapshot, budget_id)
    warnings: list[str] = []
    writes = Writes()
    hold = (
        settled_hold(snapshot, request.reservation_id, budget_id, visible, warnings) if request.reservation_id else None
    )
    held = (0, 0, 0)
    if hold is not None:
        writes.holds_removed.append(hold.reservation_id)
        if hold.expires_at <= snapshot.now:
            warnings.append(f"reservation {request.reservation_id} had expired; the charge is recorded anyway")
        else:
            held = (hold.cost_nanos, hold.tokens, 1)
    cost_nanos, source = _charged_cost(request, price, hold, warnings)
    if snapshot.budgets[budget_id].config.closed:
        warnings.append(f"budget '{budget_id}' is closed; the charge is recorded because the money is spent")
    model, provider = hold.of if hold is not None else (None, None)
    before = fig.with_usage(snapshot, path, held=(-held[0], -held[1], -held[2]), model=model, provider=provider)
    after = fig.with_usage(
        before, path, spent=(cost_nanos, request.tokens.total, 1), model=price.model, provider=price.provider
    )
    check_totals(after, path)
    entry = Entry(
        new_entry_id("chg"), EntryKind.CHARGE, budget_id, snapshot.now, cost_nanos, request.tokens,
        model=price.model, provider=price.provider, price_source=source, reservation_id=request.reservation_id,
        idempotency_key=request.key, metadata=request.metadata,
    )  # fmt: skip
    alerts = crossed_alerts(before, after, path, entry.entry_id)
    result = _charge_result(after, request, entry, alerts, warnings)
    writes.entries.append(entry)
    writes.alerts.extend(alerts)
    if request.key is not None:
        writes.stored_result = (request.key, StoredResult(request.request_hash, result.model_dump_json()))
    return result, writes


def _charged_cost(
    request: ChargeRequest, price: ChargePrice, hold: Hold | None, warnings: list[str]
) -> tuple[int, str | None]:
    """The cost a charge records: the given or catalog price, else what its hold held (never zero)."""
    if price.cost_nanos is not None:
        return price.cost_nanos, price.source
    if hold is None:
        raise ReservationNotFoundError(
            f"reservation {request.reservation_id} is not open, so there is no held amount to charge, and the cost "
            f"is unknown ({price.problem}); pass cost_usd, or a model with a known price"
        )
    warnings.append(f"charged the reserved {human_usd(hold.cost_nanos)} because the cost is unknown: {price.problem}")
    return hold.cost_nanos, "reservation"


def _charge_result(
    after: Snapshot, request: ChargeRequest, entry: Entry, alerts: list[AlertRecord], warnings: list[str]
) -> ChargeResult:
    state = after.budgets[request.budget_id]
    left_nanos, left_tokens = fig.remaining(fig.constraints(after, request.path, entry.model, entry.provider))
    return ChargeResult(
        charge_id=entry.entry_id, budget_id=request.budget_id, cost_usd=format_usd(entry.cost_nanos),
        tokens=request.tokens.total, model=entry.model, price_source=entry.price_source,
        spent_usd=format_usd(state.used(state.config.primary.key).spent_nanos), remaining_usd=_usd(left_nanos),
        remaining_tokens=left_tokens, over_limit=over_limit(after, request.path),
        alerts=[alert_info(a) for a in alerts], warnings=warnings, reservation_id=request.reservation_id,
    )  # fmt: skip


def adjustment(snapshot: Snapshot, path: Path, amount_nanos: int, reason: str) -> tuple[AdjustResult, Writes]:
    """A correction entry (negative for a refund), counted as spend in the current windows."""
    budget_id = path[-1]
    fig.state_of(snapshot, budget_id)
    entry = Entry(
        new_entry_id("adj"), EntryKind.ADJUST, budget_id, snapshot.now, amount_nanos, metadata={"reason": reason}
    )
    after = fig.with_usage(snapshot, path, spent=(amount_nanos, 0, 0))
    check_totals(after, path)
    state = after.budgets[budget_id]
    result = AdjustResult(
        entry_id=entry.entry_id, budget_id=budget_id, amount_usd=format_usd(amount_nanos),
        spent_usd=format_usd(state.used(state.config.primary.key).spent_nanos),
    )  # fmt: skip
    return result, Writes(entries=[entry])


# ---- budgets ----


def allocation(
    snapshot: Snapshot, request: AllocationRequest, owner: str | None, guard: Guard | None,
    declared: str | None = None,
) -> tuple[AllocationStatus, Writes]:  # fmt: skip
    """A new or resized budget: its config merged from what was asked and what it had, carved from its parent.

    `declared` (the digest of a budgets-file entry) applies the entry only if it is not the one last applied
    to this budget, so changes made at run time survive a restart with the same file.
    """
    budget_id, parent = request.budget_id, parent_of(request.budget_id)
    existing = snapshot.budgets.get(budget_id)
    old = existing.config if existing else None
    if declared is not None and old is not None and old.declared == declared:
        return AllocationStatus(**dict(fig.status(snapshot, budget_id)), expires_at=old.expires_at), Writes()
    parent_config = fig.state_of(snapshot, parent).config if parent else None
    if parent_config is not None and (parent_config.closed or parent_config.expired(snapshot.now)):
        raise BudgetNotFoundError(f"parent budget '{parent}' is closed; reopen it with allocate first")
    if parent_config is not None and parent_config.expires_at is not None and existing is None:
        raise InvalidInputError(
            f"'{parent}' expires at {parent_config.expires_at:%Y-%m-%d %H:%M:%S} UTC, so it takes no sub-budgets; "
            "allocate this one under a budget that does not expire"
        )
    if request.expires_at is not None and existing is not None and existing.children:
        raise InvalidInputError(
            f"'{budget_id}' has open children ({', '.join(existing.children[:5])}); only a budget without "
            "sub-budgets may expire"
        )
    config = merged_config(request, old, parent_config, snapshot, owner)
    if declared is not None:
        config = dataclasses.replace(config, declared=declared)
    if guard is not None:
        guard(old, config)
    if config == old:  # declaring the same budget again changes nothing
        return AllocationStatus(**dict(fig.status(snapshot, budget_id)), expires_at=config.expires_at), Writes()
    if parent is not None:
        check_carving(snapshot, parent, budget_id, config)
    if old is not None:
        check_shrink(snapshot, budget_id, old, config)
    entry = Entry(
        new_entry_id("alc"), EntryKind.ALLOCATE, budget_id, snapshot.now,
        metadata={"limits": [_limit_json(lim) for lim in config.limits], "created": old is None},
    )  # fmt: skip
    status = fig.status(with_config(snapshot, config), budget_id)
    return AllocationStatus(**dict(status), expires_at=config.expires_at), Writes(budgets=[config], entries=[entry])


def merged_config(
    request: AllocationRequest, old: BudgetConfig | None, parent: BudgetConfig | None, snapshot: Snapshot,
    owner: str | None,
) -> BudgetConfig:  # fmt: skip
    """The budget as it will be: each field as asked, else as it was, else inherited or the default."""
    if old is not None and request.timezone is not None and request.timezone != old.timezone:
        raise InvalidInputError(
            f"budget '{request.budget_id}' keeps its windows in {old.timezone}; its timezone cannot change "
            "(create a new budget for another timezone)"
        )
    period = request.period or (old.period if old else parent.period if parent else Period.TOTAL)
    return BudgetConfig(
        budget_id=request.budget_id,
        period=period,
        limits=limits(
            old, period, request.limit_nanos, request.limit_tokens, request.extra_limits, request.limit_calls
        ),
        per_call_nanos=request.per_call_nanos if request.per_call_nanos is not None else _old(old).per_call_nanos,
        enforcement=request.enforcement or (old.enforcement if old else Enforcement.BLOCK),
        alert_at=request.alert_at or (old.alert_at if old else DEFAULT_ALERT_AT),
        timezone=request.timezone or (old.timezone if old else "UTC"),
        description=request.description if request.description is not None else _old(old).description,
        metadata=request.metadata if request.metadata is not None else (old.metadata if old else {}),
        closed=False,
        created_at=old.created_at if old else snapshot.now,
        owner=old.owner if old else owner,
        declared=old.declared if old else None,
        expires_at=request.expires_at or (old.expires_at if old and not old.closed else None),
    )


def _old(old: BudgetConfig | None) -> BudgetConfig:
    """The config a budget had, or an empty one for a new budget (its optional fields all unset)."""
    return old or BudgetConfig("", Period.TOTAL)


def close(snapshot: Snapshot, budget_id: str, *, expired: bool = False) -> tuple[ReleaseResult, Writes]:
    """Closing an allocation (`expired`: because its time ran out): the budget stops spending, its unspent part
    returns to its parent."""
    state = fig.state_of(snapshot, budget_id)
    if state.config.closed:
        raise BudgetNotFoundError(f"budget '{budget_id}' is already closed")
    if state.children:
        raise InvalidInputError(
            f"budget '{budget_id}' has open children ({', '.join(state.children[:5])}); close them first"
        )
    nanos, tokens, _ = fig.unspent(state, state.config.period)
    closed = dataclasses.replace(state.config, closed=True)
    why = {"expired": True} if expired else {}
    entry = Entry(
        new_entry_id("cls"), EntryKind.CLOSE, budget_id, snapshot.now, metadata={"returned_nanos": nanos, **why}
    )
    back_to = parent_of(budget_id) or "nobody (it is a root)"
    result = ReleaseResult(
        released="allocation", budget_id=budget_id, released_usd=format_usd(nanos), released_tokens=tokens,
        message=f"closed {budget_id}; {human_usd(nanos)} unspent returned to {back_to}",
    )  # fmt: skip
    return result, Writes(budgets=[closed], entries=[entry])


def expire(snapshot: Snapshot) -> tuple[Snapshot, Writes]:
    """The snapshot with every sub-budget in it past its `expires_at` closed (its unspent part back to its
    parent), and the writes that close them; the snapshot itself and no writes when none has expired."""
    expired = sorted(b for b, s in snapshot.budgets.items() if s.config.expired(snapshot.now))
    writes = Writes()
    for budget_id in expired:
        _, closing = close(snapshot, budget_id, expired=True)
        writes.budgets.extend(closing.budgets)
        writes.entries.extend(closing.entries)
        snapshot = with_config(snapshot, closing.budgets[0])
    return snapshot, writes


def sweep(snapshot: Snapshot) -> tuple[list[str], Writes]:
    """The expired sub-budgets of the snapshot closed, and their ids."""
    writes = expire(snapshot)[1]
    return [c.budget_id for c in writes.budgets], writes


T = TypeVar("T")


def expiring(decide: Callable[[Snapshot], tuple[T, Writes]]) -> Callable[[Snapshot], tuple[T, Writes]]:
    """`decide`, on its snapshot with the expired sub-budgets in it closed first: every write to a tree closes
    what has expired in it, in the same transaction."""

    def run(snapshot: Snapshot) -> tuple[T, Writes]:
        fresh, closing = expire(snapshot)
        result, writes = decide(fresh)
        if not closing.entries:
            return result, writes
        rewritten = {c.budget_id for c in writes.budgets}  # stored once: the decision's config is the later one
        budgets = [c for c in closing.budgets if c.budget_id not in rewritten] + writes.budgets
        return result, dataclasses.replace(writes, budgets=budgets, entries=closing.entries + writes.entries)

    return run


def release_hold(
    snapshot: Snapshot, reservation_id: str, visible: Callable[[str], bool] | None
) -> tuple[ReleaseResult, Writes]:
    """Dropping a hold early; one on a budget the caller may not see reads as unknown."""
    reservation = snapshot.reservation
    if reservation is not None and visible is not None and not visible(_reserved_on(reservation)):
        snapshot = dataclasses.replace(snapshot, reservation=None)
    hold = open_hold(snapshot, reservation_id, None)
    entry = Entry(
        new_entry_id("rel"), EntryKind.RELEASE, hold.budget_id, snapshot.now, 0,
        reservation_id=reservation_id, metadata={"released_nanos": hold.cost_nanos},
    )  # fmt: skip
    result = ReleaseResult(
        released="reservation", reservation_id=reservation_id, budget_id=hold.budget_id,
        released_usd=format_usd(hold.cost_nanos), released_tokens=hold.tokens,
        message=f"released {human_usd(hold.cost_nanos)} held on {hold.budget_id}",
    )  # fmt: skip
    return result, Writes(entries=[entry], holds_removed=[reservation_id])


# ---- the rules themselves ----


def evaluate(
    snapshot: Snapshot, path: Path, cost_nanos: int, tokens: int, source: str | None, approval: Approval | None = None
) -> CheckResult:
    """The answer of a check of `cost_nanos` and `tokens` on the budget at the end of `path`.

    A check only `ask` limits would deny is denied unless `approval` approves it (None: nobody could be asked).
    """
    return _answer(snapshot, path, cost_nanos, tokens, source, approval)[0]


def _answer(
    snapshot: Snapshot, path: Path, cost_nanos: int, tokens: int, source: str | None, approval: Approval | None,
    model: str | None = None, provider: str | None = None,
) -> tuple[CheckResult, Overspend | None]:  # fmt: skip
    """The answer of a check, and the overspend a person approves or refuses when only `ask` limits deny it."""
    budget_id = path[-1]
    state = fig.state_of(snapshot, budget_id)
    found = fig.constraints(snapshot, path, model, provider)
    left_nanos, left_tokens = fig.remaining(found)
    violations = [c for c in found if _violates(c, cost_nanos, tokens)]
    blocking = [c for c in violations if c.enforcement is Enforcement.BLOCK]
    asking = [c for c in violations if c.enforcement is Enforcement.ASK]
    flagged = [c for c in violations if c.enforcement in _FLAGGING]
    warnings = [_violation_text(c, cost_nanos, tokens) for c in flagged]
    overspend = None
    if state.config.closed or state.config.expired(snapshot.now):
        decision, decider, reason = Decision.DENY, None, f"budget '{budget_id}' is closed; reopen it with allocate"
    elif blocking:
        decider = _most_restrictive(blocking)
        decision, reason = Decision.DENY, _violation_text(decider, cost_nanos, tokens)
    elif asking:
        decider = _most_restrictive(asking)
        overspend = _overspend(snapshot, decider, cost_nanos, tokens, len(asking) - 1)
        decision, reason = _asked(overspend, approval)
    elif flagged:
        decider = _most_restrictive(flagged)
        decision, reason = Decision.WARN, "allowed with a warning: " + _violation_text(decider, cost_nanos, tokens)
    else:
        limited = [
            c
            for c in found
            if c.period is not None
            and (c.headroom_nanos is not None or c.headroom_tokens is not None or c.headroom_calls is not None)
        ]
        decider = _most_restrictive(limited) if limited else None
        where = f" in {decider.budget_id} ({decider.period})" if decider else ""
        reason = f"allowed: {human_usd(cost_nanos)} estimated, {fig.describe_headroom(left_nanos)} left{where}"
        decision = Decision.ALLOW
    answer = CheckResult(
        allowed=decision is not Decision.DENY,
        decision=decision,
        reason=reason,
        budget_id=budget_id,
        decided_by=decider.budget_id if decider else None,
        decided_period=decider.period if decider and decider.period else None,
        estimated_cost_usd=format_usd(cost_nanos),
        estimated_tokens=tokens,
        remaining_usd=_usd(left_nanos),
        remaining_tokens=left_tokens,
        resets_at=decider.resets_at if decider else None,
        warnings=warnings,
        price_source=source,
    )
    return answer, overspend


_FLAGGING = frozenset({Enforcement.WARN, Enforcement.SOFT})


def _asked(overspend: Overspend, approval: Approval | None) -> tuple[Decision, str]:
    """The decision on a check only `ask` limits deny, after the person's answer (None: nobody could be asked)."""
    if approval is None:
        return Decision.DENY, (
            f"{overspend.text}; going over needs a person's approval, and none could be asked (this caller "
            "cannot answer MCP elicitation)"
        )
    if approval.answer is Answer.APPROVED:
        who = approval.token_name if approval.token_name and approval.token_name != "local" else None
        by = f" ({who})" if who else ""
        return Decision.WARN, f"approved at the client{by}: {overspend.text}"
    return Decision.DENY, f"{approval.answer} at the client: {overspend.text}"


def _overspend(snapshot: Snapshot, c: fig.Constraint, cost_nanos: int, tokens: int, others: int) -> Overspend:
    """How far the check goes over the limit `c`, said as a person reads it."""
    if c.period is None:
        cap = c.headroom_nanos or 0
        text = f"{c.budget_id}: this call's {_exact(cost_nanos)} would go {_exact(cost_nanos - cap)} over its " + (
            f"{_exact(cap)} per-call cap"
        )
        return Overspend(c, cost_nanos - cap, 0, text, others)
    limit = snapshot.budgets[c.budget_id].config.limit_for(c.period) or Limit(c.period)
    resets = f" (resets {_when(c.resets_at, snapshot.now)})" if c.resets_at else ""
    if c.headroom_nanos is not None and cost_nanos > c.headroom_nanos:
        over = cost_nanos - c.headroom_nanos
        size = _exact(limit.limit_nanos) if limit.limit_nanos is not None else "USD"
        text = f"{c.budget_id} would go {_exact(over)} over its {size} {c.period} limit{resets}"
        over_tokens = max(tokens - c.headroom_tokens, 0) if c.headroom_tokens is not None else 0
        return Overspend(c, over, over_tokens, text, others)
    if c.headroom_tokens is None or tokens <= c.headroom_tokens:
        text = f"{c.budget_id} would go over its {limit.limit_calls}-call {c.period} limit{resets}"
        return Overspend(c, 0, 0, text, others)
    over_tokens = tokens - c.headroom_tokens
    text = f"{c.budget_id} would go {over_tokens} tokens over its {limit.limit_tokens}-token {c.period} limit{resets}"
    return Overspend(c, 0, over_tokens, text, others)


def _exact(nanos: int) -> str:
    """Every digit of an amount a person approves: '$2.40', '$0.000315'."""
    return exact_usd(format_usd(nanos))


def _when(at: datetime, now: datetime) -> str:
    """'00:00 UTC' within a day, else '2026-12-07 00:00 UTC'."""
    return f"{at:%H:%M} UTC" if at - now <= timedelta(days=1) else f"{at:%Y-%m-%d %H:%M} UTC"


def _violates(c: fig.Constraint, cost_nanos: int, tokens: int) -> bool:
    over_usd = c.headroom_nanos is not None and cost_nanos > c.headroom_nanos
    over_tokens = c.headroom_tokens is not None and tokens > c.headroom_tokens
    over_calls = c.headroom_calls is not None and c.headroom_calls < 1  # the call asked about is one more
    return over_usd or over_tokens or over_calls


def _most_restrictive(found: list[fig.Constraint]) -> fig.Constraint:
    """Per-call caps first, then the smallest USD headroom, then tokens, then calls; deeper wins ties."""

    def rank(c: fig.Constraint) -> tuple[int, int, int]:
        depth = -c.budget_id.count("/")
        if c.period is None:
            return (0, c.headroom_nanos or 0, depth)
        if c.headroom_nanos is not None:
            return (1, c.headroom_nanos, depth)
        if c.headroom_tokens is not None:
            return (2, c.headroom_tokens, depth)
        return (3, c.headroom_calls or 0, depth)

    return min(found, key=rank)


def _violation_text(c: fig.Constraint, cost_nanos: int, tokens: int) -> str:
    if c.period is None:
        return (
            f"{human_usd(cost_nanos)} exceeds the per-call cap of {human_usd(c.headroom_nanos or 0)} on {c.budget_id}"
        )
    resets = f", resets {c.resets_at:%Y-%m-%d %H:%M} UTC" if c.resets_at else ""
    if c.only:
        resets = f", {c.only} only{resets}"
    if c.headroom_nanos is not None and cost_nanos > c.headroom_nanos:
        left = human_usd(max(c.headroom_nanos, 0))
        return f"{human_usd(cost_nanos)} needed but only {left} left in {c.budget_id} ({c.period}{resets})"
    if c.headroom_tokens is None or tokens <= c.headroom_tokens:
        return f"1 call needed but no calls left in {c.budget_id} ({c.period}{resets})"
    left_tokens = max(c.headroom_tokens, 0)
    return f"{tokens} tokens needed but only {left_tokens} left in {c.budget_id} ({c.period}{resets})"


def over_limit(snapshot: Snapshot, path: Path) -> bool:
    """Whether any limit on the path is spent beyond."""
    for current in path:
        state = snapshot.budgets[current]
        for limit in state.config.limits:
            used = state.used(limit.key)
            if limit.limit_nanos is not None and used.spent_nanos > limit.limit_nanos:
                return True
            if limit.limit_tokens is not None and used.spent_tokens > limit.limit_tokens:
                return True
            if limit.limit_calls is not None and used.calls > limit.limit_calls:
                return True
    return False


def crossed_alerts(before: Snapshot, after: Snapshot, path: Path, entry_id: str | None = None) -> list[AlertRecord]:
    """Thresholds this charge (the entry `entry_id`) crossed, once per threshold per window of each limit on the
    path; for a rolling window (an alert is stored under the bucket it was crossed in), again only when spend
    comes up from below the threshold and no alert of it is left inside the window."""
    crossed = []
    for current in path:
        state = after.budgets[current]
        for limit in state.config.limits:  # a filtered limit's alerts are its own, under its key
            first = None  # a rolling window's oldest bucket still inside it
            if isinstance(limit.period, Period):
                key = window_key(limit.period, state.config.timezone, after.now)
            else:
                key, first = limit.period.bucket(after.now), limit.period.first_bucket(after.now)
            old, new = before.budgets[current].used(limit.key), state.used(limit.key)
            for threshold in state.config.alert_at:
                if first is None:
                    if (current, limit.key, key, str(threshold)) in after.alerts_raised:
                        continue
                elif after.rolling_alerts.get((current, limit.key, str(threshold)), first - 1) >= first:
                    continue  # its last alert is still inside the window
                crossing = first is not None  # a rolling threshold alerts again only after spend fell below it
                if _reaches(new.spent_nanos, old.spent_nanos, limit.limit_nanos, threshold, crossing) or _reaches(
                    new.spent_tokens, old.spent_tokens, limit.limit_tokens, threshold, crossing
                ):
                    crossed.append(
                        AlertRecord(
                            current,
                            limit.period,
                            key,
                            threshold,
                            after.now,
                            new.spent_nanos,
                            limit.limit_nanos,
                            limit.limit_tokens,
                            new.spent_tokens,
                            entry_id,
                            limit.key if limit.filtered else None,
                            limit.models,
                            limit.providers,
                        )  # fmt: skip
                    )
    return crossed


def _reaches(new: int, old: int, limit: int | None, threshold: Decimal, crossing: bool = False) -> bool:
    """Whether spend grew to the threshold (`crossing`: from below it)."""
    if limit is None or limit <= 0 or new <= old or new < threshold * limit:
        return False
    return not crossing or old < threshold * limit


def open_hold(snapshot: Snapshot, reservation_id: str, budget_id: str | None) -> Hold:
    reservation = snapshot.reservation
    if reservation is None:
        raise ReservationNotFoundError(
            f"reservation {reservation_id} does not exist; "
            "use the reservation_id returned by check_budget(reserve=true)"
        )
    if reservation.hold is None:
        how = "settled by charge" if reservation.closed_kind == EntryKind.CHARGE else "released by"
        raise ReservationNotFoundError(
            f"reservation {reservation_id} was already {how} {reservation.closed_by}; reserve again, or charge "
            "without reservation_id"
        )
    if budget_id is not None and reservation.hold.budget_id != budget_id:
        raise InvalidInputError(
            f"reservation {reservation_id} belongs to budget '{reservation.hold.budget_id}', not '{budget_id}'; "
            "charge the budget that reserved it"
        )
    return reservation.hold


def settled_hold(
    snapshot: Snapshot,
    reservation_id: str,
    budget_id: str,
    visible: Callable[[str], bool] | None,
    warnings: list[str],
) -> Hold | None:
    """The open hold a charge settles; None (and a warning) when it is gone: a charge is recorded all the same."""
    reservation = snapshot.reservation
    foreign = reservation is not None and visible is not None and not visible(_reserved_on(reservation))
    if reservation is not None and reservation.hold is not None and not foreign:
        return open_hold(snapshot, reservation_id, budget_id)
    if reservation is None or foreign:
        gone = "is not open (unknown, or expired over a day ago)"
    elif reservation.closed_kind == EntryKind.CHARGE:
        gone = (
            f"was already settled by charge {reservation.closed_by} (if this repeats that call, it now counts twice: "
            "retry with an idempotency_key)"
        )
    else:
        gone = f"was already released by {reservation.closed_by}"
    warnings.append(f"reservation {reservation_id} {gone}; the charge is recorded without it")
    return None


def _reserved_on(reservation: ReservationState) -> str:
    """The budget a reservation was made on (an id of its own when the ledger no longer knows it)."""
    return reservation.hold.budget_id if reservation.hold else reservation.budget_id or ""


def within_bounds(priced: PricedCost) -> PricedCost:
    """A catalog price no larger than one amount may be (huge token counts price beyond it)."""
    if priced.cost_usd > MAX_USD:
        raise InvalidInputError(
            f"this call prices at ${priced.cost_usd:,.2f}, more than the {MAX_USD:,} USD one call may cost; "
            "check the token counts"
        )
    return priced


def check_totals(after: Snapshot, path: Path) -> None:
    """Refuse a write whose running sums would leave the ledger's integer range (see domain.money)."""
    for current in path:
        state = after.budgets[current]
        sums = [state.held_nanos, state.held_tokens, *(n for u in state.usage.values() for n in u.totals)]
        if max(sums) <= MAX_TOTAL and min(sums) >= -MAX_TOTAL:
            continue  # the usual case, checked at once; the loop below names the sum that is out of range
        check_total(state.held_nanos, f"what is held on '{current}'")
        check_total(state.held_tokens, f"the tokens held on '{current}'")
        for period, used in state.usage.items():
            check_total(used.spent_nanos, f"the {period} spend of '{current}'")
            check_total(used.spent_tokens, f"the {period} tokens of '{current}'")


def check_shrink(snapshot: Snapshot, budget_id: str, old: BudgetConfig, new: BudgetConfig) -> None:
    """Refuse to lower a limit below what the budget's open children hold of it, plus its own spent and held.

    Children may spend their unspent allocations whatever the parent has left, so this is what keeps a
    `block` parent within its limit.
    """
    state = snapshot.budgets[budget_id]
    for limit in new.limits:
        if limit.filtered:
            continue  # nothing is carved from a filtered limit
        before = old.limit_for(limit.period)
        figures = fig.figures(snapshot, budget_id, limit)
        for unit, want, had, allocated, used in (
            ("usd", limit.limit_nanos, before.limit_nanos if before else None, figures.allocated_nanos,
             figures.spent_nanos + state.held_nanos),
            ("tokens", limit.limit_tokens, before.limit_tokens if before else None, figures.allocated_tokens,
             figures.spent_tokens + state.held_tokens),
            ("calls", limit.limit_calls, before.limit_calls if before else None, figures.allocated_calls,
             figures.spent_calls + state.held_calls),
        ):  # fmt: skip
            lowest = allocated + max(used, 0)
            if want is None or allocated <= 0 or want >= lowest or (had is not None and want >= had):
                continue
            if unit == "usd":
                given, floor = f"{human_usd(allocated)} allocated", f'limit_usd="{format_usd(lowest)}"'
            else:
                given, floor = f"{allocated} {unit} allocated", f"limit_{unit}={lowest}"
            raise InsufficientFundsError(
                f"'{budget_id}' has {given} to its open children in its {limit.period} limit; lowering it below "
                f"{floor} (with what it spent and holds) would let them overspend it: ask for at least that, "
                "or shrink or close the children first"
            )


def check_carving(snapshot: Snapshot, parent: str, budget_id: str, config: BudgetConfig) -> None:
    """Refuse a child limit whose unspent part would exceed what the parent's limit of that period has left."""
    parent_state = snapshot.budgets[parent]
    child = snapshot.budgets.get(budget_id)
    for limit in config.limits:
        parent_limit = parent_state.config.limit_for(limit.period)
        if parent_limit is None or limit.filtered:
            continue
        available = fig.figures(snapshot, parent, parent_limit)
        old_nanos, old_tokens, old_calls = fig.unspent(child, limit.period) if child else (0, 0, 0)
        used = child.used(limit.key) if child else None
        held = (child.held_nanos, child.held_tokens, child.held_calls) if child else (0, 0, 0)
        for want, have, old, used_now, unit in (
            (
                limit.limit_nanos,
                available.available_nanos,
                old_nanos,
                (used.spent_nanos if used else 0) + held[0],
                "usd",
            ),
            (
                limit.limit_tokens,
                available.available_tokens,
                old_tokens,
                (used.spent_tokens if used else 0) + held[1],
                "tokens",
            ),
            (limit.limit_calls, available.available_calls, old_calls, (used.calls if used else 0) + held[2], "calls"),
        ):
            if want is None or have is None:
                continue
            free = have + old
            new_unspent = max(0, want - used_now)
            if new_unspent > old and new_unspent > free:
                raise InsufficientFundsError(_carving_message(parent, budget_id, limit.period, free, used_now, unit))


def _carving_message(parent: str, budget_id: str, period: AnyPeriod, free: int, used: int, unit: str) -> str:
    free, most = max(free, 0), max(free, 0) + used
    if unit == "usd":
        has, ask = human_usd(free), f'limit_usd="{format_usd(most)}"'
    else:
        has, ask = f"{free} {unit}", f"limit_{unit}={most}"
    return (
        f"'{parent}' has only {has} available in its {period} limit for '{budget_id}'; "
        f"ask for at most {ask}, or raise the limit of '{parent}' first"
    )


def with_config(snapshot: Snapshot, config: BudgetConfig) -> Snapshot:
    state = snapshot.budgets.get(config.budget_id) or BudgetState(config, {p: WindowUsage() for p in Period})
    budgets = {**snapshot.budgets, config.budget_id: dataclasses.replace(state, config=config)}
    return dataclasses.replace(snapshot, budgets=budgets)


def limits(
    old: BudgetConfig | None,
    period: AnyPeriod,
    limit_nanos: int | None,
    limit_tokens: int | None,
    extras: tuple[Limit, ...] | None,
    limit_calls: int | None = None,
) -> tuple[Limit, ...]:
    """A budget's limits: the primary one (as asked, else as it was), then the others of other periods."""
    if limit_nanos is not None or limit_tokens is not None or limit_calls is not None:
        primary: Limit | None = Limit(period, limit_nanos, limit_tokens, limit_calls)
    elif old is not None:
        kept = old.limit_for(old.period)
        primary = Limit(period, kept.limit_nanos, kept.limit_tokens, kept.limit_calls) if kept else None
    else:
        primary = None
    if primary is None and isinstance(period, Rolling):
        primary = Limit(period)  # tracking only: a rolling window's spend is kept only for a limit in place
    if extras is None:
        extras = tuple(lim for lim in old.limits if lim.filtered or lim.period != old.period) if old else ()
    others = [lim for lim in extras if lim.filtered or lim.period != period]
    keys = [lim.key for lim in others]
    if len(set(keys)) != len(keys):
        raise InvalidInputError(
            "extra_limits has two limits of the same period (and models and providers); give at most one of each"
        )
    return tuple([primary] if primary else []) + tuple(others)


def replay(key: str, stored: StoredResult, request_hash: str) -> tuple[ChargeResult, Writes]:
    """The first answer given under `key`, if this is the same charge again; else a conflict."""
    if stored.request_hash != request_hash:
        raise IdempotencyConflictError(
            f"idempotency_key {key!r} was already used for a different charge; use a new key for a new charge, "
            "or repeat the first call's arguments exactly to get its result"
        )
    first = ChargeResult.model_validate_json(stored.result_json)
    return first.model_copy(update={"duplicate": True}), Writes()


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd(nanos)


def _limit_json(limit: Limit) -> dict[str, object]:
    """A limit as an allocation entry records it (reconcile replays these to know which filtered limits counted)."""
    calls = {"limit_calls": limit.limit_calls} if limit.limit_calls is not None else {}
    filters = {"models": list(limit.models), "providers": list(limit.providers)} if limit.filtered else {}
    return {
        "period": limit.period.value, "limit_nanos": limit.limit_nanos, "limit_tokens": limit.limit_tokens,
        **calls, **filters,
    }  # fmt: skip
