"""budget-mcp: an MCP server that keeps AI agents inside a budget."""

from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import BudgetMcpError
from budget_mcp.ledger import Ledger, open_ledger
from budget_mcp.pricing import PriceCatalog

__version__ = "0.1.0"
__all__ = ["BudgetEngine", "BudgetMcpError", "Ledger", "PriceCatalog", "__version__", "open_ledger"]
