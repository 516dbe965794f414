"""Who may use which budgets: bearer tokens, each with full access or scoped to budget prefixes.

`BUDGET_MCP_TOKEN` is one token with full access; `BUDGET_MCP_TOKENS` names a TOML file of scoped
tokens (`[[token]]` with name, token, prefixes, create_roots). Tokens are compared in constant time,
all of them every time, and never logged: requests are known by the token's name. Without a token
(stdio, or the in-memory client) the caller is local and has full access.
"""

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from budget_mcp.config import Settings, load_tokens_file
from budget_mcp.domain.ids import is_within, validate_budget_id
from budget_mcp.domain.models import BudgetNode
from budget_mcp.errors import AccessDeniedError, BudgetMcpError, ConfigError


@dataclass(frozen=True)
class Grant:
    """What one token may do: every budget (`prefixes` None) or those under its prefixes."""

    name: str
    prefixes: tuple[str, ...] | None = None
    create_roots: bool = False

    def allows(self, budget_id: str) -> bool:
        """Whether this budget is within the grant's prefixes."""
        return self.prefixes is None or any(is_within(budget_id, p) for p in self.prefixes)

    def check(self, budget_id: str, *, allocating: bool = False) -> None:
        """Raise AccessDeniedError unless the budget may be used (or, allocating a root, created)."""
        if self.allows(budget_id) or (allocating and self.create_roots and "/" not in budget_id):
            return
        scope = ", ".join(self.prefixes or ())
        raise AccessDeniedError(
            f"the token '{self.name}' may not use budget '{budget_id[:200]}'; it is limited to budgets under "
            f"{scope}. Use an id under one of them, or a token that covers '{budget_id[:200]}'"
        )

    def check_uri(self, uri: str) -> None:
        """Raise unless the resource at `uri` may be read (a budget's resources: when the budget may be used)."""
        budget_id = budget_of_uri(uri)
        if budget_id is not None:
            validate_budget_id(budget_id)
            self.check(budget_id)


FULL_ACCESS = Grant("local")
_BUDGET_URI = re.compile(r"budget://(?:budgets|reports|ledger)/([^?#]*?)(?:\.md)?(?:[?#].*)?")


def budget_of_uri(uri: str) -> str | None:
    """The budget a resource URI shows ('acme/x' for budget://reports/acme/x.md), or None for the others."""
    found = _BUDGET_URI.fullmatch(uri)
    return found.group(1) if found else None


def scoped_forest(nodes: list[BudgetNode], grant: Grant) -> list[BudgetNode]:
    """The subtrees a grant may see: each highest allowed budget with everything under it."""
    if grant.prefixes is None:
        return nodes
    found: list[BudgetNode] = []
    for node in nodes:
        found.extend([node] if grant.allows(node.budget_id) else scoped_forest(node.children, grant))
    return found


class TokenTable:
    """The configured tokens; `verify_token` is the SDK's TokenVerifier protocol."""

    def __init__(self, tokens: Iterable[tuple[str, Grant]]) -> None:
        self._tokens = [(token.encode(), grant) for token, grant in tokens]
        self._by_name = {grant.name: grant for _, grant in self._tokens}

    @classmethod
    def from_settings(cls, settings: Settings) -> "TokenTable":
        """BUDGET_MCP_TOKEN (full access, named 'admin') and the scoped tokens of BUDGET_MCP_TOKENS."""
        tokens = [(settings.token, Grant("admin"))] if settings.token else []
        if settings.tokens_file is not None:
            tokens += [
                _scoped(settings.tokens_file, n, raw) for n, raw in enumerate(load_tokens_file(settings.tokens_file), 1)
            ]
        names = [grant.name for _, grant in tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"token names must be unique; {settings.tokens_file} repeats one of {sorted(names)}")
        return cls(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The grant's name for a known token, else None (compares against every token, in constant time)."""
        offered = token.encode()
        found = None
        for known, grant in self._tokens:
            if hmac.compare_digest(offered, known):
                found = grant
        return AccessToken(token=token, client_id=found.name, scopes=[]) if found else None

    def current(self) -> Grant:
        """The grant of the request being served (full access when it carries no token)."""
        access = get_access_token()
        if access is None:
            return FULL_ACCESS
        return self._by_name.get(access.client_id, Grant(access.client_id, prefixes=()))


def _scoped(path: Path, number: int, raw: dict[str, object]) -> tuple[str, Grant]:
    where = f"{path}: [[token]] number {number}"
    token, name, prefixes = raw.get("token"), raw.get("name"), raw.get("prefixes", [])
    if not isinstance(token, str) or len(token) < 16:
        raise ConfigError(f'{where} needs token = "..." of at least 16 characters')
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name (used in logs and errors instead of the token)")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise ConfigError(f'{where}: prefixes must be a list of budget ids, e.g. ["acme/research"]')
    try:
        for prefix in prefixes:
            validate_budget_id(prefix)
    except BudgetMcpError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    unknown = set(raw) - {"token", "name", "prefixes", "create_roots"}
    if unknown:
        raise ConfigError(f"{where} has unknown fields {sorted(unknown)}; allowed: name, token, prefixes, create_roots")
    return token, Grant(name.strip(), tuple(prefixes), bool(raw.get("create_roots", False)))
