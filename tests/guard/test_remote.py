"""The guard on a running `budget-mcp serve --transport http`, with a token: the same results and errors as
embedded, and a clear error, at once, when the server is not there."""

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anyio
import openai
import pytest

from budget_mcp.errors import AccessDeniedError, BudgetExceededError, BudgetNotFoundError, LedgerError
from budget_mcp.guard import Guard, SyncGuard
from tests.guard.test_sdk_calls import MESSAGES, budget
from tests.providers import FakeProviders, Usage, fake_providers
from tests.servers import free_port, serving

pytestmark = pytest.mark.anyio
ADMIN = "admin-token-0123456789abcdef"
AGENT = "agent-token-0123456789abcdef"


@pytest.fixture
def providers() -> Iterator[FakeProviders]:
    with fake_providers() as running:
        running.usage = Usage(1_000, 100)
        yield running


async def test_remote_guard_holds_charges_and_refuses_like_the_embedded_one(
    tmp_path: Path, providers: FakeProviders
) -> None:
    db = tmp_path / "ledger.db"
    await budget(db, limit_usd="0.05")
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "agent"\ntoken = "{AGENT}"\nprefixes = ["acme"]\n')
    with serving("http", db, BUDGET_MCP_TOKEN=ADMIN, BUDGET_MCP_TOKENS=str(tokens)) as base:
        async with (
            Guard.open(f"{base}/mcp", token=AGENT, budget_id="acme") as guard,
            openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
        ):
            guarded = guard.wrap(client)
            await guarded.chat.completions.create(model="gpt-4o", max_tokens=200, messages=MESSAGES)
            async with guard.child("acme/sub", limit_usd="0.01") as sub:
                async with sub.call(estimated_cost_usd="0.004") as call:
                    charged = await call.settle(cost_usd="0.003")
            with pytest.raises(BudgetExceededError) as denied:
                await guarded.chat.completions.create(model="gpt-4o", max_tokens=10_000, messages=MESSAGES)
            with pytest.raises(BudgetNotFoundError, match="budget 'acme/ghost' does not exist"):
                async with guard.call("acme/ghost", estimated_cost_usd="0.01"):
                    pass
            with pytest.raises(AccessDeniedError, match="the token 'agent' may not use budget 'other'"):
                async with guard.call("other", estimated_cost_usd="0.01"):
                    pass
            status = await guard.backend.check("acme", estimated_cost_usd="0")
    # 1,000 x $2.50 + 100 x $10 per million for the GPT-4o call, $0.003 through the sub-budget
    assert Decimal(status.remaining_usd or "0") == Decimal("0.05") - Decimal("0.0035") - Decimal("0.003")
    assert charged.cost_usd == "0.003000" and denied.value.decided_by == "acme"
    assert providers.count("/v1/chat/completions") == 1  # the denied call never went out


async def test_a_stopped_server_is_a_clear_error_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with anyio.fail_after(20), pytest.raises(LedgerError, match=f"cannot reach budget-mcp at {url}"):
        async with Guard.open(url, token=ADMIN):
            pass
    with anyio.fail_after(20), pytest.raises(LedgerError, match="cannot reach budget-mcp"):
        with SyncGuard.open(url, token=ADMIN):
            pass
