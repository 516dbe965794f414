"""What an agent reads about the tools on every turn stays small: names, descriptions and input schemas within
8,000 characters, the whole `tools/list` within 16,000 (as the server sends it: compact JSON)."""

import json

import pytest
from mcp import Client

from budget_mcp.config import Settings
from budget_mcp.server import build_server

pytestmark = pytest.mark.anyio


def wire(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")))


async def test_the_tool_list_an_agent_reads_every_turn_is_small(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = (await client.list_tools()).tools
    read_each_turn = sum(len(t.name) + len(t.description or "") + wire(t.input_schema) for t in tools)
    whole = wire([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools])
    print(f"\nname + description + input schema: {read_each_turn:,} characters; whole tools/list: {whole:,}")
    assert read_each_turn <= 8_000 and whole <= 16_000
    for tool in tools:  # smaller, not vaguer: every argument still has its bounds and every result its fields
        assert tool.input_schema["additionalProperties"] is False and tool.output_schema
        assert "title" not in json.dumps(tool.input_schema)
    charge = {t.name: t for t in tools}["charge"].input_schema["properties"]
    assert charge["input_tokens"]["minimum"] == 0 and charge["budget_id"]["maxLength"] == 600
