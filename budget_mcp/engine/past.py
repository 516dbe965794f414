"""Charges recorded after the fact (an import): each counts in the windows of its own time.

The ledger keys running totals by each entry's own `at` (domain.accounting), so a past charge lands in the
windows it happened in, and reports of those windows include it. Alerts are decided on the current windows
only: a window already over raises none, however far the imported spend takes it. Many charges go in one
write, so an import pays one transaction (one fsync) per batch, not per record.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from budget_mcp.domain.ids import path_of, validate_budget_id
from budget_mcp.domain.money import MAX_TOKENS, MAX_USD, NANOS_PER_USD
from budget_mcp.domain.records import AlertRecord, Entry, EntryKind
from budget_mcp.domain.windows import Period, window
from budget_mcp.engine import figures as fig
from budget_mcp.engine.rules import check_totals, crossed_alerts
from budget_mcp.errors import InvalidInputError
from budget_mcp.ledger import Snapshot, Writes

_MAX_NANOS = int(MAX_USD) * NANOS_PER_USD


@dataclass(frozen=True)
class PastCharges:
    """What one batch did: charges stored, and those the ledger held already (or the batch repeated)."""

    imported: int
    already: int
    alerts: tuple[AlertRecord, ...] = ()
    stored: frozenset[str] = frozenset()  # the ids of the entries stored


def check(entry: Entry, now: datetime) -> None:
    """Refuse an entry an import may not store: not a charge, dated in the future, or out of bounds."""
    if entry.kind is not EntryKind.CHARGE:
        raise InvalidInputError(f"entry {entry.entry_id} is a {entry.kind}; only charges can be imported")
    validate_budget_id(entry.budget_id)
    if entry.at.tzinfo is None:
        raise InvalidInputError(f"entry {entry.entry_id} has a time without a timezone; give times in UTC")
    if entry.at > now:
        raise InvalidInputError(
            f"entry {entry.entry_id} is dated {entry.at.isoformat()}, in the future (now {now.isoformat()}); "
            "only spend that happened can be imported"
        )
    if not 0 <= entry.cost_nanos <= _MAX_NANOS:
        raise InvalidInputError(f"entry {entry.entry_id} costs {entry.cost_nanos} nano-USD, outside 0..{MAX_USD} USD")
    if not 0 <= entry.tokens.total <= MAX_TOKENS:
        raise InvalidInputError(f"entry {entry.entry_id} counts {entry.tokens.total} tokens, beyond {MAX_TOKENS}")


def fresh(entries: Sequence[Entry], known: set[str]) -> list[Entry]:
    """The entries not stored yet, each id once (a record repeated in one batch is stored once)."""
    seen = set(known)
    kept = []
    for entry in entries:
        if entry.entry_id not in seen:
            seen.add(entry.entry_id)
            kept.append(entry)
    return kept


def budgets_of(entries: Iterable[Entry]) -> tuple[str, ...]:
    """Every budget on the paths of these entries, sorted."""
    return tuple(sorted({b for e in entries for b in path_of(e.budget_id)}))


def charges(snapshot: Snapshot, entries: list[Entry]) -> tuple[PastCharges, Writes]:
    """The writes of past charges: the entries as they are, and the alerts of the windows still current."""
    budgets = sorted({b for e in entries for b in path_of(e.budget_id)})
    starts: dict[str, list[tuple[Period, datetime]]] = {}
    for budget_id in budgets:
        timezone = fig.state_of(snapshot, budget_id).config.timezone
        starts[budget_id] = [(p, window(p, timezone, snapshot.now)[0]) for p in Period if p is not Period.TOTAL]
    # An entry before the start of every current window (most of an import) counts in the current `total` only.
    earliest = {b: min(s for _, s in starts[b]) for b in budgets}
    current: dict[str, dict[Period, list[int]]] = {b: {p: [0, 0, 0] for p in Period} for b in budgets}
    for entry in entries:
        cost, tokens = entry.cost_nanos, entry.tokens.total
        for budget_id in path_of(entry.budget_id):
            sums = current[budget_id]
            total = sums[Period.TOTAL]
            total[0] += cost
            total[1] += tokens
            total[2] += 1
            if entry.at < earliest[budget_id]:
                continue
            for period, start in starts[budget_id]:
                if entry.at >= start:  # no entry is after now (checked): at or past the start is this window
                    window_sums = sums[period]
                    window_sums[0] += cost
                    window_sums[1] += tokens
                    window_sums[2] += 1
    moved = {
        b: snapshot.budgets[b].plus(
            {**{p: (n, t, c) for p, (n, t, c) in current[b].items() if c}, **_in_own_windows(snapshot, b, entries)}
        )
        for b in budgets
    }
    after = Snapshot(
        snapshot.now, {**snapshot.budgets, **moved}, alerts_raised=snapshot.alerts_raised,
        rolling_alerts=snapshot.rolling_alerts,
    )  # fmt: skip
    check_totals(after, tuple(budgets))
    alerts = crossed_alerts(snapshot, after, tuple(budgets), entries[-1].entry_id if entries else None)
    return PastCharges(len(entries), 0, tuple(alerts)), Writes(entries=list(entries), alerts=alerts)


def _in_own_windows(snapshot: Snapshot, budget_id: str, entries: list[Entry]) -> dict[str, tuple[int, int, int]]:
    """What the entries on `budget_id`'s subtree add to each of its limits with totals of their own (rolling, or on
    some models or providers) in the window current at `now`, so their alerts are decided as a charge's are."""
    state = fig.state_of(snapshot, budget_id)
    limits = [lim for lim in state.config.limits if lim.keeps_own]
    below = [e for e in entries if budget_id in path_of(e.budget_id)] if limits else []
    found = {}
    for lim in limits:
        span = lim.rolling
        first = span.first_bucket(snapshot.now) if span else 0
        start = window(lim.period, state.config.timezone, snapshot.now)[0]
        sums = [0, 0, 0]
        for entry in below:
            inside = span.bucket(entry.at) >= first if span else entry.at >= start
            if inside and lim.counts(entry.model, entry.provider):
                sums[0] += entry.cost_nanos
                sums[1] += entry.tokens.total
                sums[2] += 1
        if sums[2]:
            found[lim.key] = (sums[0], sums[1], sums[2])
    return found
