"""`budget-mcp report`: where the money went, as terminal tables, JSON, Markdown or a self-contained HTML page."""

import json
from datetime import date, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from budget_mcp.cli.common import db_option, settings, with_engine
from budget_mcp.domain.results import SpendReport
from budget_mcp.engine import BudgetEngine
from budget_mcp.render import alert_lines, breakdowns, report_html, report_markdown, summary_rows, window_text


@click.command()
@click.argument("budget_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md", "html"]), default="table", show_default=True)
@click.option("--window", "window_of", default=None, help="A past window: any date or time in it, e.g. 2026-11-01.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to this file.")
@db_option
def report(budget_id: str | None, fmt: str, window_of: str | None, output: Path | None, db_path: Path | None) -> None:
    """Spend report of BUDGET_ID (default: every root budget) for its current window, or a past one."""
    moment = _moment(window_of) if window_of else None

    async def build(engine: BudgetEngine) -> list[SpendReport]:
        ids = [budget_id] if budget_id else [node.budget_id for node in await engine.tree()]
        return [await engine.report(b, window_of=moment) for b in ids]

    reports = with_engine(settings(db_path=db_path), build)
    if not reports:
        raise click.ClickException("no budgets yet: create one with `budget-mcp budgets set ID --limit-usd AMOUNT`")
    if fmt == "html":
        if len(reports) > 1:
            raise click.ClickException("an HTML report is for one budget: name it, e.g. `budget-mcp report acme`")
        target = output or Path(f"report-{reports[0].budget_id.replace('/', '_')}.html")
        target.write_text(report_html(reports[0]), encoding="utf-8")
        click.echo(f"wrote {target}")
        return
    if fmt == "json":
        dumped = [r.model_dump(mode="json") for r in reports]
        text = json.dumps(dumped if len(dumped) > 1 else dumped[0], indent=1)
    elif fmt == "md":
        text = "\n".join(report_markdown(r) for r in reports)
    else:
        console = Console(record=output is not None, width=120 if output else None)
        for r in reports:
            _print_tables(console, r)
        if output:
            output.write_text(console.export_text(), encoding="utf-8")
            click.echo(f"wrote {output}")
        return
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


def _print_tables(console: Console, r: SpendReport) -> None:
    console.rule(f"[bold]{r.budget_id}")
    console.print(window_text(r))
    summary = Table(show_header=False)
    for label, value in summary_rows(r):
        summary.add_row(label, value)
    console.print(summary)
    for title, header, rows in breakdowns(r):
        if not rows:
            continue
        table = Table(*header, title=title, title_justify="left")
        for column in table.columns[-4:]:
            column.justify = "right"
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for alert in alert_lines(r):
        console.print(f"[yellow]alert[/] {alert}")


def _moment(text: str) -> date | datetime:
    try:
        return datetime.fromisoformat(text) if "T" in text or " " in text else date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (2026-11-01) or a time (2026-11-01T09:30)") from None
