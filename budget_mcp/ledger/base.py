"""The narrow storage interface the engine talks to, and the values that cross it.

The engine never issues queries. It names a `Scope` (which budgets, reservation and
idempotency key it needs) and hands the ledger a pure `decide` function. The ledger
loads a `Snapshot` of that scope inside an exclusive write transaction, calls
`decide(snapshot)`, and stores the returned `Writes` in the same transaction, so
check-and-reserve and charge are atomic on any backend. A backend may instead decide on a
snapshot it kept, if it stores the writes only when nothing changed since (PostgreSQL does),
so `decide` may be called more than once for one write: it must only read its snapshot.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from budget_mcp.domain.records import AlertRecord, BudgetConfig, DeliveryAttempt, Entry, EntryKind, HeldFor, Hold, Limit
from budget_mcp.domain.windows import Period
from budget_mcp.errors import LedgerError

T = TypeVar("T")


@dataclass(frozen=True)
class Scope:
    """What a snapshot must hold: budgets (with their open children), a subtree, a reservation, a key."""

    budget_ids: tuple[str, ...] = ()
    subtree: str | None = None
    everything: bool = False
    reservation_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class WindowUsage:
    """Spend of one budget in the current window of one period (descendants included)."""

    spent_nanos: int = 0
    spent_tokens: int = 0
    calls: int = 0

    @property
    def totals(self) -> tuple[int, int]:
        """The sums the ledger's integer range bounds: spend and tokens."""
        return self.spent_nanos, self.spent_tokens


_NONE = WindowUsage()


Held = tuple[int, int, int]  # nanos, tokens, calls held (each live hold holds one call)


@dataclass
class BudgetState:
    """A budget as loaded: its definition, current-window usage per period, live holds, open children.

    `held_by` splits the live holds by the (model, provider) they are for; `held_*` are their sums.
    """

    config: BudgetConfig
    usage: dict[Period, WindowUsage]
    held_nanos: int = 0
    held_tokens: int = 0
    held_calls: int = 0  # live holds: each holds one call
    children: list[str] = field(default_factory=list)
    filtered: dict[str, WindowUsage] = field(default_factory=dict)  # own totals by limit key (filtered, rolling)
    oldest: dict[str, int] = field(default_factory=dict)  # a rolling limit's oldest counted bucket with spend in it
    held_by: dict[HeldFor, Held] = field(default_factory=dict)

    def used(self, key: str) -> WindowUsage:
        """The spend of the running total a limit reads (`Limit.key`: its period's, or its own)."""
        return self.usage.get(key) or self.filtered.get(key) or _NONE  # type: ignore[call-overload]

    def held_in(self, limit: Limit) -> Held:
        """What the live holds a filtered limit counts hold: those of checks it would decide (`Limit.decides`)."""
        nanos = tokens = calls = 0
        for (model, provider), (n, t, c) in self.held_by.items():
            if limit.decides(model, provider):
                nanos, tokens, calls = nanos + n, tokens + t, calls + c
        return nanos, tokens, calls

    def plus(
        self,
        spent: Mapping[str, tuple[int, int, int]],
        held: Mapping[HeldFor, Held] | None = None,
        buckets: Mapping[str, int] | None = None,
    ) -> "BudgetState":
        """This state with (nanos, tokens, calls) added to the windows of `spent` and to its holds (`held`, by the
        model and provider they are for); `buckets`: the bucket start each rolling total of `spent` was added in.

        The one definition of how spend and holds change a budget's figures: the engine deciding on a
        snapshot and a ledger keeping one up to date both use it.
        """
        usage, filtered, oldest = self.usage, self.filtered, self.oldest
        if buckets:
            oldest = {**oldest, **{k: min(b, oldest.get(k, b)) for k, b in buckets.items()}}
        if spent:
            usage = dict(usage)
            for key, (nanos, tokens, calls) in spent.items():
                into: dict[Any, WindowUsage] = usage if key in usage else filtered
                if into is self.filtered:
                    into = filtered = dict(filtered)
                was = into.get(key, _NONE)
                into[key] = WindowUsage(was.spent_nanos + nanos, was.spent_tokens + tokens, was.calls + calls)
        held_nanos, held_tokens, held_calls, held_by = self.held_nanos, self.held_tokens, self.held_calls, self.held_by
        if held:
            held_by = dict(held_by)
            for of, (nanos, tokens, calls) in held.items():
                held_nanos, held_tokens, held_calls = held_nanos + nanos, held_tokens + tokens, held_calls + calls
                was_n, was_t, was_c = held_by.pop(of, (0, 0, 0))
                if (now := (was_n + nanos, was_t + tokens, was_c + calls)) != (0, 0, 0):
                    held_by[of] = now
        # A constructor rather than dataclasses.replace: this runs several times per charge, and replace is slow.
        return BudgetState(
            self.config, usage, held_nanos, held_tokens, held_calls, self.children, filtered, oldest, held_by
        )


@dataclass(frozen=True)
class StoredResult:
    """The first answer recorded under an idempotency key."""

    request_hash: str
    result_json: str


@dataclass(frozen=True)
class ReservationState:
    """A reservation as the ledger knows it: open (`hold` set) or already closed by an entry."""

    reservation_id: str
    hold: Hold | None
    closed_by: str | None = None
    closed_kind: str | None = None
    budget_id: str | None = None  # of a closed one: the budget its closing entry was on


@dataclass
class Snapshot:
    """A consistent view of the scope at `now`."""

    now: datetime
    budgets: dict[str, BudgetState]
    reservation: ReservationState | None = None
    stored_result: StoredResult | None = None
    # calendar limits: (budget, limit key, window, threshold) of the current windows' alerts
    alerts_raised: set[tuple[str, str, int, str]] = field(default_factory=set)
    # rolling limits: the bucket of the latest alert, by (budget, limit key, threshold)
    rolling_alerts: dict[tuple[str, str, str], int] = field(default_factory=dict)


def latest_rolling_alerts(
    into: dict[tuple[str, str, str], int], alerts: Iterable[tuple[tuple[str, str, str], int]]
) -> dict[tuple[str, str, str], int]:
    """`into` with each ((budget, limit key, threshold), bucket) of `alerts` kept if it is the latest."""
    for found, start in alerts:
        if into.get(found, start - 1) < start:
            into[found] = start
    return into


@dataclass
class Writes:
    """What one decision stores: all of it in one transaction, or none of it."""

    budgets: list[BudgetConfig] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    holds_added: list[Hold] = field(default_factory=list)
    holds_removed: list[str] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)
    stored_result: tuple[str, StoredResult] | None = None


@dataclass(frozen=True)
class SpendRow:
    """Spend of one budget on one model in one 15-minute bucket (every timezone offset is a multiple of it)."""

    budget_id: str
    model: str | None
    provider: str | None
    bucket_start: datetime
    cost_nanos: int
    input_tokens: int
    output_tokens: int
    cache_tokens: int
    reasoning_tokens: int
    calls: int
    adjustment: bool = False  # corrections (`budget-mcp adjust`), kept apart from charges

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_tokens + self.reasoning_tokens


# An entry's place in commit order: (SQLite: seq, PostgreSQL: the writing transaction's id), then its seq.
Position = tuple[int, int]
START: Position = (0, 0)  # before every entry


@dataclass(frozen=True)
class LoggedEntry:
    """An entry with its sequence number, its place in commit order, and the alerts its write crossed."""

    seq: int
    position: Position
    entry: Entry
    alerts: tuple[AlertRecord, ...] = ()


@dataclass(frozen=True)
class LogPage:
    """Entries after a position, in commit order, and the position to read the next page after.

    `end` is past every entry the page read, matching or not: a filtered reader moves on over others' entries.
    """

    entries: list[LoggedEntry]
    end: Position


Decide = Callable[[Snapshot], tuple[T, Writes]]


class Ledger(Protocol):
    """Async storage for budgets and the append-only entry log."""

    async def read(self, scope: Scope, now: datetime) -> Snapshot:
        """A snapshot of `scope` at `now`, read without taking the write lock."""
        ...

    async def write(self, scope: Scope, now: datetime, decide: Decide[T], *, durable: bool = True) -> T:
        """Run `decide` on a snapshot nothing changes before its writes are stored, atomically; errors pass through.

        `durable=False` (writes that only hold money) allows a commit that survives the process but not the
        machine crashing; every other write is on disk when this returns.
        """
        ...

    async def entries(
        self, budget_id: str, *, limit: int = 100, since: datetime | None = None, kind: EntryKind | None = None,
        before: int | None = None,
    ) -> list[Entry]:  # fmt: skip
        """The latest entries of a budget and its descendants (of one `kind`, if given; with a `seq` below `before`,
        if given), newest first (by `seq`), each with its `seq`."""
        ...

    async def alerts(self, budget_id: str, *, since: datetime | None = None) -> list[AlertRecord]:
        """Alerts recorded for a budget and its descendants, oldest first."""
        ...

    async def spend(self, budget_id: str, start: datetime, end: datetime | None) -> list[SpendRow]:
        """Spend entries of a budget and its descendants in [start, end), summed per budget, model, 15 minutes."""
        ...

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        """Store one webhook delivery attempt of an alert."""
        ...

    async def deliveries(self, budget_id: str, *, since: datetime | None = None) -> list[DeliveryAttempt]:
        """Webhook delivery attempts of the alerts of a budget and its descendants, oldest first."""
        ...

    async def reconcile(self, now: datetime | None = None) -> list[str]:
        """Recompute every running total from the entries; return the differences (empty when all agree).
        Rolling buckets outside every window at `now` (default: the wall clock) may have been pruned: not compared."""
        ...

    async def known_entries(self, entry_ids: Sequence[str]) -> set[str]:
        """Those of `entry_ids` the ledger holds already (an import's records are entries with ids of their own)."""
        ...

    async def expired_budgets(self, now: datetime) -> list[str]:
        """The open budgets whose `expires_at` is at or before `now`."""
        ...

    async def budget_ids(self) -> list[str]:
        """Every budget's id (closed ones too), sorted."""
        ...

    async def changed_budgets(self) -> set[str] | None:
        """The budgets any process wrote to since the last call (none at the first); None: anything may have."""
        ...

    async def log_position(self, seq: int | None = None) -> Position:
        """The position of entry `seq` (of the newest before it if it does not exist; START for 0), or with None
        the position after the newest entry that may be read in commit order now."""
        ...

    async def entries_after(
        self, position: Position, *, prefixes: Sequence[str] | None = None, limit: int = 500
    ) -> LogPage:
        """Up to `limit` entries after `position` in commit order (of budgets under `prefixes`, if given), with
        their alerts. No entry that commits later ever takes a place before the page's `end`."""
        ...

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop, without waiting) when another server may have appended entries;
        a backend without such notices (SQLite) never calls it, and readers poll."""
        ...

    async def close(self) -> None:
        """Close connections; pending writes finish first."""
        ...


def newer_schema(where: str, version: int, known: int) -> LedgerError:
    """The error for a ledger a newer budget-mcp upgraded: this version would write rows its tables no longer fit."""
    return LedgerError(
        f"the ledger at {where} is at schema step {version}, newer than this budget-mcp knows ({known}); "
        "upgrade budget-mcp on every server and tool that opens it"
    )
