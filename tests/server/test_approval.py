"""`enforcement = "ask"`: the person at the client is asked through MCP elicitation, in both protocol generations,
in-process, over stdio and over streamable HTTP; what they answer decides, and an approval is on the record."""

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.context import ClientRequestContext
from mcp.client.session import ElicitationFnT
from mcp.types import ElicitRequestParams, ElicitResult, ErrorData, Implementation

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.config import Settings
from budget_mcp.errors import BudgetExceededError, InvalidInputError
from budget_mcp.guard import Guard
from budget_mcp.server import build_server
from tests.conftest import FakeClock, ledger_dump
from tests.server.test_tools import call
from tests.servers import EXE, server_env, serving

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # the 2026-07-28 input-required retry, and the 2025-11-25 elicitation/create
CLIENT = Implementation(name="approval-test", version="4.5.6")
Callback = ElicitationFnT


def person(action: str, reason: str | None = None, asked: list[str] | None = None) -> Callback:
    """The person at the client: answers every question with `action` (and `reason` when accepting)."""

    async def answer(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        if asked is not None:
            asked.append(params.message)
        content = {"reason": reason} if action == "accept" and reason is not None else {}
        return ElicitResult(action=action, content=content if action == "accept" else None)

    return answer


async def ask_budget(client: Client) -> None:
    """acme/research: $5.00 a day, ask; $4.40 spent, so a $3.00 call goes $2.40 over."""
    await call(client, "allocate", budget_id="acme", limit_usd="20", period="daily")
    await call(client, "allocate", budget_id="acme/research", limit_usd="5", enforcement="ask")
    await call(client, "charge", budget_id="acme/research", cost_usd="4.40")


def question(clock: FakeClock) -> str:
    midnight = (clock.now + timedelta(days=1)).replace(hour=0, minute=0)
    assert midnight - clock.now <= timedelta(days=1)
    return f"acme/research would go $2.40 over its $5.00 daily limit (resets {midnight:%H:%M} UTC): approve?"


@pytest.mark.parametrize("mode", MODES)
async def test_an_approved_check_passes_with_its_hold_and_the_approval_is_on_record(
    mode: str, clock: FakeClock, settings: Settings
) -> None:
    asked: list[str] = []
    server = build_server(settings, clock=clock)
    async with Client(
        server, mode=mode, elicitation_callback=person("accept", "demo at noon", asked), client_info=CLIENT
    ) as client:
        await ask_budget(client)
        check = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd="3", reserve=True)
        assert asked == [question(clock)]
        assert check["allowed"] and check["decision"] == "warn" and check["reservation_id"]
        assert check["reason"] == "approved at the client: " + question(clock).removesuffix(": approve?")
        status = await call(client, "get_budget", budget_id="acme/research")
        assert (Decimal(status["held_usd"]), Decimal(status["spent_usd"])) == (Decimal(3), Decimal("4.4"))

        ledger = json.loads((await client.read_resource("budget://ledger/acme")).contents[0].text)  # type: ignore[union-attr]
        approvals = [e for e in ledger["entries"] if e["kind"] == "approval"]
        assert len(approvals) == 1
        approval = approvals[0]
        assert approval["budget_id"] == "acme/research" and approval["cost_usd"] == "3.000000"
        assert approval["reservation_id"] is None  # only entries that settle or release a hold carry its id
        assert approval["metadata"] == {
            "approved_for": "acme/research", "period": "daily", "over_usd": "2.400000", "over_tokens": 0,
            "client": "approval-test", "client_version": "4.5.6", "token": "local", "reason": "demo at noon",
            "question": question(clock), "reservation_id": check["reservation_id"],
        }  # fmt: skip

        report = json.loads((await client.read_resource("budget://reports/acme")).contents[0].text)  # type: ignore[union-attr]
        assert [(a["entry_id"], a["over_usd"], a["client"], a["reason"]) for a in report["approvals"]] == [
            (approval["entry_id"], "2.400000", "approval-test 4.5.6", "demo at noon")
        ]
        markdown = (await client.read_resource("budget://reports/acme.md")).contents[0].text  # type: ignore[union-attr]
        assert (
            "acme/research approved $2.40 over the daily limit of acme/research for a $3.00 call "
            '(by approval-test 4.5.6, token local): "demo at noon"'
        ) in markdown

        charged = await call(
            client, "charge", budget_id="acme/research", cost_usd="2.5", reservation_id=check["reservation_id"]
        )
        assert charged["spent_usd"] == "6.900000" and charged["over_limit"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_declined_or_cancelled_question_denies_and_writes_nothing(
    mode: str, action: str, clock: FakeClock, settings: Settings
) -> None:
    asked: list[str] = []
    async with Client(
        build_server(settings, clock=clock), mode=mode, elicitation_callback=person(action, asked=asked)
    ) as client:
        await ask_budget(client)
        before = ledger_dump(settings.db_path)
        check = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd="3", reserve=True)
        assert asked == [question(clock)]
        assert not check["allowed"] and check["decision"] == "deny" and check["reservation_id"] is None
        answered = {"decline": "declined", "cancel": "cancelled"}[action]
        assert check["reason"] == f"{answered} at the client: " + question(clock).removesuffix(": approve?")
        assert check["decided_by"] == "acme/research" and check["decided_period"] == "daily"
        assert ledger_dump(settings.db_path) == before


@pytest.mark.parametrize("mode", MODES)
async def test_a_check_within_the_limit_asks_nobody(mode: str, clock: FakeClock, settings: Settings) -> None:
    asked: list[str] = []
    async with Client(
        build_server(settings, clock=clock), mode=mode, elicitation_callback=person("decline", asked=asked)
    ) as client:
        await ask_budget(client)
        check = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd="0.6", reserve=True)
    assert check["allowed"] and check["decision"] == "allow" and check["reservation_id"] and asked == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_that_cannot_elicit_is_denied_saying_approval_could_not_be_asked(
    mode: str, clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock), mode=mode) as client:
        await ask_budget(client)
        before = ledger_dump(settings.db_path)
        check = await call(client, "check_budget", budget_id="acme/research", estimated_cost_usd="3", reserve=True)
    assert not check["allowed"] and check["decision"] == "deny"
    assert check["reason"] == (
        question(clock).removesuffix(": approve?") + "; going over needs a person's approval, and none could be "
        "asked (this caller cannot answer MCP elicitation)"
    )
    assert ledger_dump(settings.db_path) == before


async def test_the_library_and_the_guard_cannot_ask_so_they_are_denied(
    clock: FakeClock, settings: Settings, prices: PriceCatalog
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await ask_budget(client)
    before = ledger_dump(settings.db_path)
    ledger = await open_ledger(settings.db_path)
    try:
        check = await BudgetEngine(ledger, prices, clock).check(
            "acme/research", estimated_cost_usd="3", reserve=True
        )  # fmt: skip
    finally:
        await ledger.close()
    assert not check.allowed and "none could be asked" in check.reason
    async with Guard.open(settings.db_path, clock=clock) as guard:
        with pytest.raises(BudgetExceededError, match="needs a person's approval, and none could be asked"):
            async with guard.call("acme/research", estimated_cost_usd="3"):
                pass  # pragma: no cover - the call is denied before it runs
    assert ledger_dump(settings.db_path) == before


@pytest.mark.parametrize("mode", MODES)
async def test_eight_concurrent_approved_checks_each_record_once_with_their_holds(
    mode: str, clock: FakeClock, ledger_location: str, tmp_path: Path
) -> None:
    """Eight $2 holds on a $1 ask budget, all approved at once: each approval is recorded once, under the ledger's
    lock, so each says how far over that check went: $1, $3, ... $15 in some order."""
    location = {"database_url": ledger_location} if ledger_location.startswith("postgres") else {}
    settings = Settings.load(
        {}, db_path=tmp_path / "ledger.db", change_poll_seconds=0.05, prices_cache_dir=tmp_path / "p", **location
    )
    started = anyio.Event()
    waiting = 0

    async def approve_together(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        nonlocal waiting
        waiting += 1
        if waiting >= 8:  # every check has been asked before any answer goes back
            started.set()
        with anyio.fail_after(10):
            await started.wait()
        return ElicitResult(action="accept", content={})

    results: list[dict[str, Any]] = []
    async with Client(build_server(settings, clock=clock), mode=mode, elicitation_callback=approve_together) as client:
        await call(client, "allocate", budget_id="team", limit_usd="1", enforcement="ask")

        async def check() -> None:
            results.append(
                await call(client, "check_budget", budget_id="team", estimated_cost_usd="2", reserve=True)
            )  # fmt: skip

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for _ in range(8):
                    tasks.start_soon(check)
        status = await call(client, "get_budget", budget_id="team")
        ledger = json.loads((await client.read_resource("budget://ledger/team")).contents[0].text)  # type: ignore[union-attr]
    assert len(results) == 8 and all(r["allowed"] and r["reservation_id"] for r in results)
    assert len({r["reservation_id"] for r in results}) == 8
    assert Decimal(status["held_usd"]) == 16 and Decimal(status["spent_usd"]) == 0
    approvals = [e for e in ledger["entries"] if e["kind"] == "approval"]
    holds = [e for e in ledger["entries"] if e["kind"] == "hold"]
    assert len(approvals) == 8 and len(holds) == 8
    assert sorted(Decimal(a["metadata"]["over_usd"]) for a in approvals) == [Decimal(2 * k - 1) for k in range(1, 9)]
    assert {a["metadata"]["reservation_id"] for a in approvals} == {r["reservation_id"] for r in results}
    # What each person saw was asked before the others' holds were written, so it may say less than was recorded.
    assert all(a["metadata"]["question"].startswith("team would go $") for a in approvals)


async def test_unknown_enforcement_is_refused_naming_the_four(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        result = await client.call_tool("allocate", {"budget_id": "acme", "limit_usd": "5", "enforcement": "pause"})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "enforcement" in text and all(f"'{v}'" in text for v in ("block", "warn", "soft", "ask"))
        assert (await call(client, "list_budgets"))["count"] == 0


async def test_the_engine_refuses_unknown_enforcement_naming_the_four(engine: BudgetEngine) -> None:
    with pytest.raises(
        InvalidInputError, match="enforcement 'pause' is unknown; use one of 'block', 'warn', 'soft', 'ask'"
    ):
        await engine.allocate("acme", limit_usd="5", enforcement="pause")
    assert await engine.budget_ids() == []


def approve_total(asked: list[str]) -> Callback:
    return person("accept", "over stdio or http", asked)


async def transported_session(client: Client, asked: list[str]) -> None:
    """A subprocess server runs on the real clock: a total limit has no window, so the question does not name one."""
    await call(client, "allocate", budget_id="acme", limit_usd="5", enforcement="ask")
    await call(client, "charge", budget_id="acme", cost_usd="4.40")
    check = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="3", reserve=True)
    assert asked == ["acme would go $2.40 over its $5.00 total limit: approve?"]
    assert check["allowed"] and check["reservation_id"]
    ledger = json.loads((await client.read_resource("budget://ledger/acme")).contents[0].text)  # type: ignore[union-attr]
    (approval,) = [e for e in ledger["entries"] if e["kind"] == "approval"]
    assert approval["metadata"]["client"] == "approval-test" and approval["metadata"]["reason"] == "over stdio or http"
    asked.clear()
    again = await call(client, "check_budget", budget_id="acme", estimated_cost_usd="0.10")
    assert asked == ["acme would go $2.50 over its $5.00 total limit: approve?"] and again["allowed"]


@pytest.mark.parametrize("mode", MODES)
async def test_asking_over_stdio(mode: str, tmp_path: Path) -> None:
    asked: list[str] = []
    params = StdioServerParameters(command=EXE, args=["serve"], env=server_env(tmp_path / "ledger.db"))
    async with Client(params, mode=mode, elicitation_callback=approve_total(asked), client_info=CLIENT) as client:
        await transported_session(client, asked)


@pytest.mark.parametrize("mode", MODES)
async def test_asking_over_streamable_http(mode: str, tmp_path: Path) -> None:
    asked: list[str] = []
    with serving("http", tmp_path / "ledger.db") as base:
        async with Client(
            f"{base}/mcp", mode=mode, elicitation_callback=approve_total(asked), client_info=CLIENT
        ) as client:
            await transported_session(client, asked)


async def test_the_remote_guard_cannot_ask_so_it_is_denied(tmp_path: Path) -> None:
    with serving("http", tmp_path / "ledger.db") as base:
        async with Guard.open(f"{base}/mcp") as guard:
            await guard.backend.allocate("acme", limit_usd="1", enforcement="ask")
            with pytest.raises(BudgetExceededError, match="needs a person's approval, and none could be asked"):
                async with guard.call("acme", estimated_cost_usd="3"):
                    pass  # pragma: no cover - the call is denied before it runs
            status = await guard.backend.check("acme", estimated_cost_usd="0")
    assert status.remaining_usd == "1.000000"
