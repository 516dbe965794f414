"""Calling a running budget-mcp from the command line: its HTTP API (`POST /api/v1/{tool}`) with httpx2.

The API rather than an MCP session: one request per operation, the server's own error text in a problem+json
`detail`, and nothing to negotiate. Any of the server's URLs will do (`http://host:8013`, `.../mcp`, `.../api/v1`).
"""

from typing import Any

import click
import httpx2

TIMEOUT_SECONDS = 30.0


def api_url(url: str) -> str:
    """The API base (`http://host:8013/api/v1`) of a server URL, its /mcp URL, or the API base itself."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{url[:80]!r} is not an http(s) URL, e.g. http://127.0.0.1:8013/mcp", param_hint="--url"
        )
    for suffix in ("/mcp", "/api/v1"):
        base = base.removesuffix(suffix)
    return f"{base}/api/v1"


def call_tool(url: str, token: str | None, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The tool's result from the server at `url`; its refusal (or an unreachable server) as a ClickException."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx2.post(f"{api_url(url)}/{tool}", json=arguments, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx2.HTTPError as exc:
        raise click.ClickException(f"cannot reach the server at {url}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else None
        raise click.ClickException(
            str(detail or f"the server answered {response.status_code} {response.reason_phrase}")
        )
    return body
