"""Tools and prompts that refuse what they do not understand, in one short line an agent can act on.

The SDK ignores argument names a tool does not have (so `idempotencyKey` would charge twice) and
reports a schema mismatch as pydantic's multi-line dump. `BudgetTool` refuses unknown names, naming
the closest valid one, and turns each validation problem into `field: what is wrong`. The prompt
middleware does the same for `prompts/get`, whose failures the SDK answers as internal errors.
"""

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import INVALID_PARAMS
from pydantic import ValidationError
from pydantic_core import ErrorDetails

logger = logging.getLogger(__name__)

MAX_ERROR = 300
_SHOWN_PROBLEMS = 4


class BudgetTool(Tool):
    """A tool that checks its arguments' names and types before the SDK runs it, and says what is wrong."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        """Refuse unknown or malformed arguments with a short error; otherwise run as the SDK does."""
        problem = unknown_names(arguments, self.parameters.get("properties", {}), "argument")
        if problem is None:
            try:
                self.fn_metadata.validate_arguments(arguments)
            except ValidationError as exc:
                problem = describe(exc.errors(include_url=False), self.parameters)
        if problem is not None:
            raise ToolError(f"Error executing tool {self.name}: {problem}")
        return await super().run(arguments, context, convert_result)


def unknown_names(given: Iterable[str], known: Iterable[str], what: str) -> str | None:
    """'unknown argument 'reservationId': did you mean 'reservation_id'?', or None when every name is known."""
    names = sorted(known)
    unknown = sorted(set(given) - set(names))
    if not unknown:
        return None
    parts = []
    for name in unknown[:_SHOWN_PROBLEMS]:
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5) or difflib.get_close_matches(
            name.lower().replace("-", "_"), names, n=1, cutoff=0.3
        )
        hint = f"; did you mean {close[0]!r}?" if close else ""
        parts.append(f"unknown {what} {name[:40]!r}{hint}")
    return _bounded(parts, len(unknown), f"valid: {', '.join(names)}")


def describe(errors: list[ErrorDetails], schema: Mapping[str, Any]) -> str:
    """Validation problems as `field: problem (got ...)`, one per field, at most about MAX_ERROR characters in all."""
    by_field: dict[str, list[ErrorDetails]] = {}
    for error in errors:
        by_field.setdefault(str(error["loc"][0]) if error["loc"] else "arguments", []).append(error)
    parts = []
    for field, found in list(by_field.items())[:_SHOWN_PROBLEMS]:
        first = found[0]
        if first["type"] == "missing":
            parts.append(f"{field} is required")
            continue
        if len(found) > 1:  # every branch of a union refused it: say what the schema takes
            message = f"should be {_types(schema.get('properties', {}).get(field, {}))}"
        else:
            message = str(first["msg"]).replace("Input should be", "should be").replace("Value error, ", "")[:90]
        given = repr(first.get("input"))
        parts.append(f"{field}{_where(first['loc'][1:])}: {message} (got {_cut(given, 30)})")
    return _bounded(parts, len(by_field), "see the tool's input schema")


def _where(loc: Sequence[int | str]) -> str:
    """'[0].limit_calls' for an item's field; the names pydantic gives union branches are left out."""
    out, after_item = "", False
    for part in loc:
        if isinstance(part, int):
            out, after_item = f"{out}[{part}]", True
        elif after_item:
            out, after_item = f"{out}.{part}", False
    return out


def _types(schema: Mapping[str, Any]) -> str:
    """'a string or a number' for a JSON schema (anyOf, a list of types, or one)."""
    found: list[str] = []
    for option in schema.get("anyOf", [schema]):
        kinds = option.get("type", "value")
        for kind in kinds if isinstance(kinds, list) else [kinds]:
            if kind != "null" and kind not in found:
                found.append(kind)
    return " or ".join(f"a {kind}" for kind in found) or "a value of its type"


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _bounded(parts: list[str], total: int, tail: str) -> str:
    more = f" (and {total - len(parts)} more)" if total > len(parts) else ""
    text = "; ".join(parts) + more
    if len(text) + len(tail) + 2 <= MAX_ERROR:
        text += f"; {tail}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


class PromptArguments:
    """Middleware: `prompts/get` of an unknown prompt, with unknown or missing arguments, is a -32602 error."""

    def __init__(self, server: MCPServer[Any]) -> None:
        self.server = server
        self._prompts: dict[str, tuple[frozenset[str], frozenset[str]]] | None = None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "prompts/get" and ctx.params is not None:
            problem = await self.problem(str(ctx.params.get("name")), ctx.params.get("arguments") or {})
            if problem is not None:
                raise MCPError(INVALID_PARAMS, problem)
        return await call_next(ctx)

    async def problem(self, name: str, arguments: Mapping[str, Any]) -> str | None:
        """What is wrong with a request for prompt `name`, or None."""
        if self._prompts is None:
            self._prompts = {
                prompt.name: (
                    frozenset(a.name for a in prompt.arguments or () if a.required),
                    frozenset(a.name for a in prompt.arguments or () if not a.required),
                )
                for prompt in await self.server.list_prompts()
            }
        if name not in self._prompts:
            return f"unknown prompt {name[:60]!r}; the prompts are {', '.join(sorted(self._prompts))}"
        required, optional = self._prompts[name]
        unknown = unknown_names(arguments, required | optional, f"argument of {name}")
        if unknown is not None:
            return unknown
        missing = sorted(required - set(arguments))
        if missing:
            return f"prompt {name} needs {', '.join(missing)}"
        wrong = sorted(key for key, value in arguments.items() if not isinstance(value, str))
        return f"prompt arguments are strings; {', '.join(wrong)} is not" if wrong else None
