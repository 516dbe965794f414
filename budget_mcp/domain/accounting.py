"""Which running totals a spend entry moves: every budget of its path, every period's current window."""

from collections.abc import Callable, Iterator

from budget_mcp.domain.ids import path_of
from budget_mcp.domain.records import SPEND_KINDS, Entry
from budget_mcp.domain.windows import Period, window_keys

TotalKey = tuple[str, Period, int]


def spend_windows(entry: Entry, timezone_of: Callable[[str], str]) -> Iterator[TotalKey]:
    """(budget_id, period, window_key) for each total the entry counts in; nothing for non-spend entries.

    Totals are kept for every period, not just the ones a budget limits today, so a limit
    added later starts from the true spend of its current window.
    """
    if entry.kind not in SPEND_KINDS:
        return
    for budget_id in path_of(entry.budget_id):
        for period, key in window_keys(timezone_of(budget_id), entry.at).items():
            yield budget_id, period, key
