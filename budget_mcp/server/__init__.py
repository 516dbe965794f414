"""The MCP surface of budget-mcp (named `server`, not `mcp`, which is the SDK)."""

from budget_mcp.server.app import build_server

__all__ = ["build_server"]
