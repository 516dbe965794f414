"""The `budget-mcp` command: serve, budgets, adjust, migrate, prices, report, import, reconcile, check, charge,
estimate, recommend.

Each subcommand's module is imported only when that subcommand runs (click's lazy group), so `serve`, which
MCP clients start and often give 5 s, loads no table printing or importers it does not use.
"""

import importlib
from typing import Any

import click

from budget_mcp import __version__

COMMANDS = {
    "serve": "budget_mcp.cli.serve:serve",
    "budgets": "budget_mcp.cli.budgets:budgets",
    "adjust": "budget_mcp.cli.budgets:adjust",
    "migrate": "budget_mcp.cli.budgets:migrate",
    "prices": "budget_mcp.cli.prices:prices",
    "report": "budget_mcp.cli.report:report",
    "import": "budget_mcp.cli.imports:import_spend",
    "reconcile": "budget_mcp.cli.imports:reconcile",
    "check": "budget_mcp.cli.operations:check",
    "charge": "budget_mcp.cli.operations:charge",
    "estimate": "budget_mcp.cli.operations:estimate",
    "recommend": "budget_mcp.cli.operations:recommend",
}


class LazyGroup(click.Group):
    """A group whose subcommands are named by import path and loaded on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, name = self.lazy[cmd_name].split(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="budget-mcp")
def main() -> None:
    """budget-mcp: an MCP server that keeps AI agents inside a budget."""


__all__ = ["main"]
