"""Tenants stay apart over HTTP with scoped tokens: no widening, no reaching into other roots, no shared keys,
no foreign change notices, and a foreign id is never told apart from an unknown one."""

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

from budget_mcp import BudgetEngine
from tests.server.test_access import ADMIN, as_client, ok, refused
from tests.servers import serving

pytestmark = pytest.mark.anyio

ACME_RE = "acme-re-token-0123456789abcdef"
OTHER = "other-token-0123456789abcdefgh"
FOUNDER = "founder-token-0123456789abcd"
TOKENS = f"""
[[token]]
name = "acme-re"
token = "{ACME_RE}"
prefixes = ["acme/re"]

[[token]]
name = "other"
token = "{OTHER}"
prefixes = ["acme/re"]

[[token]]
name = "founder"
token = "{FOUNDER}"
prefixes = ["beta"]
create_roots = true
"""


@pytest.fixture
def base(tmp_path: Path) -> Any:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    with serving("http", tmp_path / "ledger.db", BUDGET_MCP_TOKEN=ADMIN, BUDGET_MCP_TOKENS=str(tokens)) as url:
        yield url


async def test_create_roots_creates_new_roots_and_never_touches_existing_ones(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="10")
    async with as_client(base, FOUNDER) as founder:
        resize = await refused(founder, "allocate", budget_id="acme", limit_usd="0.01")
        no_change = await refused(founder, "allocate", budget_id="acme")  # would have returned acme's status
        unknown = await refused(founder, "get_budget", budget_id="zeta")
        foreign = await refused(founder, "get_budget", budget_id="acme")
        await ok(founder, "allocate", budget_id="beta", limit_usd="5")
        await ok(founder, "allocate", budget_id="gamma", limit_usd="3")  # a new root: now the founder's
        await ok(founder, "allocate", budget_id="gamma", limit_usd="4")
        await ok(founder, "allocate", budget_id="gamma/kid", limit_usd="1")
        await ok(founder, "charge", budget_id="gamma/kid", cost_usd="0.5")
        listing = await ok(founder, "list_budgets")
    async with as_client(base, ADMIN) as admin:
        acme = await ok(admin, "get_budget", budget_id="acme")
    assert "may not use budget 'acme'" in resize and "may not use budget 'acme'" in no_change
    assert "10" not in no_change and acme["limit_usd"] == "10.000000"
    assert foreign.replace("acme", "X") == unknown.replace("zeta", "X")
    assert [n["budget_id"] for n in listing["budgets"]] == ["beta", "gamma"]
    assert listing["budgets"][1]["spent_usd"] == "0.500000"


async def test_a_scoped_token_cannot_widen_the_budget_that_confines_it(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="100")
        await ok(admin, "allocate", budget_id="acme/re", limit_usd="5")
    async with as_client(base, ACME_RE) as token:
        raised = await refused(token, "allocate", budget_id="acme/re", limit_usd="50")
        warned = await refused(token, "allocate", budget_id="acme/re", enforcement="warn")
        closed = await refused(token, "release", budget_id="acme/re")
        same = await ok(token, "allocate", budget_id="acme/re")  # declaring it as it is changes nothing
        await ok(token, "allocate", budget_id="acme/re/web", limit_usd="2")  # strictly below: its own to shape
        await ok(token, "allocate", budget_id="acme/re/web", limit_usd="3")
        await ok(token, "release", budget_id="acme/re/web")
    async with as_client(base, ADMIN) as admin:
        confining = await ok(admin, "get_budget", budget_id="acme/re")
    for message in (raised, warned):
        assert "'acme/re' is the budget the token 'acme-re' is confined to" in message
    assert "only an admin may close it" in closed
    assert same["limit_usd"] == confining["limit_usd"] == "5.000000" and confining["enforcement"] == "block"


async def test_idempotency_keys_belong_to_the_token_that_used_them(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="100")
        await ok(admin, "allocate", budget_id="acme/re", limit_usd="50")
    async with as_client(base, OTHER) as other, as_client(base, ACME_RE) as mine:
        squatted = await ok(other, "charge", budget_id="acme/re", cost_usd="1", idempotency_key="call-1")
        first = await ok(mine, "charge", budget_id="acme/re", cost_usd="2", idempotency_key="call-1")
        retry = await ok(mine, "charge", budget_id="acme/re", cost_usd="2", idempotency_key="call-1")
        different = await ok(other, "charge", budget_id="acme/re", cost_usd="3", idempotency_key="call-2")
        reused = await ok(mine, "charge", budget_id="acme/re", cost_usd="4", idempotency_key="call-2")
        status = await ok(mine, "get_budget", budget_id="acme/re")
    assert not squatted["duplicate"] and not first["duplicate"] and retry["duplicate"]
    assert not different["duplicate"] and not reused["duplicate"]  # no "already used" from another token's key
    assert retry["charge_id"] == first["charge_id"] and status["spent_usd"] == "10.000000"


async def test_subscriptions_are_kept_to_the_tokens_budgets(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="100")
        await ok(admin, "allocate", budget_id="acme/re", limit_usd="5")
        await ok(admin, "allocate", budget_id="acme/ops", limit_usd="5")
    foreign = ["budget://budgets/acme/ops", "budget://reports/acme.md", "budget://ledger/acme"]
    async with as_client(base, ACME_RE) as token:
        for uri in foreign:
            with pytest.raises(MCPError, match="may not use budget"):
                async with token.listen(resource_subscriptions=[uri]):
                    pass
        async with token.listen(resource_subscriptions=["budget://budgets/acme/re"]):  # its own: fine
            pass
    headers = {"Authorization": f"Bearer {ACME_RE}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy") as legacy,
    ):
        with pytest.warns(MCPDeprecationWarning, match="resources/subscribe is removed"):
            for uri in foreign:
                with pytest.raises(MCPError, match="may not use budget"):
                    await legacy.subscribe_resource(uri)
            await legacy.subscribe_resource("budget://budgets/acme/re")


async def test_a_foreign_budget_or_hold_reads_exactly_like_an_unknown_one(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="100")
        await ok(admin, "allocate", budget_id="acme/re", limit_usd="5")
        await ok(admin, "allocate", budget_id="acme/support", limit_usd="5")
        hold = await ok(admin, "check_budget", budget_id="acme/support", estimated_cost_usd="1", reserve=True)
    async with as_client(base, ACME_RE) as token:
        existing = await refused(token, "list_budgets", prefix="acme/support")
        unknown = await refused(token, "list_budgets", prefix="acme/nothing")
        above = await ok(token, "list_budgets", prefix="acme")  # above its own budget: just its own
        release = await refused(token, "release", reservation_id=hold["reservation_id"])
        release_unknown = await refused(token, "release", reservation_id="res_" + "1" * 24)
        charged = await ok(token, "charge", budget_id="acme/re", cost_usd="1", reservation_id=hold["reservation_id"])
        charged_unknown = await ok(token, "charge", budget_id="acme/re", cost_usd="1", reservation_id="res_" + "1" * 24)
    async with as_client(base, ADMIN) as admin:
        support = await ok(admin, "get_budget", budget_id="acme/support")
    assert existing.replace("support", "X") == unknown.replace("nothing", "X")
    assert [n["budget_id"] for n in above["budgets"]] == ["acme/re"]
    assert release.replace(hold["reservation_id"], "ID") == release_unknown.replace("res_" + "1" * 24, "ID")
    assert "acme/support" not in release and "acme/support" not in str(charged)
    assert charged["warnings"][0].replace(hold["reservation_id"], "ID") == charged_unknown["warnings"][0].replace(
        "res_" + "1" * 24, "ID"
    )
    assert support["held_usd"] == "1.000000"  # the foreign hold is untouched


async def test_idempotency_namespaces_hold_on_both_backends(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10")
    a = await engine.charge("acme", cost_usd="1", idempotency_key="k", key_namespace="a")
    b = await engine.charge("acme", cost_usd="2", idempotency_key="k", key_namespace="b")
    local = await engine.charge("acme", cost_usd="3", idempotency_key="k")
    again = await engine.charge("acme", cost_usd="2", idempotency_key="k", key_namespace="b")
    assert [a.duplicate, b.duplicate, local.duplicate, again.duplicate] == [False, False, False, True]
    assert (await engine.status("acme")).spent_usd == "6.000000"


async def test_listeners_of_one_token_hear_nothing_of_another_tenant(base: str) -> None:
    async with as_client(base, ADMIN) as admin:
        await ok(admin, "allocate", budget_id="acme", limit_usd="100")
        await ok(admin, "allocate", budget_id="acme/re", limit_usd="5")
        await ok(admin, "allocate", budget_id="acme/ops", limit_usd="5")
    async with as_client(base, ACME_RE) as token, as_client(base, ADMIN) as admin:
        async with token.listen(resource_subscriptions=["budget://budgets/acme/re"]) as sub:
            events = aiter(sub)
            await ok(admin, "charge", budget_id="acme/ops", cost_usd="1")
            await ok(admin, "charge", budget_id="acme/re", cost_usd="1")
            with anyio.fail_after(10):
                heard = str(await anext(events))
    assert heard == "ResourceUpdated(uri='budget://budgets/acme/re')"
