"""Snapshots kept from one write to the next, so a write to a budget tree nobody else changed needs no read.

A ledger keeps, per budget tree (its root), the snapshots its latest writes loaded, brought up to
date with what those writes stored, and the tree's version after them. A later write decides on
such a snapshot and may store its writes only if the tree's version is still that one, checked in
the same statement that stores them: then the decision is the one a fresh, locked snapshot would
have given. A snapshot serves only inside the windows it was loaded in and until its first hold
expires; writes that change budgets or holds are not applied here, they drop the tree's snapshots.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from budget_mcp.domain.accounting import TotalKey
from budget_mcp.domain.windows import Period, window
from budget_mcp.ledger.base import BudgetState, Scope, Snapshot, WindowUsage, Writes

Views = dict[tuple[str, ...], "View"]
MAX_VIEWS = 16  # per tree: every write brings each of them up to date, so only the most recently used stay
_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class View:
    """A snapshot of one scope, current at the tree's version, for writes at times in [snapshot.now, until)."""

    snapshot: Snapshot
    until: datetime
    windows: Mapping[tuple[str, Period], int]  # the current window's key, per budget and period

    def at(self, now: datetime) -> Snapshot | None:
        """The snapshot as of `now`, or None when `now` is outside the span it is known to be right for."""
        s = self.snapshot
        if not s.now <= now < self.until:
            return None
        return Snapshot(now, s.budgets, None, None, s.alerts_raised)


@dataclass(frozen=True)
class TreeCache:
    """The views of one budget tree, all current at `version`, and the timezone of each budget they hold."""

    version: int
    views: Views
    timezones: Mapping[str, str]


def cacheable(scope: Scope) -> bool:
    """Whether writes of this scope may be decided on a kept snapshot: named budgets of one tree, no hold."""
    return (
        bool(scope.budget_ids)
        and scope.subtree is None
        and not scope.everything
        and scope.reservation_id is None
        and len({b.split("/")[0] for b in scope.budget_ids}) == 1
    )


def view_of(snapshot: Snapshot, first_hold_expiry: datetime | None) -> View:
    """A view of a freshly loaded snapshot: good until a window of one of its budgets ends or a hold expires."""
    until = first_hold_expiry or _FAR
    windows = {}
    for budget_id, state in snapshot.budgets.items():
        for period in Period:
            start, end = window(period, state.config.timezone, snapshot.now)
            windows[(budget_id, period)] = int(start.timestamp())
            if end is not None:
                until = min(until, end)
    kept = Snapshot(snapshot.now, snapshot.budgets, None, None, snapshot.alerts_raised)
    return View(kept, until, windows)


def most_recent(views: Views, used: Iterable[tuple[str, ...]]) -> Views:
    """`views`, changed in place: the `used` scopes moved last (most recent), the oldest beyond MAX_VIEWS gone."""
    for scope in used:
        view = views.pop(scope, None)
        if view is not None:
            views[scope] = view
    while len(views) > MAX_VIEWS:
        del views[next(iter(views))]
    return views


def applicable(writes: Writes) -> bool:
    """Whether `advance` can bring views up to date with these writes (spend entries and alerts only)."""
    return not (writes.budgets or writes.holds_added or writes.holds_removed)


def advance(views: Views, writes: Writes, deltas: Mapping[TotalKey, list[int]], at: datetime) -> Views:
    """The views after `writes` (whose running-total `deltas` are given) were stored at `at`.

    Views whose span has ended by then, or that the writes reach outside their windows, are dropped.
    """
    kept = {}
    for scope, view in views.items():
        if at < view.until:
            snapshot = _applied(view, writes, deltas, max(at, view.snapshot.now))
            if snapshot is not None:
                kept[scope] = View(snapshot, view.until, view.windows)
    return kept


def _applied(view: View, writes: Writes, deltas: Mapping[TotalKey, list[int]], now: datetime) -> Snapshot | None:
    budgets = view.snapshot.budgets
    usages: dict[str, dict[Period, WindowUsage]] = {}
    for (budget_id, period, key), (nanos, tokens, calls) in deltas.items():
        state = budgets.get(budget_id)
        if state is None:
            continue
        if view.windows[(budget_id, period)] != key:
            return None
        usage = usages.setdefault(budget_id, dict(state.usage))
        was = usage[period]
        usage[period] = WindowUsage(was.spent_nanos + nanos, was.spent_tokens + tokens, was.calls + calls)
    if usages:
        budgets = dict(budgets)
        for budget_id, usage in usages.items():
            s = budgets[budget_id]
            budgets[budget_id] = BudgetState(s.config, usage, s.held_nanos, s.held_tokens, s.children)
    raised = view.snapshot.alerts_raised
    if writes.alerts:
        raised = raised | {
            (a.budget_id, a.period, a.window_key, str(a.threshold)) for a in writes.alerts if a.budget_id in budgets
        }
    return Snapshot(now, budgets, None, None, raised)
