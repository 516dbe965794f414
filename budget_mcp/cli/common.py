"""What every command shares: the --db option, and running the engine with errors turned into messages."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from budget_mcp.config import Settings
from budget_mcp.engine import BudgetEngine, Clock, utc_now
from budget_mcp.errors import BudgetMcpError
from budget_mcp.ledger import open_ledger
from budget_mcp.pricing import PriceCatalog

T = TypeVar("T")


@dataclass(frozen=True)
class CliContext:
    """What a caller of the command may set: `main(obj=CliContext(clock=...))`, as the tests do."""

    clock: Clock = utc_now


db_option = click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="SQLite ledger file [env BUDGET_MCP_DB; default: the user data dir].",
)  # fmt: skip


def settings(**flags: Any) -> Settings:
    """Settings from the environment and these flags; a configuration mistake becomes a clean CLI error."""
    try:
        return Settings.load(**flags)
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc


def catalog(config: Settings) -> PriceCatalog:
    """The price catalog the settings describe (cached remote copies, overrides); errors become CLI errors."""
    try:
        return PriceCatalog(cache_dir=config.prices_cache_dir, overrides_file=config.price_overrides)
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc


def with_engine(config: Settings, action: Callable[[BudgetEngine], Awaitable[T]]) -> T:
    """Open the ledger, run `action` on an engine, close the ledger; BudgetMcpError becomes a ClickException."""

    prices = catalog(config)
    context = click.get_current_context().find_object(CliContext) or CliContext()

    async def run() -> T:
        ledger = await open_ledger(config.ledger_location)
        try:
            return await action(BudgetEngine(ledger, prices, context.clock))
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc
