"""Rows shared by the storage backends: entries and alerts to and from rows, running-total deltas, reconcile."""

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from budget_mcp.domain.accounting import FiltersOf, TotalKey, filters, period_of, spend_windows
from budget_mcp.domain.ids import path_of
from budget_mcp.domain.money import MAX_TOTAL
from budget_mcp.domain.records import (
    SPEND_KINDS,
    AlertRecord,
    BudgetConfig,
    DeliveryAttempt,
    Entry,
    EntryKind,
    HeldFor,
    Limit,
    TokenCounts,
)
from budget_mcp.domain.windows import AnyPeriod, Period, Rolling, window
from budget_mcp.ledger.base import BudgetState, Held, LoggedEntry, LogPage, Position, SpendRow, WindowUsage
from budget_mcp.ledger.codec import from_us, limit_from_json, to_us

logger = logging.getLogger(__name__)
_MINUTE_US = 60 * 1_000_000
BUCKETS_KEPT_EXTRA_SECONDS = 86_400  # rolling buckets outlive their window by a day, for a clock stepped back
ENTRY_COLUMNS = (
    "entry_id, kind, budget_id, at_us, cost_nanos, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, reasoning_tokens, model, provider, price_source, reservation_id, idempotency_key, metadata"
)


def total_deltas(
    entries: Iterable[Entry], timezone_of: Callable[[str], str], filters_of: FiltersOf | None = None
) -> dict[TotalKey, list[int]]:
    """(spent nanos, tokens, calls) to add to each running total for these entries."""
    deltas: dict[TotalKey, list[int]] = {}
    # Every window starts on a minute boundary (calendar ones on 15 minutes, as timezone offsets are multiples of
    # it; rolling buckets are a minute or an hour), so entries of one budget in one minute (for one model and
    # provider, as filtered limits count them) move the same totals: an import of many entries finds them once.
    found: dict[tuple[str, int, str | None, str | None], list[TotalKey]] = {}
    for entry in entries:
        if entry.kind not in SPEND_KINDS:
            continue
        bucket = (entry.budget_id, to_us(entry.at) // _MINUTE_US, entry.model, entry.provider)
        keys = found.get(bucket)
        if keys is None:
            keys = found[bucket] = list(spend_windows(entry, timezone_of, filters_of))
        cost, tokens, calls = entry.cost_nanos, entry.tokens.total, 1 if entry.kind is EntryKind.CHARGE else 0
        for key in keys:
            delta = deltas.get(key)
            if delta is None:
                deltas[key] = [cost, tokens, calls]
            else:
                delta[0] += cost
                delta[1] += tokens
                delta[2] += calls
    return deltas


class Replay:
    """Running totals recomputed from the entry log in order, for reconcile, as the writes keep them: a limit
    with totals of its own counts the matching spend made while it is in place, and, from when it was last put
    in place (`allocations`, every allocate entry in log order), the spend already in its window then."""

    def __init__(self, timezone_of: Callable[[str], str], allocations: Iterable[Entry]) -> None:
        self.timezone_of = timezone_of
        self.totals: dict[TotalKey, list[int]] = {}
        in_place: dict[str, dict[str, tuple[Limit, str, int]]] = {}  # budget -> key -> (limit, entry, start)
        for entry in allocations:
            limits = filters([limit_from_json(x) for x in entry.metadata.get("limits", ())])
            before = in_place.get(entry.budget_id, {})
            start = {lim.key: counting_start_us(lim, timezone_of(entry.budget_id), entry.at) for lim in limits}
            in_place[entry.budget_id] = {
                lim.key: before[lim.key] if lim.key in before else (lim, entry.entry_id, start[lim.key])
                for lim in limits
            }
        self._limits = {b: list(kept.values()) for b, kept in in_place.items()}
        self._starting = {entry_id for kept in in_place.values() for _, entry_id, _ in kept.values()}
        self._started: set[str] = set()

    def add(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.kind is EntryKind.ALLOCATE:
                if entry.entry_id in self._starting:
                    self._started.add(entry.entry_id)
            else:
                at_us = to_us(entry.at)
                add_deltas(
                    self.totals, total_deltas([entry], self.timezone_of, functools.partial(self._counting, at_us=at_us))
                )

    def _counting(self, budget_id: str, at_us: int) -> tuple[Limit, ...]:
        """The limits (as they are now) of `budget_id` that an entry at `at_us`, at this point of the log, moves."""
        return tuple(
            lim
            for lim, entry_id, start in self._limits.get(budget_id, ())
            if entry_id in self._started or at_us >= start
        )


def _only(budget_id: str, limits: tuple[Limit, ...], of: str) -> tuple[Limit, ...]:
    return limits if of == budget_id else ()


def own_limit_changes(old: BudgetConfig | None, new: BudgetConfig) -> tuple[tuple[Limit, ...], tuple[str, ...]]:
    """The limits with totals of their own that `new` puts in place, and the keys of those `old` had that it
    drops: the running totals a config write must fill from the entries, and those it must delete."""
    before = {lim.key for lim in filters(old.limits)} if old is not None else set()
    after = filters(new.limits)
    return tuple(lim for lim in after if lim.key not in before), tuple(sorted(before - {lim.key for lim in after}))


def counting_start_us(limit: Limit, timezone: str, at: datetime) -> int:
    """The first instant whose spend a limit put in place at `at` counts: the start of its window then (for a
    rolling one, of the oldest bucket it counts)."""
    return to_us(window(limit.period, timezone, at)[0])


def filled_totals(
    budget_id: str, limits: Sequence[Limit], timezone: str, at: datetime, entries: Iterable[Entry]
) -> list[tuple[Any, ...]]:
    """Rows of the running totals of `limits`, put in place on `budget_id` at `at`, from the spend `entries` of
    its subtree already in their windows (a sum beyond the ledger's range is kept at its bound)."""
    timed = [(to_us(entry.at), entry) for entry in entries]
    sums: dict[TotalKey, list[int]] = {}
    for lim in limits:  # one pass per limit, so entries of one minute find their totals once (`total_deltas`)
        start = counting_start_us(lim, timezone, at)
        inside = [entry for at_us, entry in timed if at_us >= start]
        deltas = total_deltas(inside, lambda _: timezone, functools.partial(_only, budget_id, (lim,)))
        sums.update({k: d for k, d in deltas.items() if k[0] == budget_id and k[1] == lim.key})
    return bounded_rows(sums)


def bounded_rows(totals: Mapping[TotalKey, list[int]]) -> list[tuple[Any, ...]]:
    """Rows (budget, period, window, nanos, tokens, calls) of these running totals; a sum beyond the ledger's
    range is kept at its bound, and logged."""
    rows = []
    for (budget_id, period, start), sums in totals.items():
        if any(abs(n) > MAX_TOTAL for n in sums):
            logger.warning(
                "budget %s holds %s spend beyond the ledger's range (entries sum to %s nano-USD, %s tokens); "
                "kept at the bound: correct it with `budget-mcp adjust`", budget_id, period, *sums[:2],
            )  # fmt: skip
        rows.append((budget_id, str(period), start, *(max(-MAX_TOTAL, min(MAX_TOTAL, n)) for n in sums)))
    return rows


REPLAYED_KINDS = "('charge', 'adjust', 'allocate')"
SPEND_KIND_TEXT = "('charge', 'adjust')"


def add_deltas(into: dict[TotalKey, list[int]], deltas: dict[TotalKey, list[int]]) -> None:
    """Add `deltas` into the running sums of `into`."""
    for key, delta in deltas.items():
        totals = into.setdefault(key, [0, 0, 0])
        for i in range(3):
            totals[i] += delta[i]


def stale_buckets(configs: Iterable[tuple[str, BudgetConfig]], now: datetime) -> list[tuple[str, str, int]]:
    """(budget, rolling limit key, first bucket start kept) for each rolling limit of these budgets: buckets
    older than that are outside the window at `now` (and at a day before it), so a backend may delete them."""
    return [
        (budget_id, lim.key, lim.rolling.first_bucket(now) - BUCKETS_KEPT_EXTRA_SECONDS)
        for budget_id, config in configs
        for lim in config.limits
        if lim.rolling is not None
    ]


def path_configs(budget_ids: Iterable[str], budgets: Mapping[str, BudgetState]) -> dict[str, BudgetConfig]:
    """The config of every budget on the paths of `budget_ids` that `budgets` holds (what their writes reach)."""
    return {b: budgets[b].config for budget_id in budget_ids for b in path_of(budget_id) if b in budgets}


def _pruned(key: TotalKey, now: datetime) -> bool:
    """Whether a running total may have been deleted as a rolling bucket outside every window (`stale_buckets`):
    any bucket outside the window at `now`, so a server whose clock ran up to a day ahead when it pruned is no
    difference."""
    period = period_of(key[1])
    return isinstance(period, Rolling) and key[2] < period.first_bucket(now)


def differences(
    expected: dict[TotalKey, list[int]], rows: Iterable[Sequence[Any]], now: datetime | None = None
) -> list[str]:
    """Each running total (rows of budget, period, window, nanos, tokens, calls) that the entries disagree with;
    rolling buckets that may have been pruned at `now` (default: the wall clock) are not compared."""
    now = now or datetime.now(UTC)
    actual = {(b, p, k): [n, t, c] for b, p, k, n, t, c in rows}
    found = []
    for key in sorted(expected.keys() | actual.keys()):
        if _pruned(key, now):
            continue
        want, have = expected.get(key, [0, 0, 0]), actual.get(key, [0, 0, 0])
        if want != have:
            found.append(f"{key[0]} {key[1]} window {key[2]}: entries give {want}, totals hold {have}")
    return found


def alert_to_row(a: AlertRecord) -> tuple[Any, ...]:
    """An alert as the alerts table stores it (in column order: schema steps added the entry that crossed it,
    then a filtered limit's models and providers, as JSON arrays or NULL)."""
    return (
        a.budget_id, a.limit_key, a.window_key, str(a.threshold), to_us(a.at),
        a.spent_nanos, a.limit_nanos, a.spent_tokens, a.limit_tokens, a.entry_id,
        _names_json(a.models), _names_json(a.providers),
    )  # fmt: skip


STORED_ALERT_COLUMNS = (  # alert_to_row's order, named: a column a later step adds cannot break this insert
    "budget_id, period, window_start, threshold, at_us, spent_nanos, limit_nanos, spent_tokens, limit_tokens, "
    "entry_id, models, providers"
)
ALERT_COLUMNS = (
    "budget_id, period, window_start, threshold, at_us, spent_nanos, limit_nanos, limit_tokens, spent_tokens, "
    "entry_id, models, providers"
)


def alert_from_row(r: Sequence[Any]) -> AlertRecord:
    """An alert from a row of ALERT_COLUMNS."""
    period, key = stored_limit(r[1])
    return AlertRecord(
        r[0], period, r[2], Decimal(r[3]), from_us(r[4]), r[5], r[6], r[7], r[8], r[9], key,
        _names(r[10]), _names(r[11]),
    )  # fmt: skip


def _names_json(names: tuple[str, ...]) -> str | None:
    return json.dumps(list(names)) if names else None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def stored_limit(text: str) -> tuple[AnyPeriod, str | None]:
    """The period and filtered-limit key of a stored alert's or delivery's limit ("daily", or "daily~1f2e...")."""
    period, tilde, _ = text.partition("~")
    return period_of(period), text if tilde else None


def delivery_to_row(a: DeliveryAttempt) -> tuple[Any, ...]:
    """A webhook delivery attempt as the alert_deliveries table stores it."""
    return a.budget_id, a.limit_key, a.window_key, str(a.threshold), a.attempt, to_us(a.at), a.status, a.error


def delivery_from_row(r: Sequence[Any]) -> DeliveryAttempt:
    """A delivery attempt from its row (budget, limit, window, threshold, attempt, at, status, error)."""
    period, key = stored_limit(r[1])
    return DeliveryAttempt(r[0], period, r[2], Decimal(r[3]), r[4], from_us(r[5]), r[6], r[7], key)


def entry_to_row(entry: Entry) -> tuple[Any, ...]:
    t = entry.tokens
    return (
        entry.entry_id, entry.kind.value, entry.budget_id, to_us(entry.at), entry.cost_nanos,
        t.input, t.output, t.cache_read, t.cache_write, t.reasoning,
        entry.model, entry.provider, entry.price_source, entry.reservation_id, entry.idempotency_key,
        json.dumps(entry.metadata, separators=(",", ":")) if entry.metadata else None,
    )  # fmt: skip


def entry_from_row(row: tuple[Any, ...], seq: int | None = None) -> Entry:
    """An entry from its row (ENTRY_COLUMNS), with its sequence number if the read gave it."""
    return Entry(
        entry_id=row[0],
        kind=EntryKind(row[1]),
        budget_id=row[2],
        at=from_us(row[3]),
        cost_nanos=row[4],
        tokens=TokenCounts(row[5], row[6], row[7], row[8], row[9]),
        model=row[10],
        provider=row[11],
        price_source=row[12],
        reservation_id=row[13],
        idempotency_key=row[14],
        metadata=json.loads(row[15]) if row[15] else {},
        seq=seq,
    )


def spend_row(r: Sequence[Any]) -> SpendRow:
    """A row of (budget, model, provider, bucket start us, cost, input, output, cache, reasoning, calls, adjustment)."""
    return SpendRow(
        budget_id=r[0], model=r[1], provider=r[2], bucket_start=from_us(int(r[3])), cost_nanos=int(r[4]),
        input_tokens=int(r[5]), output_tokens=int(r[6]), cache_tokens=int(r[7]), reasoning_tokens=int(r[8]),
        calls=int(r[9]), adjustment=bool(r[10]),
    )  # fmt: skip


def log_page(
    rows: Sequence[tuple[Position, int, Sequence[Any]]], alerts: Sequence[Sequence[Any]], limit: int,
    head: Position, after: Position,
) -> LogPage:  # fmt: skip
    """A LogPage of entry rows (position, seq, ENTRY_COLUMNS) and their alerts' rows; past the head when not full."""
    crossed: dict[str, list[AlertRecord]] = {}
    for row in alerts:
        alert = alert_from_row(row)
        crossed.setdefault(alert.entry_id or "", []).append(alert)
    entries = [
        LoggedEntry(seq, position, entry, tuple(crossed.get(entry.entry_id, ())))
        for position, seq, row in rows
        for entry in (entry_from_row(tuple(row), seq),)
    ]
    end = entries[-1].position if len(entries) >= limit else max(head, after)
    return LogPage(entries, max(end, after))


def budget_states(
    configs: Mapping[str, BudgetConfig],
    usage: Mapping[str, dict[Period, WindowUsage]],
    held: Mapping[str, dict[HeldFor, Held]],
    children: Mapping[str, list[str]],
    filtered: Mapping[str, dict[str, WindowUsage]],
    oldest: Mapping[str, dict[str, int]],
) -> dict[str, BudgetState]:
    """Each loaded budget's state from what a backend read: current windows, live holds (by the model and provider
    they are for), open children, own totals."""
    states = {}
    for b, c in configs.items():
        by = held.get(b, {})
        states[b] = BudgetState(
            c, usage[b], sum(h[0] for h in by.values()), sum(h[1] for h in by.values()),
            sum(h[2] for h in by.values()), children=sorted(children.get(b, [])), filtered=filtered[b],
            oldest=oldest[b], held_by=by,
        )  # fmt: skip
    return states
