"""The engine's side of `ask`: which checks become a question, its wording for each kind of limit, and what an
approval writes, on both backends."""

from decimal import Decimal

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.domain.records import Answer, Approval
from budget_mcp.domain.results import ApprovalNeeded, CheckResult

pytestmark = pytest.mark.anyio


async def question(engine: BudgetEngine, budget_id: str, **check: object) -> str:
    found = await engine.check_or_ask(budget_id, **check)  # type: ignore[arg-type]
    assert isinstance(found, ApprovalNeeded) and not found.denied.allowed
    return found.question


async def test_each_kind_of_limit_is_put_as_one_line(engine: BudgetEngine) -> None:
    await engine.allocate("capped", limit_usd="10", per_call_usd="1", enforcement="ask")
    assert await question(engine, "capped", estimated_cost_usd="1.5") == (
        "capped: this call's $1.50 would go $0.50 over its $1.00 per-call cap: approve?"
    )
    await engine.allocate("tokens", limit_tokens=1000, enforcement="ask")
    assert await question(engine, "tokens", input_tokens=1200) == (
        "tokens would go 200 tokens over its 1000-token total limit: approve?"
    )
    await engine.allocate("two", limit_usd="5", period="monthly", enforcement="ask",
                          extra_limits=[{"period": "total", "limit_usd": "6"}])  # fmt: skip
    await engine.charge("two", cost_usd="4.5")
    assert (await question(engine, "two", estimated_cost_usd="2")).endswith(
        "two would go $1.50 over its $5.00 monthly limit (resets 2026-12-01 00:00 UTC) (and 1 more limit): approve?"
    )


async def test_a_block_limit_on_the_path_denies_without_a_question(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="10", per_call_usd="2")
    await engine.allocate("acme/team", limit_usd="2", enforcement="ask")
    found = await engine.check_or_ask("acme/team", estimated_cost_usd="2.5")
    assert isinstance(found, CheckResult) and not found.allowed and found.decided_by == "acme"


async def test_an_approval_is_recorded_once_and_is_not_spend(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="1", enforcement="ask")
    approved = Approval(Answer.APPROVED, "cli", "1", "admin", "urgent")
    check = await engine.check("acme", estimated_cost_usd="3", approval=approved)
    assert check.allowed and check.reservation_id is None
    status = await engine.status("acme")
    assert (Decimal(status.spent_usd), Decimal(status.held_usd), status.calls) == (0, 0, 0)
    (entry,) = (await engine.ledger_entries("acme")).entries[:1]
    assert entry.kind == "approval" and entry.metadata["over_usd"] == "2.000000"
    report = await engine.report("acme")
    assert [(a.client, a.token, a.reason) for a in report.approvals] == [("cli 1", "admin", "urgent")]
    assert report.totals.spent_usd == "0.000000" and await engine.reconcile() == []
    within = await engine.check("acme", estimated_cost_usd="0.5", approval=approved)
    assert within.decision == "allow" and len((await engine.ledger_entries("acme")).entries) == 2  # allocate, approval
