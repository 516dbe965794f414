"""The PostgreSQL schema, in numbered steps, and the migration several servers may run at once."""

import asyncpg

from budget_mcp.ledger.base import newer_schema
from budget_mcp.ledger.codec import redact_url
from budget_mcp.ledger.postgres.statements import rebuild_totals

MIGRATION_LOCK = 7_301_847_555_117_057_792  # any constant: serialises schema upgrades of servers starting at once


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
    # 3: the event stream's commit order (ARCHITECTURE.md, "The event stream"): each entry's transaction id,
    # and which entry's write crossed each alert.
    """
    ALTER TABLE entries ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
    CREATE INDEX entries_commit_order ON entries(txid, seq);
    ALTER TABLE alerts ADD COLUMN entry_id TEXT;
    CREATE INDEX alerts_entry ON alerts(entry_id) WHERE entry_id IS NOT NULL;
    """,
    # 4: the model and provider each hold is for, so a filtered limit counts the holds of checks it decides.
    # Holds made before this take them from their hold entry (which names the check's model and provider).
    """
    ALTER TABLE holds ADD COLUMN model TEXT, ADD COLUMN provider TEXT;
    ALTER TABLE hold_budgets ADD COLUMN model TEXT, ADD COLUMN provider TEXT;
    UPDATE holds SET model = e.model, provider = e.provider FROM entries AS e
        WHERE e.reservation_id = holds.reservation_id AND e.kind = 'hold';
    UPDATE hold_budgets SET model = h.model, provider = h.provider FROM holds AS h
        WHERE h.reservation_id = hold_budgets.reservation_id;
    """,
    # 5: the models and providers of a filtered limit's alert, as SQLite's step 7.
    """
    ALTER TABLE alerts ADD COLUMN models TEXT, ADD COLUMN providers TEXT;
    """,
    # 6: as SQLite's step 8, every running total recomputed from the entries (`REBUILDS_TOTALS`): a filtered or
    # rolling limit now starts from the matching spend of its window, and an older budget-mcp refuses the ledger.
    """
    LOCK TABLE totals IN EXCLUSIVE MODE;
    """,
]
REBUILDS_TOTALS = (6,)  # the steps after which the running totals are recomputed from the entries


TABLES = (
    "alert_deliveries", "idempotency", "alerts", "hold_budgets", "holds", "totals", "entries", "budgets", "trees",
)  # fmt: skip


async def migrate(dsn: str) -> int:
    """Create or upgrade the schema; several servers may run this at once. Returns the schema version."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if version > len(STEPS):
                raise newer_schema(redact_url(dsn), version, len(STEPS))
            for number, step in enumerate(STEPS[version:], start=version + 1):
                async with conn.transaction():
                    await conn.execute(step)
                    if number in REBUILDS_TOTALS:
                        await rebuild_totals(conn)
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
            return len(STEPS)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        await conn.close()
