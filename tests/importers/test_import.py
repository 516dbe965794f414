"""`budget-mcp import` for every format, through the command, on real SQLite files and PostgreSQL.

After an import the ledger holds what the source sums to, to the nano-dollar, per budget and UTC day;
importing again adds nothing; a bad record stops everything; --skip-invalid and --dry-run do what they say.
"""

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from click.testing import CliRunner, Result

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.cli import main
from budget_mcp.cli.common import CliContext
from budget_mcp.domain.money import to_nanos
from budget_mcp.domain.windows import EPOCH
from budget_mcp.importers import litellm
from budget_mcp.ledger.postgres import PostgresLedger
from tests.conftest import FakeClock, ledger_dump
from tests.importers import sources
from tests.importers.sources import NOW, Sums, at

T = TypeVar("T")


def run(*args: str, clock: FakeClock | None = None) -> Result:
    """The command at NOW (or the clock given), whatever the machine's date."""
    moment = clock or FakeClock(NOW)
    return CliRunner().invoke(main, list(args), obj=CliContext(clock=moment), env={"COLUMNS": "200"})


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, ledger_path: Path) -> Iterator[str]:
    """A ledger for each backend: a SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        yield str(ledger_path)
        return
    dsn: str = request.getfixturevalue("postgres_dsn")

    async def empty() -> None:
        ledger = await PostgresLedger.open(dsn)
        await ledger.truncate()
        await ledger.close()

    anyio.run(empty)
    yield dsn


def where(location: str) -> list[str]:
    return ["--database-url", location] if location.startswith("postgresql://") else ["--db", location]


def on_engine(location: str, action: Callable[[BudgetEngine], Awaitable[T]]) -> T:
    """Run `action(engine)` on the ledger at NOW and return its result."""

    async def go() -> T:
        ledger = await open_ledger(location)
        try:
            return await action(BudgetEngine(ledger, PriceCatalog(), FakeClock(NOW)))
        finally:
            await ledger.close()

    return anyio.run(go)


def ledger_sums(location: str) -> Sums:
    """What the ledger holds per budget (its own spend) and UTC day."""

    async def gather(engine: BudgetEngine) -> Sums:
        sums: Sums = Counter()
        for root in [b for b in await engine.budget_ids() if "/" not in b]:
            for row in await engine.spend(root, EPOCH, None):
                sums[(row.budget_id, row.bucket_start.astimezone(UTC).date())] += row.cost_nanos
        return sums

    return on_engine(location, gather)


def clean(location: str) -> list[str]:
    return on_engine(location, lambda engine: engine.reconcile())


def totals(sums: Sums) -> Counter[str]:
    """Per budget, its own spend plus its descendants'."""
    found: Counter[str] = Counter()
    for (budget_id, _), nanos in sums.items():
        parts = budget_id.split("/")
        for depth in range(1, len(parts) + 1):
            found["/".join(parts[:depth])] += nanos
    return found


def test_hal0_import_holds_the_source_to_the_nano_dollar_and_a_second_import_adds_nothing(
    tmp_path: Path, location: str
) -> None:
    path, expected = sources.hal0_file(tmp_path, torn=True)
    first = run("import", "hal0", str(path), "--skip-invalid", *where(location))
    assert first.exit_code == 0, first.output
    assert "skipped line 6: not a JSON object (a torn write?)" in first.output
    assert "read 13, imported 12, already there 0, skipped 1" in first.output
    assert ledger_sums(location) == expected
    assert clean(location) == []
    again = run("import", "hal0", str(path), "--skip-invalid", "--json", *where(location))
    summary = json.loads(again.stdout)
    assert (summary["imported"], summary["already_there"], summary["read"]) == (0, 12, 13)
    assert ledger_sums(location) == expected
    # The persona's caps became limits of the budget the import created; the agent is a track-only parent.
    status = on_engine(location, lambda engine: engine.status("scout/writer-bot"))
    limits = {(lim.period, lim.limit_usd) for lim in status.limits}
    assert limits == {("daily", "5.000000"), ("monthly", "60.000000"), ("total", "500.000000")}
    assert (status.per_call_usd, status.enforcement) == ("0.500000", "block")
    root = on_engine(location, lambda engine: engine.status("scout"))
    assert to_nanos(Decimal(root.spent_usd)) == sum(expected.values()) and root.limit_usd is None


def test_a_bad_record_stops_the_import_naming_its_line_and_nothing_is_written(
    tmp_path: Path, ledger_path: Path
) -> None:
    path, _ = sources.hal0_file(tmp_path, torn=True)
    run("budgets", "set", "other", "--db", str(ledger_path))
    before = ledger_dump(ledger_path)
    result = run("import", "hal0", str(path), "--db", str(ledger_path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: line 6: not a JSON object (a torn write?)" in result.output
    assert "Nothing was imported: fix it, or pass --skip-invalid" in result.output
    assert ledger_dump(ledger_path) == before


def test_records_dated_in_the_future_are_refused(tmp_path: Path, ledger_path: Path) -> None:
    rows, _ = sources.litellm_rows(4)
    rows[2]["startTime"] = (NOW + timedelta(minutes=5)).isoformat()
    path = tmp_path / "spend.csv"
    sources.litellm_csv(path, rows)
    result = run("import", "litellm", str(path), "--db", str(ledger_path))
    assert result.exit_code == 1 and "line 4: dated 2026-11-25T12:05:00+00:00, in the future" in result.output
    assert not ledger_path.exists() or ledger_sums(str(ledger_path)) == Counter()
    skipping = run("import", "litellm", str(path), "--db", str(ledger_path), "--skip-invalid")
    assert skipping.exit_code == 0 and "skipped line 4: dated" in skipping.output
    assert "imported 3," in skipping.output


def test_dry_run_reads_and_counts_but_writes_nothing(tmp_path: Path, ledger_path: Path) -> None:
    path, expected = sources.hal0_file(tmp_path)
    run("budgets", "set", "other", "--db", str(ledger_path))
    before = ledger_dump(ledger_path)
    result = run("import", "hal0", str(path), "--dry-run", "--json", "--db", str(ledger_path))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["imported"] == 12 and summary["budgets_created"] == ["scout", "scout/writer-bot"]
    assert summary["per_budget"]["scout/writer-bot"]["cost_usd"] == f"{Decimal(sum(expected.values())) / 10**9:.9f}"
    assert ledger_dump(ledger_path) == before
    assert (
        "dry run: nothing was written" in run("import", "hal0", str(path), "--dry-run", "--db", str(ledger_path)).output
    )


def test_tekton_budgets_policies_and_usage_records(tmp_path: Path, location: str) -> None:
    db = tmp_path / "budget.db"
    expected = sources.tekton_db(db)
    result = run("import", "tekton", str(db), *where(location))
    assert result.exit_code == 0, result.output
    assert ledger_sums(location) == expected and clean(location) == []
    research = on_engine(location, lambda engine: engine.status("tekton/research-team"))
    assert research.period == "monthly" and research.limit_usd == "100.000000" and research.enforcement == "block"
    daily = next(lim for lim in research.limits if lim.period == "daily")
    assert (daily.limit_usd, daily.limit_tokens) == ("10.000000", 2_000_000)
    ops = on_engine(location, lambda engine: engine.status("tekton/ops"))
    assert ops.limit_usd is None and ops.limits == []  # its only policy is `ignore`
    assert run("import", "tekton", str(db), *where(location)).output.count("already there 10") == 1


def test_rhetor_usage_and_budget_settings(tmp_path: Path, ledger_path: Path) -> None:
    db = tmp_path / "rhetor.db"
    expected = sources.rhetor_db(db)
    result = run("import", "rhetor", str(db), "--db", str(ledger_path))
    assert result.exit_code == 0, result.output
    assert ledger_sums(str(ledger_path)) == expected
    root = on_engine(str(ledger_path), lambda engine: engine.status("rhetor"))
    assert {(lim.period, lim.limit_usd) for lim in root.limits} == {("daily", "20.000000"), ("monthly", "300.000000")}
    assert root.enforcement == "block"  # one 'enforce' setting makes the budget block


def test_apollo_tokens_are_priced_from_the_catalog_and_unknown_models_are_charged_zero(
    tmp_path: Path, ledger_path: Path, prices: PriceCatalog
) -> None:
    made = sources.apollo_folder(tmp_path / "apollo")
    result = run("import", "apollo", str(tmp_path / "apollo"), "--json", "--db", str(ledger_path))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["imported"] == 8
    assert summary["unpriced"] == {"model 'no-such-model-x' has no known price": 2}
    expected: Sums = Counter()
    for budget_id, when, model, used, kind in made:
        cost = Decimal(0)
        if model == "gpt-4o":
            tokens = {"input_tokens": used} if kind == "input" else {"output_tokens": used}
            cost = Decimal(BudgetEngine(None, prices).estimate(model, **tokens).cost_usd)  # type: ignore[arg-type]
        expected[(budget_id, when.date())] += to_nanos(cost)
    assert ledger_sums(str(ledger_path)) == expected
    codex = on_engine(str(ledger_path), lambda engine: engine.status("apollo/codex"))
    assert (codex.period, codex.limit_tokens, codex.enforcement) == ("daily", 5_000_000, "block")
    assert (
        on_engine(str(ledger_path), lambda engine: engine.status("apollo")).limits == []
    )  # a tier's policy: not mapped


def test_litellm_csv_and_json_hold_the_same_spend_and_one_after_the_other_adds_nothing(
    tmp_path: Path, location: str
) -> None:
    rows, expected = sources.litellm_rows()
    sources.litellm_csv(tmp_path / "spend.csv", rows)
    sources.litellm_json(tmp_path / "spend.json", rows)
    assert run("import", "litellm", str(tmp_path / "spend.json"), *where(location)).exit_code == 0
    assert ledger_sums(location) == expected
    again = run("import", "litellm", str(tmp_path / "spend.csv"), "--json", *where(location))
    assert json.loads(again.stdout)["already_there"] == len(rows)
    assert ledger_sums(location) == expected and clean(location) == []


def test_csv_rows_go_to_the_budget_given_and_an_empty_cost_is_priced(tmp_path: Path, ledger_path: Path) -> None:
    path = tmp_path / "spend.csv"
    path.write_text(
        "timestamp,budget_id,model,provider,input_tokens,output_tokens,cost_usd,id\n"
        f"{at(1).isoformat()},ignored,gpt-4o,openai,1000,100,0.5,a\n"
        f"{at(2).isoformat()},,gpt-4o,openai,1000000,0,,b\n"
    )
    result = run("import", "csv", str(path), "--budget", "acme/imported", "--db", str(ledger_path))
    assert result.exit_code == 0, result.output
    expected: Sums = Counter({("acme/imported", at(1).date()): to_nanos(Decimal("0.5")),
                              ("acme/imported", at(2).date()): to_nanos(Decimal("2.5"))})  # fmt: skip
    assert ledger_sums(str(ledger_path)) == expected


def test_imported_spend_counts_in_the_windows_of_its_time_and_only_current_windows_raise_alerts(
    tmp_path: Path, location: str
) -> None:
    on_engine(location, lambda engine: engine.allocate("acme", limit_usd="10", period="daily"))
    yesterday, today = NOW - timedelta(days=1), NOW - timedelta(hours=1)
    path = tmp_path / "spend.csv"
    path.write_text(
        "timestamp,budget_id,model,provider,input_tokens,output_tokens,cost_usd,id\n"
        f"{yesterday.isoformat()},acme,gpt-4o,openai,0,0,25,old\n"  # yesterday's window: 250%, already over
        f"{today.isoformat()},acme,gpt-4o,openai,0,0,6,new\n"  # today's: 60%
    )
    result = run("import", "csv", str(path), "--json", *where(location))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["alerts"] == 1
    status = on_engine(location, lambda engine: engine.status("acme"))
    assert status.spent_usd == "6.000000"
    past = on_engine(location, lambda engine: engine.report("acme", window_of=yesterday))
    assert past.totals.spent_usd == "25.000000"
    alerts = on_engine(location, lambda engine: engine.report("acme")).alerts
    assert [(a.threshold, a.period) for a in alerts] == [("0.5", "daily")]
    assert clean(location) == []


def test_unknown_format_and_missing_file_are_messages(tmp_path: Path, ledger_path: Path) -> None:
    result = run("import", "excel", str(tmp_path), "--db", str(ledger_path))
    assert result.exit_code == 2 and "'excel' is not one of" in result.output
    result = run("import", "hal0", str(tmp_path), "--db", str(ledger_path))
    assert result.exit_code == 1 and "is not a file" in result.output
    result = run("import", "tekton", str(tmp_path / "x.db"), "--db", str(ledger_path))
    assert result.exit_code == 2


def test_a_terminal_sees_a_progress_bar_of_each_pass(tmp_path: Path, ledger_path: Path) -> None:
    path, _ = sources.hal0_file(tmp_path)
    result = CliRunner().invoke(
        main, ["import", "hal0", str(path), "--db", str(ledger_path)], obj=CliContext(clock=FakeClock(NOW)),
        env={"FORCE_COLOR": "1", "COLUMNS": "120"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "checked" in result.stderr and "imported" in result.stderr and "12/12" in result.stderr
    assert "12/12" not in result.stdout  # the summary alone goes to stdout


def test_a_litellm_json_array_is_read_item_by_item_across_read_boundaries(
    tmp_path: Path, ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(litellm, "_CHUNK", 5)  # every row crosses the edge of what was read
    rows, expected = sources.litellm_rows()
    sources.litellm_json(tmp_path / "spend.json", rows)
    assert run("import", "litellm", str(tmp_path / "spend.json"), "--db", str(ledger_path)).exit_code == 0
    assert ledger_sums(str(ledger_path)) == expected
    (tmp_path / "cut.json").write_text((tmp_path / "spend.json").read_text()[:-40])
    result = run("import", "litellm", str(tmp_path / "cut.json"), "--db", str(ledger_path))
    assert result.exit_code == 1 and "Error: item 8: not valid JSON" in result.output
