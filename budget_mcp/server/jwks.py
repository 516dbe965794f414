"""The signing keys of an OAuth authorization server: its metadata discovered, its JWKS fetched and cached.

Keys are kept for `max_age_seconds`, then fetched again on the next use, so a key the provider
rotated out stops being accepted. A token naming a key id that is not in the cache triggers a fetch
at once (the provider rotated a key in), but at most one per `min_refresh_seconds`: tokens with
made-up key ids cannot make the server hammer its identity provider. Both intervals are measured on
the server's clock. One fetch runs at a time; requests that arrive meanwhile wait for its result.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx2
from jwt import PyJWK, PyJWKError

from budget_mcp.engine import Clock

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 512 * 1024


class KeysUnavailableError(Exception):
    """The issuer's metadata or key set could not be fetched or read."""


class IssuerKeys:
    """The issuer's current public keys by key id; `key(kid)` refreshes them when needed."""

    def __init__(
        self, issuer: str, *, clock: Clock, max_age_seconds: float = 600, min_refresh_seconds: float = 30
    ) -> None:
        self.issuer = issuer
        self._clock = clock
        self._max_age = timedelta(seconds=max_age_seconds)
        self._min_refresh = timedelta(seconds=min_refresh_seconds)
        self._jwks_uri: str | None = None
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None
        self._lock = anyio.Lock()

    async def key(self, kid: str | None, algorithm: str) -> PyJWK | None:
        """The verification key named `kid` for `algorithm` (None: the only key, when there is one), or None.

        Raises KeysUnavailableError when keys are needed and none can be had.
        """
        async with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            may_fetch = self._attempted_at is None or now - self._attempted_at >= self._min_refresh
            if (stale or self._pick(kid) is None) and may_fetch:
                await self._refresh(now)
            elif self._fetched_at is None:
                raise KeysUnavailableError(f"the keys of {self.issuer} could not be fetched; retrying shortly")
            found = self._pick(kid)
        if found is None or found.get("alg", algorithm) != algorithm:
            return None
        try:
            return PyJWK(found, algorithm)
        except PyJWKError:
            return None  # a key of another type than the algorithm needs (an RSA key for ES256, say)

    def _pick(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, now: datetime) -> None:
        """Fetch the key set; when that fails, keep the keys already known (if any) and say so in the log."""
        self._attempted_at = now
        try:
            keys = await self._fetch()
        except KeysUnavailableError as exc:
            if self._fetched_at is None:
                raise
            logger.warning("%s; still using the %d keys fetched at %s", exc, len(self._keys), self._fetched_at)
            return
        self._keys = {
            str(k.get("kid")) if k.get("kid") is not None else f"#{n}": k
            for n, k in enumerate(keys)
            if isinstance(k, dict) and k.get("use", "sig") == "sig" and "d" not in k
        }
        self._fetched_at = now
        logger.info("fetched %d signing keys of %s", len(self._keys), self.issuer)

    async def _fetch(self) -> list[Any]:
        try:
            async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as http:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover(http)
                document = await _get_json(http, self._jwks_uri)
        except httpx2.HTTPError as exc:
            raise KeysUnavailableError(f"cannot fetch the keys of {self.issuer}: {exc}") from exc
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise KeysUnavailableError(f"{self._jwks_uri} is not a JSON Web Key Set (no 'keys' list)")
        return keys

    async def _discover(self, http: httpx2.AsyncClient) -> str:
        """The jwks_uri from the issuer's metadata (OpenID Connect discovery, then RFC 8414's location)."""
        base = self.issuer.rstrip("/")
        split = httpx2.URL(self.issuer)
        path = split.path.rstrip("/")
        candidates = [
            f"{base}/.well-known/openid-configuration",
            str(split.copy_with(path=f"/.well-known/oauth-authorization-server{path}")),
        ]
        problems = []
        for url in candidates:
            try:
                metadata = await _get_json(http, url)
            except (httpx2.HTTPStatusError, KeysUnavailableError) as exc:
                problems.append(f"{url}: {exc}")
                continue
            if metadata.get("issuer") != self.issuer:
                # RFC 8414 section 3.3: metadata for another issuer is not this issuer's.
                raise KeysUnavailableError(f"{url} names the issuer {metadata.get('issuer')!r}, not {self.issuer!r}")
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise KeysUnavailableError(f"{url} has no jwks_uri")
            return jwks_uri
        raise KeysUnavailableError(f"no authorization server metadata for {self.issuer}: {'; '.join(problems)}")


async def _get_json(http: httpx2.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise KeysUnavailableError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = response.json()
    except ValueError as exc:
        raise KeysUnavailableError(f"{url} did not answer JSON") from exc
    if not isinstance(document, dict):
        raise KeysUnavailableError(f"{url} did not answer a JSON object")
    return document
