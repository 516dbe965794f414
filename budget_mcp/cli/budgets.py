"""`budget-mcp budgets list|show|set`, `adjust` and `migrate`: the ledger from a terminal."""

import json
from pathlib import Path

import click
from rich.console import Console
from rich.tree import Tree

from budget_mcp.cli.common import db_option, settings, with_engine
from budget_mcp.cli.operations import close
from budget_mcp.domain.money import human_amount
from budget_mcp.domain.records import Enforcement
from budget_mcp.domain.results import BudgetNode, BudgetStatus
from budget_mcp.ledger import redact_url


@click.group()
def budgets() -> None:
    """List, show, set and close budgets."""


budgets.add_command(close)


@budgets.command("list")
@click.option("--prefix", default=None, help="Only this budget and those under it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
@db_option
def list_budgets(prefix: str | None, as_json: bool, db_path: Path | None) -> None:
    """Show every budget as a tree with what each has spent and has left."""
    nodes = with_engine(settings(db_path=db_path), lambda engine: engine.tree(prefix))
    if as_json:
        click.echo(json.dumps([node.model_dump(mode="json") for node in nodes], indent=2))
        return
    if not nodes:
        click.echo("no budgets yet: create one with `budget-mcp budgets set ID --limit-usd AMOUNT`")
        return
    tree = Tree("budgets")
    for node in nodes:
        _add(tree, node)
    Console().print(tree)


def _add(parent: Tree, node: BudgetNode) -> None:
    branch = parent.add(_line(node))
    for child in node.children:
        _add(branch, child)


def _line(status: BudgetStatus) -> str:
    limit = human_amount(status.limit_usd) if status.limit_usd is not None else "no USD limit"
    left = f", [green]{human_amount(status.available_usd)} available[/]" if status.available_usd is not None else ""
    if status.limit_tokens is not None:
        left += f"; {status.spent_tokens:,} of {status.limit_tokens:,} tokens, {status.available_tokens:,} available"
    elif status.spent_tokens:
        left += f"; {status.spent_tokens:,} tokens"
    if status.limit_calls is not None:
        left += f"; {status.calls:,} of {status.limit_calls:,} calls"
    closed = " [dim](closed)[/]" if status.closed else ""
    spent = human_amount(status.spent_usd)
    return f"[bold]{status.budget_id}[/]{closed}: {spent} spent of {limit} ({status.period}){left}"


@budgets.command("show")
@click.argument("budget_id")
@db_option
def show(budget_id: str, db_path: Path | None) -> None:
    """Print one budget's status as JSON."""
    status = with_engine(settings(db_path=db_path), lambda engine: engine.status(budget_id))
    click.echo(status.model_dump_json(indent=2))


@budgets.command("set")
@click.argument("budget_id")
@click.option("--limit-usd", default=None, help='USD limit per period, e.g. "100".')
@click.option("--limit-tokens", type=int, default=None, help="Token limit per period.")
@click.option("--limit-calls", type=int, default=None, help="Call (charge) limit per period.")
@click.option("--period", default=None, help="hourly, daily, weekly, monthly, total, or rolling 30m, 5h, 7d.")
@click.option("--per-call-usd", default=None, help="Cap on one call's cost.")
@click.option("--enforcement", type=click.Choice([e.value for e in Enforcement]), default=None)
@click.option("--timezone", default=None, help="IANA timezone of the windows (only when creating).")
@click.option("--description", default=None)
@db_option
def set_budget(
    budget_id: str, limit_usd: str | None, limit_tokens: int | None, limit_calls: int | None, period: str | None,
    per_call_usd: str | None, enforcement: str | None, timezone: str | None, description: str | None,
    db_path: Path | None,
) -> None:  # fmt: skip
    """Create or resize a budget (children are carved from their parent)."""
    status = with_engine(
        settings(db_path=db_path),
        lambda engine: engine.allocate(
            budget_id, limit_usd=limit_usd, limit_tokens=limit_tokens, limit_calls=limit_calls, period=period,
            per_call_usd=per_call_usd,
            enforcement=enforcement, timezone=timezone, description=description,
        ),
    )  # fmt: skip
    Console().print(_line(status))


@click.command(context_settings={"ignore_unknown_options": True})  # so "-1.25" is an amount, not an option
@click.argument("budget_id")
@click.argument("amount_usd")
@click.option("--reason", required=True, help="Why: kept with the correction entry.")
@db_option
def adjust(budget_id: str, amount_usd: str, reason: str, db_path: Path | None) -> None:
    """Append a correction entry of AMOUNT_USD (negative for a refund) to BUDGET_ID's ledger."""
    result = with_engine(settings(db_path=db_path), lambda engine: engine.adjust(budget_id, amount_usd, reason))
    amount, spent = human_amount(result.amount_usd), human_amount(result.spent_usd)
    click.echo(f"recorded {result.entry_id}: {amount} on {budget_id}; spent now {spent}")


@click.command()
@db_option
@click.option("--database-url", default=None, help="PostgreSQL URL [env BUDGET_MCP_DATABASE_URL].")
def migrate(db_path: Path | None, database_url: str | None) -> None:
    """Create the ledger, or bring its schema up to date (safe while servers run)."""
    config = settings(db_path=db_path, database_url=database_url)

    async def noop(_: object) -> None:
        return None

    with_engine(config, noop)
    where = (
        f"PostgreSQL ledger {redact_url(config.database_url)}" if config.database_url else f"ledger {config.db_path}"
    )
    click.echo(f"{where} is at the current schema")
