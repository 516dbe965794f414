"""Access control over streamable HTTP: tokens required, scoped tokens kept to their prefixes, forgeries refused."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from budget_mcp.config import Settings
from budget_mcp.errors import ConfigError
from budget_mcp.server.access import TokenTable
from tests.servers import serving

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-0123456789abcdef"
RESEARCH = "research-token-0123456789abc"
FOUNDER = "founder-token-0123456789abcd"
TOKENS = f"""
[[token]]
name = "research-agent"
token = "{RESEARCH}"
prefixes = ["acme/research"]

[[token]]
name = "founder"
token = "{FOUNDER}"
prefixes = ["beta"]
create_roots = true
"""


@asynccontextmanager
async def as_client(base: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        yield client


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} {arguments} was allowed"
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    return path


async def test_scoped_token_is_kept_inside_its_prefix_for_every_tool_and_resource(
    tmp_path: Path, tokens_file: Path
) -> None:
    env = {"BUDGET_MCP_TOKEN": ADMIN, "BUDGET_MCP_TOKENS": str(tokens_file)}
    with serving("http", tmp_path / "ledger.db", **env) as base:
        async with as_client(base, ADMIN) as admin:
            await ok(admin, "allocate", budget_id="acme", limit_usd="10")
            await ok(admin, "allocate", budget_id="acme/research", limit_usd="4")
            await ok(admin, "allocate", budget_id="acme/support", limit_usd="2")
            held = await ok(admin, "check_budget", budget_id="acme", estimated_cost_usd="1", reserve=True)
            before = (await admin.read_resource("budget://budgets", cache_mode="bypass")).contents

        async with as_client(base, RESEARCH) as research:
            await ok(research, "charge", budget_id="acme/research", cost_usd="0.5")
            await ok(research, "allocate", budget_id="acme/research/web", limit_usd="1")
            await ok(research, "check_budget", budget_id="acme/research/web", estimated_cost_usd="0.1")
            await ok(research, "recommend_model", task="chat", budget_id="acme/research")
            await ok(research, "estimate_cost", model="gpt-4o", input_tokens=10)
            listing = await ok(research, "list_budgets")
            tree = json.loads((await research.read_resource("budget://budgets")).contents[0].text)  # type: ignore[union-attr]
            own_report = await research.read_resource("budget://reports/acme/research")
            outside: list[tuple[str, dict[str, Any]]] = [
                ("check_budget", {"budget_id": "acme", "estimated_cost_usd": "1", "reserve": True}),
                ("charge", {"budget_id": "acme/support", "cost_usd": "1"}),
                ("allocate", {"budget_id": "acme/support", "limit_usd": "1.5"}),
                ("allocate", {"budget_id": "rogue", "limit_usd": "100"}),
                ("release", {"budget_id": "acme/support"}),
                ("get_budget", {"budget_id": "acme"}),
                ("recommend_model", {"task": "chat", "budget_id": "acme"}),
            ]
            messages = [await refused(research, tool, **arguments) for tool, arguments in outside]
            foreign_hold = await refused(research, "release", reservation_id=held["reservation_id"])
            unknown_hold = await refused(research, "release", reservation_id="res_" + "0" * 24)
            denied_reads = []
            for uri in ("budget://budgets/acme", "budget://reports/acme", "budget://reports/acme/support.md",
                        "budget://ledger/acme/support"):  # fmt: skip
                with pytest.raises(MCPError) as caught:
                    await research.read_resource(uri)
                denied_reads.append(str(caught.value))
            with pytest.raises(MCPError) as prompt_refused:
                await research.get_prompt("spending_review", {"budget_id": "acme"})

        async with as_client(base, ADMIN) as admin:
            after = (await admin.read_resource("budget://budgets", cache_mode="bypass")).contents
            research_now = await ok(admin, "get_budget", budget_id="acme/research")

    for message in messages + denied_reads + [str(prompt_refused.value)]:
        assert "the token 'research-agent' may not use budget" in message, message
        assert "limited to budgets under acme/research" in message
        assert RESEARCH not in message
    assert foreign_hold.replace(held["reservation_id"], "ID") == unknown_hold.replace("res_" + "0" * 24, "ID")
    assert [n["budget_id"] for n in listing["budgets"]] == ["acme/research"]
    assert [c["budget_id"] for c in listing["budgets"][0]["children"]] == ["acme/research/web"]
    assert [n["budget_id"] for n in tree] == ["acme/research"]
    assert json.loads(own_report.contents[0].text)["totals"]["spent_usd"] == "0.500000"  # type: ignore[union-attr]
    # The refusals changed nothing: the tree differs from before only by research's own charge and child.
    before_tree, after_tree = json.loads(before[0].text), json.loads(after[0].text)  # type: ignore[union-attr]
    assert after_tree[0]["held_usd"] == before_tree[0]["held_usd"] == "1.000000"
    assert [c["limit_usd"] for c in after_tree[0]["children"]] == ["4.000000", "2.000000"]
    assert after_tree[0]["children"][1]["closed"] is False
    assert research_now["spent_usd"] == "0.500000"


async def test_root_creation_needs_create_roots(tmp_path: Path, tokens_file: Path) -> None:
    with serving("http", tmp_path / "ledger.db", BUDGET_MCP_TOKENS=str(tokens_file)) as base:
        async with as_client(base, FOUNDER) as founder:
            created = await ok(founder, "allocate", budget_id="beta", limit_usd="5")
            await ok(founder, "charge", budget_id="beta", cost_usd="1")
        async with as_client(base, RESEARCH) as research:
            message = await refused(research, "allocate", budget_id="gamma", limit_usd="5")
    assert created["budget_id"] == "beta"
    assert "may not use budget 'gamma'" in message


async def test_missing_wrong_or_forged_credentials_are_refused(tmp_path: Path, tokens_file: Path) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with serving("http", tmp_path / "ledger.db", BUDGET_MCP_TOKENS=str(tokens_file)) as base:
        no_token = httpx2.post(f"{base}/mcp", json=ping)
        wrong = httpx2.post(f"{base}/mcp", json=ping, headers={"Authorization": "Bearer " + RESEARCH[:-1] + "x"})
        forged_host = httpx2.post(
            f"{base}/mcp", json=ping, headers={"Authorization": f"Bearer {RESEARCH}", "Host": "evil.example"}
        )
        forged_origin = httpx2.post(
            f"{base}/mcp", json=ping, headers={"Authorization": f"Bearer {RESEARCH}", "Origin": "http://evil.example"}
        )
        huge = httpx2.post(
            f"{base}/mcp",
            content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "' + b"x" * 400_000 + b'"}}',
            headers={"Authorization": f"Bearer {RESEARCH}", "Content-Type": "application/json"},
        )
        health = httpx2.get(f"{base}/health")
    statuses = [r.status_code for r in (no_token, wrong, forged_host, forged_origin, huge, health)]
    assert statuses == [401, 401, 421, 403, 413, 200]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('[[token]]\nname = "a"\ntoken = "short"\n', "at least 16 characters"),
        ('[[token]]\ntoken = "0123456789abcdef0"\n', "needs a name"),
        ('[[token]]\nname = "a"\ntoken = "0123456789abcdef0"\nprefixes = ["Acme!"]\n', "invalid segment"),
        ('[[token]]\nname = "a"\ntoken = "0123456789abcdef0"\nscopes = []\n', "unknown fields ['scopes']"),
        ('token = "x"\n', "needs [[token]] tables"),
    ],
)
def test_a_wrong_tokens_file_is_a_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(content)

    with pytest.raises(ConfigError) as caught:
        TokenTable.from_settings(Settings.load({"BUDGET_MCP_TOKENS": str(path)}, db_path=tmp_path / "l.db"))

    assert problem in str(caught.value) and "0123456789abcdef0" not in str(caught.value)
