"""A ledger a newer budget-mcp upgraded (its schema has steps this version does not know) is refused with a clear
error, on both backends, and left as it was: this version would write rows its tables no longer fit."""

import sqlite3
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from budget_mcp import open_ledger
from budget_mcp.cli import main
from budget_mcp.errors import LedgerError
from budget_mcp.ledger import postgres
from budget_mcp.ledger import schema as sqlite_schema
from tests.ledger.conftest import fresh_database

NEWER = len(sqlite_schema.STEPS) + 1


def newer_sqlite_ledger(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE from_the_future (x INTEGER)")
    conn.execute(f"PRAGMA user_version = {NEWER}")
    conn.close()


def sqlite_state(path: Path) -> tuple[int, list[str], str]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master ORDER BY 1")]
        return version, tables, conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.anyio
async def test_a_sqlite_ledger_of_a_newer_schema_is_refused_and_left_alone(ledger_path: Path) -> None:
    newer_sqlite_ledger(ledger_path)
    with pytest.raises(LedgerError) as refused:
        await open_ledger(ledger_path)
    assert f"schema step {NEWER}, newer than this budget-mcp knows ({NEWER - 1})" in str(refused.value)
    assert "upgrade budget-mcp" in str(refused.value)
    assert sqlite_state(ledger_path) == (NEWER, ["from_the_future"], "delete")  # not even switched to WAL


@pytest.mark.parametrize("command", [["budgets", "list"], ["serve"], ["serve", "--transport", "http"]])
def test_the_cli_and_the_server_say_so_without_a_traceback(ledger_path: Path, command: list[str]) -> None:
    newer_sqlite_ledger(ledger_path)
    result = CliRunner().invoke(main, [*command, "--db", str(ledger_path)])
    assert result.exit_code == 1
    assert "newer than this budget-mcp knows" in result.output and "Traceback" not in result.output


@pytest.mark.anyio
async def test_a_postgres_ledger_of_a_newer_schema_is_refused_and_left_alone(postgres_dsn: str) -> None:
    dsn = await fresh_database(postgres_dsn)
    conn = await asyncpg.connect(dsn)
    try:
        newer = len(postgres.STEPS) + 1
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES ($1)", newer)
        with pytest.raises(LedgerError) as refused:
            await open_ledger(dsn)
        assert f"schema step {newer}, newer than this budget-mcp knows ({newer - 1})" in str(refused.value)
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert [row[0] for row in tables] == ["schema_version"]
    finally:
        await conn.close()
