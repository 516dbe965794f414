"""Reading another program's SQLite database (Tekton Budget, Rhetor), read-only: the one home of sqlite3 here."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from budget_mcp.errors import InvalidInputError


class ForeignDb:
    """A SQLite file opened read-only; rows come as dicts of column name to value."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise InvalidInputError(f"{self.path} is not a readable SQLite database: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def tables(self) -> set[str]:
        """The names of its tables."""
        conn = self._connect()
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()

    def count(self, table: str) -> int:
        """How many rows `table` has (0 when it does not exist)."""
        if table not in self.tables():
            return 0
        conn = self._connect()
        try:
            return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        finally:
            conn.close()

    def rows(self, table: str, order_by: str = "rowid") -> Iterator[dict[str, Any]]:
        """Every row of `table` in `order_by` order, streamed; nothing when the table does not exist."""
        if table not in self.tables():
            return
        conn = self._connect()
        try:
            cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY {order_by}')
            while batch := cursor.fetchmany(5_000):
                for row in batch:
                    yield dict(row)
        except sqlite3.Error as exc:
            raise InvalidInputError(f"cannot read table {table} of {self.path}: {exc}") from exc
        finally:
            conn.close()
