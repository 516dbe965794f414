"""Spend reports: a window's totals, broken down by model, provider, child budget, day and hour.

Every breakdown is a regrouping of the same rows, so each adds up exactly to the total, and the
total is the ledger's running total of the window (a test holds both to the unit).
"""

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from budget_mcp.domain.ids import is_within
from budget_mcp.domain.money import format_usd, to_nanos
from budget_mcp.domain.records import AlertRecord, DeliveryAttempt, Entry, limit_key
from budget_mcp.domain.results import (
    AlertInfo,
    AlertRaised,
    ApprovalInfo,
    BudgetStatus,
    ChildSpend,
    DaySpend,
    Forecast,
    HourSpend,
    LedgerEntry,
    ModelSpend,
    ProviderSpend,
    ReportTotals,
    SpendFigures,
    SpendReport,
)
from budget_mcp.domain.windows import Period, parse_period, zone
from budget_mcp.ledger import SpendRow

S = TypeVar("S", bound=SpendFigures)
HOURLY_DETAIL = frozenset({Period.HOURLY, Period.DAILY})


def build_report(
    status: BudgetStatus,
    rows: Sequence[SpendRow],
    alerts: Iterable[AlertRecord],
    deliveries: Iterable[DeliveryAttempt],
    approvals: Iterable[Entry] = (),
    *,
    window_start: datetime,
    window_end: datetime | None,
    now: datetime,
) -> SpendReport:
    """The report of one window of `status`'s budget; current-window figures come from the status."""
    current = window_start == status.window_start
    tz = zone(status.timezone)
    spent = sum(r.cost_nanos for r in rows)
    totals = _totals(status, rows, spent, current)
    if current:
        burn, forecast = status.burn_rate_usd_per_hour, status.forecast
    else:
        hours = Decimal(((window_end or now) - window_start) / timedelta(seconds=1)) / 3600
        burn = format_usd(int(spent / hours) if hours > 0 else 0)
        forecast = Forecast(projected_spend_usd=format_usd(spent), exhausted_at=None)
    in_window = [a for a in alerts if a.at >= window_start and (window_end is None or a.at < window_end)]
    return SpendReport(
        budget_id=status.budget_id,
        period=status.period,
        timezone=status.timezone,
        window_start=window_start,
        resets_at=window_end,
        current=current,
        generated_at=now,
        totals=totals,
        by_model=_group(
            rows,
            lambda r: (r.model, r.provider, r.adjustment),
            lambda k, f: ModelSpend(model=k[0], provider=k[1], adjustments=k[2], **f),
        ),
        by_provider=_group(rows, lambda r: r.provider, lambda k, f: ProviderSpend(provider=k, **f)),
        by_child=_group(
            rows, lambda r: _child_of(status.budget_id, r.budget_id), lambda k, f: ChildSpend(budget_id=k, **f)
        ),
        by_day=sorted(
            _group(rows, lambda r: r.bucket_start.astimezone(tz).date().isoformat(), lambda k, f: DaySpend(day=k, **f)),
            key=lambda d: d.day,
        ),
        by_hour=sorted(
            _group(
                rows,
                lambda r: r.bucket_start.astimezone(tz).replace(minute=0),
                lambda k, f: HourSpend(hour=k, **f),
            ),
            key=lambda h: h.hour,
        )
        if status.period in HOURLY_DETAIL
        else [],
        alerts=[_raised(a, deliveries) for a in in_window],
        burn_rate_usd_per_hour=burn,
        forecast=forecast,
        approvals=sorted((approval_info(e) for e in approvals), key=lambda a: (a.at, a.entry_id)),
    )


def approval_info(entry: Entry) -> ApprovalInfo:
    """An approval entry as reports show it."""
    meta = entry.metadata
    client = " ".join(str(part) for part in (meta.get("client"), meta.get("client_version")) if part) or None
    return ApprovalInfo(
        entry_id=entry.entry_id, budget_id=entry.budget_id, approved_for=str(meta.get("approved_for", entry.budget_id)),
        period=str(meta.get("period", "")), at=entry.at, cost_usd=format_usd(entry.cost_nanos),
        over_usd=str(meta.get("over_usd", format_usd(0))), over_tokens=int(meta.get("over_tokens", 0)),
        client=client, token=meta.get("token"), reason=meta.get("reason"),
    )  # fmt: skip


def ledger_entry(entry: Entry) -> LedgerEntry:
    """An entry as the ledger resource shows it (USD as a decimal string)."""
    t = entry.tokens
    assert entry.seq is not None, "entries read from the ledger carry their seq"
    return LedgerEntry(
        seq=entry.seq,
        entry_id=entry.entry_id,
        kind=entry.kind,
        budget_id=entry.budget_id,
        at=entry.at,
        cost_usd=format_usd(entry.cost_nanos),
        input_tokens=t.input,
        output_tokens=t.output,
        cache_read_tokens=t.cache_read,
        cache_write_tokens=t.cache_write,
        reasoning_tokens=t.reasoning,
        model=entry.model,
        provider=entry.provider,
        price_source=entry.price_source,
        reservation_id=entry.reservation_id,
        metadata=entry.metadata,
    )


def _totals(status: BudgetStatus, rows: Sequence[SpendRow], spent: int, current: bool) -> ReportTotals:
    """The current window's figures come from the status; a past window's from its rows (nothing held then)."""
    calls = sum(r.calls for r in rows)
    common = {
        "limit_usd": status.limit_usd, "limit_tokens": status.limit_tokens, "calls": calls,
        "limit_calls": status.limit_calls,
    }  # fmt: skip
    if current:
        return ReportTotals(
            spent_usd=status.spent_usd, spent_tokens=status.spent_tokens, held_usd=status.held_usd,
            allocated_usd=status.allocated_usd, available_usd=status.available_usd, **common,
        )  # fmt: skip
    limit = None if status.limit_usd is None else to_nanos(Decimal(status.limit_usd))
    return ReportTotals(
        spent_usd=format_usd(spent), spent_tokens=sum(r.tokens for r in rows), held_usd=format_usd(0),
        allocated_usd=None, available_usd=None if limit is None else format_usd(limit - spent), **common,
    )  # fmt: skip


def _group(
    rows: Iterable[SpendRow], key: Callable[[SpendRow], Any], make: Callable[[Any, dict[str, Any]], S]
) -> list[S]:
    sums: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for row in rows:
        acc = sums[key(row)]
        acc[0] += row.cost_nanos
        acc[1] += row.input_tokens
        acc[2] += row.output_tokens
        acc[3] += row.tokens
        acc[4] += row.calls
    found = [
        make(
            k,
            {"cost_usd": format_usd(v[0]), "input_tokens": v[1], "output_tokens": v[2], "tokens": v[3], "calls": v[4]},
        )
        for k, v in sums.items()
    ]
    return sorted(found, key=lambda s: Decimal(s.cost_usd), reverse=True)


def _child_of(budget_id: str, spent_on: str) -> str:
    if spent_on == budget_id or not is_within(spent_on, budget_id):
        return budget_id
    return f"{budget_id}/{spent_on[len(budget_id) + 1 :].split('/')[0]}"


def _raised(alert: AlertRecord, deliveries: Iterable[DeliveryAttempt]) -> AlertRaised:
    attempts = [d for d in deliveries if d.is_for(alert)]
    if not attempts:
        webhook = None
    elif any(d.delivered for d in attempts):
        webhook = "delivered"
    else:
        webhook = f"failed after {len(attempts)} attempts"
    return AlertRaised(**alert_info(alert).model_dump(), at=alert.at, webhook=webhook)


def with_filters(alert: AlertRecord, statuses: Mapping[str, BudgetStatus]) -> AlertRecord:
    """A stored alert of a filtered limit, with that limit's models and providers as its budget has them now, if
    the ledger has only the limit's key (alerts stored before the schema kept them; a limit removed since leaves
    them empty)."""
    status = statuses.get(alert.budget_id)
    if alert.filtered_key is None or alert.models or alert.providers or status is None:
        return alert
    for limit in status.limits:
        if limit_key(parse_period(limit.period), limit.models, limit.providers) == alert.filtered_key:
            return replace(alert, models=tuple(limit.models), providers=tuple(limit.providers))
    return alert


def alert_info(alert: AlertRecord) -> AlertInfo:
    """An alert record as results and reports show it."""
    return AlertInfo(
        budget_id=alert.budget_id,
        period=alert.period,
        threshold=str(alert.threshold),
        spent_usd=format_usd(alert.spent_nanos),
        limit_usd=None if alert.limit_nanos is None else format_usd(alert.limit_nanos),
        spent_tokens=alert.spent_tokens,
        limit_tokens=alert.limit_tokens,
        window_start=datetime.fromtimestamp(alert.window_key, UTC),
        models=list(alert.models),
        providers=list(alert.providers),
    )
