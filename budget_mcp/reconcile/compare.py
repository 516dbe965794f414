"""Ledger against provider, per UTC day and per item: the rows `reconcile` prints, and which drift too far."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from budget_mcp.domain.money import format_usd, to_nanos
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import InvalidInputError
from budget_mcp.reconcile.providers import ProviderCost, model_key

ALL = "(all)"


@dataclass(frozen=True)
class Row:
    """One day (item ALL) or one item of a day: ledger and provider figures, their drift, and the verdict."""

    day: date
    item: str
    ledger_nanos: int
    provider_nanos: int
    beyond: bool

    @property
    def drift_nanos(self) -> int:
        return self.ledger_nanos - self.provider_nanos

    @property
    def drift_percent(self) -> Decimal | None:
        """The drift relative to the provider's figure; None when the provider billed nothing."""
        if self.provider_nanos == 0:
            return None if self.ledger_nanos else Decimal(0)
        return (Decimal(self.drift_nanos) * 100 / Decimal(self.provider_nanos)).quantize(Decimal("0.01"))

    def as_json(self) -> dict[str, object]:
        percent = self.drift_percent
        return {
            "day": self.day.isoformat(), "item": self.item, "ledger_usd": format_usd(self.ledger_nanos),
            "provider_usd": format_usd(self.provider_nanos), "drift_usd": format_usd(self.drift_nanos),
            "drift_percent": None if percent is None else str(percent), "beyond_tolerance": self.beyond,
        }  # fmt: skip


def parse_tolerance(text: str) -> Decimal:
    """'2%', '2' (both percent) or '0.5%' as a percentage; refuses negatives and non-numbers."""
    body = text.strip().removesuffix("%").strip()
    try:
        value = Decimal(body)
    except ArithmeticError:
        raise InvalidInputError(f"--tolerance {text!r} is not a percentage; write e.g. 2%") from None
    if not value.is_finite() or value < 0:
        raise InvalidInputError(f"--tolerance {text!r} must be a percentage of 0 or more, e.g. 2%")
    return value


async def ledger_costs(
    engine: BudgetEngine, budget_id: str | None, first: date, last: date, provider: str | None, items: set[str]
) -> dict[tuple[date, str], int]:
    """Ledger spend per (UTC day, item) from `first` to `last` inclusive, items ALL and each model's key.

    With `provider`, only that provider's charges count (and those naming no provider whose model is among
    `items`, the ones the provider bills): another provider's spend is not on this bill.
    """
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    if budget_id:
        await engine.status(budget_id)  # an unknown budget is an error, not a ledger of zeros
    roots = [budget_id] if budget_id else [b for b in await engine.budget_ids() if "/" not in b]
    sums: dict[tuple[date, str], int] = {}
    for root in roots:
        for row in await engine.spend(root, start, end):
            if provider is not None and not (
                row.provider == provider or (row.provider is None and model_key(row.model) in items)
            ):
                continue
            day = row.bucket_start.astimezone(UTC).date()
            sums[(day, ALL)] = sums.get((day, ALL), 0) + row.cost_nanos
            item = model_key(row.model)
            if item is not None and not row.adjustment:
                sums[(day, item)] = sums.get((day, item), 0) + row.cost_nanos
    return sums


async def compare(
    engine: BudgetEngine, provider: Sequence[ProviderCost], *, budget_id: str | None, tolerance: Decimal,
    billed_by: str | None = None,
) -> list[Row]:  # fmt: skip
    """Each day's total, and each item of a day where the provider breaks it down, side by side; only the
    charges of `billed_by` (a provider name) when given."""
    if not provider:
        raise InvalidInputError("the provider files hold no costs to compare")
    theirs: dict[tuple[date, str], int] = {}
    for cost in provider:
        for key in {(cost.day, ALL), (cost.day, cost.item)} if cost.item else {(cost.day, ALL)}:
            theirs[key] = theirs.get(key, 0) + to_nanos(cost.cost_usd)
    days = sorted({c.day for c in provider})
    items = {c.item for c in provider if c.item}
    ours = await ledger_costs(engine, budget_id, days[0], days[-1], billed_by, items)
    itemized = {c.day for c in provider if c.item}
    keys = set(theirs) | {k for k in ours if k[1] == ALL or k[0] in itemized}
    rows = []
    for day, item in sorted(keys, key=lambda k: (k[0], k[1] != ALL, k[1])):
        mine, billed = ours.get((day, item), 0), theirs.get((day, item), 0)
        drift = abs(mine - billed)
        beyond = drift * 100 > tolerance * billed if billed else drift > 0
        rows.append(Row(day, item, mine, billed, bool(beyond)))
    return rows
