"""`budget-mcp check|charge|estimate|recommend` and `budgets close`: the tools from a terminal.

Each builds the tool's arguments and runs them on the local ledger (the engine, as the other commands) or,
with `--url`, on a running server through its HTTP API; either way the answer is the tool's result model,
printed as one line (or a table) with rich, or as JSON with `--json`.
"""

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from budget_mcp.cli.common import db_option, settings, with_engine
from budget_mcp.cli.remote import call_tool
from budget_mcp.domain.money import human_amount
from budget_mcp.domain.results import ChargeResult, CheckResult, EstimateResult, RecommendResult, ReleaseResult
from budget_mcp.engine import BudgetEngine
from budget_mcp.pricing import Capability, Tier

M = TypeVar("M", bound=BaseModel)
DENIED_EXIT = 3  # a denied check, so a script can tell it from an error (1)


def target(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every operation shares: where it runs (--db, or --url and --token) and --json."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)
    command = click.option("--token", default=None, help="Bearer token for --url.")(command)
    command = click.option(
        "--url",
        default=None,
        help="A running server (http://host:8013/mcp or its base URL) instead of the local ledger.",
    )(command)
    return db_option(command)


def run(
    tool: str, arguments: dict[str, Any], result: type[M], local: Callable[[BudgetEngine], Awaitable[M]], *,
    url: str | None, token: str | None, db_path: Path | None,
) -> M:  # fmt: skip
    """The tool's answer: from the server at `url` (the HTTP API), or from `local` on the local ledger."""
    if url is None:
        if token is not None:
            raise click.UsageError("--token goes with --url (the local ledger needs none)")
        return with_engine(settings(db_path=db_path), local)
    if db_path is not None:
        raise click.UsageError("give --url (a server) or --db (a local ledger), not both")
    sent = {name: value for name, value in arguments.items() if value is not None}
    return result.model_validate(call_tool(url, token, tool, sent))


def show(model: BaseModel, as_json: bool, line: str) -> None:
    """The result as JSON, or its line through rich."""
    if as_json:
        click.echo(model.model_dump_json(indent=2))
    else:
        Console().print(line)


@click.command()
@click.argument("budget_id")
@click.option("--cost-usd", default=None, help='Estimated cost in USD, e.g. "0.25" (or give --model and tokens).')
@click.option("--model", default=None, help="Price the worst case of a call to this model.")
@click.option("--provider", default=None)
@click.option("--input-tokens", type=click.IntRange(0), default=None)
@click.option("--max-output-tokens", type=click.IntRange(0), default=None)
@click.option("--reserve", is_flag=True, help="Hold the amount until it is charged or released.")
@click.option("--ttl-seconds", type=click.IntRange(1), default=None, help="How long a hold lasts (default 600).")
@target
def check(
    budget_id: str, cost_usd: str | None, model: str | None, provider: str | None, input_tokens: int | None,
    max_output_tokens: int | None, reserve: bool, ttl_seconds: int | None, url: str | None, token: str | None,
    as_json: bool, db_path: Path | None,
) -> None:  # fmt: skip
    """May BUDGET_ID spend this much? Exits 3 when denied."""
    arguments: dict[str, Any] = {
        "budget_id": budget_id, "estimated_cost_usd": cost_usd, "model": model, "provider": provider,
        "input_tokens": input_tokens, "max_output_tokens": max_output_tokens, "reserve": reserve or None,
        "ttl_seconds": ttl_seconds,
    }  # fmt: skip
    found = run(
        "check_budget", arguments, CheckResult,
        lambda engine: engine.check(
            budget_id, estimated_cost_usd=cost_usd, model=model, provider=provider, input_tokens=input_tokens,
            max_output_tokens=max_output_tokens, reserve=reserve, ttl_seconds=ttl_seconds,
        ),
        url=url, token=token, db_path=db_path,
    )  # fmt: skip
    verdict = "[green]allowed[/]" if found.allowed else "[red]denied[/]"
    if found.allowed and found.decision == "warn":
        verdict = "[yellow]allowed, with a warning[/]"
    line = f"{verdict}: {escape(found.reason)}"
    if found.reservation_id:
        line += f"\nreserved as [bold]{found.reservation_id}[/] until {found.expires_at:%Y-%m-%d %H:%M} UTC"
    for warning in found.warnings:
        line += f"\n[yellow]warning[/] {escape(warning)}"
    show(found, as_json, line)
    if not found.allowed:
        raise SystemExit(DENIED_EXIT)


@click.command()
@click.argument("budget_id")
@click.option("--model", default=None, help="Price it from the catalog (with the token counts).")
@click.option("--provider", default=None)
@click.option("--input-tokens", type=click.IntRange(0), default=0, help="Uncached input tokens.")
@click.option("--output-tokens", type=click.IntRange(0), default=0)
@click.option("--cache-read-tokens", type=click.IntRange(0), default=0)
@click.option("--cache-write-tokens", type=click.IntRange(0), default=0)
@click.option("--reasoning-tokens", type=click.IntRange(0), default=0, help="Only those billed beyond output.")
@click.option("--cost-usd", default=None, help="The cost the provider reported; wins over the catalog.")
@click.option("--reservation-id", default=None, help="The hold to settle.")
@click.option("--idempotency-key", default=None, help="A retry with the same key is recorded once.")
@click.option("--metadata", default=None, help="A JSON object kept with the entry, e.g. '{\"run\": 7}'.")
@target
def charge(
    budget_id: str, model: str | None, provider: str | None, input_tokens: int, output_tokens: int,
    cache_read_tokens: int, cache_write_tokens: int, reasoning_tokens: int, cost_usd: str | None,
    reservation_id: str | None, idempotency_key: str | None, metadata: str | None, url: str | None,
    token: str | None, as_json: bool, db_path: Path | None,
) -> None:  # fmt: skip
    """Record what a call to BUDGET_ID cost (always recorded, even over the limit)."""
    extra = _json_object(metadata)
    arguments: dict[str, Any] = {
        "budget_id": budget_id, "model": model, "provider": provider, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens, "reasoning_tokens": reasoning_tokens, "cost_usd": cost_usd,
        "reservation_id": reservation_id, "idempotency_key": idempotency_key, "metadata": extra,
    }  # fmt: skip
    found = run(
        "charge", arguments, ChargeResult,
        lambda engine: engine.charge(**arguments),
        url=url, token=token, db_path=db_path,
    )  # fmt: skip
    if found.duplicate:
        line = f"already recorded as {found.charge_id} ({human_amount(found.cost_usd)}); nothing new was charged"
    else:
        left = human_amount(found.remaining_usd) if found.remaining_usd is not None else "no limit"
        line = f"charged [bold]{human_amount(found.cost_usd)}[/] to {found.budget_id}; spent "
        line += f"{human_amount(found.spent_usd)}, {left} left"
    if found.over_limit:
        line += "\n[red]over the limit[/]: further checks on a blocking budget are denied"
    for alert in found.alerts:
        line += f"\n[yellow]alert[/] {alert.budget_id} crossed {alert.threshold} of its {alert.limit_name()}"
    show(found, as_json, line)


@click.command()
@click.argument("model")
@click.option("--provider", default=None)
@click.option("--input-tokens", type=click.IntRange(0), default=0, help="Uncached input tokens.")
@click.option("--output-tokens", type=click.IntRange(0), default=0)
@click.option("--cache-read-tokens", type=click.IntRange(0), default=0)
@click.option("--cache-write-tokens", type=click.IntRange(0), default=0)
@target
def estimate(
    model: str, provider: str | None, input_tokens: int, output_tokens: int, cache_read_tokens: int,
    cache_write_tokens: int, url: str | None, token: str | None, as_json: bool, db_path: Path | None,
) -> None:  # fmt: skip
    """What a call to MODEL would cost, exactly; nothing is charged."""
    arguments: dict[str, Any] = {
        "model": model, "provider": provider, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens, "cache_write_tokens": cache_write_tokens,
    }  # fmt: skip

    async def local(engine: BudgetEngine) -> EstimateResult:
        return engine.estimate(**arguments)

    found = run("estimate_cost", arguments, EstimateResult, local, url=url, token=token, db_path=db_path)
    line = f"{found.provider}/{found.model}: [bold]{human_amount(found.cost_usd)}[/] ({found.cost_usd} USD)"
    show(found, as_json, f"{line}, priced by {escape(found.source)}")


@click.command()
@click.argument("task")
@click.option("--budget", "budget_id", default=None, help="The budget the call must fit.")
@click.option("--input-tokens", type=click.IntRange(0), default=None)
@click.option("--output-tokens", type=click.IntRange(0), default=None)
@click.option("--needs", multiple=True, type=click.Choice([c.value for c in Capability]), help="Repeatable.")
@click.option("--min-tier", type=click.Choice([t.value for t in Tier]), default=None)
@click.option("--provider", "providers", multiple=True, help="Only these providers (repeatable).")
@click.option("--limit", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--current-model", default=None, help="Say what each would save against it.")
@target
def recommend(
    task: str, budget_id: str | None, input_tokens: int | None, output_tokens: int | None, needs: tuple[str, ...],
    min_tier: str | None, providers: tuple[str, ...], limit: int, current_model: str | None, url: str | None,
    token: str | None, as_json: bool, db_path: Path | None,
) -> None:  # fmt: skip
    """The cheapest models that can do TASK, those that fit the budget first."""
    arguments: dict[str, Any] = {
        "task": task, "budget_id": budget_id, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "needs": list(needs) or None, "min_tier": min_tier, "providers": list(providers) or None, "limit": limit,
        "current_model": current_model,
    }  # fmt: skip
    found = run(
        "recommend_model", arguments, RecommendResult,
        lambda engine: engine.recommend(**arguments),
        url=url, token=token, db_path=db_path,
    )  # fmt: skip
    if as_json:
        click.echo(found.model_dump_json(indent=2))
        return
    table = Table("model", "provider", "tier", "estimated", "fits", "why")
    for r in found.recommendations:
        fits = "[green]yes[/]" if r.fits_budget else "[red]no[/]"
        table.add_row(r.model, r.provider, r.tier, human_amount(r.estimated_cost_usd), fits, escape(r.why))
    console = Console()
    if not found.recommendations:
        console.print("no model meets these requirements; relax --needs, --min-tier, --provider or the token sizes")
        return
    console.print(table)


@click.command("close")
@click.argument("budget_id")
@target
def close(budget_id: str, url: str | None, token: str | None, as_json: bool, db_path: Path | None) -> None:
    """Close the sub-budget BUDGET_ID: what it did not spend goes back to its parent."""
    found = run(
        "release", {"budget_id": budget_id}, ReleaseResult,
        lambda engine: engine.release(budget_id=budget_id),
        url=url, token=token, db_path=db_path,
    )  # fmt: skip
    show(found, as_json, escape(found.message))


def _json_object(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter('a JSON object, e.g. {"run": 7}', param_hint="--metadata")
    return parsed
