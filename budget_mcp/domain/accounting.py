"""Which running totals a spend entry moves: every budget of its path, every period's current window, and the
totals of the filtered limits (by model or provider) of those budgets that it matches."""

import functools
from collections.abc import Callable, Iterator, Sequence

from budget_mcp.domain.ids import path_of
from budget_mcp.domain.records import SPEND_KINDS, Entry, Limit
from budget_mcp.domain.windows import AnyPeriod, Rolling, parse_period, window_keys

TotalKey = tuple[str, str, int]  # budget, a Period or a limit's own key ("daily~1f2e...", "5h"), window/bucket start
FiltersOf = Callable[[str], Sequence[Limit]]


def spend_windows(
    entry: Entry, timezone_of: Callable[[str], str], filters_of: FiltersOf | None = None
) -> Iterator[TotalKey]:
    """(budget_id, period or limit key, window_key) for each total the entry counts in; nothing for non-spend entries.

    Totals are kept for every period, not just the ones a budget limits today, so a limit
    added later starts from the true spend of its current window. A filtered limit's total is kept
    only while the limit is in place (`filters_of` gives a budget's limits with own totals at the entry), and so is
    a rolling limit's, one per bucket (`Rolling.bucket`); the ledger fills both in from the entries when the limit
    is set (`ledger.rows.filled_totals`).
    """
    if entry.kind not in SPEND_KINDS:
        return
    for budget_id in path_of(entry.budget_id):
        keys = window_keys(timezone_of(budget_id), entry.at)
        for period, key in keys.items():
            yield budget_id, period, key
        if filters_of is not None:
            for limit in filters_of(budget_id):
                if limit.counts(entry.model, entry.provider):
                    rolling = limit.period
                    yield (
                        budget_id,
                        limit.key,
                        rolling.bucket(entry.at) if isinstance(rolling, Rolling) else keys[rolling],
                    )


@functools.lru_cache(maxsize=1024)
def period_of(key: str) -> AnyPeriod:
    """The period of a running total's key."""
    return parse_period(key.partition("~")[0])


def rolling_of(key: str) -> Rolling | None:
    """The rolling window of a running total's key, or None for a calendar one."""
    period = period_of(key)
    return period if isinstance(period, Rolling) else None


def filters(limits: Sequence[Limit]) -> tuple[Limit, ...]:
    """The limits that keep running totals of their own: those counting only some models or providers, and
    rolling ones."""
    return tuple(lim for lim in limits if lim.keeps_own)
