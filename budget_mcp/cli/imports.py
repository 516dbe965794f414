"""`budget-mcp import FORMAT FILE` and `budget-mcp reconcile FORMAT FILE...`: spend in, and checked against the bill."""

import json
from collections.abc import Awaitable
from decimal import Decimal
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from budget_mcp.cli.common import db_option, settings, with_engine
from budget_mcp.domain.money import human_usd
from budget_mcp.domain.windows import zone
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import BudgetMcpError
from budget_mcp.importers import FORMATS, Importer, ImportSummary, open_source
from budget_mcp.reconcile import ALL, BILLED_BY, Row, compare, parse_tolerance, read
from budget_mcp.reconcile import FORMATS as RECONCILE_FORMATS

url_option = click.option("--database-url", default=None, help="PostgreSQL URL [env BUDGET_MCP_DATABASE_URL].")
MAX_LISTED = 200


@click.command("import")
@click.argument("format_name", metavar="FORMAT", type=click.Choice(FORMATS))
@click.argument("source", metavar="FILE", type=click.Path(exists=True, path_type=Path))
@click.option("--budget", default=None, help="Put every record on this budget instead of the ones the source names.")
@click.option("--dry-run", is_flag=True, help="Read and check everything, say what would happen, write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid records and list the invalid ones skipped.")
@click.option(
    "--timezone", "naive_zone", default="UTC", show_default=True, help="IANA zone of times without an offset."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@db_option
@url_option
def import_spend(
    format_name: str, source: Path, budget: str | None, dry_run: bool, skip_invalid: bool, naive_zone: str,
    as_json: bool, db_path: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """Bring existing spend in as charges at their own times (FORMAT: hal0, tekton, rhetor, apollo, litellm, csv)."""
    config = settings(db_path=db_path, database_url=database_url)
    try:
        reader = open_source(format_name, source, naive_zone=zone(naive_zone), budget=budget)
        total = reader.count()
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc
    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.advance(tasks[stage], n)

        def run(engine: BudgetEngine) -> Awaitable[ImportSummary]:
            importer = Importer(
                engine, reader, budget=budget, dry_run=dry_run, skip_invalid=skip_invalid, progress=advance
            )
            return importer.run()

        summary = with_engine(config, run)
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
    else:
        _print_summary(summary)


def _print_summary(summary: ImportSummary) -> None:
    console = Console()
    for skipped in summary.skipped[:MAX_LISTED]:
        console.print(f"skipped {skipped.where}: {skipped.reason}", markup=False, highlight=False)
    if len(summary.skipped) > MAX_LISTED:
        console.print(f"... and {len(summary.skipped) - MAX_LISTED} more skipped (--json lists them all)")
    verb = "would import" if summary.dry_run else "imported"
    table = Table(title=f"{summary.format}: {verb}")
    for name in ("budget", "records", "cost"):
        table.add_column(name, justify="left" if name == "budget" else "right")
    for budget_id, count in sorted(summary.per_budget.items()):
        table.add_row(budget_id, f"{count.records:,}", human_usd(count.cost_nanos))
    console.print(table)
    created = f"; budgets {'to create' if summary.dry_run else 'created'}: {', '.join(summary.created)}"
    console.print(
        f"read {summary.read:,}, {verb} {summary.imported:,}, already there {summary.already:,}, "
        f"skipped {len(summary.skipped):,}" + (created if summary.created else ""),
        markup=False, highlight=False,
    )  # fmt: skip
    for reason, unpriced in summary.unpriced.items():
        console.print(f"{unpriced:,} records charged at zero: {reason}", markup=False, highlight=False)
    if summary.alerts:
        console.print(f"{summary.alerts} alert thresholds crossed in current windows")
    if summary.dry_run:
        console.print("dry run: nothing was written")


@click.command()
@click.argument("format_name", metavar="FORMAT", type=click.Choice(RECONCILE_FORMATS))
@click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--budget", default=None, help="Compare only this budget and those under it (default: all).")
@click.option("--tolerance", default="2%", show_default=True, help="Drift allowed per row before exiting 1.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@db_option
@url_option
def reconcile(
    format_name: str, files: tuple[Path, ...], budget: str | None, tolerance: str, as_json: bool,
    db_path: Path | None, database_url: str | None,
) -> None:  # fmt: skip
    """Compare the ledger with the provider's own figures per UTC day (and item); exit 1 beyond --tolerance.

    openai-costs and anthropic-costs compare that provider's charges only (FORMAT: openai-costs,
    anthropic-costs, litellm, csv).
    """
    config = settings(db_path=db_path, database_url=database_url)
    try:
        allowed = parse_tolerance(tolerance)
        provider = read(format_name, files)
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = with_engine(
        config,
        lambda engine: compare(
            engine, provider, budget_id=budget, tolerance=allowed, billed_by=BILLED_BY.get(format_name)
        ),
    )
    beyond = [row for row in rows if row.beyond]
    if as_json:
        document = {"format": format_name, "tolerance_percent": str(allowed), "rows": [r.as_json() for r in rows]}
        click.echo(json.dumps({**document, "beyond_tolerance": len(beyond)}, indent=2))
    else:
        _print_rows(rows, allowed, format_name)
    if beyond:
        raise SystemExit(1)


def _print_rows(rows: list[Row], tolerance: Decimal, format_name: str) -> None:
    table = Table(title=f"ledger vs {format_name} (tolerance {tolerance}%)")
    for name in ("day", "item", "ledger", "provider", "drift", "drift %", ""):
        table.add_column(name, justify="left" if name in ("day", "item", "") else "right")
    for row in rows:
        percent = row.drift_percent
        shown = "n/a" if percent is None else f"{percent:+}%"
        flag = "[bold red]BEYOND[/]" if row.beyond else "[green]ok[/]"
        table.add_row(
            row.day.isoformat(), row.item if row.item != ALL else "[bold]all[/]", human_usd(row.ledger_nanos),
            human_usd(row.provider_nanos), human_usd(row.drift_nanos), shown, flag,
        )  # fmt: skip
    console = Console()
    console.print(table)
    beyond = sum(row.beyond for row in rows)
    console.print(f"{beyond} of {len(rows)} rows beyond {tolerance}%" if beyond else f"all {len(rows)} rows within")
