"""`budget-mcp report` in each format, for the current and a past window; the HTML page parses, one SVG per chart."""

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.cli import main
from budget_mcp.cli.common import CliContext
from budget_mcp.domain.records import Answer, Approval
from tests.conftest import FakeClock

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
MONTH_START = datetime(2026, 11, 1, tzinfo=UTC)
LAST_MONTH = datetime(2026, 10, 20, tzinfo=UTC)


def run(*args: str) -> tuple[int, str]:
    """The command at NOW, whatever the machine's date."""
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "160"}, obj=CliContext(clock=lambda: NOW))
    return result.exit_code, result.output


@pytest.fixture
def db(ledger_path: Path) -> list[str]:
    """A ledger with spend this month (its first hour and now) and last month, on two models and a child."""

    async def fill() -> None:
        ledger = await open_ledger(ledger_path)
        clock = FakeClock(LAST_MONTH)
        engine = BudgetEngine(ledger, PriceCatalog(), clock)
        try:
            await engine.allocate("acme", limit_usd="50", period="monthly")
            await engine.allocate("acme/web", limit_usd="10")
            await engine.charge("acme/web", cost_usd="0.75")
            clock.now = MONTH_START + timedelta(minutes=30)
            await engine.charge("acme/web", model="gpt-4o", input_tokens=400_000, output_tokens=20_000)  # $1.20
            clock.now = NOW
            await engine.charge("acme", model="claude-haiku-4-5", input_tokens=1_000_000, output_tokens=0)  # $1
        finally:
            await ledger.close()

    anyio.run(fill)
    return ["--db", str(ledger_path)]


def test_json_and_markdown_reports_add_up(db: list[str]) -> None:
    code, out = run("report", "acme", "--format", "json", *db)
    report = json.loads(out)
    assert code == 0 and report["totals"]["spent_usd"] == "2.200000"
    assert {m["model"]: m["cost_usd"] for m in report["by_model"]} == {
        "gpt-4o": "1.200000",
        "claude-haiku-4-5": "1.000000",
    }

    code, markdown = run("report", "acme", "--format", "md", *db)
    assert code == 0 and "| gpt-4o | openai | $1.20 | 400,000 | 20,000 | 1 |" in markdown


def test_table_report_of_every_root(db: list[str]) -> None:
    code, out = run("report", *db)
    assert code == 0 and "acme" in out and "$2.20 of $50.00" in out and "claude-haiku-4-5" in out


def test_past_window_report(db: list[str]) -> None:
    code, out = run("report", "acme", "--window", LAST_MONTH.date().isoformat(), "--format", "json", *db)
    report = json.loads(out)
    assert code == 0 and report["current"] is False and report["totals"]["spent_usd"] == "0.750000"
    assert report["window_start"] == "2026-10-01T00:00:00Z"

    code, out = run("report", "acme", "--window", "last month", *db)
    assert code == 2 and "is not a date" in out


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs: list[list[str]] = []
        self.mismatched: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs.append([])
        elif "svg" in self.stack:
            self.svgs[-1].append(tag)
        if tag not in {"meta", "br", "line", "rect"}:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "svg" in self.stack:
            self.svgs[-1].append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in {"rect", "line"}:
            return
        if not self.stack or self.stack.pop() != tag:
            self.mismatched.append(tag)


def test_html_report_is_one_page_with_one_svg_per_chart(db: list[str], tmp_path: Path) -> None:
    target = tmp_path / "acme.html"
    code, out = run("report", "acme", "--format", "html", "--output", str(target), *db)
    page = target.read_text()

    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert code == 0 and out.strip() == f"wrote {target}"
    assert page.startswith("<!DOCTYPE html>") and parser.stack == [] and parser.mismatched == []
    assert len(parser.svgs) == 2  # spend per day, spend by model
    per_day, by_model = parser.svgs
    assert per_day.count("rect") == 30  # every day of November, quiet and future ones as zero-height bars
    assert by_model.count("rect") == 2
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained: nothing fetched


def money_forms(page: str) -> set[str]:
    """The shapes of the dollar amounts on a page: one shape means money is written one way."""
    amounts = re.findall(r"-?\$[0-9][0-9,]*(?:\.[0-9]+)?", page)
    return {"exact" if re.fullmatch(r"-?\$[0-9][0-9,]*\.[0-9]{2,9}", a) or a == "$0" else a for a in amounts}


def test_html_report_shows_the_whole_window_and_scales_to_a_phone(db: list[str], tmp_path: Path) -> None:
    target = tmp_path / "acme.html"
    assert run("report", "acme", "--format", "html", "--output", str(target), *db)[0] == 0
    page = target.read_text()
    assert money_forms(page) == {"exact"}
    assert "even pace to the limit: $1.666667" in page  # $50 over 30 days
    assert 'width="880"' not in page and "svg { display: block; width: 100%; height: auto; }" in page
    assert page.count('<div class="scroll"><table>') == 1 + 4  # the summary and each breakdown


def test_a_daily_budgets_report_has_every_hour_and_keeps_adjustments_apart(ledger_path: Path, tmp_path: Path) -> None:
    async def fill() -> None:
        ledger = await open_ledger(ledger_path)
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(NOW))
        try:
            await engine.allocate("acme", limit_usd="5", period="daily")
            await engine.charge("acme", cost_usd="1")
            await engine.adjust("acme", "-0.25", "refund")
        finally:
            await ledger.close()

    anyio.run(fill)
    target = tmp_path / "daily.html"
    assert run("report", "acme", "--format", "html", "--output", str(target), "--db", str(ledger_path))[0] == 0
    parser = _Tags()
    parser.feed(target.read_text())
    assert parser.svgs[0].count("rect") == 24  # 00h to 23h, not just the hour that spent
    code, markdown = run("report", "acme", "--format", "md", "--db", str(ledger_path))
    assert (
        "| (adjustments) |  | -$0.25 | 0 | 0 | 0 |" in markdown and "| (no model) |  | $1.00 | 0 | 0 | 1 |" in markdown
    )


def test_reports_list_the_approvals_of_going_over_an_ask_limit(ledger_path: Path, tmp_path: Path) -> None:
    async def fill() -> None:
        ledger = await open_ledger(ledger_path)
        engine = BudgetEngine(ledger, PriceCatalog(), FakeClock(NOW))
        try:
            await engine.allocate("team", limit_usd="1", enforcement="ask")
            approval = Approval(Answer.APPROVED, "Claude Code", "2.1", "ops", "release day", "team would go …")
            assert (await engine.check("team", estimated_cost_usd="1.25", approval=approval)).allowed
        finally:
            await ledger.close()

    anyio.run(fill)
    db = ["--db", str(ledger_path)]
    line = (
        "2026-11-25 15:30 UTC: team approved $0.25 over the total limit of team for a $1.25 call "
        '(by Claude Code 2.1, token ops): "release day"'
    )
    code, markdown = run("report", "team", "--format", "md", *db)
    assert code == 0 and f"## Approvals\n\n- {line}" in markdown
    target = tmp_path / "team.html"
    assert run("report", "team", "--format", "html", "--output", str(target), *db)[0] == 0
    page = target.read_text()
    assert "<h2>Approvals</h2>" in page and line.replace('"', "&quot;") in page
    code, out = run("report", "team", "--format", "json", *db)
    assert [a["over_usd"] for a in json.loads(out)["approvals"]] == ["0.250000"]
