"""`budget-mcp prices show|refresh|verify`: the price catalog from a terminal."""

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from budget_mcp.cli.common import catalog, settings
from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import BudgetMcpError
from budget_mcp.pricing import RateComparison, RemoteSource, refresh_sources, remote_sources

SOURCE_NAMES = ("genai-prices", "litellm", "openrouter")


@click.group()
def prices() -> None:
    """Show, refresh and verify model prices."""


@prices.command("show")
@click.argument("models", nargs=-1)
@click.option("--provider", default=None, help="Provider of the named models, e.g. 'openai'.")
@click.option("--json", "as_json", is_flag=True, help="Print budget://prices as JSON.")
def show(models: tuple[str, ...], provider: str | None, as_json: bool) -> None:
    """Prices per million tokens: the recommendable models, or the MODELS named (any the catalog knows)."""
    found = catalog(settings())
    if as_json:
        click.echo(json.dumps(found.describe(), indent=1))
        return
    console = Console()
    console.print("sources (first hit wins): " + "; ".join(info.label for info in found.sources))
    table = Table("provider", "model", "tier", "in", "out", "cache r", "cache w", "context")
    if models:
        table.add_column("source")
        for name in models:
            with _errors():
                priced = found.cost(name, provider, TokenCounts())
            facts = found.facts(priced.model, priced.provider)
            rates = (priced.input_mtok, priced.output_mtok, priced.cache_read_mtok, priced.cache_write_mtok)
            context = f"{facts.context_window:,}" if facts else ""
            table.add_row(
                priced.provider, priced.model, facts.tier if facts else "", *map(_rate, rates), context, priced.source
            )
    else:
        for row in found.describe()["models"]:
            flag = " [red]![/]" if row["flagged"] else ""
            listed = [row[f"{k}_usd_per_mtok"] for k in ("input", "output", "cache_read", "cache_write")]
            table.add_row(
                row["provider"], row["model"] + flag, row["tier"], *(_rate(r) for r in listed),
                f"{row['context_window']:,}",
            )  # fmt: skip
        table.caption = "USD per million tokens; [red]![/]: sources disagree by over 5% (see prices verify)"
    console.print(table)


@prices.command("refresh")
@click.option(
    "--source", "chosen", multiple=True, type=click.Choice(SOURCE_NAMES), help="Only this source (repeatable)."
)
def refresh(chosen: tuple[str, ...]) -> None:
    """Fetch the remote price sources (URLs from the BUDGET_MCP_*_URL variables) and cache the good ones."""
    config = settings()
    sources = [s for s in remote_sources(config.price_urls) if not chosen or s.name in chosen]
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {s.name: progress.add_task(s.name, total=None) for s in sources}

        def progress_for(source: RemoteSource) -> Callable[[int, int | None], None]:
            task = tasks[source.name]
            return lambda done, total: progress.update(task, completed=done, total=total)

        outcomes = asyncio.run(refresh_sources(sources, config.prices_cache_dir, progress_for))
    failed = False
    for outcome in outcomes:
        if outcome.copy:
            console.print(
                f"[green]ok[/] {outcome.source}: {outcome.copy.models} models, sha256 {outcome.copy.sha256[:12]}"
            )
        else:
            failed = True
            console.print(f"[red]failed[/] {outcome.error}")
    console.print(f"cache: {config.prices_cache_dir}")
    if failed:
        raise SystemExit(1)


@prices.command("verify")
@click.option("--all", "show_all", is_flag=True, help="List every compared rate, not only the flagged ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(show_all: bool, as_json: bool) -> None:
    """Compare each model's rates across the sources; flag those that differ by more than 5%."""
    found = catalog(settings())
    compared = found.comparisons
    rows = [c for c in compared if show_all or c.flagged]
    if as_json:
        click.echo(json.dumps(found.describe()["verification"], indent=1))
        return
    console = Console()
    if not compared:
        console.print("nothing to compare: only one source is cached; run `budget-mcp prices refresh` first")
        return
    table = Table("provider", "model", "rate", "USD per million tokens by source", "spread")
    for c in rows:
        table.add_row(c.provider, c.model, c.kind, _values(c), _spread(c), style="red" if c.flagged else None)
    console.print(table)
    flagged = sum(c.flagged for c in compared)
    console.print(f"{len(compared)} rates compared; {flagged} differ by more than 5%")


def _values(c: RateComparison) -> str:
    return ", ".join(f"{source} {value:f}" for source, value in c.values.items())


def _spread(c: RateComparison) -> str:
    return "inf" if not c.spread.is_finite() else f"{c.spread * 100:.1f}%"


def _rate(value: Decimal | str | None) -> str:
    """A rate per million tokens as plain decimal text ('' when the source gives none)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else f"{value:f}"


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except BudgetMcpError as exc:
        raise click.ClickException(str(exc)) from exc
