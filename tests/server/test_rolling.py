"""Rolling windows through the MCP tools, as an agent meets them (SPEC 13): a 5-hour window, carving,
filtered rolling limits, bad periods refused with the valid forms named, and a running server over HTTP."""

import json
from pathlib import Path

import pytest
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.errors import InvalidInputError
from budget_mcp.ledger import open_ledger
from budget_mcp.server import build_server
from tests.conftest import FakeClock, ledger_dump
from tests.server.test_reports import read
from tests.server.test_tools import call, error_text
from tests.servers import serving

pytestmark = pytest.mark.anyio


async def test_a_five_hour_window_denies_until_the_oldest_spend_drops_out(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        created = await call(client, "allocate", budget_id="acme", limit_usd="10", period="5h")
        await call(client, "charge", budget_id="acme", cost_usd="7")
        clock.advance(hours=1)
        await call(client, "charge", budget_id="acme", cost_usd="2")
        denied = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="2")
        status = await call(client, "get_budget", budget_id="acme")
        report = json.loads(await read(client, "budget://reports/acme"))
        clock.advance(hours=4, minutes=1)
        allowed = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="2")
        later = await call(client, "get_budget", budget_id="acme")
    assert created["period"] == "5h" and created["resets_at"] is None
    assert (denied["allowed"], denied["decided_period"]) == (False, "5h")
    assert denied["resets_at"] == "2026-11-25T17:01:00Z"
    assert (status["spent_usd"], status["available_usd"], status["resets_at"]) == (
        "9.000000", "1.000000", "2026-11-25T17:01:00Z",
    )  # fmt: skip
    assert report["period"] == "5h"
    assert allowed["allowed"] and (later["spent_usd"], later["resets_at"]) == ("2.000000", "2026-11-25T18:01:00Z")


async def test_a_child_with_the_same_rolling_period_is_carved_out_of_its_parent(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", period="5h")
        await call(client, "allocate", budget_id="acme/bot", limit_usd="4", period="300m")  # the same window
        await call(client, "charge", budget_id="acme/bot", cost_usd="3")
        parent = await call(client, "get_budget", budget_id="acme")
        refused = await error_text(client, "allocate", budget_id="acme/other", limit_usd="7", period="5h")
        through_child = await call(client, "check_budget", budget_id="acme/bot", estimated_cost_usd="1")
        clock.advance(hours=5, minutes=1)
        after = await call(client, "get_budget", budget_id="acme")
    limit = parent["limits"][0]
    assert (limit["spent_usd"], limit["allocated_usd"], limit["available_usd"]) == ("3.000000", "1.000000", "6.000000")
    assert "'acme' has only $6.00 available in its 5h limit for 'acme/other'" in refused
    assert through_child["allowed"]
    assert (after["spent_usd"], after["limits"][0]["allocated_usd"]) == ("0.000000", "4.000000")


async def test_a_rolling_provider_cap_counts_only_that_provider(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(
            client, "allocate", budget_id="acme", limit_usd="100", period="monthly",
            extra_limits=[{"period": "30m", "limit_usd": "2", "limit_calls": 3, "providers": ["openai"]}],
        )  # fmt: skip
        await call(client, "charge", budget_id="acme", model="gpt-4o", provider="openai", cost_usd="1.5")
        await call(client, "charge", budget_id="acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="9")
        openai = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", provider="openai")
        anthropic = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", provider="anthropic")
        status = await call(client, "get_budget", budget_id="acme")
        clock.advance(minutes=31)
        later = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", provider="openai")
    assert (openai["allowed"], openai["decided_period"]) == (False, "30m") and anthropic["allowed"]
    capped = [(lim["period"], lim["spent_usd"], lim["calls"]) for lim in status["limits"] if lim["providers"]]
    assert capped == [("30m", "1.500000", 1)]
    assert later["allowed"]


BAD_PERIODS = ["0h", "91d", "5x", "-5h", "5.5h", "5 h", "h"]


@pytest.mark.parametrize("period", BAD_PERIODS)
@pytest.mark.parametrize("where", ["period", "extra_limits"])
async def test_a_bad_period_is_a_short_tool_error_naming_the_valid_forms_and_writes_nothing(
    clock: FakeClock, settings: Settings, period: str, where: str
) -> None:
    arguments: dict[str, object] = (
        {"period": period, "limit_usd": "1"} if where == "period"
        else {"extra_limits": [{"period": period, "limit_usd": "1"}]}
    )  # fmt: skip
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="5")
        before = ledger_dump(settings.db_path)
        text = await error_text(client, "allocate", budget_id="acme/x", **arguments)
        after = ledger_dump(settings.db_path)
    assert f"period {period!r} is not a period" in text and "'30m', '5h', '7d'" in text and "'90d'" in text
    assert "Traceback" not in text and len(text) < 300
    assert after == before


@pytest.mark.parametrize("period", ["91d", "5.5h"])
async def test_a_bad_rolling_period_in_the_budgets_file_stops_the_start_and_writes_nothing(
    clock: FakeClock, settings: Settings, tmp_path: Path, period: str
) -> None:
    declared = tmp_path / "budgets.toml"
    declared.write_text(f'[budgets."acme"]\nlimit_usd = "100"\nperiod = "{period}"\n')
    with_file = settings.model_copy(update={"budgets_file": declared})
    with pytest.raises(InvalidInputError, match="use one of 'total'.*'7d'"):
        async with Client(build_server(with_file, clock=clock)):
            pass
    ledger = await open_ledger(settings.db_path)
    assert await ledger.budget_ids() == []
    await ledger.close()


async def test_a_five_hour_window_through_a_server_process_over_http(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db") as base:
        async with Client(f"{base}/mcp") as client:
            await call(client, "allocate", budget_id="acme", limit_usd="1", period="5h")
            await call(client, "charge", budget_id="acme", cost_usd="0.75")
            denied = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="0.5")
            status = await call(client, "get_budget", budget_id="acme")
    assert (denied["allowed"], denied["decided_period"]) == (False, "5h")
    assert (status["period"], status["spent_usd"]) == ("5h", "0.750000") and status["resets_at"] is not None
