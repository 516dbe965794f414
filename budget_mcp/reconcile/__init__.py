"""Checking the ledger against the provider's bill: the provider's figures (`providers`) and the comparison."""

from budget_mcp.reconcile.compare import ALL, Row, compare, parse_tolerance
from budget_mcp.reconcile.providers import BILLED_BY, FORMATS, ProviderCost, read

__all__ = ["ALL", "BILLED_BY", "FORMATS", "ProviderCost", "Row", "compare", "parse_tolerance", "read"]
