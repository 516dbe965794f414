"""OAuth 2.1 access tokens (JWTs, RFC 9068) from the configured issuer, checked as a resource server must.

A token is accepted when its signature verifies with one of the issuer's keys (`jwks.IssuerKeys`)
under an allowed asymmetric algorithm (never `none`, never an HMAC one, which a public key would
turn into a forgery), its `iss` is the issuer, its `aud` names this server, and `exp`/`nbf`/`iat`
hold on the server's clock with a small leeway. What it may do is its budget scopes and its
`budget_prefixes` claim, handed on in the SDK's AccessToken; `access.oauth_grant` turns that into a Grant.
"""

import logging
from typing import Any

import jwt
from mcp.server.auth.provider import AccessToken

from budget_mcp.domain.ids import validate_budget_id
from budget_mcp.engine import Clock
from budget_mcp.errors import BudgetMcpError
from budget_mcp.server.jwks import IssuerKeys, KeysUnavailableError
from budget_mcp.server.scopes import BUDGET_SCOPES, PREFIXES_CLAIM, implied_scopes

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 16 * 1024


class TokenRefusedError(Exception):
    """Why a bearer token is not accepted (logged, never shown to the caller beyond a 401)."""


class OAuthVerifier:
    """The SDK's TokenVerifier for JWT access tokens of one issuer and audience."""

    def __init__(self, issuer: str, audience: str, *, clock: Clock, keys: IssuerKeys | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        self.keys = keys or IssuerKeys(issuer, clock=clock)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's client, scopes and claims when it is valid for this server, else None (a 401)."""
        try:
            return await self.check(token)
        except TokenRefusedError as exc:
            logger.info("refused an OAuth access token: %s", exc)
        except KeysUnavailableError as exc:
            logger.warning("cannot check an OAuth access token: %s", exc)
        return None

    async def check(self, token: str) -> AccessToken:
        """Like verify_token, raising TokenRefusedError (or KeysUnavailableError) with the reason."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenRefusedError("not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRefusedError(f"unreadable header: {exc}") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenRefusedError(f"algorithm {str(algorithm)[:20]!r} is not allowed")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefusedError("the key id is not a string")
        key = await self.keys.key(kid, str(algorithm))
        if key is None:
            raise TokenRefusedError(f"no {algorithm} key {str(kid)[:80]!r} among the issuer's keys")
        try:
            # Times are checked below on the server's clock (PyJWT would read the machine's).
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[str(algorithm)], audience=self.audience, issuer=self.issuer,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "require": ["exp", "iss", "aud"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise TokenRefusedError(str(exc)) from exc
        self._check_times(claims)
        scopes = _scopes(claims)
        client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise TokenRefusedError("the token names no client (client_id, azp or sub)")
        subject = claims.get("sub")
        # expires_at stays unset: the SDK would compare it with the machine's clock, and exp was checked above.
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=sorted(implied_scopes(scopes)),
            resource=self.audience,
            subject=subject if isinstance(subject, str) else None,
            claims={"iss": self.issuer, PREFIXES_CLAIM: _prefixes(claims)},
        )

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self._clock().timestamp()
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TokenRefusedError(f"'{name}' is not a number of seconds")
        if now > claims["exp"] + LEEWAY_SECONDS:
            raise TokenRefusedError("the token has expired")
        for name in ("nbf", "iat"):
            if name in claims and claims[name] > now + LEEWAY_SECONDS:
                raise TokenRefusedError(f"the token is not valid yet ({name})")


def _scopes(claims: dict[str, Any]) -> set[str]:
    """The budget scopes granted: RFC 9068's space-separated `scope`, or the `scp` list some providers use."""
    granted = claims.get("scope", claims.get("scp", ""))
    names = granted.split() if isinstance(granted, str) else granted if isinstance(granted, list) else []
    return {name for name in names if name in BUDGET_SCOPES}


def _prefixes(claims: dict[str, Any]) -> list[str] | None:
    """The `budget_prefixes` claim, checked: a list of budget ids, or None when the token has none."""
    prefixes = claims.get(PREFIXES_CLAIM)
    if prefixes is None:
        return None
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise TokenRefusedError(f"the {PREFIXES_CLAIM} claim must be a list of budget ids")
    try:
        for prefix in prefixes:
            validate_budget_id(prefix)
    except BudgetMcpError as exc:
        raise TokenRefusedError(f"the {PREFIXES_CLAIM} claim: {exc}") from exc
    return prefixes
