"""The guard: budgets around the LLM calls of Python code, in the call path (SPEC section 9).

    from budget_mcp.guard import Guard, SyncGuard

`Guard` is async, `SyncGuard` blocking and thread-safe; both open on a SQLite file, a
`postgresql://` URL (the same engine and ledger as the servers) or a running server's
`http(s)://.../mcp` URL with a token (the SDK's MCP client).
"""

from budget_mcp.guard.core import Guard, GuardedCall
from budget_mcp.guard.sync import SyncGuard, SyncGuardedCall
from budget_mcp.guard.usage import Usage

__all__ = ["Guard", "GuardedCall", "SyncGuard", "SyncGuardedCall", "Usage"]
