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
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

import anyio
import asyncpg

from budget_mcp.domain.accounting import TotalKey
from budget_mcp.domain.ids import parent_of, path_of
from budget_mcp.domain.records import AlertRecord, DeliveryAttempt, Entry, Hold
from budget_mcp.domain.windows import Period, window_keys
from budget_mcp.errors import BudgetMcpError, LedgerError
from budget_mcp.ledger.base import (
    BudgetState,
    Decide,
    ReservationState,
    Scope,
    Snapshot,
    SpendRow,
    StoredResult,
    WindowUsage,
    Writes,
)
from budget_mcp.ledger.codec import config_from_row, config_to_json, from_us, redact_url, to_us
from budget_mcp.ledger.rows import (
    ENTRY_COLUMNS,
    add_deltas,
    alert_from_row,
    differences,
    entry_from_row,
    entry_to_row,
    spend_row,
    total_deltas,
)
from budget_mcp.ledger.tree_cache import TreeCache, advance, cacheable, merged

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "budget_events"
MIGRATION_LOCK = 7_301_847_555_117_057_792  # any constant: serialises schema upgrades of servers starting at once
_BUCKET_US = 15 * 60 * 1_000_000
PRUNE_EVERY_WRITES = 256
MAX_BATCH = 64
MAX_KEPT_TREES = 4096  # trees whose snapshots a server keeps (least recently written forgotten first)
HOLD_GRACE_US = 86_400 * 1_000_000
_FAR = 2**62

STEPS: list[str] = [
    # 1: the same tables as the SQLite ledger (step 1 and 2 there), in PostgreSQL's types.
    """
    CREATE TABLE budgets (
        budget_id     TEXT COLLATE "C" PRIMARY KEY,
        parent_id     TEXT COLLATE "C" REFERENCES budgets(budget_id),
        config        TEXT NOT NULL,
        closed        BOOLEAN NOT NULL DEFAULT FALSE,
        created_at_us BIGINT NOT NULL,
        updated_at_us BIGINT NOT NULL
    );
    CREATE INDEX budgets_parent ON budgets(parent_id);
    CREATE TABLE entries (
        seq                BIGSERIAL PRIMARY KEY,
        entry_id           TEXT NOT NULL UNIQUE,
        kind               TEXT NOT NULL,
        budget_id          TEXT COLLATE "C" NOT NULL,
        at_us              BIGINT NOT NULL,
        cost_nanos         BIGINT NOT NULL,
        input_tokens       BIGINT NOT NULL,
        output_tokens      BIGINT NOT NULL,
        cache_read_tokens  BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        reasoning_tokens   BIGINT NOT NULL,
        model              TEXT,
        provider           TEXT,
        price_source       TEXT,
        reservation_id     TEXT,
        idempotency_key    TEXT,
        metadata           TEXT
    );
    CREATE INDEX entries_budget ON entries(budget_id, seq);
    CREATE INDEX entries_budget_time ON entries(budget_id, at_us);
    CREATE INDEX entries_reservation ON entries(reservation_id, seq);
    CREATE FUNCTION entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'ledger entries are append-only'; END $$;
    CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
        FOR EACH ROW EXECUTE FUNCTION entries_append_only();
    CREATE TABLE totals (
        budget_id    TEXT COLLATE "C" NOT NULL,
        period       TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        spent_nanos  BIGINT NOT NULL,
        spent_tokens BIGINT NOT NULL,
        calls        BIGINT NOT NULL,
        PRIMARY KEY (budget_id, period, window_start)
    );
    CREATE TABLE holds (
        reservation_id TEXT PRIMARY KEY,
        budget_id      TEXT COLLATE "C" NOT NULL,
        cost_nanos     BIGINT NOT NULL,
        tokens         BIGINT NOT NULL,
        created_at_us  BIGINT NOT NULL,
        expires_at_us  BIGINT NOT NULL
    );
    CREATE INDEX holds_expiry ON holds(expires_at_us);
    CREATE TABLE hold_budgets (
        budget_id      TEXT COLLATE "C" NOT NULL,
        reservation_id TEXT NOT NULL,
        cost_nanos     BIGINT NOT NULL,
        tokens         BIGINT NOT NULL,
        expires_at_us  BIGINT NOT NULL,
        PRIMARY KEY (budget_id, reservation_id)
    );
    CREATE INDEX hold_budgets_reservation ON hold_budgets(reservation_id);
    CREATE TABLE alerts (
        budget_id    TEXT COLLATE "C" NOT NULL,
        period       TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        threshold    TEXT NOT NULL,
        at_us        BIGINT NOT NULL,
        spent_nanos  BIGINT NOT NULL,
        limit_nanos  BIGINT,
        spent_tokens BIGINT NOT NULL,
        limit_tokens BIGINT,
        PRIMARY KEY (budget_id, period, window_start, threshold)
    );
    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        result       TEXT NOT NULL
    );
    CREATE TABLE alert_deliveries (
        budget_id    TEXT COLLATE "C" NOT NULL,
        period       TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        threshold    TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        at_us        BIGINT NOT NULL,
        status       INTEGER,
        error        TEXT,
        PRIMARY KEY (budget_id, period, window_start, threshold, attempt)
    );
    """,
    # 2: a version per budget tree, changed by every write to the tree (see tree_cache.py).
    """
    CREATE SEQUENCE tree_versions;
    CREATE TABLE trees (
        root     TEXT COLLATE "C" PRIMARY KEY,
        version  BIGINT NOT NULL,
        previous BIGINT  -- the version a locked write found (so its server knows whether its snapshots still hold)
    );
    CREATE FUNCTION budget_tree_changed() RETURNS BIGINT LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'the budget tree changed since this server last read it'; END $$;
    """,
]
TABLES = (
    "alert_deliveries", "idempotency", "alerts", "hold_budgets", "holds", "totals", "entries", "budgets", "trees",
)  # fmt: skip


@dataclass
class _Pending:
    scope: Scope
    now: datetime
    decide: Decide[Any]
    roots: tuple[str, ...]
    key_locks: list[int]
    future: "asyncio.Future[Any]"


@dataclass(frozen=True)
class _Loaded:
    """A snapshot; its tree's version when read and the one before (None if not one tree); its first hold expiry."""

    snapshot: Snapshot
    version: int | None
    previous: int | None
    first_hold_expiry: datetime | None


def _settle(batch: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each waiting caller its result or its exception."""
    for pending, (ok, value) in zip(batch, outcomes, strict=True):
        if pending.future.done():
            continue
        if ok:
            pending.future.set_result(value)
        else:
            pending.future.set_exception(value)


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
        self._pool = pool
        self._listener: asyncpg.Connection | None = None
        self._heard: set[str] | None = set()
        self._writes = 0
        self._queues: dict[tuple[str, ...], list[_Pending]] = {}
        self._trees: dict[str, TreeCache] = {}

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
        """Close the listening connection and the pool (waiting for requests in flight)."""
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self._pool.close()

    async def read(self, scope: Scope, now: datetime) -> Snapshot:
        """A consistent snapshot of `scope`: one statement, so one MVCC snapshot, and no lock.

        The statement also returns the tree's version: if it is the one this server's kept snapshot is current
        at, that snapshot is the answer and the rest of the reply need not be parsed.
        """
        async with self._connection() as conn:
            kept = self._trees.get(scope.budget_ids[0].split("/")[0]) if cacheable(scope) else None
            return (await _load(conn, scope, now, kept)).snapshot

    async def write(self, scope: Scope, now: datetime, decide: Decide[T]) -> T:
        """Run `decide` on a snapshot that no other write changes before its writes are stored; store them.

        Writes to the same budget tree queue up, and what has queued while one batch was being stored goes
        in the next batch together (group commit). A batch is first decided on the snapshots this server
        kept from its last writes to the tree and stored by one statement that also checks the tree's
        version (one round trip). When that cannot be done, or another writer changed the tree meanwhile,
        the batch runs locked: BEGIN with the locks, then per write its snapshot and its writes, then COMMIT.
        """
        roots, key_locks = _locks(scope)
        if scope.reservation_id and not scope.budget_ids:
            roots = await self._owner_root(scope.reservation_id)
        pending = _Pending(scope, now, decide, roots, key_locks, asyncio.get_running_loop().create_future())
        queue = self._queues.setdefault(roots, [])
        queue.append(pending)
        if len(queue) == 1:
            # Shielded: the batch holds other callers' writes, so one caller's cancellation must not drop them.
            with anyio.CancelScope(shield=True):
                while queue:
                    batch = queue[:MAX_BATCH]
                    if not await self._store_on_kept(batch):
                        await self._store_locked(batch)
                    del queue[: len(batch)]  # more may have queued meanwhile: they go in the next batch
                del self._queues[roots]
        return cast(T, await pending.future)

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
                added = total_deltas(writes.entries, tree.timezone_of)
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
        statement, args = _write_statement(
            _rows(all_writes, deltas, to_us(batch[-1].now)), _notice(all_writes), guard=(root, kept.version)
        )
        try:
            async with self._connection() as conn:
                try:
                    version = await conn.fetchval(statement, *args)
                except (asyncpg.SerializationError, asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
                    version = None  # the tree changed, or a key was used already: decide again, locked and fresh
        except Exception as exc:  # nothing of the batch is known to be stored: tell every caller
            self._trees.pop(root, None)
            _settle(batch, [(False, exc)] * len(batch))
            return True
        if version is None:
            self._trees.pop(root, None)
            return False
        self._keep_tree(root, dataclasses.replace(tree, version=version))
        _settle(batch, [(True, result) for result, _ in decided])
        await self._wrote(batch)
        return True

    async def _store_locked(self, batch: list[_Pending]) -> None:
        """Lock the batch's tree, then per write load a snapshot, decide and store; commit once."""
        roots = batch[0].roots  # a batch shares its queue's roots
        outcomes: list[tuple[bool, Any]] = []
        loaded: list[tuple[_Pending, _Loaded, Writes]] = []
        try:
            async with self._connection() as conn:
                try:
                    await conn.execute(_begin(sorted({k for pending in batch for k in pending.key_locks}), roots))
                    for pending in batch:
                        found = await _load(conn, pending.scope, pending.now)
                        try:
                            result, writes = pending.decide(found.snapshot)
                        except Exception as exc:  # decide is pure: its failure wrote nothing, the others go on
                            outcomes.append((False, exc))
                            loaded.append((pending, found, Writes()))
                            continue
                        if not _roots_written(writes) <= set(roots):
                            # Only a hold created after its owner was looked up could do this: nothing is written.
                            outcomes.append(
                                (False, LedgerError("the write reached a budget tree it had not locked; retry"))
                            )
                            loaded.append((pending, found, Writes()))
                            continue
                        await _store(conn, writes, found.snapshot)
                        outcomes.append((True, result))
                        loaded.append((pending, found, writes))
                    await conn.execute("COMMIT")
                except BaseException:
                    if not conn.is_closed() and conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # the transaction failed: nothing of this batch was written, tell every caller
            self._trees.pop(roots[0] if roots else "", None)
            _settle(batch, [(False, exc)] * len(batch))
            return
        self._keep(roots, loaded)
        _settle(batch, outcomes)
        await self._wrote(batch)

    def _keep(self, roots: tuple[str, ...], loaded: list[tuple[_Pending, "_Loaded", Writes]]) -> None:
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
                    tree = advance(tree, writes, total_deltas(writes.entries, tree.timezone_of), pending.now)
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
            await self._prune(to_us(batch[-1].now) - HOLD_GRACE_US)

    async def _prune(self, cutoff: int) -> None:
        """Forget holds that expired before `cutoff`, in statements of their own, outside any tree's lock."""
        try:
            await self._execute("DELETE FROM hold_budgets WHERE expires_at_us < $1", cutoff)
            await self._execute("DELETE FROM holds WHERE expires_at_us < $1", cutoff)
        except LedgerError as exc:  # housekeeping: the next round tries again
            logger.warning("pruning expired holds failed: %s", exc)

    async def _owner_root(self, reservation_id: str) -> tuple[str, ...]:
        """The root of the budget holding `reservation_id`, if the hold still exists."""
        async with self._connection() as conn:
            owner = await conn.fetchval("SELECT budget_id FROM holds WHERE reservation_id = $1", reservation_id)
        return (owner.split("/")[0],) if owner else ()

    async def entries(self, budget_id: str, *, limit: int = 100, since: datetime | None = None) -> list[Entry]:
        """The latest entries of `budget_id` and its descendants, newest first."""
        rows = await self._fetch(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE (budget_id = $1 OR (budget_id > $2 AND budget_id < $3)) "
            "AND at_us >= $4 ORDER BY seq DESC LIMIT $5",
            budget_id, budget_id + "/", budget_id + "0", to_us(since) if since else -_FAR, limit,
        )  # fmt: skip
        return [entry_from_row(tuple(row)) for row in rows]

    async def alerts(self, budget_id: str, *, since: datetime | None = None) -> list[AlertRecord]:
        """Alerts recorded for `budget_id` and its descendants, oldest first."""
        rows = await self._fetch(
            "SELECT budget_id, period, window_start, threshold, at_us, spent_nanos, limit_nanos, limit_tokens,"
            " spent_tokens FROM alerts WHERE (budget_id = $1 OR (budget_id > $3 AND budget_id < $4)) AND at_us >= $2"
            " ORDER BY at_us, budget_id, threshold",
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
        a = attempt
        await self._execute(
            "INSERT INTO alert_deliveries VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            a.budget_id, a.period.value, a.window_key, str(a.threshold), a.attempt, to_us(a.at), a.status, a.error,
        )  # fmt: skip

    async def deliveries(self, budget_id: str, *, since: datetime | None = None) -> list[DeliveryAttempt]:
        """Webhook delivery attempts of the alerts of `budget_id` and its descendants, oldest first."""
        rows = await self._fetch(
            "SELECT budget_id, period, window_start, threshold, attempt, at_us, status, error FROM alert_deliveries"
            " WHERE (budget_id = $1 OR (budget_id > $3 AND budget_id < $4)) AND at_us >= $2 ORDER BY at_us, attempt",
            budget_id, to_us(since) if since else -_FAR, budget_id + "/", budget_id + "0",
        )  # fmt: skip
        return [DeliveryAttempt(r[0], Period(r[1]), r[2], Decimal(r[3]), r[4], from_us(r[5]), r[6], r[7]) for r in rows]

    async def reconcile(self) -> list[str]:
        """Recompute every running total from the entry log and list each total that differs."""
        async with self._connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            configs = await conn.fetch("SELECT budget_id, config FROM budgets")
            timezones = {r[0]: json.loads(r[1])["timezone"] for r in configs}
            expected: dict[Any, list[int]] = {}
            cursor = conn.cursor(
                f"SELECT {ENTRY_COLUMNS} FROM entries WHERE kind IN ('charge', 'adjust') ORDER BY seq", prefetch=10_000
            )
            batch: list[Entry] = []
            async for row in cursor:
                batch.append(entry_from_row(tuple(row)))
                if len(batch) == 10_000:
                    add_deltas(expected, total_deltas(batch, lambda b: timezones.get(b, "UTC")))
                    batch = []
            add_deltas(expected, total_deltas(batch, lambda b: timezones.get(b, "UTC")))
            actual = await conn.fetch(
                "SELECT budget_id, period, window_start, spent_nanos, spent_tokens, calls FROM totals"
            )
        return differences(expected, [tuple(r) for r in actual])

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

    async def truncate(self) -> None:
        """Empty every table (for tests and benchmarks; the schema stays)."""
        await self._execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        self._trees.clear()

    def _heard_one(self, _connection: object, _pid: object, _channel: object, payload: str) -> None:
        if self._heard is None:
            return
        try:
            self._heard.update(json.loads(payload))
        except ValueError:  # a notice cut at its size limit: it did not name every budget
            self._heard = None

    def _connection(self) -> Any:
        return _Translated(self._pool)

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return list(await conn.fetch(query, *args))

    async def _execute(self, query: str, *args: object) -> None:
        async with self._connection() as conn:
            await conn.execute(query, *args)


class _Translated:
    """A pooled connection whose driver errors leave as LedgerError (domain errors pass through untouched)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._acquired: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._acquired = self._pool.acquire()
            return await self._acquired.__aenter__()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _ledger_error(exc) from exc

    async def __aexit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        try:
            await self._acquired.__aexit__(kind, exc, traceback)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as released:
            if exc is None:
                raise _ledger_error(released) from released
        if exc is not None and not isinstance(exc, BudgetMcpError) and _is_driver_error(exc):
            raise _ledger_error(exc) from exc
        return False


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError)


def _ledger_error(exc: BaseException) -> LedgerError:
    if isinstance(exc, OSError | asyncpg.ConnectionDoesNotExistError | asyncpg.InterfaceError):
        return LedgerError(
            "the connection to PostgreSQL was lost during this request; it was not recorded unless it had "
            "committed: retry it (with the same idempotency_key a charge is recorded once)"
        )
    return LedgerError(f"ledger storage failed: {exc}")


async def migrate(dsn: str) -> int:
    """Create or upgrade the schema; several servers may run this at once. Returns the schema version."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            for number, step in enumerate(STEPS[version:], start=version + 1):
                async with conn.transaction():
                    await conn.execute(step)
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
            return len(STEPS)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()


# ---- one transaction's work ----


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
       FROM every CROSS JOIN unnest($2::text[]) AS p(period)
       CROSS JOIN LATERAL (SELECT * FROM totals t WHERE t.budget_id = every.budget_id AND t.period = p.period
                           AND t.window_start <= $3 ORDER BY t.window_start DESC LIMIT 1) AS t),
    (SELECT coalesce(json_agg(json_build_array(a.budget_id, a.period, a.window_start, a.threshold)), '[]')
       FROM alerts a WHERE a.budget_id IN (SELECT budget_id FROM every)
       AND (a.window_start >= $4 OR a.window_start = 0)),
    (SELECT coalesce(json_agg(json_build_array(budget_id, nanos, tokens, first_expiry)), '[]') FROM (
       SELECT budget_id, SUM(cost_nanos) AS nanos, SUM(tokens) AS tokens, MIN(expires_at_us) AS first_expiry
       FROM hold_budgets
       WHERE budget_id IN (SELECT budget_id FROM every) AND expires_at_us > $5 GROUP BY budget_id) AS h),
    (SELECT json_build_array(reservation_id, budget_id, cost_nanos, tokens, created_at_us, expires_at_us)
       FROM holds WHERE reservation_id = $6),
    (SELECT json_build_array(entry_id, kind, budget_id) FROM entries
       WHERE $6::text IS NOT NULL AND reservation_id = $6 AND kind <> 'hold' ORDER BY seq DESC LIMIT 1),
    (SELECT json_build_array(request_hash, result) FROM idempotency WHERE $7::text IS NOT NULL AND key = $7)
)::text
FROM (VALUES (1)) AS one LEFT JOIN trees AS tree ON tree.root = $8
"""
_LOADS = {kind: _LOAD.format(scope=condition) for kind, condition in _SCOPES.items()}
_PERIODS = [p.value for p in Period]
_PERIOD_OF = {p.value: p for p in Period}  # faster than Period(text), which every snapshot row would call
_UNUSED = {p: WindowUsage() for p in Period}  # WindowUsage is frozen, so every snapshot can share these
_OLDEST_CURRENT_WINDOW = 40 * 86_400  # seconds: every non-total window that holds `now` started after now - 40 days


def _load_statement(scope: Scope, now: datetime) -> tuple[str, list[Any]]:
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
    ]  # fmt: skip


async def _load(conn: asyncpg.Connection, scope: Scope, now: datetime, kept: TreeCache | None = None) -> _Loaded:
    """The scope's snapshot in one statement (one round trip, one MVCC snapshot), with its tree's version.

    When the tree is at the version of `kept` and `kept` holds the whole scope, the state read is the one
    `kept` holds: its snapshot is returned without parsing the answer (first_hold_expiry is then not known).
    """
    statement, args = _load_statement(scope, now)
    version, previous, text = await conn.fetchrow(statement, *args)
    if kept is not None and version == kept.version and (known := kept.at(scope, now)) is not None:
        return _Loaded(known, version, previous, None)
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
    for budget_id, period, start, spent, tokens, calls in totals:
        if current[budget_id].get(period) == start:
            usage[budget_id][_PERIOD_OF[period]] = WindowUsage(spent, tokens, calls)
    alerts_raised = {
        (b, _PERIOD_OF[p], start, threshold) for b, p, start, threshold in alerts if current[b].get(p) == start
    }
    held = {budget_id: (int(nanos), int(tokens)) for budget_id, nanos, tokens, _ in holds}
    first_expiry = min(int(h[3]) for h in holds) if holds else None
    budgets = {
        b: BudgetState(c, usage[b], *held.get(b, (0, 0)), children=sorted(children.get(b, [])))
        for b, c in configs.items()
    }
    snapshot = Snapshot(now=now, budgets=budgets, alerts_raised=alerts_raised)
    if scope.reservation_id:
        hold, closing = row[5], row[6]
        if hold:
            found = Hold(hold[0], hold[1], hold[2], hold[3], from_us(hold[4]), from_us(hold[5]))
            snapshot.reservation = ReservationState(scope.reservation_id, found)
        elif closing:
            snapshot.reservation = ReservationState(scope.reservation_id, None, closing[0], closing[1], closing[2])
    if scope.idempotency_key and row[7]:
        snapshot.stored_result = StoredResult(row[7][0], row[7][1])
    return _Loaded(snapshot, version, previous, from_us(first_expiry) if first_expiry is not None else None)


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
        "INSERT INTO holds SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5})",
        ("text", "text", "bigint", "bigint", "bigint", "bigint"),
    ),
    "hold_budgets": (
        "INSERT INTO hold_budgets (budget_id, reservation_id, cost_nanos, tokens, expires_at_us) "
        "SELECT * FROM unnest({0}, {1}, {2}, {3}, {4})",
        ("text", "text", "bigint", "bigint", "bigint"),
    ),
    "gone_holds": ("DELETE FROM holds WHERE reservation_id = ANY({0})", ("text",)),
    "gone_hold_budgets": ("DELETE FROM hold_budgets WHERE reservation_id = ANY({0})", ("text",)),
    "alerts": (
        "INSERT INTO alerts SELECT * FROM unnest({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}) ON CONFLICT DO NOTHING",
        ("text", "text", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint"),
    ),
    "idempotency": ("INSERT INTO idempotency SELECT * FROM unnest({0}, {1}, {2})", ("text", "text", "text")),
}


def _write_statement(
    rows: dict[str, list[tuple[Any, ...]]], notify: str | None, *, guard: tuple[str, int] | None = None
) -> tuple[str, list[Any]]:
    """The statement (and its arguments) writing the non-empty `rows` of each part, then notifying.

    With a `guard` (root, version), the statement first moves that tree to a new version, which it
    returns, and fails with a serialization error, storing nothing, when the tree is at another version.
    """
    parts = tuple(name for name, found in rows.items() if found)
    args: list[Any] = list(guard) if guard is not None else []
    for name in parts:
        args.extend(list(column) for column in zip(*rows[name], strict=True))
    if guard is None or notify is not None:
        args.append(notify)
    return _statement_text(parts, guard is not None, notify is not None), args


@functools.cache
def _statement_text(parts: tuple[str, ...], guarded: bool, notifying: bool) -> str:
    """The text of a write statement with these parts (a few shapes, each built once)."""
    ctes: list[str] = []
    count = 0
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
    if not notifying:
        return f"{head}SELECT {checked}"
    return f"{head}SELECT {checked} FROM pg_notify('{CHANNEL}', ${count + 1})"


def _begin(key_locks: list[int], roots: tuple[str, ...]) -> str:
    """BEGIN, the advisory locks of idempotency keys, then each tree's row locked by moving it to a new version."""
    statements = ["BEGIN"] + [f"SELECT pg_advisory_xact_lock({k})" for k in key_locks]
    if roots:
        values = ", ".join(f"('{root.replace(chr(39), chr(39) * 2)}', nextval('tree_versions'))" for root in roots)
        statements.append(
            f"INSERT INTO trees (root, version) VALUES {values} "
            "ON CONFLICT (root) DO UPDATE SET previous = trees.version, version = excluded.version"
        )
    return "; ".join(statements)


def _locks(scope: Scope) -> tuple[tuple[str, ...], list[int]]:
    """The roots of the trees a write of `scope` touches (sorted), and the advisory lock of its idempotency key."""
    roots = tuple(sorted({b.split("/")[0] for b in scope.budget_ids}))
    return roots, [lock_key("key:" + scope.idempotency_key)] if scope.idempotency_key else []


def _roots_written(writes: Writes) -> set[str]:
    """The roots of the budget trees these writes change (every write moves its tree's version)."""
    written = [e.budget_id for e in writes.entries] + [c.budget_id for c in writes.budgets]
    return {b.split("/")[0] for b in written + [h.budget_id for h in writes.holds_added]}


def _notice(all_writes: list[Writes]) -> str | None:
    """The change notification's payload: the budgets written, as JSON (None when nothing changed)."""
    touched = sorted(
        {e.budget_id for w in all_writes for e in w.entries} | {c.budget_id for w in all_writes for c in w.budgets}
    )
    return json.dumps(touched)[:7000] if touched else None


def _rows(all_writes: list[Writes], deltas: dict[TotalKey, list[int]], now_us: int) -> dict[str, list[tuple[Any, ...]]]:
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
        "totals": sorted((b, p.value, k, *d) for (b, p, k), d in deltas.items()),
        "holds": [
            (h.reservation_id, h.budget_id, h.cost_nanos, h.tokens, to_us(h.created_at), to_us(h.expires_at))
            for h in holds
        ],
        "hold_budgets": [
            (b, h.reservation_id, h.cost_nanos, h.tokens, to_us(h.expires_at))
            for h in holds
            for b in path_of(h.budget_id)
        ],
        "gone_holds": gone,
        "gone_hold_budgets": gone,
        "alerts": [
            (
                a.budget_id,
                a.period.value,
                a.window_key,
                str(a.threshold),
                to_us(a.at),
                a.spent_nanos,
                a.limit_nanos,
                a.spent_tokens,
                a.limit_tokens,
            )
            for w in all_writes
            for a in w.alerts
        ],
        "idempotency": [
            (key, stored.request_hash, stored.result_json)
            for w in all_writes
            if w.stored_result is not None
            for key, stored in (w.stored_result,)
        ],
    }


async def _store(conn: asyncpg.Connection, writes: Writes, snapshot: Snapshot) -> None:
    """All of a decision's writes, and the change notification, in one statement."""
    if writes == Writes():
        return
    timezones = {b: s.config.timezone for b, s in snapshot.budgets.items()}
    timezones.update({c.budget_id: c.timezone for c in writes.budgets})
    missing = {b for e in writes.entries for b in path_of(e.budget_id)} - timezones.keys()
    if missing:
        for budget_id, config in await conn.fetch(
            "SELECT budget_id, config FROM budgets WHERE budget_id = ANY($1::text[])", sorted(missing)
        ):
            timezones[budget_id] = json.loads(config)["timezone"]
    deltas = total_deltas(writes.entries, lambda b: timezones.get(b, "UTC"))
    statement, args = _write_statement(_rows([writes], deltas, to_us(snapshot.now)), _notice([writes]))
    await conn.execute(statement, *args)
