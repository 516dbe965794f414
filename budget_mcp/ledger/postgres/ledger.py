"""PostgresLedger: the Ledger on PostgreSQL, for several budget-mcp servers on several hosts sharing one ledger.

Driver and locking, chosen by measurement (benchmarks/postgres_bench.py; the project's PostgreSQL notes):
- asyncpg, on a pool whose connections carry no session state, so the reset query on release is
  skipped (one round trip less per operation, about +40% throughput in the notes' measurements).
- READ COMMITTED, and one row per budget tree in `trees` whose version every write to the tree moves.
  That row is the tree's lock: a write locks it first, so writers on one tree queue behind each other
  (a `block` budget is never overspent, whatever the number of servers), other trees proceed in
  parallel, and an upsert covers trees not created yet. SERIALIZABLE bought retries, not safety.
- The notes' fastest pattern is one conditional statement per charge. The engine decides over several
  limits, windows, holds and carved allocations at once, so the condition here is the tree's version:
  a server keeps the snapshots its last writes to a tree loaded, brought up to date with what it wrote
  (tree_cache.py), decides the next writes on them, and stores those in one statement that moves the
  version only if it is still the one the snapshots are current at, and otherwise fails having stored
  nothing. One round trip per charge while one server has a tree to itself; sequential charges went
  from 1,244 to ~2,500/s. A read whose tree is at the kept version answers from the kept snapshot.
- Otherwise (first write, another server wrote, holds or budgets change, a refusal to give) the write is
  locked: BEGIN with the tree rows and the idempotency key's advisory lock, the snapshot in one
  statement, the decision, the writes in one statement, COMMIT. Writes that queue for one tree while a
  batch is stored go together in the next batch, either way (group commit).
- Every committed write sends `pg_notify('budget_events', ...)`; each server keeps one dedicated
  listening connection (a LISTEN on a pooled connection would be lost), counts what it hears, and
  treats a reconnect as "anything may have changed", since notifications sent meanwhile are lost.

Money is BIGINT nano-USD; budget ids are `COLLATE "C"` so prefix ranges compare byte-wise as in SQLite.
"""

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg

from budget_mcp.domain.accounting import TotalKey
from budget_mcp.domain.records import MAX_SEQ, AlertRecord, BudgetConfig, DeliveryAttempt, Entry, EntryKind
from budget_mcp.errors import LedgerError
from budget_mcp.ledger.base import (
    START,
    Decide,
    LogPage,
    Position,
    Scope,
    Snapshot,
    SpendRow,
    Writes,
)
from budget_mcp.ledger.batching import GroupCommit, Pending, settle
from budget_mcp.ledger.codec import redact_url, to_us
from budget_mcp.ledger.postgres.connections import Lender, Translated
from budget_mcp.ledger.postgres.schema import TABLES, migrate
from budget_mcp.ledger.postgres.statements import (
    CHANNEL,
    Loaded,
    begin_statement,
    load,
    locks_of,
    notice,
    replayed_totals,
    rows_of,
    store,
    write_statement,
)
from budget_mcp.ledger.rows import (
    ALERT_COLUMNS,
    ENTRY_COLUMNS,
    add_deltas,
    alert_from_row,
    delivery_from_row,
    delivery_to_row,
    differences,
    entry_from_row,
    log_page,
    path_configs,
    spend_row,
    stale_buckets,
    total_deltas,
)
from budget_mcp.ledger.tree_cache import TreeCache, advance, cacheable, merged, roots_written

logger = logging.getLogger(__name__)
T = TypeVar("T")
_BUCKET_US = 15 * 60 * 1_000_000
PRUNE_EVERY_WRITES = 256
MAX_BATCH = 64
MAX_KEPT_TREES = 4096  # trees whose snapshots a server keeps (least recently written forgotten first)
HOLD_GRACE_US = 86_400 * 1_000_000
_FAR = 2**62
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"  # every transaction older than this has ended


@dataclass
class _Pending(Pending):
    roots: tuple[str, ...] = ()
    key_locks: list[int] = field(default_factory=list)
    durable: bool = True


def _durable(batch: list[_Pending]) -> bool:
    """Whether the batch's commit must wait for the disk (any write in it but a hold)."""
    return any(pending.durable for pending in batch)


async def _reset(conn: asyncpg.Connection) -> None:
    """Roll back what a request cut off mid-transaction left open; otherwise nothing (no reset round trip).

    Pooled connections carry no session state, so the driver's default reset query is not needed.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresLedger:
    """The Ledger on a PostgreSQL database (schema created or upgraded on open)."""

    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.dsn = dsn
        self._lender = Lender(pool)
        self._listener: asyncpg.Connection | None = None
        self._heard: set[str] | None = set()
        self._writes = 0
        self._commits: GroupCommit[_Pending] = GroupCommit(self._store_batch, max_batch=MAX_BATCH)
        self._trees: dict[str, TreeCache] = {}
        self._on_change: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, dsn: str, *, max_connections: int = 10) -> "PostgresLedger":
        """Connect to `dsn`, bring the schema up to date (safe when several servers start at once)."""
        try:
            await migrate(dsn)
            # Generic plans: the ledger's few statements are planned once per connection, not per call
            # (planning the snapshot statement cost twice its execution).
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_connections, reset=_reset,
                server_settings={"plan_cache_mode": "force_generic_plan"},
            )  # fmt: skip
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LedgerError(f"cannot open the PostgreSQL ledger at {redact_url(dsn)}: {exc}") from exc
        return cls(dsn, pool)

    async def close(self) -> None:
        """Close the listening connection and the pool (queued writes and requests in flight finish first)."""
        await self._commits.drained()
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._lender.close()

    async def read(self, scope: Scope, now: datetime) -> Snapshot:
        """A consistent snapshot of `scope`: one statement, so one MVCC snapshot, and no lock.

        The statement also returns the tree's version: if it is the one this server's kept snapshot is current
        at, that snapshot is the answer and the rest of the reply need not be parsed.
        """
        async with self._connection() as conn:
            kept = self._trees.get(scope.budget_ids[0].split("/")[0]) if cacheable(scope) else None
            return (await load(conn, scope, now, kept)).snapshot

    async def write(self, scope: Scope, now: datetime, decide: Decide[T], *, durable: bool = True) -> T:
        """Run `decide` on a snapshot that no other write changes before its writes are stored; store them.

        Writes to the same budget tree queue up, and what has queued while one batch was being stored goes
        in the next batch together (group commit). A batch is first decided on the snapshots this server
        kept from its last writes to the tree and stored by one statement that also checks the tree's
        version (one round trip). When that cannot be done, or another writer changed the tree meanwhile,
        the batch runs locked: BEGIN with the locks, then per write its snapshot and its writes, then COMMIT.
        A batch of writes that are all not `durable` (holds only) commits without waiting for the WAL flush
        (`synchronous_commit = off` for its transaction): visible at once, lost only if the database machine
        crashes; any other batch waits for the disk.
        """
        roots, key_locks = locks_of(scope)
        if scope.reservation_id and not scope.budget_ids:
            roots = await self._owner_root(scope.reservation_id)
        pending = _Pending(scope, now, decide, asyncio.get_running_loop().create_future(), roots, key_locks, durable)
        return cast(T, await self._commits.submit(roots, pending))

    async def _store_batch(self, batch: list[_Pending]) -> None:
        if not await self._store_on_kept(batch):
            await self._store_locked(batch)

    async def _store_on_kept(self, batch: list[_Pending]) -> bool:
        """Decide the batch on its tree's kept snapshot and store it if the tree is unchanged (else False)."""
        root = batch[0].roots[0] if len(batch[0].roots) == 1 else None
        kept = self._trees.get(root) if root is not None else None
        if root is None or kept is None:
            return False
        tree: TreeCache | None = kept
        decided: list[tuple[Any, Writes]] = []
        deltas: dict[TotalKey, list[int]] = {}
        for pending in batch:
            snapshot = tree.at(pending.scope, pending.now) if tree and cacheable(pending.scope) else None
            if tree is None or snapshot is None:
                return False
            try:
                result, writes = pending.decide(snapshot)
            except Exception:
                return False  # a refusal is only ever given on a fresh snapshot
            try:
                added = total_deltas(writes.entries, tree.timezone_of, tree.filters_of)
            except KeyError:  # a budget the kept snapshot does not hold
                return False
            tree = advance(tree, writes, added, pending.now)
            if decided:
                add_deltas(deltas, added)
            else:
                deltas = added
            decided.append((result, writes))
        if tree is None:
            return False
        all_writes = [writes for _, writes in decided]
        statement, args = write_statement(
            rows_of(all_writes, deltas, to_us(batch[-1].now)),
            notice(all_writes),
            guard=(root, kept.version),
            durable=_durable(batch),
        )
        try:
            async with self._connection() as conn:
                try:
                    version = await conn.fetchval(statement, *args)
                except (asyncpg.SerializationError, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                    version = None  # the tree changed, or a key was used already: decide again, locked and fresh
        except Exception as exc:  # nothing of the batch is known to be stored: tell every caller
            self._trees.pop(root, None)
            settle(batch, [(False, exc)] * len(batch))
            return True
        if version is None:
            self._trees.pop(root, None)
            return False
        self._keep_tree(root, dataclasses.replace(tree, version=version))
        settle(batch, [(True, result) for result, _ in decided])
        await self._wrote(batch)
        return True

    async def _store_locked(self, batch: list[_Pending]) -> None:
        """Lock the batch's tree, then per write load a snapshot, decide and store; commit once."""
        roots = batch[0].roots  # a batch shares its queue's roots
        outcomes: list[tuple[bool, Any]] = []
        loaded: list[tuple[_Pending, Loaded, Writes]] = []
        try:
            async with self._connection() as conn:
                try:
                    await conn.execute(
                        begin_statement(
                            sorted({k for pending in batch for k in pending.key_locks}), roots, durable=_durable(batch)
                        )
                    )
                    for pending in batch:
                        found = await load(conn, pending.scope, pending.now)
                        try:
                            result, writes = pending.decide(found.snapshot)
                        except Exception as exc:  # decide is pure: its failure wrote nothing, the others go on
                            outcomes.append((False, exc))
                            loaded.append((pending, found, Writes()))
                            continue
                        if not roots_written(writes) <= set(roots):
                            # Only a hold created after its owner was looked up could do this: nothing is written.
                            outcomes.append(
                                (False, LedgerError("the write reached a budget tree it had not locked; retry"))
                            )
                            loaded.append((pending, found, Writes()))
                            continue
                        await store(conn, writes, found.snapshot)
                        outcomes.append((True, result))
                        loaded.append((pending, found, writes))
                    await conn.execute("COMMIT")
                except BaseException:
                    if not conn.is_closed() and conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # the transaction failed: nothing of this batch was written, tell every caller
            self._trees.pop(roots[0] if roots else "", None)
            settle(batch, [(False, exc)] * len(batch))
            return
        self._keep(roots, loaded)
        settle(batch, outcomes)
        await self._wrote(batch)

    def _keep(self, roots: tuple[str, ...], loaded: list[tuple[_Pending, "Loaded", Writes]]) -> None:
        """Keep what a locked batch loaded, brought up to date with its writes, for the tree's next writes."""
        versioned = next((found for _, found, _ in loaded if found.version is not None), None)
        if len(roots) != 1 or versioned is None or versioned.version is None:
            self._trees.pop(roots[0] if roots else "", None)
            return
        version, kept = versioned.version, self._trees.get(roots[0])
        # What was kept stays good if this batch's writes are the only ones since it was current.
        tree = dataclasses.replace(kept, version=version) if kept and kept.version == versioned.previous else None
        for pending, found, writes in loaded:
            if cacheable(pending.scope):
                tree = merged(tree, version, pending.scope, found.snapshot, found.first_hold_expiry)
            if tree is not None:
                try:
                    deltas_of = total_deltas(writes.entries, tree.timezone_of, tree.filters_of)
                    tree = advance(tree, writes, deltas_of, pending.now)
                except KeyError:  # written budgets the snapshot does not hold
                    tree = None
            # When these writes could not be applied, what was loaded before them is out of date; what is
            # loaded after them is not, so the next load starts afresh.
        if tree is None:
            self._trees.pop(roots[0], None)
        else:
            self._keep_tree(roots[0], tree)

    def _keep_tree(self, root: str, tree: TreeCache) -> None:
        """Keep `tree` as the most recently used; forget the least recently used beyond MAX_KEPT_TREES."""
        self._trees.pop(root, None)
        self._trees[root] = tree
        if len(self._trees) > MAX_KEPT_TREES:
            del self._trees[next(iter(self._trees))]

    async def _wrote(self, batch: list[_Pending]) -> None:
        self._writes += len(batch)
        if self._writes // PRUNE_EVERY_WRITES != (self._writes - len(batch)) // PRUNE_EVERY_WRITES:
            written: dict[str, BudgetConfig] = {}
            for pending in batch:
                tree = self._trees.get(pending.roots[0]) if pending.roots else None
                if tree is not None:
                    written.update(path_configs(pending.scope.budget_ids, tree.snapshot.budgets))
            await self._prune(to_us(batch[-1].now) - HOLD_GRACE_US, stale_buckets(written.items(), batch[-1].now))

    async def _prune(self, cutoff: int, buckets: list[tuple[str, str, int]]) -> None:
        """Forget holds that expired before `cutoff`, and the rolling `buckets` outside every window of theirs
        (`stale_buckets`: those of the budgets just written), in statements of their own, outside any tree's lock."""
        try:
            await self._execute("DELETE FROM hold_budgets WHERE expires_at_us < $1", cutoff)
            await self._execute("DELETE FROM holds WHERE expires_at_us < $1", cutoff)
            if buckets:
                async with self._connection() as conn:
                    await conn.executemany(
                        "DELETE FROM totals WHERE budget_id = $1 AND period = $2 AND window_start < $3", buckets
                    )
        except LedgerError as exc:  # housekeeping: the next round tries again
            logger.warning("pruning expired holds and rolling buckets failed: %s", exc)

    async def _owner_root(self, reservation_id: str) -> tuple[str, ...]:
        """The root of the budget holding `reservation_id`, if the hold still exists."""
        async with self._connection() as conn:
            owner = await conn.fetchval("SELECT budget_id FROM holds WHERE reservation_id = $1", reservation_id)
        return (owner.split("/")[0],) if owner else ()

    async def entries(
        self, budget_id: str, *, limit: int = 100, since: datetime | None = None, kind: EntryKind | None = None,
        before: int | None = None,
    ) -> list[Entry]:  # fmt: skip
        """The latest entries of `budget_id` and its descendants (of one `kind`, if given; below seq `before`, if
        given), newest first by seq (which is not commit order here: see entries_after)."""
        rows = await self._fetch(
            f"SELECT seq, {ENTRY_COLUMNS} FROM entries WHERE (budget_id = $1 OR (budget_id > $2 AND budget_id < $3)) "
            "AND at_us >= $4 AND ($6::text IS NULL OR kind = $6) AND seq < $7 ORDER BY seq DESC LIMIT $5",
            budget_id, budget_id + "/", budget_id + "0", to_us(since) if since else -_FAR, limit,
            None if kind is None else kind.value, MAX_SEQ if before is None else before,
        )  # fmt: skip
        return [entry_from_row(tuple(row)[1:], int(row[0])) for row in rows]

    async def alerts(self, budget_id: str, *, since: datetime | None = None) -> list[AlertRecord]:
        """Alerts recorded for `budget_id` and its descendants, oldest first."""
        rows = await self._fetch(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE (budget_id = $1 OR (budget_id > $3 AND budget_id < $4)) "
            "AND at_us >= $2 ORDER BY at_us, budget_id, threshold",
            budget_id, to_us(since) if since else -_FAR, budget_id + "/", budget_id + "0",
        )  # fmt: skip
        return [alert_from_row(tuple(row)) for row in rows]

    async def spend(self, budget_id: str, start: datetime, end: datetime | None) -> list[SpendRow]:
        """Spend entries of `budget_id` and its descendants in [start, end), summed per budget, model, 15 minutes."""
        rows = await self._fetch(
            f"SELECT budget_id, model, provider, at_us / {_BUCKET_US} * {_BUCKET_US} AS bucket, SUM(cost_nanos),"
            " SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens + cache_write_tokens),"
            " SUM(reasoning_tokens), COUNT(*) FILTER (WHERE kind = 'charge'), kind = 'adjust' FROM entries"
            " WHERE (budget_id = $1 OR (budget_id > $2 AND budget_id < $3)) AND kind IN ('charge', 'adjust')"
            " AND at_us >= $4 AND at_us < $5 GROUP BY 1, 2, 3, 4, 11 ORDER BY 4, 1, 2, 3, 11",
            budget_id, budget_id + "/", budget_id + "0", to_us(start), to_us(end) if end else _FAR,
        )  # fmt: skip
        return [spend_row(r) for r in rows]

    async def record_delivery(self, attempt: DeliveryAttempt) -> None:
        """Store one webhook delivery attempt."""
        await self._execute(
            "INSERT INTO alert_deliveries VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            *delivery_to_row(attempt),
        )

    async def deliveries(self, budget_id: str, *, since: datetime | None = None) -> list[DeliveryAttempt]:
        """Webhook delivery attempts of the alerts of `budget_id` and its descendants, oldest first."""
        rows = await self._fetch(
            "SELECT budget_id, period, window_start, threshold, attempt, at_us, status, error FROM alert_deliveries"
            " WHERE (budget_id = $1 OR (budget_id > $3 AND budget_id < $4)) AND at_us >= $2 ORDER BY at_us, attempt",
            budget_id, to_us(since) if since else -_FAR, budget_id + "/", budget_id + "0",
        )  # fmt: skip
        return [delivery_from_row(tuple(r)) for r in rows]

    async def reconcile(self, now: datetime | None = None) -> list[str]:
        """Recompute every running total from the entry log and list each total that differs."""
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            expected = await replayed_totals(conn)
            actual = await conn.fetch(
                "SELECT budget_id, period, window_start, spent_nanos, spent_tokens, calls FROM totals"
            )
        return differences(expected, [tuple(r) for r in actual], now)

    async def known_entries(self, entry_ids: Sequence[str]) -> set[str]:
        """Those of `entry_ids` already in the entry log."""
        rows = await self._fetch("SELECT entry_id FROM entries WHERE entry_id = ANY($1::text[])", list(entry_ids))
        return {row[0] for row in rows}

    async def expired_budgets(self, now: datetime) -> list[str]:
        """The open budgets whose `expires_at` is at or before `now`."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT budget_id FROM budgets WHERE NOT closed AND (config::json->>'expires_at_us')::bigint <= $1 "
                "ORDER BY 1",
                to_us(now),
            )
        return [row[0] for row in rows]

    async def budget_ids(self) -> list[str]:
        """Every budget's id, sorted."""
        async with self._connection() as conn:
            return [row[0] for row in await conn.fetch("SELECT budget_id FROM budgets ORDER BY 1")]

    async def changed_budgets(self) -> set[str] | None:
        """The budgets named by the change notifications heard since the last call (from every server).

        Notifications sent while this server was not listening are lost, so after (re)connecting the
        listener, and for a notice too long to name them all, the answer is None: anything may have changed.
        """
        if self._listener is None or self._listener.is_closed():
            try:
                self._listener = await asyncpg.connect(self.dsn)
                await self._listener.add_listener(CHANNEL, self._heard_one)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                logger.warning("cannot listen for ledger changes on %s: %s", redact_url(self.dsn), exc)
                self._listener = None
            self._heard = None
        heard, self._heard = self._heard, set()
        return heard

    async def log_position(self, seq: int | None = None) -> Position:
        """(transaction id, seq) of entry `seq`, or of the newest entry whose transaction is older than every
        transaction still running (see `entries_after`)."""
        if seq is not None and seq <= 0:
            return START
        async with self._connection() as conn:
            if seq is None:
                row = await conn.fetchrow(
                    f"SELECT txid::text::bigint, seq FROM entries WHERE txid < {_HORIZON} ORDER BY txid DESC, seq DESC "
                    "LIMIT 1"
                )
            else:
                row = await conn.fetchrow(
                    "SELECT txid::text::bigint, seq FROM entries WHERE seq <= $1 ORDER BY seq DESC LIMIT 1", seq
                )
        return (int(row[0]), int(row[1])) if row else START

    async def entries_after(
        self, position: Position, *, prefixes: Sequence[str] | None = None, limit: int = 500
    ) -> LogPage:
        """Up to `limit` entries after `position` in commit order: by writing transaction, then seq.

        Sequence numbers are taken before commit, so seq 10 may commit after seq 11 is visible. Only entries
        of transactions older than the oldest one still running (the snapshot's xmin) are read: no entry can
        ever commit with such a transaction id again, so nothing later takes a place before what was read.
        One REPEATABLE READ transaction: the page, the head and the alerts share one snapshot.
        """
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(
                f"SELECT txid::text::bigint, seq, {ENTRY_COLUMNS} FROM entries "
                f"WHERE (txid, seq) > ($1::text::xid8, $2) AND txid < {_HORIZON} AND ($3::text[] IS NULL OR EXISTS "
                "(SELECT 1 FROM unnest($3::text[]) AS p(id) WHERE budget_id = p.id "
                "OR (budget_id > p.id || '/' AND budget_id < p.id || '0'))) ORDER BY txid, seq LIMIT $4",
                str(position[0]), position[1], None if prefixes is None else list(prefixes), limit,
            )  # fmt: skip
            head = await conn.fetchrow(
                f"SELECT txid::text::bigint, seq FROM entries WHERE txid < {_HORIZON} ORDER BY txid DESC, seq DESC "
                "LIMIT 1"
            )
            alerts = await conn.fetch(
                f"SELECT {ALERT_COLUMNS} FROM alerts WHERE entry_id = ANY($1::text[]) "
                "ORDER BY budget_id, period, threshold",
                [row[2] for row in rows],
            )
        found = [((int(row[0]), int(row[1])), int(row[1]), tuple(row)[2:]) for row in rows]
        top = (int(head[0]), int(head[1])) if head else START
        return log_page(found, [tuple(a) for a in alerts], limit, top, position)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever this server's listening connection hears a change notice (any server's)."""
        self._on_change.append(callback)

    async def truncate(self) -> None:
        """Empty every table (for tests and benchmarks; the schema stays)."""
        await self._execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        self._trees.clear()

    def _heard_one(self, _connection: object, _pid: object, _channel: object, payload: str) -> None:
        for callback in self._on_change:
            callback()
        if self._heard is None:
            return
        try:
            self._heard.update(json.loads(payload))
        except ValueError:  # a notice cut at its size limit: it did not name every budget
            self._heard = None

    def _connection(self) -> Any:
        return Translated(self._lender)

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return list(await conn.fetch(query, *args))

    async def _execute(self, query: str, *args: object) -> None:
        async with self._connection() as conn:
            await conn.execute(query, *args)
