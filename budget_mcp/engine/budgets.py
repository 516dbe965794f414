"""BudgetEngine: check, reserve, charge, allocate, release and adjust, atomically, on any Ledger.

Every operation checks its input first (domain.inputs), prices the call (outside any lock), then
hands the ledger a pure `decide` function (engine.rules) that sees a snapshot taken under the write
lock. Nothing is written unless `decide` returns, so a refused request changes nothing.
"""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from budget_mcp.domain import inputs
from budget_mcp.domain.ids import is_within, parent_of, path_of, validate_budget_id, validate_reservation_id
from budget_mcp.domain.inputs import MAX_NAME, ChargeRequest
from budget_mcp.domain.money import format_usd, human_amount, human_usd, parse_tokens, parse_usd, to_nanos
from budget_mcp.domain.records import (
    MAX_SEQ,
    AlertRecord,
    Answer,
    Approval,
    BudgetConfig,
    Decision,
    DeliveryAttempt,
    Entry,
    EntryKind,
    Limit,
    TokenCounts,
)
from budget_mcp.domain.results import (
    AdjustResult,
    AllocationStatus,
    ApprovalNeeded,
    BudgetNode,
    BudgetStatus,
    ChargeResult,
    CheckResult,
    EstimateResult,
    LedgerListing,
    RecommendResult,
    ReleaseResult,
    SpendReport,
)
from budget_mcp.domain.windows import Rolling, parse_period, window, zone
from budget_mcp.engine import figures as fig
from budget_mcp.engine import past, recommend, rules
from budget_mcp.engine.recommend import Requirements
from budget_mcp.engine.reports import build_report, ledger_entry, with_filters
from budget_mcp.errors import InvalidInputError, UnknownModelError
from budget_mcp.ledger import Ledger, LogPage, Position, Scope, Snapshot, SpendRow, Writes
from budget_mcp.pricing import Capability, PriceCatalog, PricedCost, Tier, canonical_provider

Clock = Callable[[], datetime]
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
        snapshot = await self.ledger.read(Scope(subtree=prefix) if prefix else Scope(everything=True), self.clock())
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
            start, end = window(parse_period(status.period), status.timezone, at.astimezone(UTC))
        rows = await self.ledger.spend(budget_id, start, end)
        alerts = await self.ledger.alerts(budget_id, since=start)
        of_filtered = {a.budget_id for a in alerts if a.filtered_key}  # their limits' models and providers
        statuses = {b: status if b == budget_id else await self.status(b) for b in of_filtered}
        alerts = [with_filters(a, statuses) for a in alerts]
        deliveries = await self.ledger.deliveries(budget_id, since=start)
        approvals = await self.ledger.entries(
            budget_id, limit=MAX_LEDGER_ENTRIES, since=start, kind=EntryKind.APPROVAL
        )  # fmt: skip
        return build_report(
            status, rows, alerts, deliveries, [a for a in approvals if end is None or a.at < end],
            window_start=start, window_end=end, now=now,
        )  # fmt: skip

    async def ledger_entries(self, budget_id: str, *, limit: int = 100, before: int | None = None) -> LedgerListing:
        """The latest entries of a budget and its descendants, newest first (at most `limit`, up to 1000); with
        `before`, those with a smaller `seq` (the next page: `before` = the last entry's seq)."""
        await self.status(budget_id)
        if not 1 <= limit <= MAX_LEDGER_ENTRIES:
            raise InvalidInputError(f"limit must be between 1 and {MAX_LEDGER_ENTRIES}, got {limit}")
        if before is not None and not 1 <= before <= MAX_SEQ:
            raise InvalidInputError(
                f"before must be an entry's seq, from 1 to {MAX_SEQ}, got {before}; pass the seq of the last entry "
                "of the previous page"
            )
        entries = await self.ledger.entries(budget_id, limit=limit, before=before)
        return LedgerListing(
            budget_id=budget_id, limit=limit, before=before, entries=[ledger_entry(e) for e in entries]
        )

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
        return await self.ledger.reconcile(self.clock())

    # ---- the entry log in commit order (the event stream) ----

    async def log_position(self, seq: int | None = None) -> Position:
        """Where entry `seq` is in commit order; with None, after the newest entry that can be read in order now."""
        return await self.ledger.log_position(seq)

    async def entries_after(
        self, position: Position, *, prefixes: Sequence[str] | None = None, limit: int = 500
    ) -> LogPage:
        """Up to `limit` entries after `position` in commit order (under `prefixes`, if given), with their alerts."""
        return await self.ledger.entries_after(position, prefixes=prefixes, limit=limit)

    async def statuses(self, budget_ids: Iterable[str]) -> dict[str, BudgetStatus]:
        """The status of each of these budgets that exists, read in one snapshot."""
        wanted = tuple(sorted(set(budget_ids)))
        if not wanted:
            return {}
        snapshot = await self.ledger.read(Scope(budget_ids=wanted), self.clock())
        return {b: fig.status(snapshot, b) for b in wanted if b in snapshot.budgets}

    def on_ledger_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another server may have appended entries (PostgreSQL's notices; SQLite: never)."""
        self.ledger.on_change(callback)

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
        approval: Approval | None = None,
    ) -> CheckResult:
        """May this much be spent? With `reserve`, atomically hold it on the whole path until settled or expired.

        A check only `ask` limits would deny is denied unless `approval` approves it; an approval is recorded
        (with the hold, in one transaction) only when the check really goes over.
        """
        found = await self._check(
            budget_id, estimated_cost_usd, model, provider, input_tokens, max_output_tokens, reserve, ttl_seconds,
            approval, can_ask=False,
        )  # fmt: skip
        assert isinstance(found, CheckResult)
        return found

    async def check_or_ask(
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
    ) -> CheckResult | ApprovalNeeded:
        """`check`, for a caller that can ask a person: a check only `ask` limits would deny comes back as the
        question to ask (nothing is written); ask, then `check` again with the `approval`."""
        return await self._check(
            budget_id, estimated_cost_usd, model, provider, input_tokens, max_output_tokens, reserve, ttl_seconds,
            None, can_ask=True,
        )  # fmt: skip

    async def _check(
        self, budget_id: str, estimated_cost_usd: object, model: str | None, provider: str | None,
        input_tokens: int | None, max_output_tokens: int | None, reserve: bool, ttl_seconds: int | None,
        approval: Approval | None, *, can_ask: bool,
    ) -> CheckResult | ApprovalNeeded:  # fmt: skip
        validate_budget_id(budget_id)
        path, ttl = path_of(budget_id), inputs.ttl(ttl_seconds)
        provider = inputs.optional_text(provider, "provider")
        tokens = TokenCounts(
            input=parse_tokens(input_tokens or 0, "input_tokens"),
            output=parse_tokens(max_output_tokens or 0, "max_output_tokens"),
        )
        output_given = max_output_tokens is not None
        cost_nanos, tokens, source, notes = self._price_check(
            estimated_cost_usd, model, provider, tokens, output_given=output_given
        )
        request = rules.CheckRequest(path, cost_nanos, tokens, source, model, provider, reserve, ttl)
        soft: list[Snapshot] = []  # the snapshot a soft check went over on, to suggest a model that fits it

        def decide(snapshot: Snapshot) -> tuple[CheckResult | ApprovalNeeded, Writes]:
            soft.clear()
            if model and rules.soft_exceeded(snapshot, path, cost_nanos, tokens.total):
                # A copy: the ledger may go on to update what it loaded, and the suggestion is priced after the lock.
                soft.append(dataclasses.replace(snapshot, budgets=dict(snapshot.budgets)))
            return rules.check(snapshot, request, approval, can_ask)

        scope = Scope(budget_ids=path)
        approved = approval is not None and approval.answer is Answer.APPROVED
        if reserve or approved:
            # A hold alone need not wait for the disk (a machine crash ends the call it was for); an approval does.
            result = await self.ledger.write(scope, self.clock(), rules.expiring(decide), durable=approved)
        else:
            result = decide(await self.ledger.read(scope, self.clock()))[0]
        if not isinstance(result, CheckResult):
            return result
        if soft and result.allowed:
            result = self._suggest(result, soft[0], request, output_given)
        return result.model_copy(update={"warnings": [*notes, *result.warnings]}) if notes else result

    def _suggest(
        self, answer: CheckResult, snapshot: Snapshot, request: rules.CheckRequest, output_given: bool
    ) -> CheckResult:
        """A `soft` check over its limit, with the cheapest model of the same or a higher tier that fits what remains
        (each priced for the same call: the same tokens, or its own output limit when none was given)."""
        assert request.model is not None
        named = self.prices.facts(request.model, request.provider)
        if named is None:
            note = f"no cheaper model suggested: {request.model} has no quality tier in the catalog to match"
            return answer.model_copy(update={"warnings": [*answer.warnings, note]})
        options = []
        for facts in self.prices.candidates():
            sizes = request.tokens if output_given else dataclasses.replace(
                request.tokens, output=facts.max_output_tokens
            )  # fmt: skip
            if facts == named or facts.tier.rank < named.tier.rank or not facts.fits(sizes.input, sizes.output):
                continue
            with contextlib.suppress(UnknownModelError):
                priced = rules.within_bounds(self.prices.cost(facts.model, facts.provider, sizes))
                options.append((to_nanos(priced.cost_usd), sizes.total, facts))
        options.sort(key=lambda o: (o[0], -o[2].tier.rank, o[2].provider, o[2].model))
        chosen = rules.cheapest_fitting(snapshot, request.path, [(cost, tokens) for cost, tokens, _ in options])
        if chosen is None:
            note = (
                f"no cheaper model suggested: no model of the {named.tier} tier or above fits what remains "
                f"({answer.remaining_usd and human_amount(answer.remaining_usd) or 'nothing'})"
            )
            return answer.model_copy(update={"warnings": [*answer.warnings, note]})
        cost, _, facts = options[chosen]
        note = (
            f"suggested {facts.provider}/{facts.model} ({facts.tier} tier) at {human_usd(cost)}, which fits what "
            "remains"
        )
        return answer.model_copy(
            update={"suggested_model": facts.model, "suggested_cost_usd": format_usd(cost),
                    "warnings": [*answer.warnings, note]}
        )  # fmt: skip

    def _price_check(
        self, estimated_cost_usd: object, model: str | None, provider: str | None, tokens: TokenCounts, *,
        output_given: bool,
    ) -> tuple[int, TokenCounts, str | None, list[str]]:  # fmt: skip
        """The cost a check asks about, the tokens it counts (the model's output limit if none was given), the
        price's source and notes on what was assumed."""
        if estimated_cost_usd is not None:
            return to_nanos(parse_usd(estimated_cost_usd, "estimated_cost_usd")), tokens, None, []
        if not model:
            if tokens.total:  # a budget with token limits only needs no price
                return 0, tokens, None, ["no model or estimated_cost_usd given: only token limits were checked"]
            raise InvalidInputError(
                "give estimated_cost_usd, or model with input_tokens and max_output_tokens, so the cost can be checked"
            )
        model = inputs.text(model, "model", limit=MAX_NAME)
        notes = []
        facts = self.prices.facts(model, provider)
        if not output_given and facts is not None:
            # The worst case: the model may write up to its output limit.
            tokens = dataclasses.replace(tokens, output=facts.max_output_tokens)
            notes.append(
                f"max_output_tokens not given: priced the worst case of {facts.max_output_tokens} output tokens "
                f"({facts.model}'s limit); pass max_output_tokens for a tighter estimate"
            )
        priced = rules.within_bounds(self.prices.cost(model, provider, tokens))
        return to_nanos(priced.cost_usd), tokens, f"{priced.provider}/{priced.model} ({priced.source})", notes

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
        name = inputs.text(model, "model", limit=MAX_NAME)
        priced = self.prices.cost(name, inputs.optional_text(provider, "provider"), tokens)
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

    def describe_prices(self) -> dict[str, Any]:
        """The catalog in use, as the prices resource shows it."""
        return self.prices.describe()

    def reload_prices(self) -> None:
        """Read the price sources' cached copies again (after a refresh fetched new ones)."""
        self.prices.reload()

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
        current_model: str | None = None,
    ) -> RecommendResult:
        """Models that meet the needs, tier, providers and call size; fitting the budget first, then cheapest.

        With `current_model`, each recommendation says what it saves against that model for the same tokens.
        """
        task = inputs.text(task, "task")
        if not 1 <= limit <= recommend.MAX_RESULTS:
            raise InvalidInputError(f"limit must be between 1 and {recommend.MAX_RESULTS}, got {limit}")
        wanted, assumptions = self._requirements(task, input_tokens, output_tokens, needs, min_tier, providers)
        sizes = TokenCounts(input=wanted.input_tokens, output=wanted.output_tokens)
        current = None
        if current_model is not None:
            current = rules.within_bounds(
                self.prices.cost(inputs.text(current_model, "current_model", limit=MAX_NAME), None, sizes)
            )
            assumptions.append(
                f"savings_usd: against {current.provider}/{current.model} at {human_usd(to_nanos(current.cost_usd))} "
                "for the same tokens"
            )
        priced = []
        for facts in self.prices.candidates():
            if wanted.admits(facts):
                with contextlib.suppress(UnknownModelError):
                    priced.append((facts, self.prices.cost(facts.model, facts.provider, sizes)))
        judge, remaining = None, None
        if budget_id is not None:
            validate_budget_id(budget_id)
            path = path_of(budget_id)
            snapshot = await self.ledger.read(Scope(budget_ids=path), self.clock())
            remaining = rules.evaluate(snapshot, path, 0, 0, None).remaining_usd

            def judge(cost: PricedCost) -> tuple[bool, str]:
                verdict = rules.evaluate(snapshot, path, to_nanos(cost.cost_usd), sizes.total, None)
                return verdict.decision is Decision.ALLOW, verdict.reason.removeprefix("allowed with a warning: ")

        ranked = recommend.rank(priced, judge, limit, current)
        advice = None
        if ranked and not ranked[0].fits_budget:
            advice = (
                f"no {wanted.min_tier}-tier model fits what {budget_id} allows; the cheapest needs "
                f"{human_amount(ranked[0].estimated_cost_usd)}: lower min_tier, shrink the call, or allocate more"
            )
        return RecommendResult(
            recommendations=ranked, budget_id=budget_id, remaining_usd=remaining, input_tokens=sizes.input,
            output_tokens=sizes.output, needs=sorted(wanted.needs), min_tier=wanted.min_tier,
            assumptions=assumptions, considered=len(priced), advice=advice,
        )  # fmt: skip

    def _requirements(
        self,
        task: str,
        input_tokens: int | None,
        output_tokens: int | None,
        needs: Sequence[str] | None,
        min_tier: str | None,
        providers: Sequence[str] | None,
    ) -> tuple[Requirements, list[str]]:
        """What a recommended model must do and fit, with what was assumed or inferred from the task."""
        assumptions = []
        if input_tokens is None:
            assumptions.append(f"input_tokens not given: assumed {recommend.DEFAULT_INPUT_TOKENS}")
        if output_tokens is None:
            assumptions.append(f"output_tokens not given: assumed {recommend.DEFAULT_OUTPUT_TOKENS}")
        sizes = (
            parse_tokens(recommend.DEFAULT_INPUT_TOKENS if input_tokens is None else input_tokens, "input_tokens"),
            parse_tokens(recommend.DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens, "output_tokens"),
        )
        chosen_needs, tier, inferred = recommend.infer(
            task, None if needs is None else [inputs.choice(Capability, n, "needs") for n in needs],
            None if min_tier is None else inputs.choice(Tier, min_tier, "min_tier"),
        )  # fmt: skip
        allowed = frozenset(canonical_provider(inputs.text(p, "providers")) for p in providers) if providers else None
        wanted = Requirements(frozenset(chosen_needs), tier, allowed, sizes[0], sizes[1])
        return wanted, assumptions + inferred

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
        request = inputs.charge_request(
            budget_id, model=model, provider=provider, cost_usd=cost_usd, reservation_id=reservation_id,
            idempotency_key_text=idempotency_key, key_namespace=key_namespace, metadata_value=metadata,
            tokens={"input": input_tokens, "output": output_tokens, "cache_read": cache_read_tokens,
                    "cache_write": cache_write_tokens, "reasoning": reasoning_tokens},
        )  # fmt: skip
        price = self._price_charge(request)
        scope = Scope(budget_ids=request.path, reservation_id=request.reservation_id, idempotency_key=request.key)
        return await self.ledger.write(
            scope, self.clock(), rules.expiring(lambda s: rules.charge(s, request, price, visible))
        )

    def _price_charge(self, request: ChargeRequest) -> rules.ChargePrice:
        """The cost of a charge: as given, else from the catalog; unknown (charged at the hold) only with one."""
        if request.cost_usd is not None:
            return rules.ChargePrice(to_nanos(request.cost_usd), "cost_usd", request.model, request.provider)
        if not request.model:
            if request.reservation_id is None:
                raise InvalidInputError("give cost_usd, or model with token counts, so the charge can be priced")
            return rules.ChargePrice(None, None, None, request.provider, "no model or cost_usd given")
        try:
            priced = rules.within_bounds(self.prices.cost(request.model, request.provider, request.tokens))
        except UnknownModelError as exc:
            if request.reservation_id is None:
                raise
            return rules.ChargePrice(None, None, request.model, request.provider, str(exc))
        source = f"{priced.provider}/{priced.model} ({priced.source})"
        return rules.ChargePrice(to_nanos(priced.cost_usd), source, priced.model, priced.provider)

    async def adjust(self, budget_id: str, amount_usd: object, reason: str) -> AdjustResult:
        """Append a correction entry (negative for a refund); it counts as spend in the current window."""
        validate_budget_id(budget_id)
        path = path_of(budget_id)
        amount_nanos = to_nanos(parse_usd(amount_usd, "amount_usd", allow_negative=True))
        why = inputs.text(reason, "reason")
        return await self.ledger.write(
            Scope(budget_ids=path), self.clock(), rules.expiring(lambda s: rules.adjustment(s, path, amount_nanos, why))
        )

    async def record_past_charges(self, entries: Sequence[Entry]) -> past.PastCharges:
        """Store charges that happened earlier, each in the windows of its own `at` (imports; the tools charge now).

        Entries whose id the ledger holds already are left out, so importing twice adds nothing. Alerts fire
        only for windows still current. An entry dated in the future, or of a budget that does not exist,
        refuses the whole batch: nothing is written. Each budget tree's charges go in one write.
        """
        now = self.clock()
        for entry in entries:
            past.check(entry, now)
        new = past.fresh(entries, await self.ledger.known_entries([e.entry_id for e in entries]) if entries else set())
        if new:  # every budget is there before any tree's write, so a batch is refused whole, not in part
            known = await self.ledger.read(Scope(budget_ids=past.budgets_of(new)), now)
            for budget_id in {e.budget_id for e in new}:
                fig.state_of(known, budget_id)
        trees: dict[str, list[Entry]] = {}
        for entry in new:
            trees.setdefault(entry.budget_id.split("/")[0], []).append(entry)
        alerts: list[AlertRecord] = []
        for tree in trees.values():
            stored = await self.ledger.write(
                Scope(budget_ids=past.budgets_of(tree)), now, functools.partial(past.charges, entries=tree)
            )
            alerts.extend(stored.alerts)
        return past.PastCharges(len(new), len(entries) - len(new), tuple(alerts), frozenset(e.entry_id for e in new))

    async def known_entries(self, entry_ids: Sequence[str]) -> set[str]:
        """Those of `entry_ids` the ledger holds already (what a dry run of an import would skip)."""
        return await self.ledger.known_entries(entry_ids) if entry_ids else set()

    async def spend(self, budget_id: str, start: datetime, end: datetime | None) -> list[SpendRow]:
        """Spend of a budget and its descendants in [start, end), per budget, model and 15 minutes."""
        validate_budget_id(budget_id)
        return await self.ledger.spend(budget_id, start, end)

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        """Store one attempt to deliver an alert to the webhook."""
        await self.ledger.record_delivery(attempt)

    # ---- budgets ----

    async def allocate(
        self,
        budget_id: str,
        *,
        limit_usd: object = None,
        limit_tokens: int | None = None,
        limit_calls: int | None = None,
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
        declared: str | None = None,
        expires_at: object = None,
        ttl_seconds: object = None,
    ) -> AllocationStatus:
        """Create or resize a budget; a child's limits are carved out of its parent's limits of the same period.

        On a resize, fields not given keep their values. Raises InsufficientFundsError when the parent
        has less available than the child's limit needs, saying how much it has. A new budget records
        `owner`; `guard(old, new)` runs in the transaction, before anything is answered or stored, and may refuse.
        With `declared` (a budgets-file entry's digest), nothing changes if that entry was the last applied.
        With `expires_at` (ISO 8601) or `ttl_seconds` the budget closes itself then (see `close_expired`).
        """
        now = self.clock()
        request = inputs.allocation_request(
            budget_id, limit_usd=limit_usd, limit_tokens=limit_tokens, limit_calls=limit_calls, period=period,
            extra_limits=extra_limits,
            per_call_usd=per_call_usd, enforcement=enforcement, alert_at=alert_at, timezone=timezone,
            description=description, metadata_value=metadata, expires_at=inputs.expiry(expires_at, ttl_seconds, now),
        )  # fmt: skip
        status = await self.ledger.write(
            Scope(budget_ids=request.path),
            now,
            rules.expiring(lambda s: rules.allocation(s, request, owner, guard, declared)),
        )
        if isinstance(request.period, Rolling) or any(lim.keeps_own for lim in request.extra_limits or ()):
            # A limit with running totals of its own starts from the spend already in its window, which the
            # ledger filled in as it stored the budget: the status decided before the write could not hold it.
            status = AllocationStatus(**dict(await self.status(budget_id)), expires_at=status.expires_at)
        warnings = self._unknown_providers(request.extra_limits or ())
        return status.model_copy(update={"warnings": warnings}) if warnings else status

    async def close_expired(self) -> list[str]:
        """Close every sub-budget past its `expires_at` (each write to a tree does so too); the budgets closed."""
        now = self.clock()
        closed: list[str] = []
        for budget_id in await self.ledger.expired_budgets(now):
            closed += await self.ledger.write(
                Scope(budget_ids=path_of(budget_id)), now,
                rules.sweep,
            )  # fmt: skip
        return closed

    def _unknown_providers(self, limits: Sequence[Limit]) -> list[str]:
        """A warning per provider of a filtered limit that no model of the catalog is from (allowed: it may be new)."""
        named = sorted({p for lim in limits for p in lim.providers})
        if not named:
            return []
        known = {facts.provider.lower() for facts in self.prices.candidates()}
        return [
            f"provider {p!r} is not one the price catalog knows (e.g. {', '.join(sorted(known)[:4])}); "
            "its limit counts only charges recorded with that exact provider"
            for p in named
            if p not in known
        ]

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
        now = self.clock()
        if reservation_id is not None:
            held = validate_reservation_id(reservation_id)
            return await self.ledger.write(
                Scope(reservation_id=held), now, lambda s: rules.release_hold(s, held, visible)
            )
        assert budget_id is not None
        closing = validate_budget_id(budget_id)
        return await self.ledger.write(
            Scope(budget_ids=path_of(closing)), now, rules.expiring(lambda s: rules.close(s, closing))
        )


def _rate(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"
