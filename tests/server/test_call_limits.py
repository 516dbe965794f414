"""Call limits through the MCP tools and resources, as an agent meets them (SPEC 13)."""

import asyncio
import json

import pytest
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.server import build_server
from tests.conftest import FakeClock, ledger_dump
from tests.server.test_reports import read
from tests.server.test_tools import call, error_text

pytestmark = pytest.mark.anyio


async def test_an_agent_with_three_calls_a_day_is_denied_the_fourth_and_sees_why(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        created = await call(
            client, "allocate", budget_id="acme", limit_usd="50", period="monthly",
            extra_limits=[{"period": "daily", "limit_calls": 3}],
        )  # fmt: skip
        assert {lim["period"]: lim["limit_calls"] for lim in created["limits"]} == {"monthly": None, "daily": 3}
        held = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", reserve=True)
        await call(client, "charge", budget_id="acme", cost_usd="1", reservation_id=held["reservation_id"])
        await call(client, "charge", budget_id="acme", cost_usd="1")
        await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", reserve=True)  # holds the 3rd
        denied = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1")
        status = await call(client, "get_budget", budget_id="acme")
        report = json.loads(await read(client, "budget://reports/acme"))
        markdown = await read(client, "budget://reports/acme.md")
        clock.advance(days=1)
        next_day = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1")
    assert (denied["allowed"], denied["decided_by"], denied["decided_period"]) == (False, "acme", "daily")
    assert "no calls left in acme (daily" in denied["reason"]
    limits = {lim["period"]: (lim["calls"], lim["limit_calls"]) for lim in status["limits"]}
    assert limits == {"monthly": (2, None), "daily": (2, 3)}
    assert (report["totals"]["calls"], report["totals"]["limit_calls"]) == (2, None)  # the monthly window's
    assert "| Calls | 2 |" in markdown
    assert next_day["allowed"]


async def test_the_primary_call_limit_shows_in_the_status_summary_and_the_report(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        created = await client.call_tool("allocate", {"budget_id": "acme", "limit_calls": 5, "period": "daily"})
        await call(client, "charge", budget_id="acme", cost_usd="0.5")
        report = json.loads(await read(client, "budget://reports/acme"))
        markdown = await read(client, "budget://reports/acme.md")
    assert created.content[0].text.endswith("; 0 of 5 calls")  # type: ignore[union-attr]
    assert (report["totals"]["calls"], report["totals"]["limit_calls"]) == (1, 5)
    assert "| Calls | 1 of 5 |" in markdown


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"limit_calls": -1}, "limit_calls"),
        ({"limit_calls": True}, "limit_calls"),
        ({"extra_limits": [{"period": "daily", "limit_calls": -2}]}, "limit_calls"),
        ({"extra_limits": [{"period": "daily", "limit_call": 2}]}, "limit_call"),
    ],
)
async def test_a_bad_call_limit_is_a_short_tool_error_and_writes_nothing(
    clock: FakeClock, settings: Settings, arguments: dict[str, object], problem: str
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="5")
        before = ledger_dump(settings.db_path)
        text = await error_text(client, "allocate", budget_id="acme", **arguments)
        after = ledger_dump(settings.db_path)
    assert problem in text and "Traceback" not in text and len(text) < 300
    assert after == before


async def test_a_provider_cap_through_the_tools_counts_only_that_provider_and_warns_of_an_unknown_one(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        created = await call(
            client, "allocate", budget_id="acme", limit_usd="100", period="monthly",
            extra_limits=[{"period": "daily", "limit_usd": "2", "providers": ["OpenAI"]},
                          {"period": "daily", "limit_calls": 1, "providers": ["opnai"]}],
        )  # fmt: skip
        await call(client, "charge", budget_id="acme", model="gpt-4o", provider="openai", cost_usd="1.5")
        await call(client, "charge", budget_id="acme", model="claude-sonnet-4-5", provider="anthropic", cost_usd="9")
        openai = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", provider="openai")
        anthropic = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="1", provider="anthropic")
        status = await call(client, "get_budget", budget_id="acme")
    assert [w for w in created["warnings"] if "'opnai'" in w] and not [w for w in created["warnings"] if "openai" in w]
    assert (openai["allowed"], openai["decided_period"]) == (False, "daily") and "openai only" in openai["reason"]
    assert anthropic["allowed"]
    capped = [(lim["providers"], lim["spent_usd"], lim["calls"]) for lim in status["limits"] if lim["providers"]]
    assert capped == [(["openai"], "1.500000", 1), (["opnai"], "0.000000", 0)]
    assert status["spent_usd"] == "10.500000"


async def test_agents_reserving_at_once_for_one_provider_never_hold_more_than_its_cap(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(
            client, "allocate", budget_id="acme", limit_usd="10", period="monthly", enforcement="block",
            extra_limits=[{"period": "daily", "limit_usd": "1.00", "providers": ["openai"]}],
        )  # fmt: skip
        checks = await asyncio.gather(
            *(
                call(client, "check_budget", budget_id="acme", estimated_cost_usd="0.10", model="gpt-4o",
                     provider="openai", reserve=True)
                for _ in range(20)
            )
        )  # fmt: skip
        held = await call(client, "get_budget", budget_id="acme")
        granted = [c["reservation_id"] for c in checks if c["allowed"]]
        await asyncio.gather(
            *(
                call(client, "charge", budget_id="acme", model="gpt-4o", provider="openai", cost_usd="0.10",
                     reservation_id=reservation_id)
                for reservation_id in granted
            )
        )  # fmt: skip
        anthropic = await call(
            client, "check_budget", budget_id="acme", estimated_cost_usd="3", provider="anthropic", reserve=True
        )
        charged = await call(client, "get_budget", budget_id="acme")
    assert len(granted) == 10
    capped = next(lim for lim in held["limits"] if lim["providers"])
    assert (capped["held_usd"], capped["available_usd"]) == ("1.000000", "0.000000")
    assert anthropic["allowed"]
    capped = next(lim for lim in charged["limits"] if lim["providers"])
    assert (capped["spent_usd"], capped["held_usd"], capped["available_usd"]) == ("1.000000", "0.000000", "0.000000")
    assert (charged["spent_usd"], charged["held_usd"]) == ("1.000000", "3.000000")
