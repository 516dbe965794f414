"""`enforcement = "soft"` suggests the cheapest model of the same or a higher tier that fits what remains, and
recommend_model(current_model=...) says what each recommendation saves; costs checked by hand from the rates."""

from decimal import ROUND_CEILING, Decimal

import pytest
from mcp import Client

from budget_mcp import PriceCatalog
from budget_mcp.config import Settings
from budget_mcp.domain.records import TokenCounts
from budget_mcp.pricing import Tier
from budget_mcp.server import build_server
from tests.conftest import FakeClock
from tests.server.test_tools import call, error_text

pytestmark = pytest.mark.anyio

CALL = TokenCounts(input=10_000, output=1_000)


def by_hand(input_mtok: Decimal | None, output_mtok: Decimal | None) -> Decimal:
    """A call's cost from its per-million-token rates, rounded up to the nano-USD as the ledger records it."""
    cost = (CALL.input * (input_mtok or 0) + CALL.output * (output_mtok or 0)) / Decimal(1_000_000)
    return cost.quantize(Decimal("1e-9"), rounding=ROUND_CEILING)


def hand_priced(prices: PriceCatalog) -> list[tuple[Decimal, int, Tier, str, str]]:
    """(cost, tier rank, tier, provider, model) of every catalog model with a tier, for CALL."""
    found = []
    for facts in prices.candidates():
        rates = prices.cost(facts.model, facts.provider, CALL)
        found.append(
            (by_hand(rates.input_mtok, rates.output_mtok), facts.tier.rank, facts.tier, facts.provider, facts.model)
        )
    return found


async def test_a_soft_budget_over_its_limit_warns_and_suggests_the_cheapest_fitting_model_of_the_tier(
    clock: FakeClock, settings: Settings, prices: PriceCatalog
) -> None:
    priced = hand_priced(prices)
    gpt_4o = next(p for p in priced if p[4] == "gpt-4o")
    assert gpt_4o[2] == "standard" and gpt_4o[0] == Decimal("0.035")  # $2.50 and $10 per million tokens
    same_or_higher = sorted((p for p in priced if p[1] >= gpt_4o[1] and p[4] != "gpt-4o"), key=lambda p: (p[0], -p[1]))
    expected = same_or_higher[0]
    cheaper_below = [p for p in priced if p[1] < gpt_4o[1] and p[0] < expected[0]]
    assert cheaper_below, "a lower-tier model is cheaper still, so the tier rule is what picks the suggestion"
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="lab", limit_usd="0.01", enforcement="soft")
        check = await call(
            client, "check_budget", budget_id="lab", model="gpt-4o", input_tokens=CALL.input,
            max_output_tokens=CALL.output, reserve=True,
        )  # fmt: skip
        status = await call(client, "get_budget", budget_id="lab")
    assert check["allowed"] and check["decision"] == "warn" and check["reservation_id"]
    assert check["estimated_cost_usd"] == "0.035000" and Decimal(status["held_usd"]) == Decimal("0.035")
    assert (check["suggested_model"], Decimal(check["suggested_cost_usd"])) == (expected[4], expected[0])
    assert expected[0] <= Decimal("0.01")
    assert any(w.startswith(f"suggested {expected[3]}/{expected[4]} ({expected[2]} tier)") for w in check["warnings"])


async def test_when_no_model_of_the_tier_fits_there_is_no_suggestion_and_the_warnings_say_so(
    clock: FakeClock, settings: Settings, prices: PriceCatalog
) -> None:
    cheapest_standard = min(p[0] for p in hand_priced(prices) if p[1] >= 1 and p[4] != "gpt-4o")
    limit = cheapest_standard - Decimal("0.000001")
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="lab", limit_usd=str(limit), enforcement="soft")
        check = await call(
            client, "check_budget", budget_id="lab", model="gpt-4o", input_tokens=CALL.input,
            max_output_tokens=CALL.output,
        )  # fmt: skip
        unnamed = await call(client, "check_budget", budget_id="lab", estimated_cost_usd="1")
    assert check["allowed"] and check["decision"] == "warn"
    assert check["suggested_model"] is None and check["suggested_cost_usd"] is None
    assert any(
        w.startswith("no cheaper model suggested: no model of the standard tier or above fits what remains")
        for w in check["warnings"]
    )
    assert unnamed["decision"] == "warn" and unnamed["suggested_model"] is None
    assert not any("suggested" in w for w in unnamed["warnings"])


async def test_a_soft_check_within_the_limit_suggests_nothing(clock: FakeClock, settings: Settings) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        await call(client, "allocate", budget_id="lab", limit_usd="1", enforcement="soft")
        check = await call(
            client, "check_budget", budget_id="lab", model="gpt-4o", input_tokens=CALL.input,
            max_output_tokens=CALL.output,
        )  # fmt: skip
    assert check["decision"] == "allow" and check["suggested_model"] is None and check["warnings"] == []


async def test_recommendations_say_what_they_save_against_the_current_model(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        current = await call(
            client, "estimate_cost", model="gpt-4o", input_tokens=CALL.input, output_tokens=CALL.output
        )  # fmt: skip
        found = await call(
            client, "recommend_model", task="summarize a report", input_tokens=CALL.input,
            output_tokens=CALL.output, current_model="gpt-4o", limit=10,
        )  # fmt: skip
        plain = await call(
            client, "recommend_model", task="summarize a report", input_tokens=CALL.input, output_tokens=CALL.output
        )  # fmt: skip
        unknown = await error_text(client, "recommend_model", task="summarize", current_model="gpt-4oo")
    current_cost = by_hand(Decimal(current["input_usd_per_mtok"]), Decimal(current["output_usd_per_mtok"]))
    assert current_cost == Decimal("0.035") == Decimal(current["cost_usd"])
    assert len(found["recommendations"]) == 10
    for rec in found["recommendations"]:
        assert Decimal(rec["savings_usd"]) == current_cost - Decimal(rec["estimated_cost_usd"])
    assert Decimal(found["recommendations"][0]["savings_usd"]) > 0
    assert all(rec["savings_usd"] is None for rec in plain["recommendations"])
    assert "gpt-4oo" in unknown and "gpt-4o" in unknown.replace("gpt-4oo", "")
