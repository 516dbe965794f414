"""One import path for every format: check the whole source, create the budgets, then store in batches.

Without `skip_invalid` the source is read twice, streamed both times: the first pass only checks every
record (so one bad record stops the import before anything is written), the second stores them in
batches of `BATCH` records, one ledger transaction per batch and budget tree. An entry's id is a digest of
the format and the record's key, so importing the same source again finds its entries stored and adds nothing;
the entry keeps `FORMAT:KEY` as its idempotency key (a column, so the record's own id is kept without JSON).
"""

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from budget_mcp.domain.ids import path_of, validate_budget_id
from budget_mcp.domain.money import format_usd, to_nanos
from budget_mcp.domain.records import Entry, EntryKind
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import BudgetMcpError, InvalidInputError
from budget_mcp.importers.record import Invalid, Source, SourceBudget, SourceRecord

BATCH = 10_000
YIELD_EVERY = 500


@dataclass
class BudgetCount:
    """What one budget received: records and their cost."""

    records: int = 0
    cost_nanos: int = 0


@dataclass
class ImportSummary:
    """What an import read, stored, found stored already, skipped, created and could not price."""

    format: str
    dry_run: bool
    read: int = 0
    imported: int = 0
    already: int = 0
    skipped: list[Invalid] = field(default_factory=list)
    per_budget: dict[str, BudgetCount] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    unpriced: dict[str, int] = field(default_factory=dict)
    alerts: int = 0

    def as_json(self) -> dict[str, object]:
        """The summary as plain JSON values (amounts as decimal strings)."""
        return {
            "format": self.format, "dry_run": self.dry_run, "read": self.read, "imported": self.imported,
            "already_there": self.already, "skipped": [{"where": s.where, "reason": s.reason} for s in self.skipped],
            "budgets_created": self.created, "unpriced": self.unpriced, "alerts": self.alerts,
            "per_budget": {
                b: {"records": n.records, "cost_usd": format_usd(n.cost_nanos)}
                for b, n in sorted(self.per_budget.items())
            },
        }  # fmt: skip


def entry_id(format_name: str, key: str, at: datetime) -> str:
    """The ledger entry id of a record: the same record of the same format always gets the same one.

    It starts with the record's time, so the entries of a file in time order are appended to the entry-id
    index in order (random ids would make each insert of a large import a random page of that index).
    """
    digest = hashlib.blake2b(f"{format_name}\x1f{key}".encode(), digest_size=10).hexdigest()
    return f"imp_{int(at.timestamp()):010x}{digest}"


class Importer:
    """Brings one source into the ledger through the engine; `progress(n)` hears of each n records done."""

    def __init__(
        self, engine: BudgetEngine, source: Source, *, budget: str | None = None, dry_run: bool = False,
        skip_invalid: bool = False, progress: Callable[[str, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.source = source
        self.budget = validate_budget_id(budget, "--budget") if budget else None
        self.dry_run = dry_run
        self.skip_invalid = skip_invalid
        self.progress = progress or (lambda _stage, _n: None)
        self.now = engine.clock()
        self.summary = ImportSummary(source.format, dry_run)
        self.limits = {b.budget_id: b for b in source.budgets()}
        self.known_budgets: set[str] = set()
        self._price_source = f"import:{source.format}"

    async def run(self) -> ImportSummary:
        """Import the source (nothing at all when a record is invalid, unless skipping those)."""
        self.known_budgets = set(await self.engine.budget_ids())
        if not self.skip_invalid:
            budgets = self._check_all()
            await self._ensure(budgets)
        batch: list[Entry] = []
        storing: asyncio.Task[None] | None = None
        try:
            for record in self._valid():
                batch.append(self._entry(record))
                if len(batch) % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # lets the batch being stored go on while this one is read
                if len(batch) >= BATCH:
                    if storing is not None:
                        await storing
                    storing = asyncio.create_task(self._store(batch))
                    batch = []
        finally:
            if storing is not None:
                await storing  # a batch being stored finishes (or fails) before anything else is said
        if batch:
            await self._store(batch)
        return self.summary

    def _budget_of(self, record: SourceRecord) -> str:
        return self.budget or record.budget_id

    def _problem(self, record: SourceRecord) -> str | None:
        if record.at > self.now:
            return (
                f"dated {record.at.isoformat()}, in the future (now {self.now.isoformat()}); it cannot have been spent"
            )
        try:
            validate_budget_id(self._budget_of(record))
        except InvalidInputError as exc:
            return str(exc)
        return None

    def _check_all(self) -> set[str]:
        """The first pass: every record checked, none kept; the budgets they go to."""
        budgets: set[str] = set()
        done = 0
        for item in self.source.records():
            problem = item.reason if isinstance(item, Invalid) else self._problem(item)
            if problem is not None:
                raise InvalidInputError(
                    f"{item.where}: {problem}. Nothing was imported: fix it, or pass --skip-invalid to import the rest"
                )
            assert isinstance(item, SourceRecord)
            budgets.add(self._budget_of(item))
            done += 1
            if done % BATCH == 0:
                self.progress("checked", BATCH)
        self.progress("checked", done % BATCH)
        return budgets

    def _valid(self) -> Iterator[SourceRecord]:
        """The second pass: the records to store; invalid ones listed as skipped (only reached when skipping)."""
        for item in self.source.records():
            self.summary.read += 1
            problem = item.reason if isinstance(item, Invalid) else self._problem(item)
            if problem is not None:
                self.summary.skipped.append(Invalid(item.where, problem))
                continue
            assert isinstance(item, SourceRecord)
            yield item

    def _entry(self, record: SourceRecord) -> Entry:
        cost = to_nanos(record.cost_usd) if record.cost_usd is not None else self._priced(record)
        key = entry_id(self.source.format, record.key, record.at)
        return Entry(
            key, EntryKind.CHARGE, self._budget_of(record), record.at, cost, record.tokens, model=record.model,
            provider=record.provider, price_source=self._price_source,
            idempotency_key=f"{self.source.format}:{record.key}", metadata=dict(record.metadata),
        )  # fmt: skip

    def _priced(self, record: SourceRecord) -> int:
        """A record without a cost, priced from the catalog; zero (and counted in `unpriced`) when it cannot be."""
        reason = "no model given"
        if record.model:
            try:
                t = record.tokens
                estimate = self.engine.estimate(
                    record.model, provider=record.provider, input_tokens=t.input, output_tokens=t.output
                )
                return to_nanos(Decimal(estimate.cost_usd))
            except BudgetMcpError:
                reason = f"model {record.model!r} has no known price"
        self.summary.unpriced[reason] = self.summary.unpriced.get(reason, 0) + 1
        return 0

    async def _ensure(self, budget_ids: Iterable[str]) -> None:
        """Create each missing budget (parents first): with the source's limits if it has any, else track-only."""
        for budget_id in sorted({p for b in budget_ids for p in path_of(b)}, key=lambda b: (b.count("/"), b)):
            if budget_id in self.known_budgets:
                continue
            self.known_budgets.add(budget_id)
            self.summary.created.append(budget_id)
            if self.dry_run:
                continue
            found = self.limits.get(budget_id) or SourceBudget(budget_id, description="created by import")
            await self.engine.allocate(
                budget_id, limit_usd=found.limit_usd, limit_tokens=found.limit_tokens,
                period=found.period if (found.limit_usd, found.limit_tokens) != (None, None) else None,
                extra_limits=list(found.extra_limits) or None, per_call_usd=found.per_call_usd,
                enforcement=found.enforcement, description=found.description,
            )  # fmt: skip

    async def _store(self, batch: list[Entry]) -> None:
        await self._ensure({e.budget_id for e in batch})
        if self.dry_run:
            known = await self.engine.known_entries([e.entry_id for e in batch])
            stored = {e.entry_id for e in batch} - known
            self.summary.imported += len(stored)
            self.summary.already += len(batch) - len(stored)
        else:
            result = await self.engine.record_past_charges(batch)
            stored = set(result.stored)
            self.summary.imported += result.imported
            self.summary.already += result.already
            self.summary.alerts += len(result.alerts)
        for entry in batch:
            if entry.entry_id in stored:
                stored.discard(entry.entry_id)  # a record repeated in the batch counts once
                count = self.summary.per_budget.setdefault(entry.budget_id, BudgetCount())
                count.records += 1
                count.cost_nanos += entry.cost_nanos
        self.progress("imported", len(batch))
