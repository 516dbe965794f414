"""What a server knows of a budget tree from its own last writes, so its next write to it needs no read.

A ledger keeps, per budget tree (its root), one snapshot that merges what its latest writes to the
tree loaded, brought up to date with what those writes stored, and the tree's version after them.
A later write decides on that snapshot and may store its writes only if the tree's version is still
that one, checked in the same statement that stores them: then the decision is the one a fresh,
locked snapshot would have given. The snapshot serves a write only if every budget of the write's
path was read with all its open children; only inside the windows it was loaded in; and only until
its first hold expires, or the oldest spend of a rolling limit drops out. Holds it saw made or loaded
are applied (a charge may settle them on it); writes that change budgets, or settle a hold it does not
know, are not: they end it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from budget_mcp.domain.accounting import TotalKey, filters, period_of, rolling_of
from budget_mcp.domain.ids import path_of
from budget_mcp.domain.records import HeldFor, Hold, Limit
from budget_mcp.domain.windows import Period, Rolling, window
from budget_mcp.ledger.base import Held, ReservationState, Scope, Snapshot, Writes, latest_rolling_alerts

MAX_BUDGETS = 10_000  # a tree known in more detail than this is not kept
_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TreeCache:
    """One tree as of `version`: its snapshot, right for writes at times in [snapshot.now, until)."""

    version: int
    snapshot: Snapshot
    complete: frozenset[str]  # budgets read with all their open children (the scope of some load)
    until: datetime
    windows: Mapping[tuple[str, Period], int]  # the current window's key, per budget and period
    holds: Mapping[str, Hold]  # open holds known one by one (made or loaded here), by reservation id

    def at(self, scope: Scope, now: datetime) -> Snapshot | None:
        """The snapshot for a write of `scope` at `now`, or None when it cannot be known to be right."""
        s = self.snapshot
        if not (s.now <= now < self.until and self.complete.issuperset(scope.budget_ids)):
            return None
        reservation = None
        if scope.reservation_id is not None:
            hold = self.holds.get(scope.reservation_id)
            if hold is None:
                return None
            reservation = ReservationState(scope.reservation_id, hold)
        return Snapshot(now, s.budgets, reservation, None, s.alerts_raised, s.rolling_alerts)

    def timezone_of(self, budget_id: str) -> str:
        """The timezone of a budget of the snapshot (KeyError for one it does not hold)."""
        return self.snapshot.budgets[budget_id].config.timezone

    def filters_of(self, budget_id: str) -> tuple[Limit, ...]:
        """The filtered limits of a budget of the snapshot (KeyError for one it does not hold)."""
        return filters(self.snapshot.budgets[budget_id].config.limits)


def cacheable(scope: Scope) -> bool:
    """Whether writes of this scope may be decided on a kept snapshot: named budgets of one tree."""
    return (
        bool(scope.budget_ids)
        and scope.subtree is None
        and not scope.everything
        and len({b.split("/")[0] for b in scope.budget_ids}) == 1
    )


def merged(
    tree: TreeCache | None, version: int, scope: Scope, loaded: Snapshot, hold_expiry: datetime | None
) -> TreeCache | None:
    """`tree` with a snapshot of `scope` loaded at the same state added (a new one if `tree` is None or over)."""
    if tree is not None and loaded.now >= tree.until:
        tree = None
    budgets = dict(tree.snapshot.budgets) if tree else {}
    complete = set(tree.complete) if tree else set()
    windows = dict(tree.windows) if tree else {}
    until = min(tree.until if tree else _FAR, hold_expiry or _FAR)
    for budget_id, state in loaded.budgets.items():
        if budget_id in scope.budget_ids or budget_id not in complete:
            budgets[budget_id] = state  # the same figures either way; a budget in scope also has its children
        for period in Period:
            start, end = window(period, state.config.timezone, loaded.now)
            windows[(budget_id, period)] = int(start.timestamp())
            if end is not None:
                until = min(until, end)
        for limit in state.config.limits:
            if limit.rolling is not None and limit.key in state.oldest:
                until = min(until, limit.rolling.drops_out(state.oldest[limit.key]))
    if len(budgets) > MAX_BUDGETS:
        return None
    complete.update(scope.budget_ids)
    raised = tree.snapshot.alerts_raised | loaded.alerts_raised if tree else loaded.alerts_raised
    rolling = loaded.rolling_alerts
    if tree:
        rolling = latest_rolling_alerts(dict(tree.snapshot.rolling_alerts), rolling.items())
    now = max(tree.snapshot.now, loaded.now) if tree else loaded.now
    holds = dict(tree.holds) if tree else {}
    hold = loaded.reservation.hold if loaded.reservation is not None else None
    if (
        hold is not None and hold.expires_at > loaded.now
    ):  # an expired hold is in no held sum: settling it ends the tree
        holds[hold.reservation_id] = hold
    snapshot = Snapshot(now, budgets, None, None, raised, rolling)
    return TreeCache(version, snapshot, frozenset(complete), until, windows, holds)


def advance(tree: TreeCache, writes: Writes, deltas: Mapping[TotalKey, list[int]], at: datetime) -> TreeCache | None:
    """The tree after `writes` (whose running-total `deltas` are given) were stored at `at`.

    None when the tree's span has ended by then, or the writes change budgets, settle a hold it does not
    know, or reach outside its windows.
    """
    if at >= tree.until or writes.budgets or any(r not in tree.holds for r in writes.holds_removed):
        return None
    budgets, until = tree.snapshot.budgets, tree.until
    spent: dict[str, dict[str, tuple[int, int, int]]] = {}
    buckets: dict[str, dict[str, int]] = {}
    for (budget_id, period, key), (nanos, tokens, calls) in deltas.items():
        if budget_id not in budgets:
            continue
        rolling = rolling_of(period)
        if rolling is not None:
            if key < rolling.first_bucket(at):
                continue  # a past charge already outside the window
            buckets.setdefault(budget_id, {})[period] = key
            until = min(until, rolling.drops_out(key))
        elif tree.windows[(budget_id, cast(Period, period_of(period)))] != key:
            return None
        spent.setdefault(budget_id, {})[period] = (nanos, tokens, calls)
    holds = tree.holds
    held: dict[str, dict[HeldFor, Held]] = {}
    if writes.holds_added or writes.holds_removed:
        holds = dict(holds)
        for hold in writes.holds_added:
            holds[hold.reservation_id] = hold
            until = min(until, hold.expires_at)
        changes = [(h, 1) for h in writes.holds_added] + [(holds.pop(r), -1) for r in writes.holds_removed]
        for hold, sign in changes:
            for budget_id in path_of(hold.budget_id):
                by = held.setdefault(budget_id, {})
                nanos, tokens, calls = by.get(hold.of, (0, 0, 0))
                by[hold.of] = (nanos + sign * hold.cost_nanos, tokens + sign * hold.tokens, calls + sign)
    if spent or held:
        budgets = dict(budgets)
        for budget_id in spent.keys() | held.keys():
            if budget_id in budgets:
                budgets[budget_id] = budgets[budget_id].plus(
                    spent.get(budget_id, {}), held.get(budget_id), buckets.get(budget_id)
                )
    raised, latest = tree.snapshot.alerts_raised, tree.snapshot.rolling_alerts
    if writes.alerts:
        known = [a for a in writes.alerts if a.budget_id in budgets]
        raised = raised | {
            (a.budget_id, a.limit_key, a.window_key, str(a.threshold)) for a in known if isinstance(a.period, Period)
        }
        latest = latest_rolling_alerts(
            dict(latest),
            (
                ((a.budget_id, a.limit_key, str(a.threshold)), a.window_key)
                for a in known
                if isinstance(a.period, Rolling)
            ),
        )
    snapshot = Snapshot(max(at, tree.snapshot.now), budgets, None, None, raised, latest)
    return TreeCache(tree.version, snapshot, tree.complete, until, tree.windows, holds)


def roots_written(writes: Writes) -> set[str]:
    """The roots of the budget trees these writes change (every write moves its tree's version)."""
    written = [e.budget_id for e in writes.entries] + [c.budget_id for c in writes.budgets]
    return {b.split("/")[0] for b in written + [h.budget_id for h in writes.holds_added]}
