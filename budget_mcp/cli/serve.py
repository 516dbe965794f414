"""`budget-mcp serve`: run the MCP server over stdio (default), streamable HTTP or SSE."""

import logging
import sys
from pathlib import Path

import anyio
import click

from budget_mcp.cli.common import db_option, settings
from budget_mcp.errors import BudgetMcpError
from budget_mcp.ledger import open_ledger, redact_url


@click.command()
@click.option(
    "--transport",
    type=click.Choice(["stdio", "sse", "http"]),
    default="stdio",
    show_default=True,
    help="stdio for MCP clients that start the server; http serves /mcp, sse serves /sse.",
)
@click.option("--host", default=None, help="Address for HTTP transports [default: 127.0.0.1].")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port for HTTP transports [env BUDGET_PORT; default: 8013].",
)
@db_option
@click.option("--database-url", default=None, help="PostgreSQL URL [env BUDGET_MCP_DATABASE_URL].")
@click.option(
    "--budgets",
    "budgets_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of budgets applied at start [env BUDGET_MCP_BUDGETS].",
)
@click.option("--insecure", is_flag=True, default=None, help="Allow a non-loopback bind without a token.")
def serve(
    transport: str, host: str | None, port: int | None, db_path: Path | None, database_url: str | None,
    budgets_file: Path | None, insecure: bool | None,
) -> None:  # fmt: skip
    """Run the MCP server."""
    config = settings(
        transport=transport, host=host, port=port, db_path=db_path, database_url=database_url,
        budgets_file=budgets_file, insecure=insecure,
    )  # fmt: skip
    try:
        config.check_exposure()
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc
    # stdout is the stdio transport's wire: everything we say goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from budget_mcp.server import build_server
    from budget_mcp.server.stdio import serve_stdio

    try:
        server = build_server(config)
        anyio.run(_open_once, config.ledger_location)
    except BudgetMcpError as exc:  # a tokens or budgets file or a ledger that cannot be read: one line, no traceback
        raise click.ClickException(str(exc)) from exc
    if config.transport == "stdio":
        serve_stdio(server)
        return
    from budget_mcp.server.http import serve_http  # uvicorn and the HTTP parts: not for a stdio server

    base = f"http://{config.host}:{config.port}"
    where = f"streamable HTTP on {base}/mcp" if config.transport == "http" else f"SSE on {base}/sse"
    ledger = f"PostgreSQL {redact_url(config.database_url)}" if config.database_url else str(config.db_path)
    click.echo(f"budget-mcp: {where} (health: {base}/health), ledger {ledger}", err=True)
    if config.hermes_url:
        click.echo(f"budget-mcp: registering with Hermes at {config.hermes_url} in the background", err=True)
    anyio.run(serve_http, config, server)


async def _open_once(location: str | Path) -> None:
    """Open the ledger (creating or upgrading it) and close it: what stops it from opening is said before serving."""
    ledger = await open_ledger(location)
    await ledger.close()
