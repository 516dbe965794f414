"""Shared fixtures: a clean environment, a real ledger file, an engine on a clock the test moves."""

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.config import Settings
from budget_mcp.ledger import Ledger
from budget_mcp.ledger.postgres import PostgresLedger
from tests.loopback import Loopback, loopback_server
from tests.postgres_server import find_bin, postgres_server
from tests.price_files import litellm_file


def ledger_dump(path: Path) -> list[str]:
    """Every row of every table of a SQLite ledger, as SQL text: equal dumps mean nothing was written."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No BUDGET_MCP_*, BUDGET_PORT or HERMES_URL from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("BUDGET_MCP_") or name in {"BUDGET_PORT", "HERMES_URL"}:
            monkeypatch.delenv(name)
    yield


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def prices() -> PriceCatalog:
    return PriceCatalog()


@pytest.fixture(scope="session")
def litellm_bytes() -> bytes:
    return litellm_file()


@pytest.fixture
def price_server() -> Iterator[Loopback]:
    """A real HTTP server on loopback; the test sets what each path answers."""
    with loopback_server() as server:
        yield server


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """One PostgreSQL server for the whole session (skipped, with the reason, when its binaries are missing)."""
    if find_bin() is None and not os.environ.get("BUDGET_MCP_REQUIRE_POSTGRES"):
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql-15); CI requires them")
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
async def ledger_location(request: pytest.FixtureRequest, ledger_path: Path) -> str:
    """Where the ledger lives, for each backend: a SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return str(ledger_path)
    dsn: str = request.getfixturevalue("postgres_dsn")
    emptied = await PostgresLedger.open(dsn)
    await emptied.truncate()
    await emptied.close()
    return dsn


@pytest.fixture
async def ledger(ledger_location: str) -> AsyncIterator[Ledger]:
    opened = await open_ledger(ledger_location)
    yield opened
    await opened.close()


@pytest.fixture
async def engine(ledger: Ledger, prices: PriceCatalog, clock: FakeClock) -> BudgetEngine:
    return BudgetEngine(ledger, prices, clock)


@pytest.fixture
async def other_engine(ledger_location: str, prices: PriceCatalog, clock: FakeClock) -> AsyncIterator[BudgetEngine]:
    """A second server's engine on the same ledger and clock."""
    ledger = await open_ledger(ledger_location)
    yield BudgetEngine(ledger, prices, clock)
    await ledger.close()


@pytest.fixture
def settings(ledger_path: Path, tmp_path: Path) -> Settings:
    return Settings.load({}, db_path=ledger_path, change_poll_seconds=0.05, prices_cache_dir=tmp_path / "prices")
