"""Serving over stdio, repairing one thing on the way in: a lone UTF-16 surrogate escape ("\ud800").

Such a string is valid JSON text but not valid Unicode, and the SDK's parser (mcp 2.3) drops the
whole message without a reply, so the client waits for its own timeout. Each line that holds such an
escape is read with Python's json module instead, every lone surrogate becomes U+FFFD, and the
request is answered like any other (usually with an error naming the field). The SDK reads
`sys.stdin` when it is not file descriptor 0, so the repair sits there. Worth reporting to the SDK.
"""

import io
import json
import sys
from typing import Any, BinaryIO

from mcp.server.mcpserver import MCPServer


class _RepairedStdin(io.RawIOBase):
    """The bytes of a binary stream, line by line, with lone surrogate escapes in JSON lines repaired."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            line = self._raw.readline()
            self._pending = repair(line) if b"\\ud" in line or b"\\uD" in line else line
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def repair(line: bytes) -> bytes:
    """`line` with every lone surrogate in its JSON strings replaced by U+FFFD (unchanged if it is not JSON)."""
    try:
        message = json.loads(line)
    except ValueError:
        return line
    repaired = _replace(message)
    return line if repaired == message else json.dumps(repaired, ensure_ascii=False).encode() + b"\n"


def _replace(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replace(v) for v in value]
    if isinstance(value, dict):
        return {_replace(k): _replace(v) for k, v in value.items()}
    return value


def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve `server` on this process's stdin and stdout until stdin ends."""
    sys.stdin = io.TextIOWrapper(io.BufferedReader(_RepairedStdin(sys.stdin.buffer)), encoding="utf-8")
    server.run()
