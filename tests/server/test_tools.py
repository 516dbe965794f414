"""The MCP tools and resources, spoken to as an agent does: through the SDK's client, in-process."""

import json
from decimal import Decimal
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.exceptions import MCPDeprecationWarning

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.config import Settings
from budget_mcp.server import build_server
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    structured: dict[str, Any] = result.structured_content or {}
    assert structured, "a tool result carries structured content"
    return structured


async def error_text(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


async def test_every_tool_has_flat_arguments_and_an_output_schema(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {
        "check_budget", "charge", "allocate", "release", "get_budget", "list_budgets", "estimate_cost",
        "recommend_model",
    }  # fmt: skip
    for tool in tools.values():
        assert tool.output_schema and tool.description
    assert {"budget_id", "estimated_cost_usd", "reserve"} <= set(tools["check_budget"].input_schema["properties"])


async def test_agent_session_allocate_reserve_charge_exceed_release_and_restart(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", period="monthly")
        await call(client, "allocate", budget_id="acme/research", limit_usd="4")
        await call(client, "allocate", budget_id="acme/support", limit_usd="3")
        reserved = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd=1.5, reserve=True)
        assert reserved["allowed"] and reserved["reservation_id"].startswith("res_")
        charged = await call(
            client, "charge", budget_id="acme/research", model="gpt-4o", input_tokens=100_000, output_tokens=10_000,
            reservation_id=reserved["reservation_id"], idempotency_key="call-1",
        )  # fmt: skip
        assert charged["cost_usd"] == "0.350000"  # 100k x $2.50/M + 10k x $10/M
        over = await call(client, "charge", budget_id="acme/research", cost_usd="4")
        assert over["over_limit"] is True
        denied = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd="0.01")
        assert (denied["allowed"], denied["decided_by"], denied["decided_period"]) == (
            False,
            "acme/research",
            "monthly",
        )
        released = await call(client, "release", budget_id="acme/support")
        assert released["released_usd"] == "3.000000"
        before = await call(client, "get_budget", budget_id="acme")
    async with Client(build_server(settings, clock=clock)) as client:
        after = await call(client, "get_budget", budget_id="acme")
        listing = await call(client, "list_budgets")
    assert after["spent_usd"] == before["spent_usd"] == "4.350000"
    assert [child["budget_id"] for child in listing["budgets"][0]["children"]] == ["acme/research", "acme/support"]


async def test_summary_text_is_one_line_an_agent_can_act_on(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="4", period="daily")
        result = await client.call_tool("check_budget", {"budget_id": "acme", "estimated_cost_usd": "2.5"})
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("allowed: $2.50 estimated, $4.00 left in acme (daily); resets ")
    assert text.endswith(" 00:00 UTC") and "\n" not in text


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("charge", {"budget_id": "acme", "cost_usd": "NaN"}, "finite"),
        ("charge", {"budget_id": "acme", "cost_usd": -1}, "must not be negative"),
        ("charge", {"budget_id": "acme", "cost_usd": "1e30"}, "too large"),
        ("charge", {"budget_id": "acme", "cost_usd": "one dollar"}, "is not a number"),
        ("charge", {"budget_id": "Acme!", "cost_usd": "1"}, "invalid segment"),
        ("charge", {"budget_id": "ghost", "cost_usd": "1"}, "budget 'ghost' does not exist"),
        ("charge", {"budget_id": "acme", "model": "gpt-9-imaginary", "input_tokens": 5}, "no price known"),
        ("charge", {"budget_id": "acme", "cost_usd": "1", "input_tokens": -5}, "input_tokens"),
        ("charge", {"budget_id": "acme", "cost_usd": "1", "reservation_id": "nope"}, "malformed"),
        ("check_budget", {"budget_id": "acme", "estimated_cost_usd": "inf"}, "finite"),
        ("check_budget", {"budget_id": "acme", "estimated_cost_usd": "1", "ttl_seconds": -1}, "ttl_seconds"),
        ("check_budget", {"budget_id": "acme"}, "give estimated_cost_usd, or model"),
        ("allocate", {"budget_id": "acme/x", "limit_usd": "11"}, "has only $10.00 available"),
        ("allocate", {"budget_id": "acme", "limit_usd": "5", "period": "yearly"}, "period"),
        ("allocate", {"budget_id": "a/b/c/d/e/f/g/h/i"}, "9 levels deep"),
        ("allocate", {"budget_id": "acme", "timezone": "Mars/Base"}, "IANA timezone"),
        ("release", {}, "exactly one of reservation_id"),
        ("release", {"reservation_id": "res_" + "0" * 24}, "does not exist"),
        ("get_budget", {"budget_id": "ghost"}, "does not exist"),
        ("list_budgets", {"prefix": "../etc"}, "invalid segment"),
        ("estimate_cost", {"model": "gpt-9-imaginary", "input_tokens": 5}, "no price known"),
        ("estimate_cost", {"model": "  "}, "model must be a non-empty string"),
        ("recommend_model", {"task": "chat", "budget_id": "ghost"}, "budget 'ghost' does not exist"),
        ("recommend_model", {"task": ""}, "task must be a non-empty string"),
    ],
)
async def test_bad_input_is_a_clear_tool_error_and_changes_nothing(
    clock: FakeClock, settings: Settings, tool: str, arguments: dict[str, Any], message: str
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        before = await client.read_resource("budget://budgets", cache_mode="bypass")
        text = await error_text(client, tool, **arguments)
        after = await client.read_resource("budget://budgets", cache_mode="bypass")
    assert message in text
    assert "Error executing tool" in text and text.strip() != f"Error executing tool {tool}"
    assert before.contents == after.contents


async def test_wrong_types_are_refused_by_the_schema(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        text = await error_text(client, "check_budget", budget_id="acme", estimated_cost_usd=[1], reserve="maybe")
    assert text == (
        "Error executing tool check_budget: estimated_cost_usd: should be a string or a number (got [1]); "
        "reserve: should be a valid boolean, unable to interpret input (got 'maybe'); see the tool's input schema"
    )


async def test_budget_resources_use_raw_ids_with_slashes(clock: FakeClock, settings: Settings) -> None:
    deep = "acme/a/b/c/d/e/f/g"
    async with Client(build_server(settings, clock=clock)) as client:
        parts = deep.split("/")
        for depth in range(1, len(parts) + 1):
            await call(client, "allocate", budget_id="/".join(parts[:depth]))
        await call(client, "charge", budget_id=deep, cost_usd="0.000001")
        read = await client.read_resource(f"budget://budgets/{deep}", cache_mode="bypass")
        listing = await client.read_resource("budget://budgets", cache_mode="bypass")
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        with pytest.raises(MCPError, match="budget 'acme/nope' does not exist"):
            await client.read_resource("budget://budgets/acme/nope")
    status = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert (status["budget_id"], Decimal(status["spent_usd"])) == (deep, Decimal("0.000001"))
    assert json.loads(listing.contents[0].text)[0]["budget_id"] == "acme"  # type: ignore[union-attr]
    assert "budget://budgets/{+budget_id}" in templates


async def test_listening_clients_hear_about_changes_to_a_budget(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        async with client.listen(resources_list_changed=True, resource_subscriptions=["budget://budgets/acme"]) as sub:
            events = aiter(sub)
            await call(client, "allocate", budget_id="acme", limit_usd="10")
            with anyio.fail_after(5):
                added = [str(await anext(events)) for _ in range(2)]  # a new budget: its status and the list
            await call(client, "charge", budget_id="acme", cost_usd="1")
            with anyio.fail_after(5):
                charged = str(await anext(events))
            await call(client, "allocate", budget_id="acme", limit_usd="12")  # a resize lists nothing new
            with anyio.fail_after(5):
                resized = str(await anext(events))
            await call(client, "charge", budget_id="acme", cost_usd="1")
            with anyio.fail_after(5):
                next_one = str(await anext(events))  # a list change of the resize would come before this
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
    assert sorted(added) == ["ResourceUpdated(uri='budget://budgets/acme')", "ResourcesListChanged()"]
    assert charged == "ResourceUpdated(uri='budget://budgets/acme')"
    assert resized == next_one == charged
    assert "budget://budgets/acme" in resources and "budget://prices" in resources


async def test_budgets_file_is_applied_at_start_and_again_changes_nothing(
    clock: FakeClock, settings: Settings, tmp_path
) -> None:
    declared = tmp_path / "budgets.toml"
    declared.write_text(
        '[budgets."acme"]\nlimit_usd = "100"\nperiod = "monthly"\n\n'
        '[budgets."acme/support-bot"]\nlimit_usd = "5"\nperiod = "daily"\n'
        'extra_limits = [{ period = "monthly", limit_usd = "60" }, { period = "total", limit_usd = "500" }]\n'
        'per_call_usd = "0.50"\nenforcement = "block"\n'
    )
    with_file = settings.model_copy(update={"budgets_file": declared})
    async with Client(build_server(with_file, clock=clock)) as client:
        bot = await call(client, "get_budget", budget_id="acme/support-bot")
        ledger = await client.read_resource("budget://budgets", cache_mode="bypass")
    async with Client(build_server(with_file, clock=clock)) as client:
        again = await call(client, "get_budget", budget_id="acme/support-bot")
        ledger_again = await client.read_resource("budget://budgets", cache_mode="bypass")
    assert [lim["period"] for lim in bot["limits"]] == ["daily", "monthly", "total"]
    assert bot["per_call_usd"] == "0.500000"
    assert again == bot and ledger.contents == ledger_again.contents
    reopened = await open_ledger(settings.db_path)
    allocations = [e for e in await reopened.entries("acme") if e.kind == "allocate"]
    await reopened.close()
    assert len(allocations) == 2  # one per declared budget: the second start wrote nothing


async def test_changes_made_by_another_process_are_announced(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        async with client.listen(resource_subscriptions=["budget://budgets/acme"]) as sub:
            other = await open_ledger(settings.db_path)  # another server process would hold its own connection
            try:
                await BudgetEngine(other, PriceCatalog()).charge("acme", cost_usd="2")
            finally:
                await other.close()
            with anyio.fail_after(5):
                event = await anext(aiter(sub))
        status = await call(client, "get_budget", budget_id="acme")
    assert "budget://budgets/acme" in str(event)
    assert status["spent_usd"] == "2.000000"


async def test_prompts_carry_the_budget_id_and_live_figures(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        await call(client, "charge", budget_id="acme", model="gpt-4o", input_tokens=1000, output_tokens=100)
        await call(client, "charge", budget_id="acme", cost_usd="5")
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assistant = await client.get_prompt("budget_assistant", {"budget_id": "acme"})
        review = await client.get_prompt("spending_review", {"budget_id": "acme"})
        plan = await client.get_prompt("plan_task_budget", {"task": "summarise 40 papers", "budget_id": "acme"})
    assert prompts == {"budget_assistant", "spending_review", "plan_task_budget"}
    assistant_text, review_text, plan_text = (p.messages[0].content.text for p in (assistant, review, plan))  # type: ignore[union-attr]
    status_line = "acme: spent $5.0035 of $10.00 (total), $4.9965 available"
    assert status_line in assistant_text and status_line in plan_text
    assert "acme reached 50% of its total limit ($5.0035 of $10.00)" in assistant_text
    assert "# Spend report: acme" in review_text and "| gpt-4o | openai | $0.0035 | 1,000 | 100 | 1 |" in review_text
    assert "| (no model) |  | $5.00 | 0 | 0 | 1 |" in review_text
    assert "summarise 40 papers" in plan_text and "per call" in plan_text
    for text in (review_text, plan_text):  # cheaper alternatives from the catalog, as a list of provider/model lines
        assert sum(line.startswith("- ") and "/" in line for line in text.splitlines()) >= 3


async def test_estimate_cost_and_recommend_model_answer_with_prices_and_reasons(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="0.01")
        estimate = await call(
            client, "estimate_cost", model="claude-haiku-4-5", input_tokens=1_000, output_tokens=200,
            cache_read_tokens=10_000,
        )  # fmt: skip
        found = await call(
            client, "recommend_model", task="describe this photo", budget_id="acme", input_tokens=1_000,
            output_tokens=500, providers=["openai", "anthropic"], limit=3,
        )  # fmt: skip
        text = (await client.call_tool("recommend_model", {"task": "describe this photo"})).content[0].text  # type: ignore[union-attr]
    # 1,000 x $1 + 200 x $5 + 10,000 x $0.10 per million
    assert estimate["cost_usd"] == "0.003000" and estimate["cache_read_usd_per_mtok"] == "0.1"
    assert estimate["source"] == "genai-prices 0.2.3"
    assert found["needs"] == ["vision"] and found["remaining_usd"] == "0.010000" and len(found["recommendations"]) == 3
    best = found["recommendations"][0]
    assert best["fits_budget"] and best["provider"] in {"openai", "anthropic"} and best["why"]
    assert text.startswith("best: ")


async def test_prices_resource_lists_sources_models_and_tiers(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        read = await client.read_resource("budget://prices")
    catalog = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert catalog["sources"] == [
        {"name": "genai-prices", "version": "0.2.3", "fetched_at": None, "origin": None, "models": 2330}
    ]
    gpt4o = next(m for m in catalog["models"] if m["model"] == "gpt-4o")
    assert (gpt4o["input_usd_per_mtok"], gpt4o["output_usd_per_mtok"], gpt4o["tier"]) == ("2.5", "10", "standard")
    assert gpt4o["context_window"] == 128_000 and "vision" in gpt4o["capabilities"] and gpt4o["flagged"] is False
    assert catalog["verification"]["compared_rates"] == 0


async def test_legacy_clients_subscribe_and_hear_changes(clock: FakeClock, settings: Settings) -> None:
    heard: list[Any] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        heard.append(message)
        if len(heard) >= 2:
            arrived.set()

    async with Client(build_server(settings, clock=clock), mode="legacy", message_handler=on_message) as client:
        capabilities = client.session.server_capabilities
        with pytest.warns(MCPDeprecationWarning, match="resources/subscribe is removed as of 2026-07-28"):
            await client.subscribe_resource("budget://budgets/acme")
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        with anyio.fail_after(5):
            await arrived.wait()
    assert capabilities is not None and capabilities.resources is not None
    assert capabilities.resources.subscribe and capabilities.resources.list_changed
    texts = [str(m) for m in heard]
    assert any("budget://budgets/acme" in t and "updated" in t.lower() for t in texts), texts
    assert any("list_changed" in t or "ResourceListChanged" in t for t in texts), texts
