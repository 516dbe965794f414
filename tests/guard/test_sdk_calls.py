"""The guard around the real `anthropic` and `openai` SDK clients, pointed at fake providers on loopback: held
before the call, charged from the response's usage after it, every token counted once."""

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import anyio
import openai
import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.errors import BudgetExceededError, UnknownModelError
from budget_mcp.guard import Guard, SyncGuard
from tests.conftest import FakeClock
from tests.providers import FakeProviders, Usage, fake_providers

pytestmark = pytest.mark.anyio
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def providers() -> Iterator[FakeProviders]:
    with fake_providers() as running:
        yield running


async def budget(location: str | Path, budget_id: str = "acme", limit_usd: str = "10", **fields: object) -> None:
    """Create a budget the way an operator would, on the same ledger."""
    ledger = await open_ledger(location)
    try:
        await BudgetEngine(ledger, PriceCatalog()).allocate(budget_id, limit_usd=limit_usd, **fields)  # type: ignore[arg-type]
    finally:
        await ledger.close()


def usd(text: str | None) -> Decimal:
    assert text is not None
    return Decimal(text)


async def status(guard: Guard, budget_id: str = "acme") -> tuple[Decimal, Decimal]:
    """(spent, held) of a budget, through the guard's own engine."""
    found = await guard.backend.engine.status(budget_id)  # type: ignore[attr-defined]
    return usd(found.spent_usd), usd(found.held_usd)


async def test_anthropic_messages_are_charged_with_cache_reads_and_writes(
    ledger_location: str, providers: FakeProviders
) -> None:
    await budget(ledger_location)
    providers.usage = Usage(1_200, 300, cache_read_tokens=800, cache_write_tokens=400)
    async with (
        Guard.open(ledger_location) as guard,
        anthropic.AsyncAnthropic(base_url=providers.anthropic_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")
        message = await guarded.messages.create(model="claude-haiku-4-5", max_tokens=500, messages=MESSAGES)
        # 1,200 x $1 + 300 x $5 + 800 x $0.10 + 400 x $1.25, per million
        assert await status(guard) == (Decimal("0.00328"), Decimal(0))
        async with guarded.messages.stream(model="claude-haiku-4-5", max_tokens=500, messages=MESSAGES) as stream:
            text = await stream.get_final_text()
        events = await guarded.messages.create(model="claude-haiku-4-5", max_tokens=500, messages=MESSAGES, stream=True)
        async for _ in events:
            pass
        assert await status(guard) == (Decimal("0.00984"), Decimal(0))  # the same call three times
    assert message.usage.output_tokens == 300 and text
    held = providers.received("/v1/messages")[0].body
    assert held["max_tokens"] == 500 and held["model"] == "claude-haiku-4-5"  # every option passed unchanged


async def test_openai_chat_and_responses_count_cached_and_reasoning_tokens_once(
    ledger_path: Path, providers: FakeProviders
) -> None:
    await budget(ledger_path)
    providers.usage = Usage(1_000, 500, cache_read_tokens=2_000, reasoning_tokens=200)
    async with (
        Guard.open(ledger_path) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")
        await guarded.chat.completions.create(model="gpt-4o", max_tokens=600, messages=MESSAGES)
        # 1,000 x $2.50 + 2,000 cached x $1.25 + 500 x $10 (reasoning inside the 500), per million
        one_call = Decimal("0.01")
        assert await status(guard) == (one_call, Decimal(0))
        stream = await guarded.chat.completions.create(model="gpt-4o", max_tokens=600, messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
        await guarded.responses.create(model="gpt-4o", max_output_tokens=600, input="Say hello")
        events = await guarded.responses.create(model="gpt-4o", max_output_tokens=600, input="Say hello", stream=True)
        async for _ in events:
            pass
        assert await status(guard) == (4 * one_call, Decimal(0))
    streamed = providers.received("/v1/chat/completions")[1].body
    assert streamed["stream_options"] == {"include_usage": True}  # turned on, so the last chunk has the usage


async def test_openrouter_reported_cost_wins_over_the_catalog(ledger_path: Path, providers: FakeProviders) -> None:
    await budget(ledger_path)
    providers.usage = Usage(1_000, 100, cost_usd="0.0123")
    with (
        SyncGuard.open(ledger_path) as guard,
        openai.OpenAI(base_url=providers.openrouter_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")
        guarded.chat.completions.create(model="openai/gpt-4o", max_tokens=200, messages=MESSAGES)
        stream = guarded.chat.completions.create(model="openai/gpt-4o", max_tokens=200, messages=MESSAGES, stream=True)
        for _ in stream:
            pass
        spent = guard.portal.call(guard.guard.backend.engine.status, "acme").spent_usd  # type: ignore[attr-defined]
    assert usd(spent) == Decimal("0.0246")


async def test_blocking_clients_are_guarded_by_sync_guard(ledger_path: Path, providers: FakeProviders) -> None:
    await budget(ledger_path)
    providers.usage = Usage(1_000, 100)
    with (
        SyncGuard.open(ledger_path) as guard,
        anthropic.Anthropic(base_url=providers.anthropic_base_url, api_key="t", max_retries=0) as claude,
        openai.OpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as gpt,
    ):
        guarded_claude, guarded_gpt = guard.wrap(claude, "acme"), guard.wrap(gpt, "acme")
        guarded_claude.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES)
        with guarded_claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=MESSAGES) as s:
            s.get_final_text()
        guarded_gpt.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES)
        for _ in guarded_gpt.responses.create(model="gpt-4o", max_output_tokens=100, input="hi", stream=True):
            pass
        spent = guard.portal.call(guard.guard.backend.engine.status, "acme").spent_usd  # type: ignore[attr-defined]
    # two Claude calls of 1,000 x $1 + 100 x $5, two GPT-4o calls of 1,000 x $2.50 + 100 x $10, per million
    assert usd(spent) == 2 * Decimal("0.0015") + 2 * Decimal("0.0035")


async def test_a_denied_call_never_reaches_the_provider(ledger_path: Path, providers: FakeProviders) -> None:
    await budget(ledger_path, limit_usd="0.001")
    async with (
        Guard.open(ledger_path) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")
        with pytest.raises(BudgetExceededError) as denied:
            await guarded.chat.completions.create(model="gpt-4o", max_tokens=1_000, messages=MESSAGES)
        with pytest.raises(UnknownModelError, match="no price known for model 'gpt-9-imaginary'"):
            await guarded.chat.completions.create(model="gpt-9-imaginary", max_tokens=10, messages=MESSAGES)
    error = denied.value
    assert (error.budget_id, error.decided_by, error.decided_period) == ("acme", "acme", "total")
    assert usd(error.needed_usd) > usd(error.remaining_usd) == Decimal("0.001")
    assert str(error) == error.reason and "needed but only $0.001 left in acme" in error.reason
    assert providers.count() == 0


async def test_failures_release_or_charge_the_hold_as_the_call_went(
    ledger_path: Path, providers: FakeProviders
) -> None:
    await budget(ledger_path)
    async with (
        Guard.open(ledger_path) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")
        providers.fail_next(500)
        with pytest.raises(openai.InternalServerError):
            await guarded.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES)
        assert await status(guard) == (Decimal(0), Decimal(0))  # no response: the hold went back
        providers.cut_next_stream()
        stream = await guarded.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for _ in stream:
                pass
        cut = await status(guard)
        providers.delay_seconds = 30
        with anyio.move_on_after(0.5):  # the task is cancelled while the provider thinks
            await guarded.chat.completions.create(model="gpt-4o", max_tokens=100, messages=MESSAGES)
        providers.delay_seconds = 0
        cancelled = await status(guard)
    # the cut stream is charged at its hold: its input estimate and 100 output tokens at gpt-4o's prices
    assert cut[1] == 0 and cut[0] > Decimal("0.001")
    assert cancelled == cut  # the cancelled call's hold went back


async def test_a_guarded_call_by_hand_holds_settles_and_releases(ledger_path: Path, clock: FakeClock) -> None:
    await budget(ledger_path, limit_usd="1")
    async with Guard.open(ledger_path, clock=clock) as guard:
        async with guard.call("acme", model="gpt-4o", input_tokens=1_000, max_output_tokens=100) as call:
            assert call.hold and usd(call.hold.estimated_cost_usd) == Decimal("0.0035")
            await call.settle(input_tokens=800, output_tokens=50)
        assert call.result and call.result.cost_usd == "0.002500"
        async with guard.call("acme", estimated_cost_usd="0.25"):
            pass  # left without settling: the call happened, at the held amount
        with pytest.raises(RuntimeError):
            async with guard.call("acme", estimated_cost_usd="0.5"):
                raise RuntimeError("the SDK call failed")
        assert await status(guard) == (Decimal("0.2525"), Decimal(0))


async def test_wrap_names_what_it_supports(ledger_path: Path, providers: FakeProviders) -> None:
    async with openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t") as client:
        with SyncGuard.open(ledger_path, budget_id="acme") as guard:
            with pytest.raises(TypeError, match="wrap\\(\\) supports anthropic.AsyncAnthropic"):
                guard.wrap(object())
            with pytest.raises(TypeError, match="AsyncOpenAI is an async client: wrap it with Guard"):
                guard.wrap(client)
