"""The public surface: the library's __all__, and what the server offers against SPEC names and the README."""

from pathlib import Path

import pytest
from mcp import Client

import budget_mcp
from budget_mcp.config import Settings
from budget_mcp.server import build_server
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio
README = (Path(__file__).parents[1] / "README.md").read_text()


def test_all_lists_exactly_the_real_exports() -> None:
    assert sorted(budget_mcp.__all__) == sorted(
        ["BudgetEngine", "BudgetMcpError", "Ledger", "PriceCatalog", "__version__", "open_ledger"]
    )
    for name in budget_mcp.__all__:
        assert hasattr(budget_mcp, name)


async def test_every_offered_tool_and_resource_is_documented_in_the_readme(
    clock: FakeClock, settings: Settings
) -> None:
    async with Client(build_server(settings, clock=clock)) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
    for name in tools:
        assert f"`{name}`" in README, f"tool {name} is not in the README"
    assert sorted(resources) == ["budget://budgets", "budget://prices"]
    for uri in resources:
        assert f"`{uri}`" in README, f"resource {uri} is not in the README"
    assert templates == [
        "budget://budgets/{+budget_id}", "budget://reports/{+budget_id}.md", "budget://reports/{+budget_id}",
        "budget://ledger/{+budget_id}{?limit,before}",
    ]  # fmt: skip
    for documented in ("budget://budgets/{budget_id}", "budget://reports/{budget_id}", "budget://ledger/{budget_id}"):
        assert f"`{documented}" in README, f"resource {documented} is not in the README"
