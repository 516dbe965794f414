"""Every tool fuzzed from its own published input schema, with well-formed and hostile arguments: never a protocol
error, never a traceback or a bare "Error executing tool", and a refused call leaves the ledger byte-for-byte."""

import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.server import build_server
from tests.conftest import FakeClock, ledger_dump

EXAMPLES = 150
HOSTILE = [
    2**64, -1, -(2**63), 1e308, math.nan, math.inf, -math.inf, 1.5, True, False, None, [], {},
    "", " ", "1e400", "-1", "NaN", "Infinity", "1_000", "\u0663", "\x00\x1f", "../../etc/passwd", "acme/../kid",
    "x" * 1_000_000, "\ud800", ["x"] * 500, {"nested": {"deep": list(range(100))}},
]  # fmt: skip
KNOWN = {
    "budget_id": ["acme", "acme/kid", "ghost", "acme/kid/deeper"],
    "prefix": ["acme", "acme/kid", "ghost"],
    "model": ["gpt-4o", "claude-haiku-4-5", "no-such-model"],
    "provider": ["openai", "anthropic", "nobody"],
}


def from_schema(schema: dict[str, Any], definitions: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values that fit a JSON schema of the shapes the tools publish (a small from_schema for what they use)."""
    if "$ref" in schema:
        return from_schema(definitions[schema["$ref"].split("/")[-1]], definitions, name)
    if "allOf" in schema:
        merged = {**schema, "properties": {}}
        for part in schema["allOf"]:
            merged["properties"].update(definitions[part["$ref"].split("/")[-1]].get("properties", {}))
        merged["properties"].update(schema.get("properties", {}))
        return from_schema({k: v for k, v in merged.items() if k != "allOf"}, definitions, name)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type", "string")
    options: list[st.SearchStrategy[Any]] = []
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            options.append(st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum", 10**16)))
        elif kind == "number":
            options.append(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**12), 10**12)))
        elif kind == "string":
            text = st.text(max_size=min(schema.get("maxLength", 80), 80))
            numbers = st.decimals(allow_nan=False, allow_infinity=False, places=9).map(str)
            options.append(st.one_of(st.sampled_from(KNOWN[name]), text) if name in KNOWN else st.one_of(text, numbers))
        elif kind == "array":
            items = from_schema(schema.get("items", {}), definitions)
            options.append(st.lists(items, max_size=min(schema.get("maxItems", 5), 5)))
        elif kind == "object" and "properties" in schema:
            options.append(object_of(schema, definitions))
        elif kind == "object":
            options.append(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3))
    return st.one_of(options)


def object_of(schema: dict[str, Any], definitions: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(schema.get("required", []))
    fields = {k: from_schema(v, definitions, k) for k, v in schema["properties"].items()}
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


def hostile(valid: st.SearchStrategy[dict[str, Any]], names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed arguments with one field replaced by something hostile, or a misspelt or unknown one added."""

    def spoil(arguments: dict[str, Any], field: str, value: Any, extra: str | None) -> dict[str, Any]:
        spoiled = {**arguments, field: value}
        return {**spoiled, extra: value} if extra else spoiled

    extras = st.none() | st.sampled_from(["budgetId", "idempotencyKey", "cost", "__proto__", "x" * 300])
    return st.builds(spoil, valid, st.sampled_from(names), st.sampled_from(HOSTILE), extras)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingPortal, Client, Path, dict[str, Any]]]:
    """One in-process server for every example: a portal runs its client on an event loop of its own."""
    folder = tmp_path_factory.mktemp("fuzz")
    config = Settings.load({}, db_path=folder / "ledger.db", prices_cache_dir=folder / "prices")
    server = build_server(config, clock=FakeClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC)))
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(Client(server)) as client:
        for arguments in ({"budget_id": "acme", "limit_usd": "100"}, {"budget_id": "acme/kid", "limit_usd": "10"}):
            portal.call(client.call_tool, "allocate", arguments)
        tools = {tool.name: tool.input_schema for tool in portal.call(client.list_tools).tools}
        yield portal, client, config.db_path, tools


TOOLS = ["check_budget", "charge", "allocate", "release", "get_budget", "list_budgets", "estimate_cost",
         "recommend_model"]  # fmt: skip


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("kind", ["well-formed", "hostile"])
def test_fuzzed_calls_answer_cleanly_and_refusals_write_nothing(
    served: tuple[BlockingPortal, Client, Path, dict[str, Any]], tool: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    portal, client, ledger, schemas = served
    schema = schemas[tool]
    valid = object_of(schema, schema.get("$defs", {}))
    arguments = valid if kind == "well-formed" else hostile(valid, sorted(schema["properties"]))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(arguments)
    def one_call(args: dict[str, Any]) -> None:
        before = ledger_dump(ledger)
        result = portal.call(client.call_tool, tool, args)  # an MCPError here would be a protocol error
        text = getattr(result.content[0], "text", "") if result.content else ""
        if result.is_error:
            assert text.startswith(f"Error executing tool {tool}: ") and len(text) > len(tool) + 24, text
            assert "internal error" not in text and "\n" not in text and len(text) <= 400, text
            assert ledger_dump(ledger) == before, (args, text)

    with caplog.at_level(logging.WARNING):
        one_call()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text[:2000]
