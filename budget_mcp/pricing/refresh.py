"""Refreshing the remote price sources: each one fetched, checked and cached independently."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from budget_mcp.errors import PriceSourceError
from budget_mcp.pricing.sources import remote
from budget_mcp.pricing.sources.remote import CachedCopy, Progress, RemoteSource


@dataclass(frozen=True)
class RefreshOutcome:
    """What happened to one source: the new cached copy, or the error (the last good copy stays)."""

    source: str
    copy: CachedCopy | None = None
    error: str | None = None


async def refresh_sources(
    sources: Sequence[RemoteSource],
    cache_dir: Path,
    progress_for: Callable[[RemoteSource], Progress | None] = lambda _: None,
) -> list[RefreshOutcome]:
    """Fetch every source in turn; a failure of one never stops the others."""
    outcomes = []
    async with remote.http_client() as client:
        for source in sources:
            try:
                copy = await remote.refresh(source, cache_dir, client, progress_for(source))
            except PriceSourceError as exc:
                outcomes.append(RefreshOutcome(source.name, error=str(exc)))
            else:
                outcomes.append(RefreshOutcome(source.name, copy=copy))
    return outcomes
