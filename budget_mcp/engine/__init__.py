"""Budget rules on top of a ledger and a price catalog."""

from budget_mcp.engine.budgets import BudgetEngine, Clock, utc_now

__all__ = ["BudgetEngine", "Clock", "utc_now"]
