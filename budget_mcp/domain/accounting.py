"""Which running totals a spend entry moves: every budget of its path, every period's current window, and the
totals of the filtered limits (by model or provider) of those budgets that it matches."""

from collections.abc import Callable, Iterator, Sequence

from budget_mcp.domain.ids import path_of
from budget_mcp.domain.records import SPEND_KINDS, Entry, Limit
from budget_mcp.domain.windows import Period, window_keys

TotalKey = tuple[str, str, int]  # budget, a Period or a filtered limit's key ("daily~1f2e..."), window start
FiltersOf = Callable[[str], Sequence[Limit]]


def spend_windows(
    entry: Entry, timezone_of: Callable[[str], str], filters_of: FiltersOf | None = None
) -> Iterator[TotalKey]:
    """(budget_id, period or limit key, window_key) for each total the entry counts in; nothing for non-spend entries.

    Totals are kept for every period, not just the ones a budget limits today, so a limit
    added later starts from the true spend of its current window. A filtered limit's total is kept
    only while the limit is in place (`filters_of` gives a budget's filtered limits at the entry).
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
                    yield budget_id, limit.key, keys[limit.period]


def period_of(key: str) -> Period:
    """The period of a running total's key."""
    return Period(key.partition("~")[0])


def filters(limits: Sequence[Limit]) -> tuple[Limit, ...]:
    """The limits that count only some models or providers."""
    return tuple(lim for lim in limits if lim.filtered)
