"""Real `budget-mcp serve` processes for tests: a free loopback port, a clean environment, wait for /health."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import uvicorn
from starlette.types import ASGIApp

EXE = str(Path(sys.executable).with_name("budget-mcp"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGET_MCP_") and k != "HERMES_URL"}
    return {**env, "BUDGET_MCP_DB": str(db), **extra}


@dataclass
class Served:
    """A running server: its base URL, and what it wrote to stderr once it stopped."""

    base: str
    stderr: str = ""


@contextmanager
def serving(transport: str, db: Path, **extra: str) -> Iterator[str]:
    """A `budget-mcp serve` subprocess on a free loopback port; yields its base URL once /health answers."""
    with serving_process(transport, db, **extra) as served:
        yield served.base


@contextmanager
def serving_process(transport: str, db: Path, **extra: str) -> Iterator[Served]:
    """Like `serving`, yielding a Served whose stderr is filled in after the process stopped (SIGTERM)."""
    port = free_port()
    process = subprocess.Popen(
        [EXE, "serve", "--transport", transport, "--port", str(port)],
        env=server_env(db, **extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    served = Served(base)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the server did not answer /health within 20 s"
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        served.stderr = process.communicate(timeout=20)[1]


@contextmanager
def serving_app(make_app: Callable[[int], Awaitable[ASGIApp]]) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread of this process, on a loopback port bound first; yields its base URL.

    `make_app(port)` builds the app inside the thread's event loop (so the server's objects belong to it),
    knowing its port: an app may need its own URL. Stopped the way a signal would stop it.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    box: dict[str, uvicorn.Server] = {}
    failed: list[BaseException] = []

    async def main() -> None:
        try:
            app = await make_app(port)
            box["server"] = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
            await box["server"].serve(sockets=[sock])
        except BaseException as exc:
            failed.append(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not (box.get("server") and box["server"].started):
            assert not failed, failed
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start within 20 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        if "server" in box:
            box["server"].should_exit = True
        thread.join(20)
        sock.close()
