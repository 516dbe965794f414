"""Who may use which budgets: bearer tokens, each with full access or scoped to budget prefixes.

`BUDGET_MCP_TOKEN` is one token with full access; `BUDGET_MCP_TOKENS` names a TOML file of scoped
tokens (`[[token]]` with name, token, prefixes, create_roots). Tokens are compared in constant time,
all of them every time, and never logged: requests are known by the token's name. Without a token
(stdio, or the in-memory client) the caller is local and has full access. With an OAuth issuer
configured, other bearer tokens go to its verifier (`oauth.OAuthVerifier`); such a token's grant is
named `oauth:<subject>` and confined to its `budget_prefixes` claim (none without it, unless it has
budget:admin, which then reaches every budget).
"""

import dataclasses
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import MCPError
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import INVALID_PARAMS

from budget_mcp.config import Settings, load_tokens_file
from budget_mcp.domain.ids import is_within, validate_budget_id
from budget_mcp.domain.records import BudgetConfig
from budget_mcp.domain.results import BudgetNode
from budget_mcp.engine import BudgetEngine
from budget_mcp.errors import AccessDeniedError, BudgetMcpError, ConfigError
from budget_mcp.server.scopes import ALL_SCOPES, PREFIXES_CLAIM, BudgetScope


@dataclass(frozen=True)
class Grant:
    """What one token may do: every budget (`prefixes` None), or those under its prefixes and the roots it created.

    A scoped token may not change the budgets its prefixes name (they confine it: an admin sets them),
    only create, resize and close budgets under them; with `create_roots` it may create new roots,
    which are then its own (`owned`), never touch roots that exist already.
    """

    name: str
    prefixes: tuple[str, ...] | None = None
    create_roots: bool = False
    owned: frozenset[str] = frozenset()

    @property
    def key_namespace(self) -> str | None:
        """Whose idempotency keys these are: one namespace per scoped token, one shared by full access."""
        return None if self.prefixes is None else self.name

    def allows(self, budget_id: str) -> bool:
        """Whether this budget is within the grant's prefixes, or under a root it created."""
        if self.prefixes is None:
            return True
        return any(is_within(budget_id, p) for p in self.prefixes) or budget_id.split("/")[0] in self.owned

    def check(self, budget_id: str, *, allocating: bool = False) -> None:
        """Raise AccessDeniedError unless the budget may be used (or, allocating a root, perhaps created)."""
        if not (self.allows(budget_id) or (allocating and self.create_roots and "/" not in budget_id)):
            raise self.denied(budget_id)

    def denied(self, budget_id: str) -> AccessDeniedError:
        """The refusal for a budget outside the grant (the same whether or not the budget exists)."""
        scope = ", ".join(self.prefixes or ())
        return AccessDeniedError(
            f"the token '{self.name}' may not use budget '{budget_id[:200]}'; it is limited to budgets under "
            f"{scope}. Use an id under one of them, or a token that covers '{budget_id[:200]}'"
        )

    def new_owner(self, budget_id: str) -> str | None:
        """Who a new budget belongs to: this token, for a root it creates with create_roots."""
        return self.name if "/" not in budget_id and self.create_roots and self.prefixes is not None else None

    def allocation_guard(self, budget_id: str) -> Callable[[BudgetConfig | None, BudgetConfig], None]:
        """The check `allocate` runs in its transaction, on the budget as it is and as it would become."""

        def guard(old: BudgetConfig | None, new: BudgetConfig) -> None:
            mine = old is not None and old.owner == self.name
            if old is not None and not mine and not self.allows(budget_id):
                raise self.denied(budget_id)  # a root that exists and is not this token's
            confining = self.prefixes is not None and budget_id in self.prefixes
            if confining and new != old and not mine and not (old is None and self.new_owner(budget_id)):
                raise AccessDeniedError(
                    f"'{budget_id}' is the budget the token '{self.name}' is confined to: its limits are for an "
                    "admin to set. Create, resize or close budgets under it instead"
                )

        return guard

    def check_close(self, budget_id: str) -> None:
        """Raise unless this budget may be closed: within the grant, and not one of the budgets confining it."""
        self.check(budget_id)
        if self.prefixes is not None and budget_id in self.prefixes:
            raise AccessDeniedError(
                f"'{budget_id}' is the budget the token '{self.name}' is confined to; only an admin may close it"
            )

    def check_prefix(self, prefix: str) -> None:
        """Raise unless something under `prefix` may be seen: it is within the grant, or above budgets that are."""
        if self.prefixes is None or self.allows(prefix):
            return
        if not any(is_within(mine, prefix) for mine in [*self.prefixes, *self.owned]):
            raise self.denied(prefix)

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


async def visible_tree(engine: BudgetEngine, grant: Grant, prefix: str | None = None) -> list[BudgetNode]:
    """The budgets (under `prefix`) this grant may see, as a tree. A prefix outside the grant is refused the same
    way whether or not it exists; one above the grant's own budgets shows just those."""
    if grant.prefixes is None:
        return await engine.tree(prefix)
    if prefix is None or not grant.allows(prefix):
        if prefix is not None:
            grant.check_prefix(prefix)
        return await engine.tree(prefix, visible=grant.allows)
    return await engine.tree(prefix)


OAUTH_PREFIX = "oauth:"


def oauth_grant(access: AccessToken) -> Grant:
    """The grant of a verified OAuth token: its prefixes claim; every budget for budget:admin without one."""
    prefixes = (access.claims or {}).get(PREFIXES_CLAIM)
    name = OAUTH_PREFIX + (access.subject or access.client_id)
    if prefixes is None and BudgetScope.ADMIN in access.scopes:
        return Grant(name)
    return Grant(name, prefixes=tuple(prefixes or ()))


class TokenTable:
    """The configured tokens, then the OAuth verifier if any; `verify_token` is the SDK's TokenVerifier protocol."""

    def __init__(self, tokens: Iterable[tuple[str, Grant]], oauth: TokenVerifier | None = None) -> None:
        self._tokens = [(token.encode(), grant) for token, grant in tokens]
        self._by_name = {grant.name: grant for _, grant in self._tokens}
        self._oauth = oauth

    @classmethod
    def from_settings(cls, settings: Settings, oauth: TokenVerifier | None = None) -> "TokenTable":
        """BUDGET_MCP_TOKEN (full access, named 'admin') and the scoped tokens of BUDGET_MCP_TOKENS."""
        tokens = [(settings.token, Grant("admin"))] if settings.token else []
        if settings.tokens_file is not None:
            tokens += [
                _scoped(settings.tokens_file, n, raw) for n, raw in enumerate(load_tokens_file(settings.tokens_file), 1)
            ]
        names = [grant.name for _, grant in tokens]
        if len(set(names)) != len(names):
            raise ConfigError(f"token names must be unique; {settings.tokens_file} repeats one of {sorted(names)}")
        return cls(tokens, oauth)

    def __bool__(self) -> bool:
        return bool(self._tokens) or self._oauth is not None

    async def verify_token(self, token: str) -> AccessToken | None:
        """A static token's grant name and every scope; else what the OAuth verifier says; else None.

        Static tokens are compared against every one, in constant time.
        """
        offered = token.encode()
        found = None
        for known, grant in self._tokens:
            if hmac.compare_digest(offered, known):
                found = grant
        if found is not None:
            return AccessToken(token=token, client_id=found.name, scopes=sorted(ALL_SCOPES))
        return await self._oauth.verify_token(token) if self._oauth is not None else None

    def current(self) -> Grant:
        """The grant of the request being served (full access when it carries no token)."""
        access = get_access_token()
        if access is None:
            return FULL_ACCESS
        if access.claims is not None:  # only the OAuth verifier sets claims
            return oauth_grant(access)
        return self._by_name.get(access.client_id, Grant(access.client_id, prefixes=()))

    async def caller(self, engine: BudgetEngine) -> Grant:
        """`current()`, with the roots a create_roots token made (read from the ledger: any server may have)."""
        grant = self.current()
        if not grant.create_roots:
            return grant
        return dataclasses.replace(grant, owned=frozenset(await engine.roots_owned_by(grant.name)))


def _scoped(path: Path, number: int, raw: dict[str, object]) -> tuple[str, Grant]:
    where = f"{path}: [[token]] number {number}"
    token, name, prefixes = raw.get("token"), raw.get("name"), raw.get("prefixes", [])
    if not isinstance(token, str) or len(token) < 16:
        raise ConfigError(f'{where} needs token = "..." of at least 16 characters')
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name (used in logs and errors instead of the token)")
    if name.strip().startswith(OAUTH_PREFIX):
        raise ConfigError(f"{where}: names starting with {OAUTH_PREFIX!r} are kept for OAuth clients; choose another")
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


class ScopedSubscriptions:
    """Middleware: a `subscriptions/listen` naming a resource the caller's token may not read is refused."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "subscriptions/listen" and ctx.params is not None:
            wanted = (ctx.params.get("notifications") or {}).get("resourceSubscriptions") or []
            caller = await ctx.lifespan_context.caller()
            try:
                for uri in wanted:
                    caller.check_uri(str(uri))
            except BudgetMcpError as exc:
                raise MCPError(INVALID_PARAMS, str(exc)) from exc
        return await call_next(ctx)
