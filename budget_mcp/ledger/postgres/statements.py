"""The SQL of the PostgreSQL ledger: the one statement that loads a snapshot, the one that stores a batch's
writes (version-guarded, then notifying), the locks a write takes, and the rows it writes."""

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg

from budget_mcp.domain.accounting import TotalKey, filters, period_of
from budget_mcp.domain.ids import parent_of, path_of
from budget_mcp.domain.records import BudgetConfig, Entry, HeldFor, Hold, Limit
from budget_mcp.domain.windows import Period, window_keys
from budget_mcp.ledger.base import (
    Held,
    ReservationState,
    Scope,
    Snapshot,
    StoredResult,
    WindowUsage,
    Writes,
)
from budget_mcp.ledger.codec import config_from_row, config_to_json, from_us, to_us
from budget_mcp.ledger.rows import (
    ENTRY_COLUMNS,
    REPLAYED_KINDS,
    SPEND_KIND_TEXT,
    Replay,
    alert_to_row,
    bounded_rows,
    budget_states,
    counting_start_us,
    entry_from_row,
    entry_to_row,
    filled_totals,
    own_limit_changes,
    total_deltas,
)
from budget_mcp.ledger.tree_cache import TreeCache, cacheable

CHANNEL = "budget_events"


@dataclass(frozen=True)
class Loaded:
    """A snapshot; its tree's version when read and the one before (None if not one tree); its first hold expiry."""

    snapshot: Snapshot
    version: int | None
    previous: int | None
    first_hold_expiry: datetime | None


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a name ('budget:<root>' or 'key:<idempotency key>')."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


_SCOPES = {
    "ids": "budget_id = ANY($1::text[])",
    "subtree": "budget_id = ($1::text[])[1] "
    "OR (budget_id > ($1::text[])[1] || '/' AND budget_id < ($1::text[])[1] || '0')",
    "everything": "cardinality($1::text[]) >= 0",
}


_LOAD = """
WITH b AS (
    SELECT budget_id, parent_id, config, closed, created_at_us FROM budgets WHERE {scope}
), c AS (
    SELECT budget_id, parent_id, config, closed, created_at_us FROM budgets
    WHERE NOT closed AND parent_id IN (SELECT budget_id FROM b) AND budget_id NOT IN (SELECT budget_id FROM b)
), every AS (SELECT * FROM b UNION ALL SELECT * FROM c)
SELECT tree.version, tree.previous, json_build_array(
    (SELECT coalesce(json_agg(json_build_array(budget_id, parent_id, config, closed, created_at_us)), '[]')
       FROM b),
    (SELECT coalesce(json_agg(json_build_array(budget_id, parent_id, config, closed, created_at_us)), '[]')
       FROM c),
    (SELECT coalesce(json_agg(json_build_array(t.budget_id, t.period, t.window_start, t.spent_nanos,
                                               t.spent_tokens, t.calls)), '[]')
       FROM every CROSS JOIN LATERAL (
           SELECT unnest($2::text[]) UNION ALL
           SELECT l->>'key' FROM json_array_elements(every.config::json->'limits') AS l
           WHERE l->>'key' IS NOT NULL AND l->>'span_s' IS NULL
       ) AS p(period)
       CROSS JOIN LATERAL (SELECT * FROM totals t WHERE t.budget_id = every.budget_id AND t.period = p.period
                           AND t.window_start <= $3 ORDER BY t.window_start DESC LIMIT 1) AS t),
    (SELECT coalesce(json_agg(json_build_array(a.budget_id, a.period, a.window_start, a.threshold)), '[]')
       FROM alerts a WHERE a.budget_id IN (SELECT budget_id FROM every)
       AND (a.window_start >= $4 OR a.window_start = 0)),
    (SELECT coalesce(json_agg(json_build_array(budget_id, nanos, tokens, first_expiry, n, model, provider)), '[]')
       FROM (
       SELECT budget_id, model, provider, SUM(cost_nanos) AS nanos, SUM(tokens) AS tokens,
              MIN(expires_at_us) AS first_expiry, COUNT(*) AS n
       FROM hold_budgets
       WHERE budget_id IN (SELECT budget_id FROM every) AND expires_at_us > $5
       GROUP BY budget_id, model, provider) AS h),
    (SELECT json_build_array(reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us, model,
                             provider)
       FROM holds WHERE reservation_id = $6),
    (SELECT json_build_array(entry_id, kind, budget_id) FROM entries
       WHERE $6::text IS NOT NULL AND reservation_id = $6 AND kind <> 'hold' ORDER BY seq DESC LIMIT 1),
    (SELECT json_build_array(request_hash, result) FROM idempotency WHERE $7::text IS NOT NULL AND key = $7),
    (SELECT coalesce(json_agg(json_build_array(every.budget_id, r.key, r.nanos, r.tokens, r.calls, r.oldest,
                                               r.alerts)), '[]')
       FROM every CROSS JOIN LATERAL (
           SELECT l->>'key' AS key, (l->>'span_s')::bigint AS span
           FROM json_array_elements(every.config::json->'limits') AS l WHERE l->>'span_s' IS NOT NULL
       ) AS p
       CROSS JOIN LATERAL (
           SELECT p.key, coalesce(SUM(t.spent_nanos), 0) AS nanos, coalesce(SUM(t.spent_tokens), 0) AS tokens,
                  coalesce(SUM(t.calls), 0) AS calls,
                  MIN(t.window_start) FILTER (WHERE t.spent_nanos <> 0 OR t.spent_tokens <> 0 OR t.calls <> 0)
                      AS oldest,
                  (SELECT coalesce(json_agg(json_build_array(a.threshold, a.latest)), '[]') FROM (
                       SELECT threshold, MAX(window_start) AS latest FROM alerts
                       WHERE budget_id = every.budget_id AND period = p.key AND window_start > $9 - p.span
                       GROUP BY threshold) AS a) AS alerts
           FROM totals t WHERE t.budget_id = every.budget_id AND t.period = p.key AND t.window_start > $9 - p.span
       ) AS r)
)::text
FROM (VALUES (1)) AS one LEFT JOIN trees AS tree ON tree.root = $8
"""


_LOADS = {kind: _LOAD.format(scope=condition) for kind, condition in _SCOPES.items()}


_PERIODS = [p.value for p in Period]


_PERIOD_OF = {p.value: p for p in Period}  # faster than Period(text), which every snapshot row would call


_UNUSED = {p: WindowUsage() for p in Period}  # WindowUsage is frozen, so every snapshot can share these


_OLDEST_CURRENT_WINDOW = 40 * 86_400  # seconds: every non-total window that holds `now` started after now - 40 days


def load_statement(scope: Scope, now: datetime) -> tuple[str, list[Any]]:
    """The statement reading `scope`'s snapshot at `now`, and its arguments."""
    now_s = int(now.timestamp())
    kind, selector = (
        ("everything", []) if scope.everything
        else ("subtree", [scope.subtree]) if scope.subtree is not None
        else ("ids", list(scope.budget_ids))
    )  # fmt: skip
    return _LOADS[kind], [
        selector, _PERIODS, now_s, now_s - _OLDEST_CURRENT_WINDOW, to_us(now),
        scope.reservation_id, scope.idempotency_key, scope.budget_ids[0].split("/")[0] if cacheable(scope) else None,
        to_us(now) // 1_000_000,
    ]  # fmt: skip


async def load(conn: asyncpg.Connection, scope: Scope, now: datetime, kept: TreeCache | None = None) -> Loaded:
    """The scope's snapshot in one statement (one round trip, one MVCC snapshot), with its tree's version.

    When the tree is at the version of `kept` and `kept` holds the whole scope, the state read is the one
    `kept` holds: its snapshot is returned without parsing the answer (first_hold_expiry is then not known).
    """
    statement, args = load_statement(scope, now)
    version, previous, text = await conn.fetchrow(statement, *args)
    if kept is not None and version == kept.version and (known := kept.at(scope, now)) is not None:
        return Loaded(known, version, previous, None)
    # One JSON array: budgets in scope, their open children, totals, alerts, holds, the reservation's hold,
    # the entry that closed it, the idempotency key's stored result.
    row = json.loads(text)
    scoped, extra, totals, alerts, holds = row[:5]
    rows = scoped + extra
    in_scope = {r[0] for r in scoped}
    children: dict[str, list[str]] = {budget_id: [] for budget_id in in_scope}
    for budget_id, parent_id, _, closed, _ in rows:
        if not closed and parent_id in in_scope:
            children[parent_id].append(budget_id)
    configs = {r[0]: config_from_row(r[0], r[2], r[3], r[4]) for r in rows}
    current = {b: window_keys(c.timezone, now) for b, c in configs.items()}  # Period is a str: "daily" finds it
    usage: dict[str, dict[Period, WindowUsage]] = {b: dict(_UNUSED) for b in configs}
    filtered: dict[str, dict[str, WindowUsage]] = {b: {} for b in configs}
    for budget_id, period, start, spent, tokens, calls in totals:
        if period in _PERIOD_OF:
            if current[budget_id].get(period) == start:
                usage[budget_id][_PERIOD_OF[period]] = WindowUsage(spent, tokens, calls)
        elif current[budget_id].get(cast(Period, period_of(period))) == start:  # a filtered limit's own total
            filtered[budget_id][period] = WindowUsage(spent, tokens, calls)
    alerts_raised = {  # a filtered limit's ("daily~1f2e...") in its period's current window too
        (b, p, start, threshold) for b, p, start, threshold in alerts if current[b].get(p.partition("~")[0]) == start
    }
    held: dict[str, dict[HeldFor, Held]] = {}
    for budget_id, nanos, tokens, _, n, model, provider in holds:
        held.setdefault(budget_id, {})[(model, provider)] = (int(nanos), int(tokens), int(n))
    first_expiry = min(int(h[3]) for h in holds) if holds else None
    oldest: dict[str, dict[str, int]] = {b: {} for b in configs}
    rolling_alerts: dict[tuple[str, str, str], int] = {}
    for budget_id, key, nanos, tokens, calls, first, raised in row[8]:  # rolling limits: buckets inside the window
        filtered[budget_id][key] = WindowUsage(int(nanos), int(tokens), int(calls))
        if first is not None:
            oldest[budget_id][key] = int(first)
        for threshold, latest in raised:  # the latest alert of each threshold still inside it
            rolling_alerts[(budget_id, key, threshold)] = int(latest)
    budgets = budget_states(configs, usage, held, children, filtered, oldest)
    snapshot = Snapshot(now=now, budgets=budgets, alerts_raised=alerts_raised, rolling_alerts=rolling_alerts)
    if scope.reservation_id:
        hold, closing = row[5], row[6]
        if hold:
            found = Hold(hold[0], hold[1], hold[2], hold[3], from_us(hold[4]), from_us(hold[5]), hold[6], hold[7])
            snapshot.reservation = ReservationState(scope.reservation_id, found)
        elif closing:
            snapshot.reservation = ReservationState(scope.reservation_id, None, closing[0], closing[1], closing[2])
    if scope.idempotency_key and row[7]:
        snapshot.stored_result = StoredResult(row[7][0], row[7][1])
    return Loaded(snapshot, version, previous, from_us(first_expiry) if first_expiry is not None else None)


# The writes of one decision as one statement: a data-modifying CTE per kind of row present (so each shape
# of write has its own small statement, planned once), each fed whole columns through unnest().
_WRITE_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "budgets": (
        "INSERT INTO budgets (budget_id, parent_id, config, closed, created_at_us, updated_at_us) "
        "SELECT b, p, c, x, t, t FROM unnest({0}, {1}, {2}, {3}, {4}) AS n(b, p, c, x, t) "
        "ON CONFLICT (budget_id) DO UPDATE "
        "SET config = excluded.config, closed = excluded.closed, updated_at_us = excluded.updated_at_us",
        ("text", "text", "text", "bool", "bigint"),
    ),
    "entries": (
        f"INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM unnest({', '.join(f'{{{n}}}' for n in range(16))})",
        ("text", "text", "text", *("bigint",) * 7, *("text",) * 6),
    ),
    "totals": (
        "INSERT INTO totals (budget_id, period, window_start, spent_nanos, spent_tokens, calls) "
        "SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5}) "
        "ON CONFLICT (budget_id, period, window_start) DO UPDATE "
        "SET spent_nanos = totals.spent_nanos + excluded.spent_nanos, "
        "spent_tokens = totals.spent_tokens + excluded.spent_tokens, calls = totals.calls + excluded.calls",
        ("text", "text", "bigint", "bigint", "bigint", "bigint"),
    ),
    "holds": (
        "INSERT INTO holds (reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us, model, "
        "provider) SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7})",
        ("text", "text", "bigint", "bigint", "bigint", "bigint", "text", "text"),
    ),
    "hold_budgets": (
        "INSERT INTO hold_budgets (budget_id, reservation_id, cost_nanos, tokens, expires_at_us, model, provider) "
        "SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5}, {6})",
        ("text", "text", "bigint", "bigint", "bigint", "text", "text"),
    ),
    "gone_holds": ("DELETE FROM holds WHERE reservation_id = ANY({0})", ("text",)),
    "gone_hold_budgets": ("DELETE FROM hold_budgets WHERE reservation_id = ANY({0})", ("text",)),
    "alerts": (
        "INSERT INTO alerts SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}) "
        "ON CONFLICT DO NOTHING",
        ("text", "text", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "text", "text"),
    ),
    "idempotency": ("INSERT INTO idempotency SELECT * FROM unnest({0}, {1}, {2})", ("text", "text", "text")),
}


def write_statement(
    rows: dict[str, list[tuple[Any, ...]]],
    notify: str | None,
    *,
    guard: tuple[str, int] | None = None,
    durable: bool = True,
) -> tuple[str, list[Any]]:
    """The statement (and its arguments) writing the non-empty `rows` of each part, then notifying.

    With a `guard` (root, version), the statement first moves that tree to a new version, which it
    returns, and fails with a serialization error, storing nothing, when the tree is at another version.
    A guarded statement that is not `durable` commits without waiting for the WAL to reach the disk.
    """
    parts = tuple(name for name, found in rows.items() if found)
    args: list[Any] = list(guard) if guard is not None else []
    for name in parts:
        args.extend(list(column) for column in zip(*rows[name], strict=True))
    if guard is None or notify is not None:
        args.append(notify)
    return _statement_text(parts, guard is not None, notify is not None, durable), args


# Its own transaction's commit (the statement's, in autocommit) does not wait for the WAL flush: a hold
# that a crash of the database machine loses ends with the calls it was for (SET LOCAL, in one statement).
_NOT_DURABLE = "s AS (SELECT set_config('synchronous_commit', 'off', true))"


@functools.cache
def _statement_text(parts: tuple[str, ...], guarded: bool, notifying: bool, durable: bool = True) -> str:
    """The text of a write statement with these parts (a few shapes, each built once)."""
    ctes: list[str] = []
    count = 0
    lazy = guarded and not durable
    if lazy:
        ctes.append(_NOT_DURABLE)
    if guarded:
        count = 2
        ctes.append(
            "v AS (UPDATE trees SET version = nextval('tree_versions') WHERE root = $1 AND version = $2 "
            "RETURNING version)"
        )
    for name in parts:
        template, types = _WRITE_PARTS[name]
        ctes.append(f"w_{name} AS ({template.format(*(f'${count + n + 1}::{t}[]' for n, t in enumerate(types)))})")
        count += len(types)
    head = f"WITH {', '.join(ctes)} " if ctes else ""
    if not guarded:
        return f"{head}SELECT pg_notify('{CHANNEL}', ${count + 1}) WHERE ${count + 1}::text IS NOT NULL"
    # The other parts run after this select has read `v` (PostgreSQL runs unread data-modifying parts
    # last), so the tree's row is locked first, as a locked batch does, and a stale guard stops at once.
    checked = "coalesce((SELECT version FROM v), budget_tree_changed())"
    sources = [f"pg_notify('{CHANNEL}', ${count + 1})"] if notifying else []
    sources += ["s"] if lazy else []  # read, so the setting is made (an unread plain CTE never runs)
    return f"{head}SELECT {checked}" + (f" FROM {', '.join(sources)}" if sources else "")


def begin_statement(key_locks: list[int], roots: tuple[str, ...], *, durable: bool = True) -> str:
    """BEGIN, the advisory locks of idempotency keys, then each tree's row locked by moving it to a new version.

    A transaction that is not `durable` commits without waiting for the WAL to reach the disk."""
    statements = ["BEGIN"] + ([] if durable else ["SET LOCAL synchronous_commit = off"])
    statements += [f"SELECT pg_advisory_xact_lock({k})" for k in key_locks]
    if roots:
        values = ", ".join(f"('{root.replace(chr(39), chr(39) * 2)}', nextval('tree_versions'))" for root in roots)
        statements.append(
            f"INSERT INTO trees (root, version) VALUES {values} "
            "ON CONFLICT (root) DO UPDATE SET previous = trees.version, version = excluded.version"
        )
    return "; ".join(statements)


def locks_of(scope: Scope) -> tuple[tuple[str, ...], list[int]]:
    """The roots of the trees a write of `scope` touches (sorted), and the advisory lock of its idempotency key."""
    roots = tuple(sorted({b.split("/")[0] for b in scope.budget_ids}))
    return roots, [lock_key("key:" + scope.idempotency_key)] if scope.idempotency_key else []


def notice(all_writes: list[Writes]) -> str | None:
    """The change notification's payload: the budgets written, as JSON (None when nothing changed)."""
    touched = sorted(
        {e.budget_id for w in all_writes for e in w.entries} | {c.budget_id for w in all_writes for c in w.budgets}
    )
    return json.dumps(touched)[:7000] if touched else None


def rows_of(
    all_writes: list[Writes], deltas: dict[TotalKey, list[int]], now_us: int
) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of each part that these writes store; `deltas` are the running totals their entries move."""
    entries = [e for w in all_writes for e in w.entries]
    holds = [h for w in all_writes for h in w.holds_added]
    gone = [(r,) for w in all_writes for r in w.holds_removed]
    return {
        "budgets": [
            (c.budget_id, parent_of(c.budget_id), config_to_json(c), c.closed, now_us)
            for w in all_writes
            for c in w.budgets
        ],
        "entries": [entry_to_row(e) for e in entries],
        "totals": sorted((b, str(p), k, *d) for (b, p, k), d in deltas.items()),
        "holds": [
            (h.reservation_id, h.budget_id, h.cost_nanos, h.tokens, to_us(h.created_at), to_us(h.expires_at), *h.of)
            for h in holds
        ],
        "hold_budgets": [
            (b, h.reservation_id, h.cost_nanos, h.tokens, to_us(h.expires_at), *h.of)
            for h in holds
            for b in path_of(h.budget_id)
        ],
        "gone_holds": gone,
        "gone_hold_budgets": gone,
        "alerts": [alert_to_row(a) for w in all_writes for a in w.alerts],
        "idempotency": [
            (key, stored.request_hash, stored.result_json)
            for w in all_writes
            if w.stored_result is not None
            for key, stored in (w.stored_result,)
        ],
    }


async def store(conn: asyncpg.Connection, writes: Writes, snapshot: Snapshot) -> None:
    """All of a decision's writes, and the change notification, in one statement."""
    if writes == Writes():
        return
    configs = {b: s.config for b, s in snapshot.budgets.items()}
    before = {c.budget_id: configs.get(c.budget_id) for c in writes.budgets}
    missing = (before.keys() - configs.keys()) | {b for e in writes.entries for b in path_of(e.budget_id)}
    missing -= configs.keys()
    if missing:
        for budget_id, config, closed, created_at_us in await conn.fetch(
            "SELECT budget_id, config, closed, created_at_us FROM budgets WHERE budget_id = ANY($1::text[])",
            sorted(missing),
        ):
            configs[budget_id] = config_from_row(budget_id, config, closed, created_at_us)
    changes = [(c, own_limit_changes(configs.get(c.budget_id), c)) for c in writes.budgets]
    configs.update({c.budget_id: c for c in writes.budgets})
    deltas = total_deltas(
        writes.entries,
        lambda b: configs[b].timezone if b in configs else "UTC",
        lambda b: filters(configs[b].limits) if b in configs else (),
    )
    statement, args = write_statement(rows_of([writes], deltas, to_us(snapshot.now)), notice([writes]))
    await conn.execute(statement, *args)
    for config, (added, removed) in changes:
        if added or removed:
            await _refill_totals(conn, config, added, removed, snapshot.now)


async def _refill_totals(
    conn: asyncpg.Connection, config: BudgetConfig, added: Sequence[Limit], removed: Sequence[str], now: datetime
) -> None:
    """Delete the running totals of the limits with totals of their own that `config` drops, and fill those of
    the ones it puts in place from the spend of its subtree already in their windows."""
    budget_id = config.budget_id
    await conn.execute(
        "DELETE FROM totals WHERE budget_id = $1 AND period = ANY($2::text[])",
        budget_id,
        [*removed, *(lim.key for lim in added)],
    )
    if not added:
        return
    found = await conn.fetch(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE ({_SCOPES['subtree']}) AND at_us >= $2 "
        f"AND kind IN {SPEND_KIND_TEXT}",
        [budget_id],
        min(counting_start_us(lim, config.timezone, now) for lim in added),
    )
    rows = filled_totals(budget_id, added, config.timezone, now, (entry_from_row(tuple(r)) for r in found))
    if rows:
        await conn.executemany("INSERT INTO totals VALUES ($1, $2, $3, $4, $5, $6)", rows)


async def replayed_totals(conn: asyncpg.Connection) -> dict[TotalKey, list[int]]:
    """Every running total recomputed from the entry log (`rows.Replay`), in the transaction `conn` is in."""
    timezones = {r[0]: json.loads(r[1])["timezone"] for r in await conn.fetch("SELECT budget_id, config FROM budgets")}
    allocations = await conn.fetch(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = 'allocate' ORDER BY seq")
    replay = Replay(lambda b: timezones.get(b, "UTC"), (entry_from_row(tuple(r)) for r in allocations))
    cursor = conn.cursor(
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind IN {REPLAYED_KINDS} ORDER BY seq", prefetch=10_000
    )
    batch: list[Entry] = []
    async for row in cursor:
        batch.append(entry_from_row(tuple(row)))
        if len(batch) == 10_000:
            replay.add(batch)
            batch = []
    replay.add(batch)
    return replay.totals


async def rebuild_totals(conn: asyncpg.Connection) -> None:
    """Replace every running total with the one the entry log gives (a schema step's repair)."""
    rows = bounded_rows(await replayed_totals(conn))
    await conn.execute("DELETE FROM totals")
    await conn.executemany("INSERT INTO totals VALUES ($1, $2, $3, $4, $5, $6)", rows)
