"""SqliteLedger: the embedded ledger, one file shared safely by many processes.

Locking and durability:
- WAL journal, so readers never block the writer; `synchronous=FULL`, so an acknowledged charge
  survives a crash of the process or of the machine. A batch of holds only (a reserving check) commits
  with `synchronous=NORMAL`: visible to every process at once, durable against a crash of the process,
  not of the machine (which would end the calls holding them too).
- Every write runs in `BEGIN IMMEDIATE`: the write lock is taken *before* the snapshot is read, so two
  processes can never both pass the same check. Other processes wait on `busy_timeout` instead of failing.
- Group commit (ledger/batching.py): writes that arrive while a transaction is running are queued and
  run together in the next one (each inside its own SAVEPOINT, so one failing decision does not undo
  the others), paying for one fsync instead of many.
- Kept snapshots (ledger/tree_cache.py, as on PostgreSQL): the writer keeps, per budget tree, what its
  last writes loaded, brought up to date with what they stored. `PRAGMA data_version` of the writing
  connection changes exactly when another connection committed; read under the write lock, unchanged,
  it proves the kept snapshot is what a fresh load would give, so a charge is one write transaction with
  no reads. Any other commit to the file drops every kept snapshot. A refusal is only ever given on a
  fresh load. Reads of a kept tree check the same counter and answer without a query.
- The writing connection is used by one operation at a time (`_writer_lock`), on its own thread, so the
  event loop never waits for a lock or an fsync. Reads use a second connection (aiosqlite), so a status
  read never waits behind a writer that is itself waiting for another process's lock.
"""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from budget_mcp.domain.accounting import TotalKey, filters
from budget_mcp.domain.ids import parent_of, path_of
from budget_mcp.domain.records import (
    MAX_SEQ,
    AlertRecord,
    BudgetConfig,
    DeliveryAttempt,
    Entry,
    EntryKind,
    HeldFor,
    Hold,
    Limit,
)
from budget_mcp.domain.windows import Period, Rolling, window_key
from budget_mcp.errors import BudgetMcpError, LedgerError
from budget_mcp.ledger.base import (
    START,
    Decide,
    Held,
    LogPage,
    Position,
    ReservationState,
    Scope,
    Snapshot,
    SpendRow,
    StoredResult,
    WindowUsage,
    Writes,
    newer_schema,
)
from budget_mcp.ledger.batching import GroupCommit, Pending, settle
from budget_mcp.ledger.codec import config_from_row, config_to_json, from_us, to_us
from budget_mcp.ledger.rows import (
    ALERT_COLUMNS,
    ENTRY_COLUMNS,
    REPLAYED_KINDS,
    SPEND_KIND_TEXT,
    STORED_ALERT_COLUMNS,
    Replay,
    alert_from_row,
    alert_to_row,
    bounded_rows,
    budget_states,
    counting_start_us,
    delivery_from_row,
    delivery_to_row,
    differences,
    entry_from_row,
    entry_to_row,
    filled_totals,
    log_page,
    own_limit_changes,
    path_configs,
    spend_row,
    stale_buckets,
    total_deltas,
)
from budget_mcp.ledger.schema import REBUILDS_TOTALS, STEPS
from budget_mcp.ledger.tree_cache import TreeCache, advance, cacheable, merged, roots_written

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
INLINE_COMMIT_S = 0.002  # lone commits quicker than this on average run on the event loop (see `_on_writer`)
PRUNE_EVERY_BATCHES = 256
_BUCKET_US = 15 * 60 * 1_000_000
HOLD_GRACE = timedelta(days=1)  # an expired hold can still be settled (and found) for this long
# What a charge writes: its entry, and (spent nanos, tokens, calls) added to each running total it moves.
INSERT_ENTRY = f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join('?' * 16)})"
ADD_TO_TOTAL = (
    "INSERT INTO totals (budget_id, period, window_start, spent_nanos, spent_tokens, calls) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (budget_id, period, window_start) DO UPDATE SET spent_nanos = spent_nanos + excluded.spent_nanos, "
    "spent_tokens = spent_tokens + excluded.spent_tokens, calls = calls + excluded.calls"
)
# Keys (budget_id, period, window_start) arrive as one JSON parameter; joining from json_each makes each key
# one primary-key lookup. (A row-value IN (...) here only used the key's prefix: a scan of every past window.)
_JOIN_KEYS = (
    "json_each(?) AS k JOIN {table} AS t ON t.budget_id = json_extract(k.value, '$[0]') "
    "AND t.period = json_extract(k.value, '$[1]') AND t.window_start = json_extract(k.value, '$[2]')"
)


@dataclass
class _Pending(Pending):
    durable: bool = True


class SqliteLedger:
    """The Ledger on one SQLite file (created, and migrated to the current schema, on open)."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-mcp-writer")
        self._writer_lock = asyncio.Lock()
        self._reader = reader
        self._commits: GroupCommit[_Pending] = GroupCommit(self._commit, gather=True)
        self._batches = 0
        self._seen = (-1, -1)  # data_version and the last entry seq changed_budgets has reported
        self._trees: dict[str, TreeCache] = {}  # kept snapshots, by root, current at the writer's data_version:
        self._version: int | None = None
        self._busy_timeout_ms = BUSY_TIMEOUT_MS
        self._commit_seconds = 0.0  # running average of a lone charge's commit (a batch of one)
        self._synchronous_full = True  # the writer's synchronous pragma: FULL, or NORMAL for a batch of holds only

    @classmethod
    async def open(cls, path: str | Path) -> "SqliteLedger":
        """Open (creating if needed) the ledger file at `path` and bring its schema up to date."""
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await asyncio.to_thread(
                sqlite3.connect, path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            reader = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {path}: {exc}; check the path and its permissions") from exc
        ledger = cls(path, writer, reader)
        try:
            await ledger._on_writer(_prepare_writer)
            await ledger._in_thread(reader, _prepare_reader)
        except BaseException:
            await ledger.close()
            raise
        return ledger

    async def close(self) -> None:
        """Close both connections (queued writes finish first)."""
        await self._commits.drained()
        async with self._writer_lock:
            await self._on_writer(lambda conn: conn.close())
        self._writer_thread.shutdown()
        await self._reader.close()

    async def read(self, scope: Scope, now: datetime) -> Snapshot:
        """A consistent snapshot of `scope`, without taking the write lock: the kept one if it is current.

        A budget tree nothing is kept of is loaded on the writing connection while it is idle, and kept.
        """
        kept = self._kept(scope, now)
        if kept is not None:
            return kept
        if _keepable_read(scope) and not self._writer_lock.locked():
            async with self._writer_lock:
                snapshot, first_hold_expiry, version = await self._on_writer(
                    lambda conn: _load_versioned(conn, scope, now), inline=True, timed=False
                )
                if version != self._version:
                    self._trees.clear()
                    self._version = version
                _keep_loaded(self._trees, scope, snapshot, first_hold_expiry)
                return snapshot

        def run(conn: sqlite3.Connection) -> Snapshot:
            conn.execute("BEGIN")
            try:
                return _load(conn, scope, now)[0]
            finally:
                conn.execute("COMMIT")

        return await self._in_thread(self._reader, run)

    def _kept(self, scope: Scope, now: datetime) -> Snapshot | None:
        """The kept snapshot for a read of `scope`, if no other connection has committed since it was current.

        Runs on the event loop: one pragma on the idle writing connection (a read of the WAL index, no lock).
        """
        if not _keepable_read(scope) or self._writer_lock.locked():
            return None
        tree = self._trees.get(scope.budget_ids[0].split("/")[0])
        if tree is None:
            return None
        try:
            version = data_version(self._writer)
        except sqlite3.Error:
            return None
        if version != self._version:
            self._trees.clear()
            return None
        return tree.at(scope, now)

    async def write(self, scope: Scope, now: datetime, decide: Decide[T], *, durable: bool = True) -> T:
        """Run `decide` on a snapshot taken under the write lock and store its writes in the same transaction.

        `durable=False` (holds only) lets a batch of such writes commit without waiting for the disk.
        """
        pending = _Pending(scope, now, decide, asyncio.get_running_loop().create_future(), durable)
        return cast(T, await self._commits.submit(None, pending))

    async def _commit(self, batch: list[_Pending]) -> None:
        # Now and then, forget holds long expired, so the per-budget hold lookups stay as small as the live holds.
        prune = self._batches % PRUNE_EVERY_BATCHES == 0
        self._batches += 1
        durable = any(pending.durable for pending in batch)

        def run(conn: sqlite3.Connection) -> tuple[list[tuple[bool, Any]], int, dict[str, TreeCache]]:
            if durable != self._synchronous_full:  # a pragma that cannot change inside the transaction
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            trees = dict(self._trees)  # this attempt's copy: kept only if its transaction commits
            outcomes, version = _run_batch(conn, batch, prune=prune, trees=trees, known=self._version)
            return outcomes, version, trees

        async with self._writer_lock:
            try:
                # A lone write may run inline; a batch (concurrent writers) goes to the thread, so the loop
                # keeps taking requests for the next batch while this one commits.
                outcomes, version, trees = await self._on_writer(run, inline=len(batch) == 1)
            except BudgetMcpError as exc:
                settle(batch, [(False, exc)] * len(batch))
                return
            self._trees, self._version = trees, version
        settle(batch, [(ok, value if ok else _translate(value)) for ok, value in outcomes])

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False, timed: bool = True) -> T:
        """Run `fn` on the writing connection (the caller holds `_writer_lock`, or nothing else can run yet).

        With `inline`, while the file's commits have been quick (`INLINE_COMMIT_S` on average), `fn` runs right
        here, on the event loop, if it can take the lock without waiting: a thread hop and the loop's wake-up
        cost more than such a commit. Otherwise, and whenever another process holds the lock, it runs on the
        connection's own thread, waiting up to the busy timeout, while the loop goes on. `timed`: the
        duration counts toward that average (commits do, reads do not).
        """
        if inline and self._commit_seconds < INLINE_COMMIT_S:
            started = time.perf_counter()
            try:
                self._set_busy_timeout(0)
                result = fn(self._writer)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or self._writer.in_transaction:
                    raise _translate(exc) from exc
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            else:
                if timed:
                    self._observe(time.perf_counter() - started)
                return result
        started = time.perf_counter()
        self._set_busy_timeout(BUSY_TIMEOUT_MS)
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, self._writer)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        if inline and timed:
            self._observe(time.perf_counter() - started)
        return result

    def _set_busy_timeout(self, ms: int) -> None:
        if ms != self._busy_timeout_ms:
            self._writer.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_timeout_ms = ms

    def _observe(self, seconds: float) -> None:
        """Fold one commit's duration into the running average that decides where commits run."""
        self._commit_seconds += (seconds - self._commit_seconds) * 0.05

    async def entries(
        self, budget_id: str, *, limit: int = 100, since: datetime | None = None, kind: EntryKind | None = None,
        before: int | None = None,
    ) -> list[Entry]:  # fmt: skip
        """The latest entries of `budget_id` and its descendants (of one `kind`, if given; below seq `before`, if
        given), newest first."""
        since_us = to_us(since) if since else -(2**62)
        kind_text = None if kind is None else kind.value
        below = MAX_SEQ if before is None else before

        def run(conn: sqlite3.Connection) -> list[Entry]:
            # Newest `limit` of each budget of the subtree from its (budget_id, seq) index, then merged: one query
            # over the whole subtree sorted every matching entry (0.7 s and ~26 MB at a million of them).
            conn.execute("BEGIN")
            try:
                found: list[tuple[Any, ...]] = []
                for (member,) in conn.execute(
                    "SELECT budget_id FROM budgets WHERE budget_id = ? OR (budget_id > ? AND budget_id < ?)",
                    (budget_id, budget_id + "/", budget_id + "0"),
                ).fetchall():
                    found += conn.execute(
                        f"SELECT seq, {ENTRY_COLUMNS} FROM entries WHERE budget_id = ? AND seq < ? AND at_us >= ? "
                        "AND (? IS NULL OR kind = ?) ORDER BY seq DESC LIMIT ?",
                        (member, below, since_us, kind_text, kind_text, limit),
                    ).fetchall()
            finally:
                conn.execute("COMMIT")
            found.sort(key=lambda row: row[0], reverse=True)
            return [entry_from_row(row[1:], row[0]) for row in found[:limit]]

        return await self._in_thread(self._reader, run)

    async def alerts(self, budget_id: str, *, since: datetime | None = None) -> list[AlertRecord]:
        """Alerts recorded for `budget_id` and its descendants, oldest first."""
        since_us = to_us(since) if since else -(2**62)

        def run(conn: sqlite3.Connection) -> list[AlertRecord]:
            rows = conn.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts WHERE (budget_id = ? OR (budget_id > ? AND budget_id < ?)) "
                "AND at_us >= ? ORDER BY at_us, budget_id, threshold",
                (budget_id, budget_id + "/", budget_id + "0", since_us),
            ).fetchall()
            return [alert_from_row(r) for r in rows]

        return await self._in_thread(self._reader, run)

    async def spend(self, budget_id: str, start: datetime, end: datetime | None) -> list[SpendRow]:
        """Spend entries of `budget_id` and its descendants in [start, end), summed per budget, model, 15 minutes."""
        bounds = (to_us(start), to_us(end) if end else 2**62)

        def run(conn: sqlite3.Connection) -> list[SpendRow]:
            rows = conn.execute(
                f"SELECT budget_id, model, provider, at_us / {_BUCKET_US} * {_BUCKET_US}, SUM(cost_nanos),"
                " SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens + cache_write_tokens),"
                " SUM(reasoning_tokens), SUM(kind = 'charge'), kind = 'adjust' FROM entries"
                " WHERE (budget_id = ? OR (budget_id > ? AND budget_id < ?)) AND kind IN ('charge', 'adjust')"
                " AND at_us >= ? AND at_us < ? GROUP BY 1, 2, 3, 4, 11 ORDER BY 4, 1, 2, 3, 11",
                (budget_id, budget_id + "/", budget_id + "0", *bounds),
            ).fetchall()
            return [spend_row(r) for r in rows]

        return await self._in_thread(self._reader, run)

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        """Store one webhook delivery attempt (its own small transaction, apart from the charge batches)."""
        row = delivery_to_row(attempt)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR REPLACE INTO alert_deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        async with self._writer_lock:
            await self._on_writer(run)

    async def deliveries(self, budget_id: str, *, since: datetime | None = None) -> list[DeliveryAttempt]:
        """Webhook delivery attempts of the alerts of `budget_id` and its descendants, oldest first."""
        since_us = to_us(since) if since else -(2**62)

        def run(conn: sqlite3.Connection) -> list[DeliveryAttempt]:
            rows = conn.execute(
                "SELECT budget_id, period, window_start, threshold, attempt, at_us, status, error FROM alert_deliveries"
                " WHERE (budget_id = ? OR (budget_id > ? AND budget_id < ?)) AND at_us >= ? ORDER BY at_us, attempt",
                (budget_id, budget_id + "/", budget_id + "0", since_us),
            ).fetchall()
            return [delivery_from_row(r) for r in rows]

        return await self._in_thread(self._reader, run)

    async def reconcile(self, now: datetime | None = None) -> list[str]:
        """Recompute every running total from the entry log and list each total that differs."""
        return await self._in_thread(self._reader, lambda conn: _reconcile(conn, now))

    async def known_entries(self, entry_ids: Sequence[str]) -> set[str]:
        """Those of `entry_ids` already in the entry log (one indexed lookup each)."""
        ids = json.dumps(list(entry_ids))
        return await self._in_thread(
            self._reader,
            lambda conn: {
                row[0]
                for row in conn.execute(
                    "SELECT entry_id FROM entries WHERE entry_id IN (SELECT value FROM json_each(?))", (ids,)
                )
            },
        )

    async def expired_budgets(self, now: datetime) -> list[str]:
        """The open budgets whose `expires_at` is at or before `now`."""
        return await self._in_thread(
            self._reader,
            lambda conn: [
                row[0] for row in conn.execute(
                    "SELECT budget_id FROM budgets WHERE closed = 0 AND json_extract(config, '$.expires_at_us') <= ? "
                    "ORDER BY 1",
                    (to_us(now),),
                )
            ],
        )  # fmt: skip

    async def budget_ids(self) -> list[str]:
        """Every budget's id, sorted."""
        return await self._in_thread(
            self._reader, lambda conn: [row[0] for row in conn.execute("SELECT budget_id FROM budgets ORDER BY 1")]
        )

    async def changed_budgets(self) -> set[str] | None:
        """Budgets of the entries appended since the last call. `PRAGMA data_version` of the reading connection
        moves whenever another connection commits, so a quiet ledger costs one pragma per call."""

        def run(conn: sqlite3.Connection) -> set[str]:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._seen[0]:
                return set()
            conn.execute("BEGIN")
            try:
                last = conn.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0]
                touched = {
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT budget_id FROM entries WHERE seq > ? AND seq <= ?", (self._seen[1], last)
                    )
                }
            finally:
                conn.execute("COMMIT")
            first, self._seen = self._seen[1] < 0, (version, last)
            return set() if first else touched

        return await self._in_thread(self._reader, run)

    async def log_position(self, seq: int | None = None) -> Position:
        """(seq, seq): commits take the write lock in turn, so sequence numbers are commit order."""
        if seq is None:
            seq = await self._in_thread(
                self._reader, lambda conn: int(conn.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0])
            )
        return (seq, seq) if seq > 0 else START

    async def entries_after(
        self, position: Position, *, prefixes: Sequence[str] | None = None, limit: int = 500
    ) -> LogPage:
        """Up to `limit` entries after `position` (of budgets under `prefixes`), in seq order, with their alerts."""
        wanted = None if prefixes is None else json.dumps(list(prefixes))

        def run(conn: sqlite3.Connection) -> LogPage:
            conn.execute("BEGIN")
            try:
                head = int(conn.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0])
                rows = conn.execute(
                    f"SELECT seq, {ENTRY_COLUMNS} FROM entries WHERE seq > ? AND (? IS NULL OR EXISTS (SELECT 1 FROM "
                    "json_each(?) AS p WHERE budget_id = p.value OR (budget_id > p.value || '/' AND budget_id < "
                    "p.value || '0'))) ORDER BY seq LIMIT ?",
                    (position[1], wanted, wanted, limit),
                ).fetchall()
                ids = json.dumps([row[1] for row in rows])
                alerts = conn.execute(
                    f"SELECT {ALERT_COLUMNS} FROM alerts WHERE entry_id IN (SELECT value FROM json_each(?)) "
                    "ORDER BY budget_id, period, threshold",
                    (ids,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            found = [((row[0], row[0]), row[0], row[1:]) for row in rows]
            return log_page(found, alerts, limit, (head, head), position)

        return await self._in_thread(self._reader, run)

    def on_change(self, callback: Callable[[], None]) -> None:
        """SQLite has no notices between processes: readers of the log poll it (`entries_after` is one query)."""

    async def _in_thread(self, conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        # `_execute` is the queue aiosqlite's own methods use; passing a whole function makes it one hop.
        execute = cast(Callable[..., Any], conn._execute)
        try:
            return cast(T, await execute(fn, conn._conn))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return LedgerError(f"the ledger stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s; try again")
    if isinstance(exc, sqlite3.Error):
        return LedgerError(f"ledger storage failed: {exc}")
    return exc


# ---- everything below runs on a connection's worker thread (or inline, see `_on_writer`) ----


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's change counter of `conn`: it moves exactly when another connection has committed since.

    Every kept snapshot is trusted on this number alone (the tests break it on purpose to prove that).
    """
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _prepare_writer(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _refuse_newer(conn)  # before the journal mode is set: a ledger this code cannot read is left as it was
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = OFF")  # steps rebuild tables that others reference; it cannot change in BEGIN
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _refuse_newer(conn)  # again: a newer server may have migrated it since
        for number, step in enumerate(STEPS[version:], start=version + 1):
            for statement in _statements(step):
                conn.execute(statement)
            if number in REBUILDS_TOTALS:
                _rebuild_totals(conn)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("PRAGMA foreign_keys = ON")
    if version < len(STEPS):  # a step may have rewritten every table: copy it into the file, empty the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _refuse_newer(conn: sqlite3.Connection) -> int:
    """The ledger's schema version; a LedgerError if it is newer than this code knows."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(STEPS):
        raise newer_schema(conn.execute("PRAGMA database_list").fetchone()[2], version, len(STEPS))
    return version


def _prepare_reader(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _statements(script: str) -> Iterable[str]:
    """Split a DDL script into statements (executescript would commit the open transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _run_batch(
    conn: sqlite3.Connection, batch: list[_Pending], *, prune: bool, trees: dict[str, TreeCache], known: int | None
) -> tuple[list[tuple[bool, Any]], int]:
    """Decide and store each write of `batch` in one transaction; `trees` (the kept snapshots, current at
    data_version `known`) is brought up to date. Returns each write's outcome and the data_version."""
    outcomes: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    alone = len(batch) == 1  # a failure then undoes the whole transaction: no savepoint needed
    try:
        version = data_version(conn)
        if version != known:  # another connection committed: nothing kept can be trusted
            trees.clear()
        if prune:
            cutoff = (to_us(batch[0].now - HOLD_GRACE),)
            conn.execute("DELETE FROM hold_budgets WHERE expires_at_us < ?", cutoff)
            conn.execute("DELETE FROM holds WHERE expires_at_us < ?", cutoff)
        written: dict[str, BudgetConfig] = {}  # the budgets this batch wrote to, for pruning their rolling buckets
        for pending in batch:
            if not alone:
                conn.execute("SAVEPOINT op")
            try:
                result, writes, snapshot = _decide(conn, pending, trees)
                deltas = _store(conn, writes, snapshot)
                if prune:
                    written.update(path_configs(pending.scope.budget_ids, snapshot.budgets))
            except Exception as exc:  # one decision's failure, domain or storage, must not undo the batch
                if alone:
                    conn.execute("ROLLBACK")
                    return [(False, exc)], version
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((False, exc))
            else:
                if not alone:
                    conn.execute("RELEASE op")
                outcomes.append((True, result))
                _keep_up(trees, writes, snapshot, deltas)
        if written:
            conn.executemany(
                "DELETE FROM totals WHERE budget_id = ? AND period = ? AND window_start < ?",
                stale_buckets(written.items(), batch[-1].now),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes, version


def _decide(conn: sqlite3.Connection, pending: _Pending, trees: dict[str, TreeCache]) -> tuple[Any, Writes, Snapshot]:
    """`pending`'s decision and writes, on its tree's kept snapshot when that serves, else on a fresh load
    (which is then kept). A refusal is never given on a kept snapshot: it is decided again on a fresh one."""
    scope, now = pending.scope, pending.now
    root = scope.budget_ids[0].split("/")[0] if cacheable(scope) else None
    tree = trees.get(root) if root is not None else None
    kept = tree.at(scope, now) if tree is not None else None
    if kept is not None:
        if scope.idempotency_key:
            kept.stored_result = _stored_result(conn, scope.idempotency_key)
        try:
            result, writes = pending.decide(kept)
        except Exception:
            pass
        else:
            return result, writes, kept
    snapshot, first_hold_expiry = _load(conn, scope, now)
    _keep_loaded(trees, scope, snapshot, first_hold_expiry)
    result, writes = pending.decide(snapshot)
    return result, writes, snapshot


def _keepable_read(scope: Scope) -> bool:
    return cacheable(scope) and not scope.reservation_id and not scope.idempotency_key


def _load_versioned(conn: sqlite3.Connection, scope: Scope, now: datetime) -> tuple[Snapshot, datetime | None, int]:
    """`_load` in a read transaction, with the data_version it is current at."""
    conn.execute("BEGIN")
    try:
        version = data_version(conn)
        return (*_load(conn, scope, now), version)
    finally:
        conn.execute("COMMIT")


def _keep_loaded(
    trees: dict[str, TreeCache], scope: Scope, snapshot: Snapshot, first_hold_expiry: datetime | None
) -> None:
    """Merge a snapshot of `scope`, loaded at the state `trees` are current at, into its tree's kept one."""
    if not cacheable(scope):
        return
    root = scope.budget_ids[0].split("/")[0]
    tree = merged(trees.get(root), 0, scope, snapshot, first_hold_expiry)
    if tree is None:
        trees.pop(root, None)
    else:
        trees[root] = tree


def _keep_up(
    trees: dict[str, TreeCache], writes: Writes, snapshot: Snapshot, deltas: dict[TotalKey, list[int]]
) -> None:
    """Bring the kept trees up to date with `writes` (stored on `snapshot`, moving the running totals by
    `deltas`); drop those they cannot be applied to."""
    roots = roots_written(writes)
    if writes.holds_removed:
        settled = snapshot.reservation.hold if snapshot.reservation else None
        if settled is None or writes.holds_removed != [settled.reservation_id]:
            trees.clear()  # holds of budgets it cannot name: whichever tree held them is out of date
            return
        roots.add(settled.budget_id.split("/")[0])
    for root in roots:
        tree = trees.get(root)
        if tree is None:
            continue
        kept = advance(tree, writes, deltas, snapshot.now)
        if kept is None or len(roots) > 1:
            trees.pop(root)
        else:
            trees[root] = kept


def _stored_result(conn: sqlite3.Connection, key: str) -> StoredResult | None:
    row = conn.execute("SELECT request_hash, result FROM idempotency WHERE key = ?", (key,)).fetchone()
    return StoredResult(row[0], row[1]) if row else None


def _load(conn: sqlite3.Connection, scope: Scope, now: datetime) -> tuple[Snapshot, datetime | None]:
    """A snapshot of `scope` at `now`, and when its first live hold expires (its held sums change then)."""
    now_us = to_us(now)
    columns = "budget_id, parent_id, config, closed, created_at_us"
    if scope.everything:
        rows = conn.execute(f"SELECT {columns} FROM budgets").fetchall()
    elif scope.subtree is not None:
        root = scope.subtree
        rows = conn.execute(
            f"SELECT {columns} FROM budgets WHERE budget_id = ? OR (budget_id > ? AND budget_id < ?)",
            (root, root + "/", root + "0"),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {columns} FROM budgets WHERE budget_id IN (SELECT value FROM json_each(?))",
            (json.dumps(scope.budget_ids),),
        ).fetchall()
    loaded = {row[0]: row for row in rows}
    children: dict[str, list[str]] = {budget_id: [] for budget_id in loaded}
    if loaded:
        child_rows = conn.execute(
            f"SELECT {columns} FROM budgets WHERE closed = 0 AND parent_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(loaded)),),
        ).fetchall()
        for row in child_rows:
            children[row[1]].append(row[0])
            loaded.setdefault(row[0], row)

    configs = {budget_id: config_from_row(budget_id, row[2], row[3], row[4]) for budget_id, row in loaded.items()}
    keys = [(b, p.value, window_key(p, c.timezone, now)) for b, c in configs.items() for p in Period]
    keys += [(b, lim.key, window_key(cast(Period, lim.period), c.timezone, now))
             for b, c in configs.items() for lim in c.limits if lim.filtered and lim.rolling is None]  # fmt: skip
    usage: dict[str, dict[Period, WindowUsage]] = {b: {p: WindowUsage() for p in Period} for b in configs}
    filtered: dict[str, dict[str, WindowUsage]] = {b: {} for b in configs}
    alerts_raised: set[tuple[str, str, int, str]] = set()
    rolling_alerts: dict[tuple[str, str, str], int] = {}
    if keys:
        keys_json = json.dumps(keys)
        for budget_id, period, _, spent, tokens, calls in conn.execute(
            "SELECT t.budget_id, t.period, t.window_start, t.spent_nanos, t.spent_tokens, t.calls FROM "
            + _JOIN_KEYS.format(table="totals"),
            (keys_json,),
        ):
            if "~" in period:
                filtered[budget_id][period] = WindowUsage(spent, tokens, calls)
            else:
                usage[budget_id][Period(period)] = WindowUsage(spent, tokens, calls)
        for budget_id, period, start, threshold in conn.execute(
            "SELECT t.budget_id, t.period, t.window_start, t.threshold FROM " + _JOIN_KEYS.format(table="alerts"),
            (keys_json,),
        ):
            alerts_raised.add((budget_id, period, start, threshold))

    oldest: dict[str, dict[str, int]] = {b: {} for b in configs}
    for budget_id, config in configs.items():
        for lim in config.limits:
            if lim.rolling is not None:
                filtered[budget_id][lim.key], found = rolling_usage(conn, budget_id, lim.key, lim.rolling, now)
                if found is not None:
                    oldest[budget_id][lim.key] = found
                for threshold, latest in conn.execute(  # the latest alert of each threshold still inside the window
                    "SELECT threshold, MAX(window_start) FROM alerts WHERE budget_id = ? AND period = ? "
                    "AND window_start >= ? GROUP BY threshold",
                    (budget_id, lim.key, lim.rolling.first_bucket(now)),
                ):
                    rolling_alerts[(budget_id, lim.key, threshold)] = latest

    held: dict[str, dict[HeldFor, Held]] = {}
    first_expiry: int | None = None
    if configs:
        for budget_id, model, provider, nanos, tokens, count, expiry in conn.execute(
            "SELECT budget_id, model, provider, SUM(cost_nanos), SUM(tokens), COUNT(*), MIN(expires_at_us) "
            "FROM hold_budgets WHERE budget_id IN (SELECT value FROM json_each(?)) AND expires_at_us > ? "
            "GROUP BY budget_id, model, provider",
            (json.dumps(list(configs)), now_us),
        ):
            held.setdefault(budget_id, {})[(model, provider)] = (nanos, tokens, count)
            first_expiry = expiry if first_expiry is None else min(first_expiry, expiry)

    budgets = budget_states(configs, usage, held, children, filtered, oldest)
    snapshot = Snapshot(now=now, budgets=budgets, alerts_raised=alerts_raised, rolling_alerts=rolling_alerts)
    if scope.reservation_id:
        snapshot.reservation = _load_reservation(conn, scope.reservation_id)
    if scope.idempotency_key:
        snapshot.stored_result = _stored_result(conn, scope.idempotency_key)
    return snapshot, None if first_expiry is None else from_us(first_expiry)


def rolling_usage(
    conn: sqlite3.Connection, budget_id: str, key: str, rolling: Rolling, now: datetime
) -> tuple[WindowUsage, int | None]:
    """A rolling limit's spend at `now`, summed over its buckets still inside the window (a range of the totals'
    primary key: at most one row per bucket of the window, however large the ledger), and its oldest bucket
    with spend in it."""
    nanos, tokens, calls, oldest = conn.execute(
        "SELECT coalesce(SUM(spent_nanos), 0), coalesce(SUM(spent_tokens), 0), coalesce(SUM(calls), 0), "
        "MIN(CASE WHEN spent_nanos != 0 OR spent_tokens != 0 OR calls != 0 THEN window_start END) FROM totals "
        "WHERE budget_id = ? AND period = ? AND window_start >= ?",
        (budget_id, key, rolling.first_bucket(now)),
    ).fetchone()
    return WindowUsage(nanos, tokens, calls), oldest


def _load_reservation(conn: sqlite3.Connection, reservation_id: str) -> ReservationState | None:
    row = conn.execute(
        "SELECT reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us, model, provider "
        "FROM holds WHERE reservation_id = ?",
        (reservation_id,),
    ).fetchone()
    if row:
        hold = Hold(row[0], row[1], row[2], row[3], from_us(row[4]), from_us(row[5]), row[6], row[7])
        return ReservationState(reservation_id, hold)
    closing = conn.execute(
        "SELECT entry_id, kind, budget_id FROM entries WHERE reservation_id = ? AND kind != 'hold' "
        "ORDER BY seq DESC LIMIT 1",
        (reservation_id,),
    ).fetchone()
    return ReservationState(reservation_id, None, *closing) if closing else None


def _store(conn: sqlite3.Connection, writes: Writes, snapshot: Snapshot) -> dict[TotalKey, list[int]]:
    """Store `writes` (decided on `snapshot`); returns the running-total deltas its entries made."""
    now_us = to_us(snapshot.now)
    deltas: dict[TotalKey, list[int]] = {}
    changes = [(c, own_limit_changes(_config_before(conn, c.budget_id, snapshot), c)) for c in writes.budgets]
    if writes.budgets:
        conn.executemany(
            "INSERT INTO budgets (budget_id, parent_id, config, closed, created_at_us, updated_at_us) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (budget_id) DO UPDATE SET config = excluded.config, "
            "closed = excluded.closed, updated_at_us = excluded.updated_at_us",
            [
                (c.budget_id, parent_of(c.budget_id), config_to_json(c), int(c.closed), now_us, now_us)
                for c in writes.budgets
            ],
        )
    if writes.entries:
        conn.executemany(INSERT_ENTRY, [entry_to_row(entry) for entry in writes.entries])
        written = {c.budget_id: c for c in writes.budgets}

        def config_of(budget_id: str) -> BudgetConfig | None:
            if budget_id in written:
                return written[budget_id]
            state = snapshot.budgets.get(budget_id)
            return state.config if state else _config(conn, budget_id)

        def timezone_of(budget_id: str) -> str:
            config = config_of(budget_id)
            return config.timezone if config else "UTC"

        def filters_of(budget_id: str) -> tuple[Limit, ...]:
            config = config_of(budget_id)
            return filters(config.limits) if config else ()

        deltas = total_deltas(writes.entries, timezone_of, filters_of)
        if deltas:
            conn.executemany(ADD_TO_TOTAL, [(b, str(p), k, *d) for (b, p, k), d in deltas.items()])
    for hold in writes.holds_added:
        row = (hold.reservation_id, hold.budget_id, hold.cost_nanos, hold.tokens)
        conn.execute(
            "INSERT INTO holds (reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us, model, "
            "provider) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, to_us(hold.created_at), to_us(hold.expires_at), *hold.of),
        )
        conn.executemany(
            "INSERT INTO hold_budgets (budget_id, reservation_id, cost_nanos, tokens, expires_at_us, model, provider) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (b, hold.reservation_id, hold.cost_nanos, hold.tokens, to_us(hold.expires_at), *hold.of)
                for b in path_of(hold.budget_id)
            ],
        )
    for reservation_id in writes.holds_removed:
        conn.execute("DELETE FROM holds WHERE reservation_id = ?", (reservation_id,))
        conn.execute("DELETE FROM hold_budgets WHERE reservation_id = ?", (reservation_id,))
    if writes.alerts:
        conn.executemany(
            f"INSERT OR IGNORE INTO alerts ({STORED_ALERT_COLUMNS}) VALUES ({', '.join('?' * 12)})",
            [alert_to_row(a) for a in writes.alerts],
        )
    if writes.stored_result:
        key, stored = writes.stored_result
        conn.execute("INSERT INTO idempotency VALUES (?, ?, ?)", (key, stored.request_hash, stored.result_json))
    for config, (added, removed) in changes:
        if added or removed:
            _refill_totals(conn, config, added, removed, snapshot.now)
    return deltas


def _config_before(conn: sqlite3.Connection, budget_id: str, snapshot: Snapshot) -> BudgetConfig | None:
    state = snapshot.budgets.get(budget_id)
    return state.config if state else _config(conn, budget_id)


def _refill_totals(
    conn: sqlite3.Connection, config: BudgetConfig, added: Sequence[Limit], removed: Sequence[str], now: datetime
) -> None:
    """Delete the running totals of the limits with totals of their own that `config` drops, and fill those of
    the ones it puts in place from the spend of its subtree already in their windows."""
    budget_id = config.budget_id
    conn.executemany("DELETE FROM totals WHERE budget_id = ? AND period = ?", [(budget_id, key) for key in removed])
    if not added:
        return
    conn.executemany("DELETE FROM totals WHERE budget_id = ? AND period = ?", [(budget_id, lim.key) for lim in added])
    since_us = min(counting_start_us(lim, config.timezone, now) for lim in added)
    found: list[tuple[Any, ...]] = []
    for (member,) in conn.execute(
        "SELECT budget_id FROM budgets WHERE budget_id = ? OR (budget_id > ? AND budget_id < ?)",
        (budget_id, budget_id + "/", budget_id + "0"),
    ).fetchall():
        found += conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE budget_id = ? AND at_us >= ? AND kind IN {SPEND_KIND_TEXT}",
            (member, since_us),
        ).fetchall()
    rows = filled_totals(budget_id, added, config.timezone, now, map(entry_from_row, found))
    conn.executemany("INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?)", rows)


def _config(conn: sqlite3.Connection, budget_id: str) -> BudgetConfig | None:
    row = conn.execute("SELECT config, closed, created_at_us FROM budgets WHERE budget_id = ?", (budget_id,)).fetchone()
    return config_from_row(budget_id, row[0], row[1], row[2]) if row else None


def _totals_from_entries(conn: sqlite3.Connection) -> dict[TotalKey, list[int]]:
    timezones = {b: json.loads(cfg)["timezone"] for b, cfg in conn.execute("SELECT budget_id, config FROM budgets")}
    allocations = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = 'allocate' ORDER BY seq")
    replay = Replay(lambda b: timezones.get(b, "UTC"), map(entry_from_row, allocations))
    cursor = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind IN {REPLAYED_KINDS} ORDER BY seq")
    while rows := cursor.fetchmany(10_000):
        replay.add(map(entry_from_row, rows))
    return replay.totals


def _rebuild_totals(conn: sqlite3.Connection) -> None:
    """Every running total recomputed from the entries (a sum beyond the ledger's range is kept at its bound)."""
    rows = bounded_rows(_totals_from_entries(conn))
    conn.execute("DELETE FROM totals")
    conn.executemany("INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?)", rows)


def _reconcile(conn: sqlite3.Connection, now: datetime | None) -> list[str]:
    actual = conn.execute("SELECT budget_id, period, window_start, spent_nanos, spent_tokens, calls FROM totals")
    return differences(_totals_from_entries(conn), actual, now)
