"""Remote price files: fetched over HTTP (or read from a local mirror), checked, cached atomically.

A fetched file becomes the cached copy only after it parses, holds at least 50 models and is at
least half the size (in models) of the copy it replaces. The cache commits through one small
metadata file: the data is written under its checksum first, then the metadata is replaced
atomically, so a crash leaves either the old copy or the new one, never a mix. On any failure the
last good copy stays and the error says so.
"""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import httpx2

from budget_mcp.errors import PriceSourceError

logger = logging.getLogger(__name__)

MIN_MODELS = 50
MAX_BYTES = 64 * 1024 * 1024
Progress = Callable[[int, int | None], None]
"""Called with (bytes received, total bytes or None) while a file downloads."""


@dataclass(frozen=True)
class RemoteSource:
    """A price file somewhere: its name, URL (or local path), and how to count the models in it."""

    name: str
    url: str
    count_models: Callable[[bytes], int]


@dataclass(frozen=True)
class CachedCopy:
    """The last good copy of a source's file."""

    name: str
    path: Path
    url: str
    sha256: str
    fetched_at: datetime
    models: int

    def read(self) -> bytes:
        """The file's bytes."""
        return self.path.read_bytes()


def http_client() -> httpx2.AsyncClient:
    """The one HTTP client configuration for price sources: explicit timeouts, redirects followed."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(30.0, connect=5.0),
        follow_redirects=True,
        headers={"User-Agent": f"budget-mcp/{version('budget-mcp')}"},
    )


def cached(cache_dir: Path, name: str) -> CachedCopy | None:
    """The last good copy of a source, or None when there is none (or its metadata is unreadable)."""
    meta_path = cache_dir / f"{name}.meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        copy = CachedCopy(
            name=name,
            path=cache_dir / meta["file"],
            url=meta["url"],
            sha256=meta["sha256"],
            fetched_at=datetime.fromisoformat(meta["fetched_at"]),
            models=int(meta["models"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the unreadable price cache %s: %s", meta_path, exc)
        return None
    return copy if copy.path.exists() else None


async def refresh(
    source: RemoteSource, cache_dir: Path, client: httpx2.AsyncClient, progress: Progress | None = None
) -> CachedCopy:
    """Fetch, check and cache one source; PriceSourceError (naming the copy kept) when anything is wrong."""
    previous = cached(cache_dir, source.name)
    try:
        raw = await _download(source.url, client, progress)
        models = _checked_count(source, raw, previous)
    except PriceSourceError as exc:
        kept = (
            f"kept the copy fetched {previous.fetched_at:%Y-%m-%d %H:%M} UTC ({previous.models} models)"
            if previous
            else "no earlier copy is cached, so the bundled prices stay in use"
        )
        raise PriceSourceError(f"{source.name}: {exc}; {kept}") from exc
    return _store(cache_dir, source, raw, models, previous)


async def _download(url: str, client: httpx2.AsyncClient, progress: Progress | None) -> bytes:
    if not url.startswith(("http://", "https://")):
        path = Path(url.removeprefix("file://")).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PriceSourceError(f"cannot read the mirror file {path}: {exc.strerror}") from exc
        if progress:
            progress(len(raw), len(raw))
        return raw
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise PriceSourceError(f"{url} answered HTTP {response.status_code}")
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            chunks, received = [], 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > MAX_BYTES:
                    raise PriceSourceError(f"{url} sent more than {MAX_BYTES // 1024 // 1024} MiB")
                chunks.append(chunk)
                if progress:
                    progress(received, total)
            return b"".join(chunks)
    except httpx2.HTTPError as exc:
        raise PriceSourceError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc


def _checked_count(source: RemoteSource, raw: bytes, previous: CachedCopy | None) -> int:
    models = source.count_models(raw)  # raises PriceSourceError when the file does not parse
    if models < MIN_MODELS:
        raise PriceSourceError(f"the file holds only {models} models (at least {MIN_MODELS} expected)")
    if previous and models * 2 < previous.models:
        raise PriceSourceError(f"the file shrank from {previous.models} to {models} models (more than half)")
    return models


def _store(cache_dir: Path, source: RemoteSource, raw: bytes, models: int, previous: CachedCopy | None) -> CachedCopy:
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(raw).hexdigest()
    data_path = cache_dir / f"{source.name}-{digest[:16]}.json"
    copy = CachedCopy(source.name, data_path, source.url, digest, datetime.now(UTC), models)
    meta = {
        "file": data_path.name,
        "url": source.url,
        "sha256": digest,
        "fetched_at": copy.fetched_at.isoformat(),
        "models": models,
    }
    _write_atomically(data_path, raw)
    _write_atomically(cache_dir / f"{source.name}.meta.json", json.dumps(meta, indent=1).encode())
    if previous and previous.path != data_path:
        previous.path.unlink(missing_ok=True)
    return copy


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename it over the target."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
