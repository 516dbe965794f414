"""One budget shared: by 50 concurrent tasks, by 16 threads, by two OS processes, and down a chain of
sub-agents (A -> B -> C). A `block` budget is never overspent, and a denied call never reaches the provider."""

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import anyio
import openai
import pytest

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.errors import BudgetExceededError
from budget_mcp.guard import Guard, SyncGuard
from tests.guard.test_sdk_calls import MESSAGES, budget
from tests.providers import FakeProviders, Usage, fake_providers

pytestmark = pytest.mark.anyio
WORKER = str(Path(__file__).with_name("worker.py"))
ROOT = str(Path(__file__).parents[2])
CALL = Decimal("0.0425")  # 1,000 input x $2.50 + 4,000 output x $10, per million: under its hold of 5,000 output


@pytest.fixture
def providers() -> Iterator[FakeProviders]:
    with fake_providers() as running:
        running.usage = Usage(1_000, 4_000)
        yield running


async def spent(location: str | Path, budget_id: str = "acme") -> tuple[Decimal, Decimal]:
    ledger = await open_ledger(location)
    try:
        status = await BudgetEngine(ledger, PriceCatalog()).status(budget_id)
    finally:
        await ledger.close()
    return Decimal(status.spent_usd), Decimal(status.held_usd)


async def test_fifty_concurrent_calls_never_overspend_and_denied_ones_never_go_out(
    ledger_location: str, providers: FakeProviders
) -> None:
    await budget(ledger_location, limit_usd="1.00")
    outcomes: list[str] = []
    async with (
        Guard.open(ledger_location) as guard,
        openai.AsyncOpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client, budget_id="acme")

        async def one() -> None:
            try:
                await guarded.chat.completions.create(model="gpt-4o", max_tokens=5_000, messages=MESSAGES)
                outcomes.append("called")
            except BudgetExceededError:
                outcomes.append("denied")

        await asyncio.gather(*(one() for _ in range(50)))
    total, held = await spent(ledger_location)
    called = outcomes.count("called")
    assert len(outcomes) == 50 and 0 < called < 50
    assert total == called * CALL <= Decimal("1.00") and held == 0
    assert providers.count("/v1/chat/completions") == called


async def test_sixteen_threads_share_one_sync_guard(ledger_path: Path, providers: FakeProviders) -> None:
    await budget(ledger_path, limit_usd="1.00")
    with (
        SyncGuard.open(ledger_path, budget_id="acme") as guard,
        openai.OpenAI(base_url=providers.openai_base_url, api_key="t", max_retries=0) as client,
    ):
        guarded = guard.wrap(client)

        def calls_until_denied() -> int:
            made = 0
            while True:
                try:
                    guarded.chat.completions.create(model="gpt-4o", max_tokens=5_000, messages=MESSAGES)
                except BudgetExceededError:
                    return made
                made += 1

        with ThreadPoolExecutor(16) as pool:
            made = sum(pool.map(lambda _: calls_until_denied(), range(16)))
    total, held = await spent(ledger_path)
    assert total == made * CALL <= Decimal("1.00") and held == 0 and made >= 20
    assert providers.count("/v1/chat/completions") == made


async def test_two_processes_share_one_ledger_file(ledger_path: Path, providers: FakeProviders, tmp_path: Path) -> None:
    await budget(ledger_path, limit_usd="1.00")
    start = tmp_path / "start"
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, str(ledger_path), "acme", providers.openai_base_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", worker.stderr
    start.touch()
    made = 0
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        made += int(out.split()[-1])
    total, held = await spent(ledger_path)
    assert total == made * CALL <= Decimal("1.00") and held == 0 and made >= 20
    assert providers.count("/v1/chat/completions") == made


async def test_a_delegation_chain_spends_through_carved_sub_budgets(ledger_location: str) -> None:
    await budget(ledger_location, limit_usd="1.00")
    async with Guard.open(ledger_location) as root:
        a = root.bound("acme")
        async with a.child("acme/b", limit_usd="0.50") as b:  # A hands B half
            async with b.child("acme/b/c", limit_usd="0.20") as c:  # B hands C a slice of its own
                async with c.call(estimated_cost_usd="0.15") as call:
                    await call.settle(cost_usd="0.12")
                with pytest.raises(BudgetExceededError) as denied:
                    async with c.call(estimated_cost_usd="0.10"):
                        pass
            async with b.call(estimated_cost_usd="0.30") as call:  # C's unspent $0.08 came back to B
                await call.settle(cost_usd="0.30")
        assert (await spent(ledger_location, "acme/b/c"))[0] == Decimal("0.12")
        with pytest.raises(BudgetExceededError):  # B was closed on exit
            async with root.call("acme/b", estimated_cost_usd="0.01"):
                pass
    assert denied.value.decided_by == "acme/b/c" and denied.value.remaining_usd == "0.080000"
    assert await spent(ledger_location) == (Decimal("0.42"), Decimal(0))


async def test_closing_the_guard_while_tasks_run_leaves_no_hold(ledger_path: Path) -> None:
    await budget(ledger_path, limit_usd="1.00")
    async with Guard.open(ledger_path, budget_id="acme") as guard:
        with anyio.move_on_after(0.2):
            async with guard.call(estimated_cost_usd="0.5"):
                await anyio.sleep(10)  # cancelled here, inside the call
    assert await spent(ledger_path) == (Decimal(0), Decimal(0))
