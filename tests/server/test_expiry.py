"""Sub-budgets that expire, through the tools of a running server: its sweep closes them without traffic."""

import anyio
import pytest
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.ledger import open_ledger
from budget_mcp.server import build_server
from tests.conftest import FakeClock
from tests.server.test_tools import call, error_text

pytestmark = pytest.mark.anyio


async def test_the_server_s_sweep_closes_an_expired_sub_budget_and_returns_its_unspent_part(
    clock: FakeClock, settings: Settings
) -> None:
    swept = settings.model_copy(update={"expiry_sweep_seconds": 0.02})
    ledger = await open_ledger(settings.db_path)
    try:
        async with Client(build_server(swept, clock=clock)) as client:
            await call(client, "allocate", budget_id="acme", limit_usd="10")
            task = await call(client, "allocate", budget_id="acme/task", limit_usd="4", ttl_seconds=3600)
            await call(client, "charge", budget_id="acme/task", cost_usd="1.5")
            clock.advance(hours=1)
            with anyio.fail_after(5):  # only the sweep writes: this client reads
                while not [e for e in await ledger.entries("acme/task") if e.kind == "close"]:
                    await anyio.sleep(0.02)
            parent = await call(client, "get_budget", budget_id="acme")
            closed = await call(client, "get_budget", budget_id="acme/task")
            refused = await error_text(client, "allocate", budget_id="acme/x", limit_usd="1", ttl_seconds=0)
    finally:
        await ledger.close()
    assert task["expires_at"] == "2026-11-25T13:00:00Z"
    assert closed["closed"] and parent["available_usd"] == "8.500000"
    assert "ttl_seconds" in refused
