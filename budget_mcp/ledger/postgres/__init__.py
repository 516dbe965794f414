"""The PostgreSQL backend, for several servers sharing one ledger (needs the `postgres` extra: asyncpg).

ledger.py holds PostgresLedger and why it locks and keeps what it does; statements.py its SQL;
schema.py the schema and its migration; tree_cache.py what a server keeps of each budget tree;
connections.py the pool's error translation.
"""

from budget_mcp.ledger.postgres.ledger import PostgresLedger
from budget_mcp.ledger.postgres.schema import STEPS, migrate
from budget_mcp.ledger.postgres.statements import lock_key

__all__ = ["STEPS", "PostgresLedger", "lock_key", "migrate"]
