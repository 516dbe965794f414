"""Fixtures of the ledger tests."""

import secrets

import asyncpg
import pytest


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
