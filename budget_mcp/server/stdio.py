"""Serving over stdio, repairing one thing on the way in: a lone UTF-16 surrogate escape ("\ud800").

Such a string is valid JSON text but not valid Unicode, and the SDK's parser (mcp 2.3) drops the
whole message without a reply, so the client waits for its own timeout. Each such line is read with
Python's json module instead, every lone surrogate becomes U+FFFD, and the request is answered like
any other (usually with an error naming the field). Worth reporting to the SDK; the README says so.
"""

import io
import json
import sys
from typing import Any, TextIO

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server


class _RepairedLines:
    """The lines of a text stream, lone surrogate escapes replaced (only lines that contain an escape are parsed)."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def readline(self, size: int = -1) -> str:
        line = self._raw.readline(size)
        return repair(line) if "\\ud" in line or "\\uD" in line else line


def repair(line: str) -> str:
    """`line` with every lone surrogate in its JSON strings replaced by U+FFFD (unchanged if it is not JSON)."""
    try:
        message = json.loads(line)
    except ValueError:
        return line
    repaired = _replace(message)
    return line if repaired == message else json.dumps(repaired, ensure_ascii=False) + "\n"


def _replace(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace(v) for v in value]
    if isinstance(value, dict):
        return {_replace(k): _replace(v) for k, v in value.items()}
    return value


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve `server` on this process's stdin and stdout until stdin ends."""
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    low = server._lowlevel_server  # the SDK's own run_stdio_async, with our stdin (tests/server/test_sdk_shape.py)
    async with stdio_server(stdin=anyio.wrap_file(_RepairedLines(stdin))) as (read_stream, write_stream):  # type: ignore[arg-type]
        await low.run(read_stream, write_stream, low.create_initialization_options())
