"""Cross-source verification: the same model's rates from two or more sources should agree within 5%."""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from budget_mcp.pricing.names import model_key
from budget_mcp.pricing.types import RATE_KINDS, ModelRates

MAX_SPREAD = Decimal("0.05")


@dataclass(frozen=True)
class RateComparison:
    """One rate of one model as two or more sources give it; `spread` is (max - min) / min."""

    provider: str
    model: str
    kind: str
    values: dict[str, Decimal]
    spread: Decimal

    @property
    def flagged(self) -> bool:
        """True when the sources disagree by more than 5%."""
        return self.spread > MAX_SPREAD


def compare(sources: Mapping[str, Sequence[ModelRates]]) -> list[RateComparison]:
    """Every rate that at least two sources give for the same (provider, model), sorted by provider and model."""
    by_model: dict[tuple[str, str], dict[str, ModelRates]] = defaultdict(dict)
    names: dict[tuple[str, str], str] = {}
    for source, prices in sources.items():
        for price in prices:
            key = (price.provider, model_key(price.model))
            by_model[key].setdefault(source, price)
            names.setdefault(key, price.model)
    found = []
    for key in sorted(by_model):
        per_source = by_model[key]
        if len(per_source) < 2:
            continue
        for kind in RATE_KINDS:
            values = {s: v for s, p in per_source.items() if (v := p.rates.get(kind)) is not None}
            if len(values) >= 2:
                found.append(RateComparison(key[0], names[key], kind, values, _spread(values.values())))
    return found


def _spread(values: Iterable[Decimal]) -> Decimal:
    numbers = sorted(values)
    low, high = numbers[0], numbers[-1]
    if high == low:
        return Decimal(0)
    return Decimal("Infinity") if low == 0 else (high - low) / low
