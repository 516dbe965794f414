"""Fixtures of the ledger tests."""

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from budget_mcp.ledger import postgres
from budget_mcp.ledger import schema as sqlite_schema


async def fresh_database(postgres_dsn: str) -> str:
    """A new, empty database on the session's server, by its DSN."""
    name = "fresh_" + secrets.token_hex(4)
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    return postgres_dsn.replace("/budget?", f"/{name}?")


@pytest.fixture
async def fresh_dsn(postgres_dsn: str) -> str:
    """A new, empty database on the session's server."""
    return await fresh_database(postgres_dsn)


Rows = list[tuple[str, str, list[tuple[Any, ...]]]]  # table, its columns, the rows


def sqlite_ledger_at(path: Path, step: int, rows: Rows) -> str:
    """A SQLite ledger file at schema `step` holding `rows`, as a version of that step left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in sqlite_schema.STEPS[:step]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {step}")
    for table, columns, values in rows:
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values[0]))})", values)
    conn.close()
    return str(path)


async def postgres_ledger_at(dsn: str, step: int, rows: Rows) -> str:
    """The PostgreSQL database `dsn` at schema `step` holding `rows`."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number, script in enumerate(postgres.STEPS[:step], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
        for table, columns, values in rows:
            marks = ", ".join(f"${n + 1}" for n in range(len(values[0])))
            await conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)
    finally:
        await conn.close()
    return dsn
