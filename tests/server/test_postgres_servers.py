"""Two HTTP servers on different ports sharing one PostgreSQL ledger: no overspend, notifications across servers."""

import signal
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from budget_mcp import open_ledger
from budget_mcp.ledger.postgres import PostgresLedger
from tests.servers import EXE, free_port, server_env, serving

pytestmark = pytest.mark.anyio


@pytest.fixture
async def empty_dsn(postgres_dsn: str) -> str:
    ledger = await PostgresLedger.open(postgres_dsn)
    await ledger.truncate()
    await ledger.close()
    return postgres_dsn


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def agent(url: str, acknowledged: list[str]) -> None:
    """Reserve $1 and charge it, until the budget says no."""
    async with Client(url) as client:
        while True:
            check = await call(client, "check_budget", budget_id="shared", estimated_cost_usd="1", reserve=True)
            if not check["allowed"]:
                return
            charged = await call(
                client, "charge", budget_id="shared", cost_usd="1", reservation_id=check["reservation_id"]
            )
            acknowledged.append(charged["charge_id"])


async def test_agents_on_two_servers_never_overspend_and_hear_each_other(tmp_path: Path, empty_dsn: str) -> None:
    env = {"BUDGET_MCP_DATABASE_URL": empty_dsn}
    with serving("http", tmp_path / "a.db", **env) as a, serving("http", tmp_path / "b.db", **env) as b:
        async with Client(f"{a}/mcp") as first, Client(f"{b}/mcp") as second:
            await call(first, "allocate", budget_id="shared", limit_usd="40")
            async with second.listen(resource_subscriptions=["budget://budgets/shared"]) as heard:
                await call(first, "charge", budget_id="shared", cost_usd="0")
                with anyio.fail_after(5):
                    event = await anext(aiter(heard))
            acknowledged: list[str] = []
            async with anyio.create_task_group() as agents:
                for n in range(8):
                    agents.start_soon(agent, f"{a if n % 2 else b}/mcp", acknowledged)
            status = await call(second, "get_budget", budget_id="shared")
    assert "budget://budgets/shared" in str(event)
    assert Decimal(status["spent_usd"]) == Decimal(40) and len(acknowledged) == 40
    ledger = await open_ledger(empty_dsn)
    recorded = {e.entry_id for e in await ledger.entries("shared", limit=1000) if e.kind == "charge" and e.cost_nanos}
    assert recorded == set(acknowledged)
    assert await ledger.reconcile() == []
    await ledger.close()


async def test_a_server_killed_while_charging_loses_no_acknowledged_charge(tmp_path: Path, empty_dsn: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [EXE, "serve", "--transport", "http", "--port", str(port)],
        env=server_env(tmp_path / "unused.db", BUDGET_MCP_DATABASE_URL=empty_dsn),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    acknowledged: list[str] = []
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                        await call(client, "allocate", budget_id="crashy")
                        break
                except Exception:  # not listening yet
                    await anyio.sleep(0.1)

        async def charge_until_killed() -> None:
            try:
                async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                    while True:
                        charged = await call(client, "charge", budget_id="crashy", cost_usd="0.01")
                        acknowledged.append(charged["charge_id"])
            except Exception:  # the server died under us: what was acknowledged must be there
                return

        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(charge_until_killed)
            with anyio.fail_after(30):
                while len(acknowledged) < 100:
                    await anyio.sleep(0.01)
            process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    ledger = await open_ledger(empty_dsn)
    recorded = {e.entry_id for e in await ledger.entries("crashy", limit=100_000)}
    assert len(acknowledged) >= 100 and set(acknowledged) <= recorded
    assert await ledger.reconcile() == []
    await ledger.close()
