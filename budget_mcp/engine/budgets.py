"""BudgetEngine: check, reserve, charge, allocate, release and adjust, atomically, on any Ledger.

Every operation validates its input first, prices the call (outside any lock), then hands
the ledger a pure `decide` function that sees a snapshot taken under the write lock.
Nothing is written unless `decide` returns, so a refused request changes nothing.
"""

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from budget_mcp.domain.ids import (
    is_within,
    new_entry_id,
    new_reservation_id,
    parent_of,
    path_of,
    validate_budget_id,
    validate_reservation_id,
)
from budget_mcp.domain.models import (
    DEFAULT_ALERT_AT,
    AdjustResult,
    AlertRecord,
    BudgetConfig,
    BudgetNode,
    BudgetStatus,
    ChargeResult,
    CheckResult,
    Decision,
    Enforcement,
    Entry,
    EntryKind,
    EstimateResult,
    Hold,
    LedgerListing,
    Limit,
    RecommendResult,
    ReleaseResult,
    SpendReport,
    TokenCounts,
)
from budget_mcp.domain.money import (
    MAX_USD,
    check_total,
    format_usd,
    human_amount,
    human_usd,
    parse_tokens,
    parse_usd,
    to_nanos,
)
from budget_mcp.domain.windows import Period, window, window_key, zone
from budget_mcp.engine import figures as fig
from budget_mcp.engine import recommend
from budget_mcp.engine.recommend import Requirements
from budget_mcp.engine.reports import alert_info, build_report, ledger_entry
from budget_mcp.errors import (
    BudgetNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidInputError,
    ReservationNotFoundError,
    UnknownModelError,
)
from budget_mcp.ledger import BudgetState, Ledger, ReservationState, Scope, Snapshot, StoredResult, WindowUsage, Writes
from budget_mcp.pricing import Capability, PriceCatalog, PricedCost, Tier, canonical_provider

Clock = Callable[[], datetime]
DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 86_400
MAX_METADATA_BYTES = 4_096
MAX_TEXT = 1_000
MAX_NAME = 200  # model names, provider ids, idempotency keys
MAX_THRESHOLDS = 20
MAX_LEDGER_ENTRIES = 1_000


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class BudgetEngine:
    """Budgets on a ledger: every method validates, then runs one atomic ledger operation."""

    def __init__(self, ledger: Ledger, prices: PriceCatalog, clock: Clock = utc_now) -> None:
        self.ledger = ledger
        self.prices = prices
        self.clock = clock

    # ---- reading ----

    async def status(self, budget_id: str) -> BudgetStatus:
        """The budget's status in the current window of each of its limits."""
        validate_budget_id(budget_id)
        snapshot = await self.ledger.read(Scope(budget_ids=(budget_id,)), self.clock())
        return fig.status(snapshot, budget_id)

    async def tree(
        self, prefix: str | None = None, *, visible: Callable[[str], bool] | None = None
    ) -> list[BudgetNode]:
        """Every budget (or those under `prefix`) as a forest of status nodes; only those `visible` allows, if given.

        An unknown `prefix` is an error, unless `visible` is given (then the answer is empty, as for one the
        caller may not see: whether a budget exists is not for every caller to learn).
        """
        if prefix is not None:
            validate_budget_id(prefix, "prefix")
        scope = Scope(subtree=prefix) if prefix else Scope(everything=True)
        snapshot = await self.ledger.read(scope, self.clock())
        if prefix is not None and prefix not in snapshot.budgets and visible is None:
            fig.state_of(snapshot, prefix)
        ids = sorted(
            b for b in snapshot.budgets if (prefix is None or is_within(b, prefix)) and (visible is None or visible(b))
        )
        nodes = {b: BudgetNode(**fig.status(snapshot, b).model_dump()) for b in ids}
        roots: list[BudgetNode] = []
        for budget_id in ids:
            parent = parent_of(budget_id)
            (nodes[parent].children if parent in nodes else roots).append(nodes[budget_id])
        return roots

    async def report(self, budget_id: str, *, window_of: date | datetime | None = None) -> SpendReport:
        """Where the money went in the current window, or in the window holding `window_of` (a local date or time)."""
        status = await self.status(budget_id)
        now = self.clock()
        if window_of is None:
            start, end = status.window_start, status.resets_at
        else:
            tz = zone(status.timezone)
            at = window_of if isinstance(window_of, datetime) else datetime.combine(window_of, time(12), tz)
            if at.tzinfo is None:
                at = at.replace(tzinfo=tz)
            if at > now:
                raise InvalidInputError(f"{window_of} is in the future; ask for a window that has started")
            start, end = window(status.period, status.timezone, at.astimezone(UTC))
        rows = await self.ledger.spend(budget_id, start, end)
        alerts = await self.ledger.alerts(budget_id, since=start)
        deliveries = await self.ledger.deliveries(budget_id, since=start)
        return build_report(status, rows, alerts, deliveries, window_start=start, window_end=end, now=now)

    async def ledger_entries(self, budget_id: str, *, limit: int = 100) -> LedgerListing:
        """The latest entries of a budget and its descendants, newest first (at most `limit`, up to 1000)."""
        await self.status(budget_id)
        if not 1 <= limit <= MAX_LEDGER_ENTRIES:
            raise InvalidInputError(f"limit must be between 1 and {MAX_LEDGER_ENTRIES}, got {limit}")
        entries = await self.ledger.entries(budget_id, limit=limit)
        return LedgerListing(budget_id=budget_id, limit=limit, entries=[ledger_entry(e) for e in entries])

    # ---- checking and holding ----

    async def check(
        self,
        budget_id: str,
        *,
        estimated_cost_usd: object = None,
        model: str | None = None,
        provider: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        reserve: bool = False,
        ttl_seconds: int | None = None,
    ) -> CheckResult:
        """May this much be spent? With `reserve`, atomically hold it on the whole path until settled or expired."""
        validate_budget_id(budget_id)
        ttl = _ttl(ttl_seconds)
        provider = _optional_text(provider, "provider")
        tokens = TokenCounts(
            input=parse_tokens(input_tokens or 0, "input_tokens"),
            output=parse_tokens(max_output_tokens or 0, "max_output_tokens"),
        )
        notes: list[str] = []
        if estimated_cost_usd is not None:
            cost_nanos, source = to_nanos(parse_usd(estimated_cost_usd, "estimated_cost_usd")), None
        elif model:
            model = _text(model, "model", limit=MAX_NAME)
            facts = self.prices.facts(model, provider)
            if max_output_tokens is None and facts is not None:
                # The worst case: the model may write up to its output limit.
                tokens = dataclasses.replace(tokens, output=facts.max_output_tokens)
                notes.append(
                    f"max_output_tokens not given: priced the worst case of {facts.max_output_tokens} output tokens "
                    f"({facts.model}'s limit); pass max_output_tokens for a tighter estimate"
                )
            priced = _within_bounds(self.prices.cost(model, provider, tokens))
            cost_nanos, source = to_nanos(priced.cost_usd), f"{priced.provider}/{priced.model} ({priced.source})"
        else:
            raise InvalidInputError(
                "give estimated_cost_usd, or model with input_tokens and max_output_tokens, so the cost can be checked"
            )

        def decide(snapshot: Snapshot) -> tuple[CheckResult, Writes]:
            result = _evaluate(snapshot, budget_id, cost_nanos, tokens.total, source)
            if not (reserve and result.allowed):
                return result, Writes()
            hold = Hold(new_reservation_id(), budget_id, cost_nanos, tokens.total, snapshot.now, snapshot.now + ttl)
            held = fig.with_usage(snapshot, budget_id, held=(cost_nanos, tokens.total))
            _check_totals(held, budget_id)
            left_nanos, left_tokens = fig.remaining(fig.constraints(held, budget_id))
            entry = Entry(
                new_entry_id("hld"), EntryKind.HOLD, budget_id, snapshot.now, cost_nanos, tokens,
                model=model, provider=provider, price_source=source, reservation_id=hold.reservation_id,
                metadata={"expires_at": hold.expires_at.isoformat()},
            )  # fmt: skip
            reserved = result.model_copy(
                update={
                    "reservation_id": hold.reservation_id,
                    "expires_at": hold.expires_at,
                    "remaining_usd": _usd(left_nanos),
                    "remaining_tokens": left_tokens,
                }
            )
            return reserved, Writes(entries=[entry], holds_added=[hold])

        scope = Scope(budget_ids=path_of(budget_id))
        if not reserve:
            result = decide(await self.ledger.read(scope, self.clock()))[0]
        else:
            result = await self.ledger.write(scope, self.clock(), decide)
        return result.model_copy(update={"warnings": [*notes, *result.warnings]}) if notes else result

    # ---- prices and recommendations ----

    def estimate(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> EstimateResult:
        """The exact cost of a call from the price catalog, with the rates and source used."""
        tokens = TokenCounts(
            input=parse_tokens(input_tokens, "input_tokens"),
            output=parse_tokens(output_tokens, "output_tokens"),
            cache_read=parse_tokens(cache_read_tokens, "cache_read_tokens"),
            cache_write=parse_tokens(cache_write_tokens, "cache_write_tokens"),
        )
        priced = self.prices.cost(_text(model, "model", limit=MAX_NAME), _optional_text(provider, "provider"), tokens)
        return EstimateResult(
            model=priced.model,
            provider=priced.provider,
            cost_usd=format_usd(to_nanos(priced.cost_usd)),
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
            input_usd_per_mtok=_rate(priced.input_mtok),
            output_usd_per_mtok=_rate(priced.output_mtok),
            cache_read_usd_per_mtok=_rate(priced.cache_read_mtok),
            cache_write_usd_per_mtok=_rate(priced.cache_write_mtok),
            source=priced.source,
        )

    async def recommend(
        self,
        task: str,
        *,
        budget_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        needs: Sequence[str] | None = None,
        min_tier: str | None = None,
        providers: Sequence[str] | None = None,
        limit: int = 5,
    ) -> RecommendResult:
        """Models that meet the needs, tier, providers and call size; fitting the budget first, then cheapest."""
        task = _text(task, "task")
        if not 1 <= limit <= recommend.MAX_RESULTS:
            raise InvalidInputError(f"limit must be between 1 and {recommend.MAX_RESULTS}, got {limit}")
        assumptions = []
        if input_tokens is None:
            assumptions.append(f"input_tokens not given: assumed {recommend.DEFAULT_INPUT_TOKENS}")
        if output_tokens is None:
            assumptions.append(f"output_tokens not given: assumed {recommend.DEFAULT_OUTPUT_TOKENS}")
        sizes = TokenCounts(
            input=parse_tokens(
                recommend.DEFAULT_INPUT_TOKENS if input_tokens is None else input_tokens, "input_tokens"
            ),
            output=parse_tokens(
                recommend.DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens, "output_tokens"
            ),
        )
        chosen_needs, tier, inferred = recommend.infer(
            task, None if needs is None else [_choice(Capability, n, "needs") for n in needs],
            None if min_tier is None else _choice(Tier, min_tier, "min_tier"),
        )  # fmt: skip
        wanted = Requirements(
            needs=frozenset(chosen_needs),
            min_tier=tier,
            providers=frozenset(canonical_provider(_text(p, "providers")) for p in providers) if providers else None,
            input_tokens=sizes.input,
            output_tokens=sizes.output,
        )
        priced = []
        for facts in self.prices.candidates():
            if wanted.admits(facts):
                with contextlib.suppress(UnknownModelError):
                    priced.append((facts, self.prices.cost(facts.model, facts.provider, sizes)))
        judge, remaining = None, None
        if budget_id is not None:
            validate_budget_id(budget_id)
            snapshot = await self.ledger.read(Scope(budget_ids=path_of(budget_id)), self.clock())
            remaining = _evaluate(snapshot, budget_id, 0, 0, None).remaining_usd

            def judge(cost: PricedCost) -> tuple[bool, str]:
                verdict = _evaluate(snapshot, budget_id, to_nanos(cost.cost_usd), sizes.total, None)
                return verdict.decision is Decision.ALLOW, verdict.reason.removeprefix("allowed with a warning: ")

        ranked = recommend.rank(priced, judge, limit)
        advice = None
        if ranked and not ranked[0].fits_budget:
            advice = (
                f"no {tier}-tier model fits what {budget_id} allows; the cheapest needs "
                f"{human_amount(ranked[0].estimated_cost_usd)}: lower min_tier, shrink the call, or allocate more"
            )
        return RecommendResult(
            recommendations=ranked,
            budget_id=budget_id,
            remaining_usd=remaining,
            input_tokens=sizes.input,
            output_tokens=sizes.output,
            needs=sorted(chosen_needs),
            min_tier=tier,
            assumptions=assumptions + inferred,
            considered=len(priced),
            advice=advice,
        )

    # ---- charging ----

    async def charge(
        self,
        budget_id: str,
        *,
        model: str | None = None,
        provider: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        cost_usd: object = None,
        reservation_id: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        key_namespace: str | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> ChargeResult:
        """Record what a call cost (always recorded, even over the limit); settles `reservation_id` if given.

        With an `idempotency_key`, a retry returns the first result (`duplicate: true`) and records nothing.
        Keys of different `key_namespace`s (callers) never meet. A reservation of a budget `visible` says
        the caller may not see counts as not open, exactly like an unknown one.
        """
        validate_budget_id(budget_id)
        tokens = TokenCounts(
            parse_tokens(input_tokens, "input_tokens"),
            parse_tokens(output_tokens, "output_tokens"),
            parse_tokens(cache_read_tokens, "cache_read_tokens"),
            parse_tokens(cache_write_tokens, "cache_write_tokens"),
            parse_tokens(reasoning_tokens, "reasoning_tokens"),
        )
        if reservation_id is not None:
            validate_reservation_id(reservation_id)
        key = _idempotency_key(idempotency_key, key_namespace) if idempotency_key is not None else None
        meta = _metadata(metadata)
        model = _text(model, "model", limit=MAX_NAME) if model else None
        provider = _optional_text(provider, "provider")
        explicit = parse_usd(cost_usd, "cost_usd") if cost_usd is not None else None
        priced: PricedCost | None = None
        pricing_problem: str | None = None
        if explicit is None:
            if not model:
                if reservation_id is None:
                    raise InvalidInputError("give cost_usd, or model with token counts, so the charge can be priced")
                pricing_problem = "no model or cost_usd given"
            else:
                try:
                    priced = _within_bounds(self.prices.cost(model, provider, tokens))
                except UnknownModelError as exc:
                    if reservation_id is None:
                        raise
                    pricing_problem = str(exc)
        request_hash = "" if key is None else _hash(  # only a charge with a key is compared with an earlier one
            budget_id=budget_id, model=model, provider=provider, tokens=tokens.__dict__,
            cost_usd=str(explicit) if explicit is not None else None, reservation_id=reservation_id, metadata=meta,
        )  # fmt: skip

        def decide(snapshot: Snapshot) -> tuple[ChargeResult, Writes]:
            if key is not None and snapshot.stored_result is not None:
                return _replay(
                    key, snapshot.stored_result.request_hash, request_hash, snapshot.stored_result.result_json
                )
            fig.state_of(snapshot, budget_id)
            warnings: list[str] = []
            writes = Writes()
            held = (0, 0)
            hold = _settled_hold(snapshot, reservation_id, budget_id, visible, warnings) if reservation_id else None
            if hold is not None:
                writes.holds_removed.append(hold.reservation_id)
                if hold.expires_at <= snapshot.now:
                    warnings.append(f"reservation {reservation_id} had expired; the charge is recorded anyway")
                else:
                    held = (hold.cost_nanos, hold.tokens)
            if explicit is not None:
                cost_nanos, source = to_nanos(explicit), "cost_usd"
            elif priced is not None:
                cost_nanos, source = to_nanos(priced.cost_usd), f"{priced.provider}/{priced.model} ({priced.source})"
            elif hold is None:
                raise ReservationNotFoundError(
                    f"reservation {reservation_id} is not open, so there is no held amount to charge, and the cost "
                    f"is unknown ({pricing_problem}); pass cost_usd, or a model with a known price"
                )
            else:
                cost_nanos, source = hold.cost_nanos, "reservation"
                warnings.append(
                    f"charged the reserved {human_usd(cost_nanos)} because the cost is unknown: {pricing_problem}"
                )
            if snapshot.budgets[budget_id].config.closed:
                warnings.append(f"budget '{budget_id}' is closed; the charge is recorded because the money is spent")
            before = fig.with_usage(snapshot, budget_id, held=(-held[0], -held[1]))
            after = fig.with_usage(before, budget_id, spent=(cost_nanos, tokens.total))
            _check_totals(after, budget_id)
            entry = Entry(
                new_entry_id("chg"), EntryKind.CHARGE, budget_id, snapshot.now, cost_nanos, tokens,
                model=priced.model if priced else model, provider=priced.provider if priced else provider,
                price_source=source, reservation_id=reservation_id, idempotency_key=key, metadata=meta,
            )  # fmt: skip
            alerts = _crossed_alerts(before, after, budget_id)
            left_nanos, left_tokens = fig.remaining(fig.constraints(after, budget_id))
            result = ChargeResult(
                charge_id=entry.entry_id,
                budget_id=budget_id,
                cost_usd=format_usd(cost_nanos),
                tokens=tokens.total,
                model=entry.model,
                price_source=source,
                spent_usd=format_usd(
                    after.budgets[budget_id].usage[after.budgets[budget_id].config.period].spent_nanos
                ),
                remaining_usd=_usd(left_nanos),
                remaining_tokens=left_tokens,
                over_limit=_over_limit(after, budget_id),
                alerts=[alert_info(a) for a in alerts],
                warnings=warnings,
                reservation_id=reservation_id,
            )
            writes.entries.append(entry)
            writes.alerts.extend(alerts)
            if key is not None:
                writes.stored_result = (key, _stored(request_hash, result))
            return result, writes

        scope = Scope(budget_ids=path_of(budget_id), reservation_id=reservation_id, idempotency_key=key)
        return await self.ledger.write(scope, self.clock(), decide)

    async def adjust(self, budget_id: str, amount_usd: object, reason: str) -> AdjustResult:
        """Append a correction entry (negative for a refund); it counts as spend in the current window."""
        validate_budget_id(budget_id)
        amount_nanos = to_nanos(parse_usd(amount_usd, "amount_usd", allow_negative=True))
        reason = _text(reason, "reason")

        def decide(snapshot: Snapshot) -> tuple[AdjustResult, Writes]:
            fig.state_of(snapshot, budget_id)
            entry = Entry(
                new_entry_id("adj"),
                EntryKind.ADJUST,
                budget_id,
                snapshot.now,
                amount_nanos,
                metadata={"reason": reason},
            )
            after = fig.with_usage(snapshot, budget_id, spent=(amount_nanos, 0))
            _check_totals(after, budget_id)
            state = after.budgets[budget_id]
            return AdjustResult(
                entry_id=entry.entry_id,
                budget_id=budget_id,
                amount_usd=format_usd(amount_nanos),
                spent_usd=format_usd(state.usage[state.config.period].spent_nanos),
            ), Writes(entries=[entry])

        return await self.ledger.write(Scope(budget_ids=path_of(budget_id)), self.clock(), decide)

    # ---- budgets ----

    async def allocate(
        self,
        budget_id: str,
        *,
        limit_usd: object = None,
        limit_tokens: int | None = None,
        period: str | None = None,
        extra_limits: Sequence[Mapping[str, Any]] | None = None,
        per_call_usd: object = None,
        enforcement: str | None = None,
        alert_at: Sequence[object] | None = None,
        timezone: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
        guard: Callable[[BudgetConfig | None, BudgetConfig], None] | None = None,
    ) -> BudgetStatus:
        """Create or resize a budget; a child's limits are carved out of its parent's limits of the same period.

        On a resize, fields not given keep their values. Raises InsufficientFundsError when the parent
        has less available than the child's limit needs, saying how much it has. A new budget records
        `owner`; `guard(old, new)` runs in the transaction, before anything is answered or stored, and may refuse.
        """
        validate_budget_id(budget_id)
        primary_limit_nanos = to_nanos(parse_usd(limit_usd, "limit_usd")) if limit_usd is not None else None
        primary_limit_tokens = parse_tokens(limit_tokens, "limit_tokens") if limit_tokens is not None else None
        chosen_period = _choice(Period, period, "period") if period is not None else None
        extras = [_extra_limit(x) for x in extra_limits] if extra_limits is not None else None
        per_call = to_nanos(parse_usd(per_call_usd, "per_call_usd")) if per_call_usd is not None else None
        chosen_enforcement = _choice(Enforcement, enforcement, "enforcement") if enforcement is not None else None
        thresholds = _thresholds(alert_at) if alert_at is not None else None
        if timezone is not None:
            zone(timezone)
        text = _text(description, "description") if description is not None else None
        meta = _metadata(metadata) if metadata is not None else None
        parent = parent_of(budget_id)

        def decide(snapshot: Snapshot) -> tuple[BudgetStatus, Writes]:
            existing = snapshot.budgets.get(budget_id)
            old = existing.config if existing else None
            parent_config = fig.state_of(snapshot, parent).config if parent else None
            if parent_config is not None and parent_config.closed:
                raise BudgetNotFoundError(f"parent budget '{parent}' is closed; reopen it with allocate first")
            if old is not None and timezone is not None and timezone != old.timezone:
                raise InvalidInputError(
                    f"budget '{budget_id}' keeps its windows in {old.timezone}; its timezone cannot change "
                    "(create a new budget for another timezone)"
                )
            new_period = chosen_period or (
                old.period if old else parent_config.period if parent_config else Period.TOTAL
            )
            config = BudgetConfig(
                budget_id=budget_id,
                period=new_period,
                limits=_limits(old, new_period, primary_limit_nanos, primary_limit_tokens, extras),
                per_call_nanos=per_call if per_call is not None else (old.per_call_nanos if old else None),
                enforcement=chosen_enforcement or (old.enforcement if old else Enforcement.BLOCK),
                alert_at=thresholds or (old.alert_at if old else DEFAULT_ALERT_AT),
                timezone=timezone or (old.timezone if old else "UTC"),
                description=text if text is not None else (old.description if old else None),
                metadata=meta if meta is not None else (old.metadata if old else {}),
                closed=False,
                created_at=old.created_at if old else snapshot.now,
                owner=old.owner if old else owner,
            )
            if guard is not None:
                guard(old, config)
            if config == old:
                return fig.status(snapshot, budget_id), Writes()  # declaring the same budget again changes nothing
            if parent is not None:
                _check_carving(snapshot, parent, budget_id, config)
            if old is not None:
                _check_shrink(snapshot, budget_id, old, config)
            entry = Entry(
                new_entry_id("alc"), EntryKind.ALLOCATE, budget_id, snapshot.now,
                metadata={"limits": [_limit_json(lim) for lim in config.limits], "created": old is None},
            )  # fmt: skip
            after = _with_config(snapshot, config)
            return fig.status(after, budget_id), Writes(budgets=[config], entries=[entry])

        ids = path_of(budget_id)
        return await self.ledger.write(Scope(budget_ids=ids), self.clock(), decide)

    async def release(
        self,
        *,
        reservation_id: str | None = None,
        budget_id: str | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> ReleaseResult:
        """Drop a hold early (`reservation_id`), or close an allocation (`budget_id`) so its unspent part returns.

        A hold on a budget `visible` says the caller may not see is reported as not existing.
        """
        if (reservation_id is None) == (budget_id is None):
            raise InvalidInputError(
                "give exactly one of reservation_id (drop a hold) or budget_id (close an allocation)"
            )
        if reservation_id is not None:
            return await self._release_hold(validate_reservation_id(reservation_id), visible)
        assert budget_id is not None
        return await self._close(validate_budget_id(budget_id))

    async def _release_hold(self, reservation_id: str, visible: Callable[[str], bool] | None) -> ReleaseResult:
        def decide(snapshot: Snapshot) -> tuple[ReleaseResult, Writes]:
            reservation = snapshot.reservation
            if reservation is not None and visible is not None and not visible(_reserved_on(reservation)):
                snapshot = dataclasses.replace(snapshot, reservation=None)  # foreign: as if unknown
            hold = _open_hold(snapshot, reservation_id, None)
            entry = Entry(
                new_entry_id("rel"), EntryKind.RELEASE, hold.budget_id, snapshot.now, 0,
                reservation_id=reservation_id, metadata={"released_nanos": hold.cost_nanos},
            )  # fmt: skip
            result = ReleaseResult(
                released="reservation",
                reservation_id=reservation_id,
                budget_id=hold.budget_id,
                released_usd=format_usd(hold.cost_nanos),
                released_tokens=hold.tokens,
                message=f"released {human_usd(hold.cost_nanos)} held on {hold.budget_id}",
            )
            return result, Writes(entries=[entry], holds_removed=[reservation_id])

        return await self.ledger.write(Scope(reservation_id=reservation_id), self.clock(), decide)

    async def _close(self, budget_id: str) -> ReleaseResult:
        def decide(snapshot: Snapshot) -> tuple[ReleaseResult, Writes]:
            state = fig.state_of(snapshot, budget_id)
            if state.config.closed:
                raise BudgetNotFoundError(f"budget '{budget_id}' is already closed")
            if state.children:
                raise InvalidInputError(
                    f"budget '{budget_id}' has open children ({', '.join(state.children[:5])}); close them first"
                )
            nanos, tokens = fig.unspent(state, state.config.period)
            closed = dataclasses.replace(state.config, closed=True)
            entry = Entry(
                new_entry_id("cls"), EntryKind.CLOSE, budget_id, snapshot.now, metadata={"returned_nanos": nanos}
            )
            back_to = parent_of(budget_id) or "nobody (it is a root)"
            result = ReleaseResult(
                released="allocation",
                budget_id=budget_id,
                released_usd=format_usd(nanos),
                released_tokens=tokens,
                message=f"closed {budget_id}; {human_usd(nanos)} unspent returned to {back_to}",
            )
            return result, Writes(budgets=[closed], entries=[entry])

        return await self.ledger.write(Scope(budget_ids=path_of(budget_id)), self.clock(), decide)

    async def roots_owned_by(self, owner: str) -> list[str]:
        """The root budgets created by `owner` (a scoped token with create_roots)."""
        roots = tuple(b for b in await self.ledger.budget_ids() if "/" not in b)
        if not roots:
            return []
        snapshot = await self.ledger.read(Scope(budget_ids=roots), self.clock())
        return [b for b in roots if b in snapshot.budgets and snapshot.budgets[b].config.owner == owner]

    async def budget_ids(self) -> list[str]:
        """Every budget's id (closed ones too), sorted."""
        return await self.ledger.budget_ids()

    async def changed_budgets(self) -> set[str] | None:
        """The budgets any process wrote to since the last call; None when anything may have changed."""
        return await self.ledger.changed_budgets()

    async def reconcile(self) -> list[str]:
        """Differences between running totals and the entry log; empty when the ledger is consistent."""
        return await self.ledger.reconcile()


# ---- decisions (pure, run inside the ledger's transaction) ----


def _evaluate(snapshot: Snapshot, budget_id: str, cost_nanos: int, tokens: int, source: str | None) -> CheckResult:
    state = fig.state_of(snapshot, budget_id)
    found = fig.constraints(snapshot, budget_id)
    left_nanos, left_tokens = fig.remaining(found)
    violations = [c for c in found if _violates(c, cost_nanos, tokens)]
    blocking = [c for c in violations if c.enforcement is Enforcement.BLOCK]
    warnings = [_violation_text(c, cost_nanos, tokens) for c in violations if c.enforcement is Enforcement.WARN]
    if state.config.closed:
        decision, decider, reason = Decision.DENY, None, f"budget '{budget_id}' is closed; reopen it with allocate"
    elif blocking:
        decider = _most_restrictive(blocking)
        decision, reason = Decision.DENY, _violation_text(decider, cost_nanos, tokens)
    elif violations:
        decider = _most_restrictive(violations)
        decision, reason = Decision.WARN, "allowed with a warning: " + _violation_text(decider, cost_nanos, tokens)
    else:
        limited = [
            c for c in found if c.period is not None and (c.headroom_nanos is not None or c.headroom_tokens is not None)
        ]
        decider = _most_restrictive(limited) if limited else None
        where = f" in {decider.budget_id} ({decider.period})" if decider else ""
        reason = f"allowed: {human_usd(cost_nanos)} estimated, {fig.describe_headroom(left_nanos)} left{where}"
        decision = Decision.ALLOW
    return CheckResult(
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


def _violates(c: fig.Constraint, cost_nanos: int, tokens: int) -> bool:
    over_usd = c.headroom_nanos is not None and cost_nanos > c.headroom_nanos
    over_tokens = c.headroom_tokens is not None and tokens > c.headroom_tokens
    return over_usd or over_tokens


def _most_restrictive(found: list[fig.Constraint]) -> fig.Constraint:
    """Per-call caps first, then the smallest USD headroom, then the smallest token headroom; deeper wins ties."""

    def rank(c: fig.Constraint) -> tuple[int, int, int]:
        depth = -c.budget_id.count("/")
        if c.period is None:
            return (0, c.headroom_nanos or 0, depth)
        if c.headroom_nanos is not None:
            return (1, c.headroom_nanos, depth)
        return (2, c.headroom_tokens or 0, depth)

    return min(found, key=rank)


def _violation_text(c: fig.Constraint, cost_nanos: int, tokens: int) -> str:
    if c.period is None:
        return (
            f"{human_usd(cost_nanos)} exceeds the per-call cap of {human_usd(c.headroom_nanos or 0)} on {c.budget_id}"
        )
    resets = f", resets {c.resets_at:%Y-%m-%d %H:%M} UTC" if c.resets_at else ""
    if c.headroom_nanos is not None and cost_nanos > c.headroom_nanos:
        left = human_usd(max(c.headroom_nanos, 0))
        return f"{human_usd(cost_nanos)} needed but only {left} left in {c.budget_id} ({c.period}{resets})"
    left_tokens = max(c.headroom_tokens or 0, 0)
    return f"{tokens} tokens needed but only {left_tokens} left in {c.budget_id} ({c.period}{resets})"


def _over_limit(snapshot: Snapshot, budget_id: str) -> bool:
    for current in path_of(budget_id):
        state = snapshot.budgets[current]
        for limit in state.config.limits:
            used = state.usage[limit.period]
            if limit.limit_nanos is not None and used.spent_nanos > limit.limit_nanos:
                return True
            if limit.limit_tokens is not None and used.spent_tokens > limit.limit_tokens:
                return True
    return False


def _crossed_alerts(before: Snapshot, after: Snapshot, budget_id: str) -> list[AlertRecord]:
    """Thresholds this charge crossed, once per threshold per window of each limit on the path."""
    crossed = []
    for current in path_of(budget_id):
        state = after.budgets[current]
        for limit in state.config.limits:
            key = window_key(limit.period, state.config.timezone, after.now)
            old, new = before.budgets[current].usage[limit.period], state.usage[limit.period]
            for threshold in state.config.alert_at:
                if (current, limit.period, key, str(threshold)) in after.alerts_raised:
                    continue
                if _reaches(new.spent_nanos, old.spent_nanos, limit.limit_nanos, threshold) or _reaches(
                    new.spent_tokens, old.spent_tokens, limit.limit_tokens, threshold
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
                        )  # fmt: skip
                    )
    return crossed


def _reaches(new: int, old: int, limit: int | None, threshold: Decimal) -> bool:
    return limit is not None and limit > 0 and new > old and new >= threshold * limit


def _open_hold(snapshot: Snapshot, reservation_id: str, budget_id: str | None) -> Hold:
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


def _settled_hold(
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
        return _open_hold(snapshot, reservation_id, budget_id)
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


def _idempotency_key(value: object, namespace: str | None) -> str:
    key = _text(value, "idempotency_key", limit=MAX_NAME)
    if not key.isprintable():
        raise InvalidInputError("idempotency_key must be printable text (no control characters)")
    # A control character cannot be in a key, so a namespaced key never equals one without a namespace.
    return key if namespace is None else f"\x1f{namespace}\x1f{key}"


def _within_bounds(priced: PricedCost) -> PricedCost:
    """A catalog price no larger than one amount may be (huge token counts price beyond it)."""
    if priced.cost_usd > MAX_USD:
        raise InvalidInputError(
            f"this call prices at ${priced.cost_usd:,.2f}, more than the {MAX_USD:,} USD one call may cost; "
            "check the token counts"
        )
    return priced


def _check_totals(after: Snapshot, budget_id: str) -> None:
    """Refuse a write whose running sums would leave the ledger's integer range (see domain.money)."""
    for current in path_of(budget_id):
        state = after.budgets[current]
        check_total(state.held_nanos, f"what is held on '{current}'")
        check_total(state.held_tokens, f"the tokens held on '{current}'")
        for period, used in state.usage.items():
            check_total(used.spent_nanos, f"the {period} spend of '{current}'")
            check_total(used.spent_tokens, f"the {period} tokens of '{current}'")


def _check_shrink(snapshot: Snapshot, budget_id: str, old: BudgetConfig, new: BudgetConfig) -> None:
    """Refuse to lower a limit below what the budget's open children hold of it, plus its own spent and held.

    Children may spend their unspent allocations whatever the parent has left, so this is what keeps a
    `block` parent within its limit.
    """
    state = snapshot.budgets[budget_id]
    for limit in new.limits:
        before = old.limit_for(limit.period)
        figures = fig.figures(snapshot, budget_id, limit)
        for unit, want, had, allocated, used in (
            ("usd", limit.limit_nanos, before.limit_nanos if before else None, figures.allocated_nanos,
             figures.spent_nanos + state.held_nanos),
            ("tokens", limit.limit_tokens, before.limit_tokens if before else None, figures.allocated_tokens,
             figures.spent_tokens + state.held_tokens),
        ):  # fmt: skip
            lowest = allocated + max(used, 0)
            if want is None or allocated <= 0 or want >= lowest or (had is not None and want >= had):
                continue
            if unit == "usd":
                given, floor = f"{human_usd(allocated)} allocated", f'limit_usd="{format_usd(lowest)}"'
            else:
                given, floor = f"{allocated} tokens allocated", f"limit_tokens={lowest}"
            raise InsufficientFundsError(
                f"'{budget_id}' has {given} to its open children in its {limit.period} limit; lowering it below "
                f"{floor} (with what it spent and holds) would let them overspend it: ask for at least that, "
                "or shrink or close the children first"
            )


def _check_carving(snapshot: Snapshot, parent: str, budget_id: str, config: BudgetConfig) -> None:
    """Refuse a child limit whose unspent part would exceed what the parent's limit of that period has left."""
    parent_state = snapshot.budgets[parent]
    child = snapshot.budgets.get(budget_id)
    for limit in config.limits:
        parent_limit = parent_state.config.limit_for(limit.period)
        if parent_limit is None:
            continue
        available = fig.figures(snapshot, parent, parent_limit)
        old_nanos, old_tokens = fig.unspent(child, limit.period) if child else (0, 0)
        used = child.usage[limit.period] if child else None
        held = (child.held_nanos, child.held_tokens) if child else (0, 0)
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
        ):
            if want is None or have is None:
                continue
            free = have + old
            new_unspent = max(0, want - used_now)
            if new_unspent > old and new_unspent > free:
                raise InsufficientFundsError(_carving_message(parent, budget_id, limit.period, free, used_now, unit))


def _carving_message(parent: str, budget_id: str, period: Period, free: int, used: int, unit: str) -> str:
    free, most = max(free, 0), max(free, 0) + used
    if unit == "usd":
        has, ask = human_usd(free), f'limit_usd="{format_usd(most)}"'
    else:
        has, ask = f"{free} tokens", f"limit_tokens={most}"
    return (
        f"'{parent}' has only {has} available in its {period} limit for '{budget_id}'; "
        f"ask for at most {ask}, or raise the limit of '{parent}' first"
    )


def _with_config(snapshot: Snapshot, config: BudgetConfig) -> Snapshot:
    state = snapshot.budgets.get(config.budget_id) or BudgetState(config, {p: WindowUsage() for p in Period})
    budgets = {**snapshot.budgets, config.budget_id: dataclasses.replace(state, config=config)}
    return dataclasses.replace(snapshot, budgets=budgets)


def _limits(
    old: BudgetConfig | None,
    period: Period,
    limit_nanos: int | None,
    limit_tokens: int | None,
    extras: list[Limit] | None,
) -> tuple[Limit, ...]:
    if limit_nanos is not None or limit_tokens is not None:
        primary: Limit | None = Limit(period, limit_nanos, limit_tokens)
    elif old is not None:
        kept = old.limit_for(old.period)
        primary = Limit(period, kept.limit_nanos, kept.limit_tokens) if kept else None
    else:
        primary = None
    if extras is None:
        extras = [lim for lim in (old.limits if old else ()) if lim.period is not (old.period if old else period)]
    extras = [lim for lim in extras if lim.period is not period]
    periods = [lim.period for lim in extras]
    if len(set(periods)) != len(periods):
        raise InvalidInputError("extra_limits has two limits of the same period; give at most one per period")
    return tuple([primary] if primary else []) + tuple(extras)


def _extra_limit(raw: Mapping[str, Any]) -> Limit:
    if not isinstance(raw, Mapping) or "period" not in raw:
        raise InvalidInputError('each extra limit is an object like {"period": "monthly", "limit_usd": "60"}')
    unknown = set(raw) - {"period", "limit_usd", "limit_tokens"}
    if unknown:
        raise InvalidInputError(
            f"extra limit has unknown fields {sorted(unknown)}; use period, limit_usd, limit_tokens"
        )
    nanos = (
        to_nanos(parse_usd(raw["limit_usd"], "extra_limits.limit_usd")) if raw.get("limit_usd") is not None else None
    )
    tokens = (
        parse_tokens(raw["limit_tokens"], "extra_limits.limit_tokens") if raw.get("limit_tokens") is not None else None
    )
    if nanos is None and tokens is None:
        raise InvalidInputError("each extra limit needs limit_usd and/or limit_tokens")
    return Limit(_choice(Period, raw["period"], "period"), nanos, tokens)


def _limit_json(limit: Limit) -> dict[str, Any]:
    return {"period": limit.period.value, "limit_nanos": limit.limit_nanos, "limit_tokens": limit.limit_tokens}


E = TypeVar("E", bound=StrEnum)


def _choice(kind: type[E], value: object, field: str) -> E:
    """One value of a fixed vocabulary, or an error listing the allowed ones."""
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(repr(str(v)) for v in kind)
        raise InvalidInputError(f"{field} {str(value)[:40]!r} is unknown; use one of {allowed}") from None


def _thresholds(values: Sequence[object]) -> tuple[Decimal, ...]:
    if len(values) > MAX_THRESHOLDS:
        raise InvalidInputError(f"alert_at has {len(values)} thresholds; give at most {MAX_THRESHOLDS}")
    parsed = sorted({parse_usd(v, "alert_at") for v in values})
    if not parsed or any(v <= 0 or v > 10 for v in parsed):
        raise InvalidInputError("alert_at takes fractions of a limit between 0 and 10, e.g. [0.5, 0.8, 1.0]")
    return tuple(v.normalize() for v in parsed)


def _ttl(ttl_seconds: int | None) -> timedelta:
    if ttl_seconds is None:
        return timedelta(seconds=DEFAULT_TTL_SECONDS)
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInputError(f"ttl_seconds must be a whole number from 1 to {MAX_TTL_SECONDS}")
    return timedelta(seconds=ttl_seconds)


def _text(value: object, field: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string")
    if len(value) > limit:
        raise InvalidInputError(f"{field} is {len(value)} characters long; at most {limit} allowed")
    return value


def _optional_text(value: object, field: str) -> str | None:
    return None if value is None else _text(value, field, limit=100)


def _rate(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


def _metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError("metadata must be a JSON object")
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInputError("metadata must be plain JSON (strings, numbers, lists, objects)") from None
    if len(text) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is {len(text)} bytes as JSON; at most {MAX_METADATA_BYTES} allowed")
    return dict(json.loads(text))


def _hash(**request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _stored(request_hash: str, result: ChargeResult) -> StoredResult:
    return StoredResult(request_hash, result.model_dump_json())


def _replay(key: str, stored_hash: str, request_hash: str, result_json: str) -> tuple[ChargeResult, Writes]:
    if stored_hash != request_hash:
        raise IdempotencyConflictError(
            f"idempotency_key {key!r} was already used for a different charge; use a new key for a new charge, "
            "or repeat the first call's arguments exactly to get its result"
        )
    first = ChargeResult.model_validate_json(result_json)
    return first.model_copy(update={"duplicate": True}), Writes()


def _usd(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd(nanos)
