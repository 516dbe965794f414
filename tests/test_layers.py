"""No module imports against the layers (ARCHITECTURE.md), and nothing outside the engine reaches into its parts."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "budget_mcp"
# What each part may import of budget_mcp (besides itself). Everything above the engine goes through it.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "domain": {"errors"},
    "ledger": {"domain", "errors"},
    "pricing": {"domain", "errors"},
    "engine": {"domain", "ledger", "pricing", "errors"},
    "render": {"domain", "engine"},
    "alerts": {"domain", "engine", "errors"},
    "hermes": {"errors"},
    "server": {"(package)", "alerts", "config", "domain", "engine", "errors", "hermes", "ledger", "pricing", "render"},
    "guard": {"domain", "engine", "errors", "ledger", "pricing"},
    "integrations": {"guard"},
    "importers": {"domain", "engine", "errors"},
    "reconcile": {"domain", "engine", "errors", "importers"},
    "cli": {
        "(package)",
        "config",
        "domain",
        "engine",
        "errors",
        "importers",
        "ledger",
        "pricing",
        "reconcile",
        "render",
        "server",
    },  # fmt: skip
    "(package)": {"engine", "errors", "ledger", "pricing"},
    "__main__": {"cli"},
}


def part(module: Path) -> str:
    relative = module.relative_to(PACKAGE).with_suffix("")
    return "(package)" if relative.parts == ("__init__",) else relative.parts[0]


def imported_parts(module: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name == "budget_mcp":
                found.add("(package)")
            elif name.startswith("budget_mcp."):
                found.add(name.split(".")[1])
    return found


def test_no_module_imports_against_the_layers() -> None:
    wrong = []
    for module in sorted(PACKAGE.rglob("*.py")):
        own = part(module)
        for target in imported_parts(module) - {own} - ALLOWED[own]:
            wrong.append(f"{module.relative_to(PACKAGE)} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_nothing_outside_the_engine_reaches_its_ledger_or_prices() -> None:
    reach = re.compile(r"engine\.(ledger|prices)\.")
    wrong = [
        f"{module.relative_to(PACKAGE)}:{n}"
        for module in PACKAGE.rglob("*.py")
        if part(module) != "engine"
        for n, line in enumerate(module.read_text().splitlines(), 1)
        if reach.search(line)
    ]
    assert not wrong, f"go through the engine instead: {wrong}"
