"""Pure values and rules of budget-mcp: ids, money, windows, budget definitions and results. No I/O."""
