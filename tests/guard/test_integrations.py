"""The guard inside two agent frameworks: a pydantic-ai Agent on BudgetedModel, and an OpenAI Agents SDK Runner
with BudgetHooks, both on the real OpenAI client pointed at the fake provider."""

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from budget_mcp.errors import BudgetExceededError
from budget_mcp.guard import Guard
from tests.guard.test_sdk_calls import budget
from tests.guard.test_sharing import spent
from tests.providers import FakeProviders, Usage, fake_providers

pytestmark = pytest.mark.anyio


@pytest.fixture
def providers() -> Iterator[FakeProviders]:
    with fake_providers() as running:
        running.usage = Usage(1_000, 200, cache_read_tokens=400)
        running.text = "hello from the fake model"
        yield running


async def test_a_pydantic_ai_agent_on_a_budgeted_model_is_held_and_charged(
    ledger_path: Path, providers: FakeProviders
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from budget_mcp.integrations.pydantic_ai import BudgetedModel

    await budget(ledger_path, limit_usd="0.01")
    async with (
        Guard.open(ledger_path) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client))
        agent = Agent(BudgetedModel(model, guard=guard, budget_id="acme"))
        answer = await agent.run("Say hello", model_settings={"max_tokens": 300})
        async with agent.run_stream("Say hello", model_settings={"max_tokens": 300}) as streamed:
            text = await streamed.get_output()
        with pytest.raises(BudgetExceededError):  # 5,000 output tokens at $10 per million do not fit
            await agent.run("Say hello", model_settings={"max_tokens": 5_000})
    # each call: 1,000 x $2.50 + 400 cached x $1.25 + 200 x $10, per million
    assert answer.output == text == "hello from the fake model"
    assert await spent(ledger_path) == (2 * Decimal("0.005"), Decimal(0))
    assert providers.count("/v1/chat/completions") == 2


async def test_an_openai_agents_run_with_budget_hooks_is_held_charged_and_stopped(
    ledger_path: Path, providers: FakeProviders
) -> None:
    from agents import Agent, ModelSettings, Runner, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel

    from budget_mcp.integrations.openai_agents import BudgetHooks

    set_tracing_disabled(True)
    await budget(ledger_path, limit_usd="0.01")
    async with (
        Guard.open(ledger_path) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        model = OpenAIResponsesModel("gpt-4o", openai_client=client)
        agent = Agent(name="writer", model=model, model_settings=ModelSettings(max_tokens=300))
        hooks = BudgetHooks(guard=guard, budget_id="acme")
        result = await Runner.run(agent, "Say hello", hooks=hooks)
        greedy = agent.clone(model_settings=ModelSettings(max_tokens=5_000))
        with pytest.raises(BudgetExceededError):
            await Runner.run(greedy, "Say hello", hooks=hooks)
    assert result.final_output == "hello from the fake model"
    assert await spent(ledger_path) == (Decimal("0.005"), Decimal(0))
    assert providers.count("/v1/responses") == 1  # the denied run never called the model
