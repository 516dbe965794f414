"""The embedded price source: pydantic's genai-prices snapshot, exact Decimal prices, fully offline."""

from decimal import Decimal

import genai_prices
from genai_prices import Usage, data_snapshot

from budget_mcp.domain.models import TokenCounts
from budget_mcp.errors import UnknownModelError
from budget_mcp.pricing.types import PricedCost

SOURCE = f"genai-prices {genai_prices.__version__}"


def known_models() -> list[tuple[str, str]]:
    """(provider_id, model_id) for every model in the snapshot."""
    return [(p.id, m.id) for p in data_snapshot.get_snapshot().providers for m in p.models]


def price(model: str, provider: str | None, tokens: TokenCounts) -> PricedCost:
    """The exact cost of one call; raises UnknownModelError when the snapshot has no such model."""
    # genai-prices counts cache tokens inside input_tokens; ours are separate, and reasoning bills as output.
    usage = Usage(
        input_tokens=tokens.input + tokens.cache_read + tokens.cache_write,
        output_tokens=tokens.output + tokens.reasoning,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_write,
    )
    try:
        calc = genai_prices.calc_price(usage, model, provider_id=provider)
    except LookupError as exc:
        raise UnknownModelError(str(exc)) from exc
    rates = calc.model_price
    return PricedCost(
        cost_usd=Decimal(calc.total_price),
        model=calc.model.id,
        provider=calc.provider.id,
        source=SOURCE,
        input_mtok=_rate(rates.input_mtok),
        output_mtok=_rate(rates.output_mtok),
        cache_read_mtok=_rate(rates.cache_read_mtok),
        cache_write_mtok=_rate(rates.cache_write_mtok),
    )


def _rate(value: object) -> Decimal | None:
    """A flat per-million rate, or None when absent or tiered (the total above is still exact)."""
    return value if isinstance(value, Decimal) else None
