"""`budget-mcp reconcile`: the ledger against the provider's own pages, per UTC day and item, through the command."""

import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result

from tests.importers.sources import NOW
from tests.importers.test_import import run

DAYS = [(NOW - timedelta(days=n)).date() for n in (3, 2, 1)]
# What was spent per day and model (USD); the ledger gets it by import, the provider pages bill it.
SPENT = {
    (DAYS[0], "gpt-4o"): Decimal("12.50"), (DAYS[0], "claude-haiku-4-5"): Decimal("3.25"),
    (DAYS[1], "gpt-4o"): Decimal("8.00"), (DAYS[1], "claude-haiku-4-5"): Decimal("1.2345"),
    (DAYS[2], "gpt-4o"): Decimal("20.00"),
}  # fmt: skip


@pytest.fixture
def db(tmp_path: Path, ledger_path: Path) -> list[str]:
    """A ledger holding SPENT, on two budgets, in two records per day and model."""
    lines = ["timestamp,budget_id,model,provider,input_tokens,output_tokens,cost_usd,id"]
    for n, ((day, model), usd) in enumerate(SPENT.items()):
        for part, hour in ((usd / 4, 1), (usd - usd / 4, 22)):
            when = datetime.combine(day, time(hour), UTC)
            vendor = "openai" if model == "gpt-4o" else "anthropic"
            lines.append(f"{when.isoformat()},{('acme/a', 'acme/b')[n % 2]},{model},{vendor},0,0,{part},{n}-{hour}")
    (tmp_path / "spend.csv").write_text("\n".join(lines) + "\n")
    result = run("import", "csv", str(tmp_path / "spend.csv"), "--db", str(ledger_path))
    assert result.exit_code == 0, result.output
    return ["--db", str(ledger_path)]


def openai_pages(folder: Path, drift: Decimal = Decimal(1)) -> list[Path]:
    """Two files of the costs API, one page each, the last day's gpt-4o billed at `drift` times the ledger."""
    buckets = []
    for day in DAYS:
        start = int(datetime.combine(day, time(), UTC).timestamp())
        results = []
        for (spent_day, model), usd in SPENT.items():
            if spent_day == day and model == "gpt-4o":
                usd = usd * drift if day == DAYS[2] else usd
                for share, kind in ((Decimal("0.3"), "input"), (Decimal("0.7"), "output")):
                    results.append(
                        {"object": "organization.costs.result", "amount": {"value": "@" + str(usd * share),
                         "currency": "usd"}, "line_item": f"gpt-4o-2024-08-06, {kind}", "project_id": "proj_1"}
                    )  # fmt: skip
        buckets.append({"object": "bucket", "start_time": start, "end_time": start + 86400, "results": results})
    paths = []
    for n, part in enumerate((buckets[:2], buckets[2:])):
        page = {"object": "page", "data": part, "has_more": n == 0, "next_page": "page_2" if n == 0 else None}
        path = folder / f"openai-{n}.json"
        path.write_text(json.dumps(page).replace('"@', "").replace('0", "currency"', '0, "currency"'))
        paths.append(path)
    return paths


def anthropic_pages(path: Path, drift: Decimal = Decimal(1)) -> Path:
    """One JSON array of two report pages; amounts in cents as decimal strings."""
    pages = []
    for chunk in (DAYS[:1], DAYS[1:]):
        data = []
        for day in chunk:
            results = [
                {"currency": "USD", "amount": str(usd * 100 * (drift if day == DAYS[1] else 1)), "workspace_id": None,
                 "description": "Claude Haiku 4.5 Usage - Input Tokens", "cost_type": "tokens",
                 "context_window": "0-200k", "model": "claude-haiku-4-5-20251001", "service_tier": "standard",
                 "token_type": "uncached_input_tokens"}
                for (spent_day, model), usd in SPENT.items() if spent_day == day and model == "claude-haiku-4-5"
            ]  # fmt: skip
            start = datetime.combine(day, time(), UTC)
            data.append({"starting_at": start.isoformat().replace("+00:00", "Z"),
                         "ending_at": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                         "results": results})  # fmt: skip
        pages.append({"data": data, "has_more": chunk is not DAYS[1:], "next_page": None})
    path.write_text(json.dumps(pages))
    return path


def rows_of(result: Result) -> dict[tuple[str, str], dict[str, object]]:
    return {(row["day"], row["item"]): row for row in json.loads(result.stdout)["rows"]}


def test_openai_pages_that_match_the_ledger_exit_0(tmp_path: Path, db: list[str]) -> None:
    pages = openai_pages(tmp_path)
    result = run("reconcile", "openai-costs", *map(str, pages), "--budget", "acme", "--json", *db)
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert rows[(DAYS[0].isoformat(), "gpt-4o")]["ledger_usd"] == "12.500000"
    assert rows[(DAYS[0].isoformat(), "gpt-4o")]["drift_percent"] == "0.00"
    assert rows[(DAYS[0].isoformat(), "(all)")]["ledger_usd"] == "12.500000"  # Anthropic's spend is not on this bill
    assert sorted(rows) == sorted([(d.isoformat(), i) for d in DAYS for i in ("(all)", "gpt-4o")])


def test_a_5_percent_drift_on_one_day_flags_that_row_and_exits_1(tmp_path: Path, db: list[str]) -> None:
    exact = run("reconcile", "anthropic-costs", str(anthropic_pages(tmp_path / "a.json")), "--json", *db)
    assert exact.exit_code == 0, exact.output
    assert rows_of(exact)[(DAYS[1].isoformat(), "claude-haiku-4-5")]["provider_usd"] == "1.234500"  # 123.45 cents
    drifted_report = run(
        "reconcile", "anthropic-costs", str(anthropic_pages(tmp_path / "b.json", Decimal("0.95"))), *db
    )
    assert drifted_report.exit_code == 1 and "+5.26%" in drifted_report.output

    pages = openai_pages(tmp_path, drift=Decimal("1.05"))
    result = run("reconcile", "openai-costs", *map(str, pages), "--tolerance", "2%", "--json", *db)
    assert result.exit_code == 1
    flagged = sorted(k for k, r in rows_of(result).items() if r["beyond_tolerance"])
    assert flagged == [(DAYS[2].isoformat(), "(all)"), (DAYS[2].isoformat(), "gpt-4o")]
    drifted = rows_of(result)[(DAYS[2].isoformat(), "gpt-4o")]
    assert (drifted["ledger_usd"], drifted["provider_usd"], drifted["drift_percent"]) == (
        "20.000000", "21.000000", "-4.76",
    )  # fmt: skip
    assert run("reconcile", "openai-costs", *map(str, pages), "--tolerance", "5%", *db).exit_code == 0
    table = run("reconcile", "openai-costs", *map(str, pages), *db)
    assert "BEYOND" in table.output and table.exit_code == 1


def test_csv_totals_per_day_match_exactly_and_exit_0(tmp_path: Path, db: list[str]) -> None:
    path = tmp_path / "bill.csv"
    per_day = {day: sum(usd for (d, _), usd in SPENT.items() if d == day) for day in DAYS}
    path.write_text("day,cost_usd\n" + "".join(f"{day},{usd}\n" for day, usd in per_day.items()))
    result = run("reconcile", "csv", str(path), *db)
    assert result.exit_code == 0, result.output
    assert "all 3 rows within" in result.output


def test_litellm_export_reconciles_against_the_ledger_it_was_imported_into(tmp_path: Path, ledger_path: Path) -> None:
    from tests.importers import sources

    rows, _ = sources.litellm_rows()
    sources.litellm_csv(tmp_path / "spend.csv", rows)
    assert run("import", "litellm", str(tmp_path / "spend.csv"), "--db", str(ledger_path)).exit_code == 0
    result = run("reconcile", "litellm", str(tmp_path / "spend.csv"), "--tolerance", "0", "--db", str(ledger_path))
    assert result.exit_code == 0, result.output


def test_bad_tolerance_and_malformed_pages_are_messages(tmp_path: Path, db: list[str]) -> None:
    pages = openai_pages(tmp_path)
    result = run("reconcile", "openai-costs", str(pages[0]), "--tolerance", "lots", *db)
    assert result.exit_code == 1 and "--tolerance 'lots' is not a percentage" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"object": "page", "data": [{"start_time": 1}]}')
    result = run("reconcile", "anthropic-costs", str(broken), *db)
    assert result.exit_code == 1 and "broken.json: not a anthropic-costs export" in result.output
    result = run("reconcile", "openai-costs", str(pages[0]), "--budget", "ghost", *db)
    assert result.exit_code == 1 and "budget 'ghost' does not exist" in result.output
