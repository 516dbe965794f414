"""Report and ledger resources, and alert webhooks delivered to a real receiver on loopback, through the MCP client."""

import json
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.subscriptions import ResourceUpdated

from budget_mcp.config import Settings
from budget_mcp.server import build_server
from budget_mcp.server.notify import ListenedBus
from tests.conftest import FakeClock
from tests.loopback import Loopback, Reply, Request

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def read(client: Client, uri: str) -> str:
    contents = (await client.read_resource(uri, cache_mode="bypass")).contents
    text = contents[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


async def wait_for_requests(server: Loopback, path: str, count: int) -> list[Request]:
    with anyio.fail_after(10):
        while len(server.received(path)) < count:
            await anyio.sleep(0.01)
    return server.received(path)


async def test_report_and_ledger_resources(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", period="daily")
        await call(client, "allocate", budget_id="acme/web", limit_usd="2")
        async with client.listen(resource_subscriptions=["budget://reports/acme"]) as sub:
            await call(client, "charge", budget_id="acme/web", model="gpt-4o", input_tokens=4_000, output_tokens=1_000)
            with anyio.fail_after(5):
                event = await anext(aiter(sub))
        await call(client, "charge", budget_id="acme", cost_usd="0.5", idempotency_key="k1")
        report = json.loads(await read(client, "budget://reports/acme"))
        markdown = await read(client, "budget://reports/acme.md")
        ledger = json.loads(await read(client, "budget://ledger/acme?limit=1"))
        everything = json.loads(await read(client, "budget://ledger/acme/web"))
        with pytest.raises(MCPError, match="budget 'ghost' does not exist"):
            await read(client, "budget://reports/ghost")
        with pytest.raises(MCPError, match="limit must be between 1 and 1000"):
            await read(client, "budget://ledger/acme?limit=5000")
        newest = json.loads(await read(client, "budget://ledger/acme?limit=2"))["entries"]
        older = json.loads(await read(client, f"budget://ledger/acme?limit=2&before={newest[-1]['seq']}"))
        for bad, problem in (("0", "before must be an entry's seq"), ("x", "before must be a whole number")):
            with pytest.raises(MCPError, match=problem):
                await read(client, f"budget://ledger/acme?before={bad}")
    assert "budget://reports/acme" in str(event)
    assert set(report) >= {
        "budget_id", "window_start", "resets_at", "totals", "by_model", "by_provider", "by_child", "by_day",
        "alerts", "burn_rate_usd_per_hour", "forecast",
    }  # fmt: skip
    assert set(report["totals"]) >= {"spent_usd", "spent_tokens", "held_usd", "allocated_usd", "available_usd", "calls"}
    assert report["totals"]["spent_usd"] == "0.520000"  # 4k x $2.50 + 1k x $10 per million, plus $0.50
    assert {c["budget_id"]: c["cost_usd"] for c in report["by_child"]} == {"acme": "0.500000", "acme/web": "0.020000"}
    assert markdown.startswith("# Spend report: acme\n") and "| acme/web | $0.02 | 4,000 | 1,000 | 1 |" in markdown
    assert [e["cost_usd"] for e in ledger["entries"]] == ["0.500000"] and ledger["limit"] == 1
    assert [(e["kind"], e["model"]) for e in everything["entries"]] == [("charge", "gpt-4o"), ("allocate", None)]
    assert [e["kind"] for e in newest + older["entries"]] == ["charge", "charge", "allocate", "allocate"]
    assert older["before"] == newest[-1]["seq"] > older["entries"][0]["seq"]


def hooked(settings: Settings, receiver: Loopback) -> Settings:
    """`settings` with the alert webhook at `receiver`'s /hook, which answers 200."""
    receiver.route("POST", "/hook", lambda _: Reply(200, b"{}"))
    return settings.model_copy(update={"alert_webhook": f"{receiver.url}/hook"})


async def test_a_listener_hears_changes_after_others_came_and_went(clock: FakeClock, settings: Settings) -> None:
    """Changes are published only while someone listens: listeners that leave (however the SDK closes their
    streams) must not silence those still listening, nor those who come later."""
    reports = ["budget://reports/acme"]
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        async with client.listen(resource_subscriptions=reports) as staying:
            for _ in range(2):
                async with client.listen(resource_subscriptions=reports):
                    pass
            await call(client, "charge", budget_id="acme", cost_usd="0.1")
            with anyio.fail_after(5):
                heard = await anext(aiter(staying))
        await call(client, "charge", budget_id="acme", cost_usd="0.1")  # nobody listens
        async with client.listen(resource_subscriptions=reports) as later:
            await call(client, "charge", budget_id="acme", cost_usd="0.1")
            with anyio.fail_after(5):
                heard_later = await anext(aiter(later))
    assert "budget://reports/acme" in str(heard) and "budget://reports/acme" in str(heard_later)


async def test_unsubscribing_twice_leaves_the_other_listeners_counted() -> None:
    """The bus's unsubscribe is idempotent (the SDK's contract): calling it again must not uncount someone else."""
    bus = ListenedBus()
    heard: list[object] = []
    leave = bus.subscribe(heard.append)
    bus.subscribe(heard.append)
    leave()
    leave()
    assert bus.listeners == 1
    await bus.publish(ResourceUpdated(uri="budget://budgets"))
    assert len(heard) == 1


async def test_crossed_thresholds_are_posted_to_the_webhook(
    settings: Settings, price_server: Loopback, clock: FakeClock
) -> None:
    async with Client(build_server(hooked(settings, price_server), clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", period="monthly")
        charged = await call(client, "charge", budget_id="acme", cost_usd="9.2")  # 50%, 80% and 90% at once
        posts = await wait_for_requests(price_server, "/hook", 3)
        with anyio.fail_after(5):
            while json.loads(await read(client, "budget://reports/acme"))["alerts"][-1]["webhook"] != "delivered":
                await anyio.sleep(0.01)
        report = json.loads(await read(client, "budget://reports/acme"))
    assert [a["threshold"] for a in charged["alerts"]] == ["0.5", "0.8", "0.9"]
    payloads = sorted((p.json() for p in posts), key=lambda p: p["threshold"])
    assert [p["threshold"] for p in payloads] == ["0.5", "0.8", "0.9"]
    first = payloads[0]
    assert first["event"] == "budget_crossed" and first["budget_id"] == "acme" and first["period"] == "monthly"
    assert (first["spent_usd"], first["limit_usd"]) == ("9.200000", "10.000000")
    assert clock.now.isoformat() == "2026-11-25T12:00:00+00:00"
    assert first["window_start"] == "2026-11-01T00:00:00+00:00" and first["window_end"] == "2026-12-01T00:00:00+00:00"
    assert first["projected_spend_usd"] is not None
    assert posts[0].headers["Content-Type"] == "application/json"
    assert [a["webhook"] for a in report["alerts"]] == ["delivered"] * 3


async def test_a_provider_cap_s_alert_is_posted_and_its_delivery_shown_apart_from_the_period_s(
    settings: Settings, price_server: Loopback, clock: FakeClock
) -> None:
    cap = {"period": "monthly", "limit_usd": "1", "providers": ["openai"]}
    async with Client(build_server(hooked(settings, price_server), clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="4", period="monthly", extra_limits=[cap],
                   alert_at=["0.5"])  # fmt: skip
        await call(client, "charge", budget_id="acme", model="gpt-4o", provider="openai", cost_usd="0.6")
        posts = await wait_for_requests(price_server, "/hook", 1)
        with anyio.fail_after(5):  # the period's own 50% (of $4) has not been crossed, so no delivery is its
            while json.loads(await read(client, "budget://reports/acme"))["alerts"][0]["webhook"] != "delivered":
                await anyio.sleep(0.01)
        charged = await client.call_tool(
            "charge", {"budget_id": "acme", "model": "claude-sonnet-4-5", "provider": "anthropic", "cost_usd": "2"}
        )
        report = json.loads(await read(client, "budget://reports/acme"))
        markdown = await read(client, "budget://reports/acme.md")
    assert (posts[0].json()["providers"], posts[0].json()["limit_usd"]) == (["openai"], "1.000000")
    shown = sorted((a["providers"], a["limit_usd"], a["webhook"]) for a in report["alerts"])
    assert shown[0][:2] == ([], "4.000000") and shown[1] == (["openai"], "1.000000", "delivered")
    assert "acme reached 50% of its monthly limit" in str(charged.content)  # the period's own, this time
    assert "reached 50% of its monthly limit (openai only) ($0.60 of $1.00)" in markdown


async def test_a_rolling_window_alert_reaches_the_webhook_and_the_report(
    settings: Settings, price_server: Loopback, clock: FakeClock
) -> None:
    async with Client(build_server(hooked(settings, price_server), clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", period="5h", alert_at=["0.8"])
        charged = await call(client, "charge", budget_id="acme", cost_usd="8.5")
        [post] = await wait_for_requests(price_server, "/hook", 1)
        with anyio.fail_after(5):
            while json.loads(await read(client, "budget://reports/acme"))["alerts"][-1]["webhook"] != "delivered":
                await anyio.sleep(0.01)
    assert [(a["period"], a["threshold"], a["spent_usd"]) for a in charged["alerts"]] == [("5h", "0.8", "8.500000")]
    payload = post.json()
    assert (payload["period"], payload["threshold"], payload["window_end"]) == ("5h", "0.8", None)
    assert payload["window_start"] == "2026-11-25T12:00:00+00:00"  # the minute it was crossed in


async def test_a_failing_webhook_is_retried_and_recorded_without_failing_charges(
    clock: FakeClock, settings: Settings, price_server: Loopback
) -> None:
    price_server.route("POST", "/hook", lambda _: Reply(500, b"down"))
    hooked = settings.model_copy(
        update={"alert_webhook": f"{price_server.url}/hook", "alert_attempts": 3, "alert_backoff_seconds": 0.01}
    )
    async with Client(build_server(hooked, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10")
        charged = await call(client, "charge", budget_id="acme", cost_usd="5")
        await wait_for_requests(price_server, "/hook", 3)
        with anyio.fail_after(5):
            while json.loads(await read(client, "budget://reports/acme"))["alerts"][0]["webhook"] is None:
                await anyio.sleep(0.01)
            while json.loads(await read(client, "budget://reports/acme"))["alerts"][0]["webhook"] != (
                "failed after 3 attempts"
            ):
                await anyio.sleep(0.01)
    assert charged["cost_usd"] == "5.000000" and [a["threshold"] for a in charged["alerts"]] == ["0.5"]
    assert len(price_server.received("/hook")) == 3


async def test_a_hanging_webhook_does_not_hold_up_charges(
    clock: FakeClock, settings: Settings, price_server: Loopback
) -> None:
    price_server.route("POST", "/hook", lambda _: Reply(hang=True))
    hooked = settings.model_copy(update={"alert_webhook": f"{price_server.url}/hook"})
    async with Client(build_server(hooked, clock=clock)) as client:
        await call(client, "allocate", budget_id="acme", limit_usd="10", alert_at=["0.1", "0.2", "0.3", "0.4"])
        await call(client, "charge", budget_id="acme", cost_usd="1.5")
        await wait_for_requests(price_server, "/hook", 1)  # the receiver now holds a delivery open
        with anyio.fail_after(5):  # a guard against a hang, not a timing assertion
            results = [await call(client, "charge", budget_id="acme", cost_usd="0.5") for _ in range(6)]
            status = await call(client, "get_budget", budget_id="acme")
    assert sum(len(r["alerts"]) for r in results) == 3  # 20%, 30% and 40% crossed while the webhook hung
    assert status["spent_usd"] == "4.500000"
