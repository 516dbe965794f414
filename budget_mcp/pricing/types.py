"""Values the price catalog hands out."""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class PricedCost:
    """The exact cost of one call, and which price and source produced it (rates in USD per million tokens)."""

    cost_usd: Decimal
    model: str
    provider: str
    source: str
    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
