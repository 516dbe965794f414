"""Numbered schema steps. `PRAGMA user_version` says how many have run; opening a ledger runs the rest.

Step 3 rebuilds every table STRICT, so no column can hold a value of another type: an integer sum that
overflows (SQLite's `+` turns it into a REAL) fails its write instead of being stored. The SQLite
ledger then recomputes the running totals from the entries, repairing ledgers an older version let
overflow (`REBUILDS_TOTALS`).
"""

STEPS: list[str] = [
    # 1: budgets, the append-only entry log, running totals, holds, alerts, idempotency keys.
    """
    CREATE TABLE budgets (
        budget_id     TEXT PRIMARY KEY,
        parent_id     TEXT REFERENCES budgets(budget_id),
        config        TEXT NOT NULL,
        closed        INTEGER NOT NULL DEFAULT 0,
        created_at_us INTEGER NOT NULL,
        updated_at_us INTEGER NOT NULL
    );
    CREATE INDEX budgets_parent ON budgets(parent_id);

    CREATE TABLE entries (
        seq                INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id           TEXT NOT NULL UNIQUE,
        kind               TEXT NOT NULL,
        budget_id          TEXT NOT NULL,
        at_us              INTEGER NOT NULL,
        cost_nanos         INTEGER NOT NULL,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        model              TEXT,
        provider           TEXT,
        price_source       TEXT,
        reservation_id     TEXT,
        idempotency_key    TEXT,
        metadata           TEXT
    );
    CREATE INDEX entries_budget ON entries(budget_id, seq);
    CREATE INDEX entries_reservation ON entries(reservation_id) WHERE reservation_id IS NOT NULL;
    CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

    CREATE TABLE totals (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        spent_nanos  INTEGER NOT NULL,
        spent_tokens INTEGER NOT NULL,
        calls        INTEGER NOT NULL,
        PRIMARY KEY (budget_id, period, window_start)
    ) WITHOUT ROWID;

    CREATE TABLE holds (
        reservation_id TEXT PRIMARY KEY,
        budget_id      TEXT NOT NULL,
        cost_nanos     INTEGER NOT NULL,
        tokens         INTEGER NOT NULL,
        created_at_us  INTEGER NOT NULL,
        expires_at_us  INTEGER NOT NULL
    );
    CREATE INDEX holds_expiry ON holds(expires_at_us);
    CREATE TABLE hold_budgets (
        budget_id      TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        cost_nanos     INTEGER NOT NULL,
        tokens         INTEGER NOT NULL,
        expires_at_us  INTEGER NOT NULL,
        PRIMARY KEY (budget_id, reservation_id)
    ) WITHOUT ROWID;
    CREATE INDEX hold_budgets_reservation ON hold_budgets(reservation_id);
    CREATE INDEX hold_budgets_expiry ON hold_budgets(expires_at_us);

    CREATE TABLE alerts (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        threshold    TEXT NOT NULL,
        at_us        INTEGER NOT NULL,
        spent_nanos  INTEGER NOT NULL,
        limit_nanos  INTEGER,
        spent_tokens INTEGER NOT NULL,
        limit_tokens INTEGER,
        PRIMARY KEY (budget_id, period, window_start, threshold)
    ) WITHOUT ROWID;

    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        result       TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: reports read a budget's entries by time; webhook deliveries of alerts, one row per attempt.
    """
    CREATE INDEX entries_budget_time ON entries(budget_id, at_us);

    CREATE TABLE alert_deliveries (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        threshold    TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        at_us        INTEGER NOT NULL,
        status       INTEGER,
        error        TEXT,
        PRIMARY KEY (budget_id, period, window_start, threshold, attempt)
    ) WITHOUT ROWID;
    """,
    # 3: every table STRICT (see the module docstring); totals are emptied here and rebuilt from the entries.
    """
    CREATE TABLE budgets_v3 (
        budget_id     TEXT PRIMARY KEY,
        parent_id     TEXT REFERENCES budgets(budget_id),
        config        TEXT NOT NULL,
        closed        INTEGER NOT NULL DEFAULT 0,
        created_at_us INTEGER NOT NULL,
        updated_at_us INTEGER NOT NULL
    ) STRICT;
    INSERT INTO budgets_v3 SELECT budget_id, parent_id, config, closed, created_at_us, updated_at_us FROM budgets;
    DROP TABLE budgets;
    ALTER TABLE budgets_v3 RENAME TO budgets;
    CREATE INDEX budgets_parent ON budgets(parent_id);

    CREATE TABLE entries_v3 (
        seq                INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id           TEXT NOT NULL UNIQUE,
        kind               TEXT NOT NULL,
        budget_id          TEXT NOT NULL,
        at_us              INTEGER NOT NULL,
        cost_nanos         INTEGER NOT NULL,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        model              TEXT,
        provider           TEXT,
        price_source       TEXT,
        reservation_id     TEXT,
        idempotency_key    TEXT,
        metadata           TEXT
    ) STRICT;
    INSERT INTO entries_v3 SELECT * FROM entries ORDER BY seq;
    DROP TABLE entries;
    ALTER TABLE entries_v3 RENAME TO entries;
    CREATE INDEX entries_budget ON entries(budget_id, seq);
    CREATE INDEX entries_reservation ON entries(reservation_id) WHERE reservation_id IS NOT NULL;
    CREATE INDEX entries_budget_time ON entries(budget_id, at_us);
    CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;

    DROP TABLE totals;
    CREATE TABLE totals (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        spent_nanos  INTEGER NOT NULL,
        spent_tokens INTEGER NOT NULL,
        calls        INTEGER NOT NULL,
        PRIMARY KEY (budget_id, period, window_start)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE holds_v3 (
        reservation_id TEXT PRIMARY KEY,
        budget_id      TEXT NOT NULL,
        cost_nanos     INTEGER NOT NULL,
        tokens         INTEGER NOT NULL,
        created_at_us  INTEGER NOT NULL,
        expires_at_us  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO holds_v3 SELECT * FROM holds;
    DROP TABLE holds;
    ALTER TABLE holds_v3 RENAME TO holds;
    CREATE INDEX holds_expiry ON holds(expires_at_us);
    CREATE TABLE hold_budgets_v3 (
        budget_id      TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        cost_nanos     INTEGER NOT NULL,
        tokens         INTEGER NOT NULL,
        expires_at_us  INTEGER NOT NULL,
        PRIMARY KEY (budget_id, reservation_id)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO hold_budgets_v3 SELECT * FROM hold_budgets;
    DROP TABLE hold_budgets;
    ALTER TABLE hold_budgets_v3 RENAME TO hold_budgets;
    CREATE INDEX hold_budgets_reservation ON hold_budgets(reservation_id);
    CREATE INDEX hold_budgets_expiry ON hold_budgets(expires_at_us);

    CREATE TABLE alerts_v3 (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        threshold    TEXT NOT NULL,
        at_us        INTEGER NOT NULL,
        spent_nanos  INTEGER NOT NULL,
        limit_nanos  INTEGER,
        spent_tokens INTEGER NOT NULL,
        limit_tokens INTEGER,
        PRIMARY KEY (budget_id, period, window_start, threshold)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO alerts_v3 SELECT budget_id, period, window_start, threshold, at_us, CAST(spent_nanos AS INTEGER),
        limit_nanos, CAST(spent_tokens AS INTEGER), limit_tokens FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_v3 RENAME TO alerts;

    CREATE TABLE idempotency_v3 (
        key          TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        result       TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO idempotency_v3 SELECT * FROM idempotency;
    DROP TABLE idempotency;
    ALTER TABLE idempotency_v3 RENAME TO idempotency;

    CREATE TABLE alert_deliveries_v3 (
        budget_id    TEXT NOT NULL,
        period       TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        threshold    TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        at_us        INTEGER NOT NULL,
        status       INTEGER,
        error        TEXT,
        PRIMARY KEY (budget_id, period, window_start, threshold, attempt)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO alert_deliveries_v3 SELECT * FROM alert_deliveries;
    DROP TABLE alert_deliveries;
    ALTER TABLE alert_deliveries_v3 RENAME TO alert_deliveries;
    """,
    # 4: which entry's write crossed each alert, so the event stream sends an alert with its entry.
    """
    ALTER TABLE alerts ADD COLUMN entry_id TEXT;
    CREATE INDEX alerts_entry ON alerts(entry_id) WHERE entry_id IS NOT NULL;
    """,
    # 5: the model and provider each hold is for, so a filtered limit counts the holds of checks it decides.
    # Holds made before this take them from their hold entry (which names the check's model and provider).
    """
    ALTER TABLE holds ADD COLUMN model TEXT;
    ALTER TABLE holds ADD COLUMN provider TEXT;
    ALTER TABLE hold_budgets ADD COLUMN model TEXT;
    ALTER TABLE hold_budgets ADD COLUMN provider TEXT;
    UPDATE holds SET (model, provider) = (
        SELECT e.model, e.provider FROM entries AS e
        WHERE e.reservation_id = holds.reservation_id AND e.kind = 'hold' ORDER BY e.seq LIMIT 1
    );
    UPDATE hold_budgets SET (model, provider) = (
        SELECT h.model, h.provider FROM holds AS h WHERE h.reservation_id = hold_budgets.reservation_id
    );
    """,
    # 6: the entry log without AUTOINCREMENT. Entries are never deleted (the triggers refuse it), so a plain rowid
    # key (the largest seq + 1) never reuses a number either, and a commit no longer rewrites sqlite_sequence's page.
    """
    CREATE TABLE entries_v6 (
        seq                INTEGER PRIMARY KEY,
        entry_id           TEXT NOT NULL UNIQUE,
        kind               TEXT NOT NULL,
        budget_id          TEXT NOT NULL,
        at_us              INTEGER NOT NULL,
        cost_nanos         INTEGER NOT NULL,
        input_tokens       INTEGER NOT NULL,
        output_tokens      INTEGER NOT NULL,
        cache_read_tokens  INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens   INTEGER NOT NULL,
        model              TEXT,
        provider           TEXT,
        price_source       TEXT,
        reservation_id     TEXT,
        idempotency_key    TEXT,
        metadata           TEXT
    ) STRICT;
    INSERT INTO entries_v6 SELECT * FROM entries ORDER BY seq;
    DROP TABLE entries;
    ALTER TABLE entries_v6 RENAME TO entries;
    CREATE INDEX entries_budget ON entries(budget_id, seq);
    CREATE INDEX entries_reservation ON entries(reservation_id) WHERE reservation_id IS NOT NULL;
    CREATE INDEX entries_budget_time ON entries(budget_id, at_us);
    CREATE TRIGGER entries_append_only_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    CREATE TRIGGER entries_append_only_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    """,
    # 7: the models and providers of a filtered limit's alert (JSON arrays; NULL for a period's own limit), so
    # reports name them after the limit is gone. Alerts stored before this take them from the budget's limits.
    """
    ALTER TABLE alerts ADD COLUMN models TEXT;
    ALTER TABLE alerts ADD COLUMN providers TEXT;
    """,
    # 8: no table changes: the running totals are recomputed (`REBUILDS_TOTALS`), as a filtered or rolling limit
    # set on a budget that had spent now starts from the matching spend of its window, and a limit's totals go
    # with it. An older budget-mcp, which would keep them its own way, then refuses the ledger.
    """
    -- nothing to run: the rebuild is in Python
    """,
]

REBUILDS_TOTALS = (3, 8)  # the steps after which the SQLite ledger recomputes every running total from the entries
