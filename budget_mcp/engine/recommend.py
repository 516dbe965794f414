"""recommend_model: the models that can do a task, those that fit the budget first, cheapest first.

When the caller gives no `needs` or `min_tier`, they are inferred from the task's words with the
rules below (first the needs, then the highest tier any rule asks for), and the result says so:

    images, screenshots, photos, diagrams, charts, scans, OCR, PDFs     -> needs vision
    tools, function calls, APIs, browsing, web search, agents          -> needs tools
    JSON, structured output, schemas                                   -> needs json
    proofs, math, logic, puzzles, step by step                         -> needs reasoning, min_tier advanced
    whole codebases, entire repositories, books                        -> needs long_context
    architecture, design, refactoring, debugging, research, analysis,
    legal, medical, complex, hard                                      -> min_tier advanced
    classify, tag, label, extract, summarize, translate, rewrite,
    format, short, simple                                              -> min_tier basic
    none of the tier words                                             -> min_tier standard
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from budget_mcp.domain.money import format_usd, human_amount, to_nanos
from budget_mcp.domain.results import Recommendation
from budget_mcp.pricing import Capability, ModelFacts, PricedCost, Tier

DEFAULT_INPUT_TOKENS = 2_000
DEFAULT_OUTPUT_TOKENS = 1_000
MAX_RESULTS = 50

_NEED_RULES: list[tuple[re.Pattern[str], Capability]] = [
    (re.compile(r"\b(image|screenshot|photo|picture|diagram|chart|scan|ocr|pdf|vision)s?\b"), Capability.VISION),
    (re.compile(r"\b(tools?|function[- ]call\w*|apis?|brows\w*|web search|agents?|agentic)\b"), Capability.TOOLS),
    (re.compile(r"\b(json|structured|schemas?)\b"), Capability.JSON),
    (re.compile(r"\b(proofs?|prove|math\w*|logic|puzzles?|step[- ]by[- ]step|reasoning)\b"), Capability.REASONING),
    (re.compile(r"\b(whole|entire|full) (code ?base|repo\w*|book|corpus)\b|\bbooks?\b"), Capability.LONG_CONTEXT),
]
_TIER_RULES: list[tuple[re.Pattern[str], Tier]] = [
    (
        re.compile(
            r"\b(architect\w*|design|refactor\w*|debug\w*|research\w*|analy\w*|legal|medical|complex|hard"
            r"|proofs?|prove|math\w*|logic)\b"
        ),
        Tier.ADVANCED,
    ),
    (
        re.compile(
            r"\b(classif\w*|tag\w*|label\w*|extract\w*|summar\w*|translat\w*|rewrit\w*|format\w*|short|simple)\b"
        ),
        Tier.BASIC,
    ),
]


@dataclass(frozen=True)
class Requirements:
    """What the chosen model must offer, and for which call size."""

    needs: frozenset[Capability]
    min_tier: Tier | None
    providers: frozenset[str] | None
    input_tokens: int
    output_tokens: int

    def admits(self, facts: ModelFacts) -> bool:
        """Whether the model meets the needs, tier, provider allow-list and the call's size."""
        return (
            self.needs <= facts.capabilities
            and (self.min_tier is None or facts.tier.rank >= self.min_tier.rank)
            and (self.providers is None or facts.provider in self.providers)
            and facts.fits(self.input_tokens, self.output_tokens)
        )


def infer(
    task: str, needs: Sequence[Capability] | None, min_tier: Tier | None
) -> tuple[set[Capability], Tier, list[str]]:
    """Needs and tier from the task text where the caller gave none; the assumptions made, in words."""
    text = task.lower()
    assumptions = []
    chosen_needs = set(needs or ())
    if needs is None:
        chosen_needs = {need for pattern, need in _NEED_RULES if pattern.search(text)}
        listed = ", ".join(sorted(chosen_needs)) or "none"
        assumptions.append(f"needs inferred from the task: {listed} (pass needs to set them)")
    if min_tier is None:
        tiers = [tier for pattern, tier in _TIER_RULES if pattern.search(text)]
        min_tier = max(tiers, key=lambda t: t.rank) if tiers else Tier.STANDARD
        if Capability.REASONING in chosen_needs and min_tier.rank < Tier.ADVANCED.rank:
            min_tier = Tier.ADVANCED
        assumptions.append(f"min_tier inferred from the task: {min_tier} (pass min_tier to set it)")
    return chosen_needs, min_tier, assumptions


Judge = Callable[[PricedCost], tuple[bool, str]]
"""Whether a call at this cost fits the budget, and a short reason when it does not."""


def rank(
    priced: Sequence[tuple[ModelFacts, PricedCost]], judge: Judge | None, limit: int, current: PricedCost | None = None
) -> list[Recommendation]:
    """Fitting models first, then by estimated cost, the higher tier first at equal cost; with the `current`
    model's cost of the same call, what each saves against it (negative when it costs more)."""
    judged = [(facts, cost, *(judge(cost) if judge else (True, ""))) for facts, cost in priced]
    judged.sort(key=lambda r: (not r[2], r[1].cost_usd, -r[0].tier.rank, r[0].provider, r[0].model))
    cheapest_fitting: dict[Tier, Decimal] = {}
    for facts, cost, fits, _ in judged:
        if fits:
            cheapest_fitting.setdefault(facts.tier, cost.cost_usd)
    return [
        Recommendation(
            model=facts.model,
            provider=facts.provider,
            tier=facts.tier,
            estimated_cost_usd=_usd_text(cost),
            fits_budget=fits,
            context_window=facts.context_window,
            capabilities=sorted(facts.capabilities),
            why=_why(facts, cost, fits, reason, position, cheapest_fitting.get(facts.tier) == cost.cost_usd),
            price_source=cost.source,
            savings_usd=None if current is None else format_usd(to_nanos(current.cost_usd) - to_nanos(cost.cost_usd)),
        )
        for position, (facts, cost, fits, reason) in enumerate(judged[:limit])
    ]


def _why(facts: ModelFacts, cost: PricedCost, fits: bool, reason: str, position: int, cheapest_of_tier: bool) -> str:
    price = f"{human_amount(_usd_text(cost))} for this call"
    if not fits:
        return f"Meets the requirements, {price}, but does not fit the budget: {reason}."
    if position == 0:
        return f"The cheapest model that meets the requirements and fits the budget: {price} ({facts.tier} tier)."
    if cheapest_of_tier:
        return f"The cheapest {facts.tier}-tier choice that fits the budget: {price}."
    return f"Also meets the requirements and fits the budget: {price} ({facts.tier} tier)."


def _usd_text(cost: PricedCost) -> str:
    """Cost rounded up to the nano-USD, as the ledger would record it."""
    return format_usd(to_nanos(cost.cost_usd))
