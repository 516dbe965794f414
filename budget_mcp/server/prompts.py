"""The MCP prompts: templates from `prompts/`, rendered with live figures from the ledger."""

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp.types import INVALID_PARAMS
from pydantic import Field

from budget_mcp.domain.ids import validate_budget_id
from budget_mcp.domain.inputs import MAX_TEXT
from budget_mcp.domain.money import human_amount as money
from budget_mcp.errors import BudgetMcpError
from budget_mcp.render import alert_lines, report_markdown
from budget_mcp.server.access import visible_tree
from budget_mcp.server.state import current_state
from budget_mcp.server.wire import status_summary

_SOURCE_TREE = Path(__file__).parents[2] / "prompts"


def template(name: str) -> str:
    """A prompt template: from the installed package, or from the source tree in a checkout."""
    packaged = resources.files("budget_mcp").joinpath("prompts", f"{name}.md")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (_SOURCE_TREE / f"{name}.md").read_text(encoding="utf-8")


def register_prompts(server: MCPServer[Any]) -> None:
    """Add the budget-assistant prompts to `server`."""

    async def permit(budget_id: str) -> None:
        """Refuse, as a protocol error the client can read, a malformed id, a budget the caller's token does not
        cover, or one that does not exist; before the id goes anywhere near a prompt."""
        try:
            validate_budget_id(budget_id)
            (await current_state().caller()).check(budget_id)
            await current_state().engine.status(budget_id)
        except BudgetMcpError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from exc

    async def describe(budget_id: str | None) -> str:
        engine = current_state().engine
        try:
            if budget_id:
                status = await engine.status(budget_id)
                return f"{status_summary(status)}\n\n```json\n{status.model_dump_json(indent=2)}\n```"
            nodes = await visible_tree(engine, await current_state().caller())
        except BudgetMcpError as exc:
            return f"(not available: {exc})"
        return "\n".join(f"- {status_summary(node)}" for node in nodes) or "(no budgets yet)"

    async def recent_alerts(budget_id: str | None) -> str:
        engine = current_state().engine
        try:
            nodes = await visible_tree(engine, await current_state().caller())
            ids = [budget_id] if budget_id else [node.budget_id for node in nodes]
            lines = [line for b in ids for line in alert_lines(await engine.report(b))]
        except BudgetMcpError as exc:
            return f"(not available: {exc})"
        return "\n".join(f"- {line}" for line in lines) or "(none in the current window)"

    async def alternatives(task: str, budget_id: str) -> str:
        try:
            found = await current_state().engine.recommend(task, budget_id=budget_id, limit=6)
        except BudgetMcpError as exc:
            return f"(not available: {exc})"
        lines = [
            f"- {r.provider}/{r.model} ({r.tier}): {money(r.estimated_cost_usd)} per call"
            f"{'' if r.fits_budget else ', does not fit the budget'}"
            for r in found.recommendations
        ]
        assumed = "; ".join(found.assumptions)
        return "\n".join(lines) + (f"\n\n(assumed: {assumed})" if assumed else "")

    @server.prompt()
    async def budget_assistant(
        budget_id: Annotated[
            str | None, Field(description="The budget to work within; all budgets if omitted.")
        ] = None,
    ) -> str:
        """System prompt for a budget-aware assistant, with the live budget status and alerts embedded."""
        if budget_id is not None:
            await permit(budget_id)
        return template("budget_assistant").format(
            budget_status=await describe(budget_id), alerts=await recent_alerts(budget_id)
        )

    @server.prompt()
    async def spending_review(budget_id: Annotated[str, Field(description="The budget to review.")]) -> str:
        """Analyse the budget's current spend report and propose concrete savings."""
        await permit(budget_id)
        try:
            report = report_markdown(await current_state().engine.report(budget_id))
        except BudgetMcpError as exc:
            report = f"(not available: {exc})"
        return template("spending_review").format(
            budget_id=budget_id,
            report=report,
            alternatives=await alternatives("everyday chat, summaries and code edits", budget_id),
        )

    @server.prompt()
    async def plan_task_budget(
        task: Annotated[str, Field(description="The task to plan, in plain words.")],
        budget_id: Annotated[str, Field(description="The budget the task must fit in.")],
    ) -> str:
        """Plan sub-allocations and model choices for a multi-step task within a budget."""
        await permit(budget_id)
        if not task.strip() or len(task) > MAX_TEXT:
            raise MCPError(INVALID_PARAMS, f"task must be a non-empty description of at most {MAX_TEXT} characters")
        return template("plan_task_budget").format(
            task=task,
            budget_id=budget_id,
            budget_status=await describe(budget_id),
            alternatives=await alternatives(task, budget_id),
        )
