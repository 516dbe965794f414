"""The `budget-mcp` command: serve, budgets, adjust, migrate, prices, report, import, reconcile, check, charge,
estimate, recommend."""

import click

from budget_mcp import __version__
from budget_mcp.cli.budgets import adjust, budgets, migrate
from budget_mcp.cli.imports import import_spend, reconcile
from budget_mcp.cli.operations import charge, check, close, estimate, recommend
from budget_mcp.cli.prices import prices
from budget_mcp.cli.report import report
from budget_mcp.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="budget-mcp")
def main() -> None:
    """budget-mcp: an MCP server that keeps AI agents inside a budget."""


main.add_command(serve)
main.add_command(budgets)
main.add_command(adjust)
main.add_command(migrate)
main.add_command(prices)
main.add_command(report)
main.add_command(import_spend)
main.add_command(reconcile)
main.add_command(check)
main.add_command(charge)
main.add_command(estimate)
main.add_command(recommend)
budgets.add_command(close)

__all__ = ["main"]
