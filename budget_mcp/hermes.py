"""HermesClient: registers this server with Tekton's Hermes registry, keeps the entry alive, removes it at exit.

Hermes as it really behaves (SPEC section 7): the register reply names the id `componentId`
(camelCase; `component_id` accepted too) and carries an opaque token sent back verbatim in
`X-Authentication-Token`; a heartbeat without the header is a 422, with a bad token a 401. Hermes
keeps honouring tokens after a restart that forgot every entry, so a successful heartbeat proves
nothing: every few minutes, and after any failed heartbeat, the client looks for its id in
`/api/components` and registers again when it is gone. Hermes being down or slow never blocks the
server: all of this runs in a background task that retries with backoff and logs what happened.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-Authentication-Token"


@dataclass
class HermesClient:
    """One registration of this server with Hermes at `hermes_url`."""

    hermes_url: str
    registration: dict[str, Any]
    heartbeat_seconds: float = 30.0
    check_seconds: float = 300.0
    max_backoff_seconds: float = 60.0
    timeout_seconds: float = 5.0
    component_id: str | None = field(default=None, init=False)
    _token: str | None = field(default=None, init=False, repr=False)

    async def run(self) -> None:
        """Register, then heartbeat and re-register when Hermes forgot us, until cancelled."""
        async with self._client() as client:
            await self._register_until_done(client)
            since_check = 0.0
            while True:
                await anyio.sleep(self.heartbeat_seconds)
                since_check += self.heartbeat_seconds
                healthy = await self._heartbeat(client)
                if not healthy or since_check >= self.check_seconds:
                    since_check = 0.0
                    if not healthy or not await self._still_listed(client):
                        await self._register_until_done(client)

    async def unregister(self) -> None:
        """Remove our entry (best effort, a few seconds at most); called at shutdown."""
        if self.component_id is None or self._token is None:
            return
        with anyio.move_on_after(self.timeout_seconds):
            async with self._client() as client:
                try:
                    response = await client.post(
                        "/api/unregister", params={"component_id": self.component_id}, headers=self._auth()
                    )
                    logger.info("unregistered %s from Hermes (HTTP %d)", self.component_id, response.status_code)
                except httpx2.HTTPError as exc:
                    logger.warning("could not unregister from Hermes at %s: %s", self.hermes_url, exc)
        self.component_id = self._token = None

    def _client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.hermes_url.rstrip("/"), timeout=httpx2.Timeout(self.timeout_seconds))

    def _auth(self) -> dict[str, str]:
        return {TOKEN_HEADER: self._token or ""}

    async def _register_until_done(self, client: httpx2.AsyncClient) -> None:
        delay = 1.0
        while not await self._register(client):
            await anyio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_seconds)

    async def _register(self, client: httpx2.AsyncClient) -> bool:
        try:
            response = await client.post("/api/register", json=self.registration)
            reply = response.json() if response.status_code == 200 else {}
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("Hermes at %s is not reachable (%s); retrying", self.hermes_url, type(exc).__name__)
            return False
        if response.status_code != 200 or not isinstance(reply, dict) or reply.get("success") is False:
            logger.warning("Hermes at %s refused the registration (HTTP %d)", self.hermes_url, response.status_code)
            return False
        component_id, token = reply.get("componentId") or reply.get("component_id"), reply.get("token")
        if not component_id or token is None:
            logger.warning("Hermes at %s answered without a component id or token; retrying", self.hermes_url)
            return False
        self.component_id, self._token = str(component_id), str(token)
        logger.info("registered with Hermes at %s as %s", self.hermes_url, self.component_id)
        return True

    async def _heartbeat(self, client: httpx2.AsyncClient) -> bool:
        body = {
            "component_id": self.component_id,
            "status": {"health": "healthy", "version": self.registration["version"]},
        }
        try:
            response = await client.post("/api/heartbeat", json=body, headers=self._auth())
        except httpx2.HTTPError as exc:
            logger.warning("heartbeat to Hermes failed: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            logger.warning("Hermes answered the heartbeat with HTTP %d", response.status_code)
            return False
        return True

    async def _still_listed(self, client: httpx2.AsyncClient) -> bool:
        try:
            response = await client.get("/api/components")
            listed = _component_ids(response.json()) if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError) as exc:
            logger.warning("could not list Hermes components: %s", type(exc).__name__)
            return True  # unknown: keep the registration we have rather than churn it
        if listed is None:
            return True
        if self.component_id not in listed:
            logger.warning("Hermes no longer lists %s (restarted?); registering again", self.component_id)
            return False
        return True


def _component_ids(payload: object) -> set[str] | None:
    """Ids in a components listing: a list of entries, or {"components": list or mapping}."""
    if isinstance(payload, Mapping):
        payload = payload.get("components", payload)
    if isinstance(payload, Mapping):
        return {str(k) for k in payload}
    if not isinstance(payload, list):
        return None
    ids = set()
    for entry in payload:
        if isinstance(entry, Mapping):
            value = entry.get("component_id") or entry.get("componentId") or entry.get("id")
            if value:
                ids.add(str(value))
    return ids
