"""The private shapes of pinned libraries that budget-mcp relies on, checked so an upgrade fails here, clearly.

aiosqlite (pinned ==) has no public way to run a whole function on its worker thread: the SQLite
ledger uses `Connection._execute` and `Connection._conn` to make a transaction one thread hop.
uvicorn (pinned ==) has no request read timeout: the server extends its h11 protocol class.
"""

import inspect
import sqlite3
from importlib.metadata import version
from pathlib import Path

import aiosqlite
import h11
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from budget_mcp.server.http import DeadlineH11Protocol

pytestmark = pytest.mark.anyio


def pinned(package: str) -> str:
    """The exact version pyproject.toml pins `package` to."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    line = next(line for line in text.splitlines() if line.strip().startswith(f'"{package}=='))
    return line.split("==")[1].split('"')[0]


async def test_aiosqlite_still_runs_a_function_on_its_worker_thread(tmp_path: Path) -> None:
    assert version("aiosqlite") == pinned("aiosqlite"), "aiosqlite is not the pinned version"
    conn = await aiosqlite.connect(tmp_path / "shape.db")
    try:
        assert inspect.iscoroutinefunction(aiosqlite.Connection._execute), "aiosqlite.Connection._execute changed"
        raw = conn._conn
        assert isinstance(raw, sqlite3.Connection), "aiosqlite.Connection._conn is no longer the sqlite3 connection"
        thread_result = await conn._execute(lambda c: c.execute("SELECT 41 + 1").fetchone()[0], raw)  # type: ignore[no-untyped-call]
        assert thread_result == 42
    finally:
        await conn.close()


def test_uvicorns_h11_protocol_still_has_what_the_read_deadline_extends() -> None:
    assert version("uvicorn") == pinned("uvicorn"), "uvicorn is not the pinned version"
    assert issubclass(DeadlineH11Protocol, H11Protocol)
    for method in ("connection_made", "data_received", "connection_lost"):
        assert callable(getattr(H11Protocol, method)), f"uvicorn's H11Protocol lost {method}"
    source = inspect.getsource(H11Protocol.__init__)
    for attribute in ("self.conn = ", "self.logger = ", "self.loop = "):
        assert attribute in source, f"uvicorn's H11Protocol no longer sets {attribute.strip(' =')}"
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HT")
    assert connection.next_event() is h11.NEED_DATA and connection.their_state is h11.IDLE
    assert connection.trailing_data[0] == b"GET / HT", "h11 no longer exposes what it buffered"
