"""The HTTP API (/api/v1) against a real uvicorn on loopback, through an HTTP client: every tool and resource, every
error status, tokens and scopes, Idempotency-Key, and the OpenAPI document."""

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from openapi_spec_validator import validate

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.config import Settings
from budget_mcp.errors import AccessDeniedError
from budget_mcp.server import build_server
from budget_mcp.server.api import error_problem
from budget_mcp.server.http import http_app
from tests.conftest import FakeClock, ledger_dump
from tests.server.test_access import ADMIN, FOUNDER, RESEARCH, TOKENS
from tests.servers import serving_app

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


@contextmanager
def api_server(settings: Settings, clock: FakeClock, **env: str) -> Iterator[str]:
    """budget-mcp's streamable HTTP app under uvicorn on loopback, on the test's clock; yields its base URL."""

    async def make(port: int) -> Any:
        served = Settings.load(env, **{**dict(settings), "transport": "http", "port": port})
        return await http_app(served, build_server(served, clock=clock))

    with serving_app(make) as base:
        yield base


@pytest.fixture
def tokens_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    return {"BUDGET_MCP_TOKEN": ADMIN, "BUDGET_MCP_TOKENS": str(path)}


def api(base: str, token: str | None = None) -> httpx2.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.Client(base_url=f"{base}/api/v1", headers=headers, timeout=30)


def ok(response: httpx2.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def problem(response: httpx2.Response, status: int, *texts: str) -> dict[str, Any]:
    """The problem+json body of a refusal with `status`, whose detail says each of `texts`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert set(body) == {"type", "title", "status", "detail"} and body["status"] == status
    assert body["type"].startswith("urn:budget-mcp:problem:")
    for text in texts:
        assert text in body["detail"], body["detail"]
    assert "Traceback" not in body["detail"]
    return body


async def test_every_tool_answers_its_result_as_the_mcp_tool_does(
    settings: Settings, clock: FakeClock, ledger_location: str
) -> None:
    on_postgres = {"BUDGET_MCP_DATABASE_URL": ledger_location} if ledger_location.startswith("postgres") else {}
    with api_server(settings, clock, **on_postgres) as base, api(base) as http:
        created = ok(http.post("/allocate", json={"budget_id": "acme", "limit_usd": "10", "period": "monthly"}))
        assert created["budget_id"] == "acme" and created["limit_usd"] == "10.000000"
        ok(http.post("/allocate", json={"budget_id": "acme/research", "limit_usd": "4"}))
        held = ok(http.post("/check_budget", json={"budget_id": "acme/research", "estimated_cost_usd": "1",
                                                   "reserve": True}))  # fmt: skip
        assert held["allowed"] is True and held["reservation_id"]
        charged = ok(http.post("/charge", json={"budget_id": "acme/research", "cost_usd": "0.75",
                                                "reservation_id": held["reservation_id"]}))  # fmt: skip
        assert Decimal(charged["spent_usd"]) == Decimal("0.75") and charged["duplicate"] is False
        denied = ok(http.post("/check_budget", json={"budget_id": "acme/research", "estimated_cost_usd": "5"}))
        assert denied["allowed"] is False and denied["decided_by"] == "acme/research"  # a denial is a 200
        status = ok(http.post("/get_budget", json={"budget_id": "acme"}))
        assert Decimal(status["spent_usd"]) == Decimal("0.75")
        listed = ok(http.post("/list_budgets"))  # no body: no arguments
        assert listed["count"] == 2 and listed["budgets"][0]["children"][0]["budget_id"] == "acme/research"
        estimate = ok(http.post("/estimate_cost", json={"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 10}))
        assert Decimal(estimate["cost_usd"]) == Decimal("0.0026")
        found = ok(http.post("/recommend_model", json={"task": "summarize a memo", "budget_id": "acme", "limit": 2}))
        assert len(found["recommendations"]) == 2
        held = ok(http.post("/check_budget", json={"budget_id": "acme", "estimated_cost_usd": "1", "reserve": True}))
        released = ok(http.post("/release", json={"reservation_id": held["reservation_id"]}))
        assert released["budget_id"] == "acme"
        closed = ok(http.post("/release", json={"budget_id": "acme/research"}))
        assert closed["budget_id"] == "acme/research"

        # the same ledger through MCP: what the API wrote is what an MCP client reads
        async with Client(f"{base}/mcp") as mcp:
            seen = await mcp.call_tool("get_budget", {"budget_id": "acme"})
        assert seen.structured_content == ok(http.post("/get_budget", json={"budget_id": "acme"}))


async def test_every_resource_is_a_get(settings: Settings, clock: FakeClock) -> None:
    with api_server(settings, clock) as base, api(base) as http:
        ok(http.post("/allocate", json={"budget_id": "acme", "limit_usd": "10"}))
        ok(http.post("/allocate", json={"budget_id": "acme/research", "limit_usd": "4"}))
        ok(http.post("/charge", json={"budget_id": "acme/research", "model": "gpt-4o", "input_tokens": 1000,
                                      "output_tokens": 100}))  # fmt: skip
        tree = ok(http.get("/budgets"))
        assert [node["budget_id"] for node in tree] == ["acme"]
        one = ok(http.get("/budgets/acme/research"))
        assert one["budget_id"] == "acme/research" and Decimal(one["spent_usd"]) == Decimal("0.0035")
        report = ok(http.get("/reports/acme"))
        assert report["totals"]["calls"] == 1 and report["by_model"][0]["model"] == "gpt-4o"
        markdown = http.get("/reports/acme.md")
        assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
        assert "acme" in markdown.text and "gpt-4o" in markdown.text
        page = http.get("/reports/acme/research.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text.startswith("<!DOCTYPE html>") and "acme/research" in page.text
        entries = ok(http.get("/ledger/acme", params={"limit": 1}))
        assert [e["kind"] for e in entries["entries"]] == ["charge"]
        prices = ok(http.get("/prices"))
        assert any(row["model"] == "gpt-4o" for row in prices["models"])


async def test_paging_the_ledger_with_before_lists_every_entry_once_newest_first(
    settings: Settings, clock: FakeClock
) -> None:
    ledger = await open_ledger(settings.db_path)
    engine = BudgetEngine(ledger, PriceCatalog(), clock)
    await engine.allocate("acme", limit_usd="1000")
    await engine.allocate("acme/bot", limit_usd="100")
    for n in range(248):  # with the two allocations, 250 entries
        await engine.charge("acme/bot" if n % 3 else "acme", cost_usd="0.01")
    await ledger.close()
    with api_server(settings, clock) as base, api(base) as http:
        pages = [ok(http.get("/ledger/acme", params={"limit": 100}))["entries"]]
        while pages[-1] and len(pages) < 10:  # bounded: a page that does not move on must fail, not hang
            pages.append(ok(http.get("/ledger/acme", params={"limit": 100, "before": pages[-1][-1]["seq"]}))["entries"])
        beyond = ok(http.get("/ledger/acme", params={"before": 1}))["entries"]
    assert [len(page) for page in pages] == [100, 100, 50, 0]
    seqs = [entry["seq"] for page in pages for entry in page]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 250  # newest first, each once
    assert len({entry["entry_id"] for page in pages for entry in page}) == 250
    assert [e["kind"] for e in pages[2][-2:]] == ["allocate", "allocate"] and beyond == []


async def test_bad_input_is_a_problem_and_writes_nothing(settings: Settings, clock: FakeClock) -> None:
    with api_server(settings, clock) as base, api(base) as http:
        ok(http.post("/allocate", json={"budget_id": "acme", "limit_usd": "10"}))
        before = ledger_dump(settings.db_path)
        problem(http.post("/charge", content=b'{"budget_id": "acme", ', headers={"content-type": "application/json"}),
                400, "the body is not JSON")  # fmt: skip
        problem(http.post("/charge", content=b"budget_id=acme", headers={"content-type": "text/plain"}),
                415, "Content-Type: application/json")  # fmt: skip
        problem(http.post("/charge", json=["acme"]), 400, "a JSON object")
        problem(http.post("/charge", json={"budget_id": "acme", "cost_usd": "1", "idempotencyKey": "k"}), 400,
                "unknown argument 'idempotencyKey'; did you mean 'idempotency_key'?")  # fmt: skip
        problem(http.post("/charge", json={"budget_id": "acme", "cost_usd": "-1"}), 400, "cost_usd")
        problem(http.post("/charge", json={"budget_id": "acme", "cost_usd": "NaN"}), 400)
        problem(http.post("/charge", json={"budget_id": "acme", "input_tokens": True, "cost_usd": "1"}), 400,
                "input_tokens")  # fmt: skip
        problem(http.post("/charge", json={"budget_id": "nobody", "cost_usd": "1"}), 404, "'nobody' does not exist")
        problem(http.post("/charge", json={"budget_id": "acme", "model": "gpt-4q", "input_tokens": 5}), 400, "gpt-4")
        held = ok(http.post("/check_budget", json={"budget_id": "acme", "estimated_cost_usd": "1", "reserve": True}))
        ok(http.post("/release", json={"reservation_id": held["reservation_id"]}))
        before = ledger_dump(settings.db_path)
        problem(http.post("/release", json={"reservation_id": held["reservation_id"]}), 404)
        problem(http.post("/release", json={"reservation_id": "res_nothing"}), 400, "malformed")
        problem(http.post("/allocate", json={"budget_id": "acme/a", "limit_usd": "11"}), 422, "acme")
        problem(http.post("/charge", content=b"{" + b" " * (1024 * 1024) + b"}",
                          headers={"content-type": "application/json"}), 413, "256 KiB")  # fmt: skip
        unknown = problem(http.post("/spend", json={}), 404, "no tool 'spend'", "charge", "check_budget")
        assert unknown["type"] == "urn:budget-mcp:problem:unknown-tool"
        problem(http.get("/nowhere"), 404, "nothing at /api/v1/nowhere")
        problem(http.get("/budgets/ACME"), 400)
        problem(http.get("/ledger/acme", params={"limit": "ten"}), 400, "limit must be a whole number")
        problem(
            http.get("/ledger/acme", params={"after": "5"}), 400, "unknown query parameter 'after'; it takes before"
        )
        problem(http.get("/ledger/acme", params={"before": "5.5"}), 400, "before must be a whole number, got '5.5'")
        problem(http.get("/ledger/acme", params={"before": "-3"}), 400, "before must be a whole number")
        problem(http.get("/ledger/acme", params={"before": "0"}), 400, "before must be an entry's seq, from 1 to")
        problem(http.get("/ledger/acme", params={"before": str(2**63)}), 400, "before must be an entry's seq")
        problem(http.get("/ledger/acme", params={"before": "9" * 5000}), 400, "before must be a whole number")
        problem(http.delete("/charge"), 405)
        # the DNS-rebinding protection of /mcp: a foreign Origin or Host is refused
        problem(http.post("/charge", json={"budget_id": "acme", "cost_usd": "1"}, headers={"Origin": "http://evil.example"}),
                403, "Invalid Origin header")  # fmt: skip
        problem(http.get("/budgets", headers={"Host": "evil.example:80"}), 421, "Invalid Host header")
        assert problem(http.get("/charge"), 405)["detail"] == "the tool charge is called with POST"
        problem(http.post("/budgets/acme", json={}), 405, "read with GET")
        deep = b"[" * 100_000 + b"]" * 100_000
        problem(
            http.post("/charge", content=deep, headers={"content-type": "application/json"}), 400, "nests too deeply"
        )
        assert ledger_dump(settings.db_path) == before
        # the detail is the MCP tool's error text
        arguments = {"budget_id": "acme", "cost_usd": "1", "idempotencyKey": "k"}
        detail = problem(http.post("/charge", json=arguments), 400)["detail"]
        async with Client(f"{base}/mcp") as mcp:
            refused = await mcp.call_tool("charge", arguments)
        assert refused.is_error and refused.content[0].text == f"Error executing tool charge: {detail}"  # type: ignore[union-attr]
        # a lone surrogate (which JSON allows) is kept escaped, as the MCP tool keeps it
        surrogate = b'{"budget_id": "acme", "cost_usd": "1", "metadata": {"note": "\\ud800"}}'
        lone = http.post("/charge", content=surrogate, headers={"content-type": "application/json"})
        assert lone.status_code == 200, lone.text


def test_dot_segments_and_encoded_slashes_in_ids_are_refused(settings: Settings, clock: FakeClock) -> None:
    with api_server(settings, clock) as base:
        port = int(base.rsplit(":", 1)[1])
        for target in ("/api/v1/budgets/acme/../../x", "/api/v1/budgets/acme%2Fresearch", "/api/v1/budgets/%2e%2e"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), (target, head)
            assert b"application/problem+json" in head.lower() and json.loads(body)["status"] == 400


async def test_idempotency_key_header_records_a_retry_once(settings: Settings, clock: FakeClock) -> None:
    with api_server(settings, clock) as base, api(base) as http:
        ok(http.post("/allocate", json={"budget_id": "acme", "limit_usd": "10"}))
        first = ok(http.post("/charge", json={"budget_id": "acme", "cost_usd": "1.25"},
                             headers={"Idempotency-Key": "call-42"}))  # fmt: skip
        again = ok(http.post("/charge", json={"budget_id": "acme", "cost_usd": "1.25"},
                             headers={"Idempotency-Key": "call-42"}))  # fmt: skip
        assert again["duplicate"] is True and again["charge_id"] == first["charge_id"]
        # the header and the argument are one key
        same = ok(http.post("/charge", json={"budget_id": "acme", "cost_usd": "1.25", "idempotency_key": "call-42"}))
        assert same["duplicate"] is True
        before = ledger_dump(settings.db_path)
        conflict = http.post(
            "/charge", json={"budget_id": "acme", "cost_usd": "2"}, headers={"Idempotency-Key": "call-42"}
        )
        problem(conflict, 409)
        problem(http.post("/charge", json={"budget_id": "acme", "cost_usd": "2", "idempotency_key": "a"},
                          headers={"Idempotency-Key": "b"}), 400, "differs")  # fmt: skip
        problem(http.post("/get_budget", json={"budget_id": "acme"}, headers={"Idempotency-Key": "x"}), 400,
                "for POST /api/v1/charge only")  # fmt: skip
        assert ledger_dump(settings.db_path) == before
        entries = ok(http.get("/ledger/acme"))["entries"]
        assert [e["kind"] for e in entries].count("charge") == 1
        assert Decimal(ok(http.get("/budgets/acme"))["spent_usd"]) == Decimal("1.25")


async def test_tokens_and_their_prefixes_hold_as_on_mcp(
    settings: Settings, clock: FakeClock, tokens_env: dict[str, str]
) -> None:
    with api_server(settings, clock, **tokens_env) as base:
        with api(base, ADMIN) as admin:
            ok(admin.post("/allocate", json={"budget_id": "acme", "limit_usd": "10"}))
            ok(admin.post("/allocate", json={"budget_id": "acme/research", "limit_usd": "4"}))
            ok(admin.post("/allocate", json={"budget_id": "acme/support", "limit_usd": "2"}))
        for token in (None, "wrong-token-0123456789"):
            with api(base, token) as anonymous:
                refused = anonymous.post("/charge", json={"budget_id": "acme", "cost_usd": "1"})
                problem(refused, 401, "Authorization: Bearer")
                assert refused.headers["www-authenticate"].startswith("Bearer ")
                problem(anonymous.get("/budgets"), 401)
                problem(anonymous.get("/openapi.json"), 401)
        health = httpx2.get(f"{base}/health")
        assert health.status_code == 200  # still open
        with api(base, RESEARCH) as research:
            ok(research.post("/charge", json={"budget_id": "acme/research", "cost_usd": "0.5"}))
            text = "the token 'research-agent' may not use budget 'acme/support'"
            problem(research.post("/charge", json={"budget_id": "acme/support", "cost_usd": "1"}), 403, text)
            problem(research.get("/budgets/acme/support"), 403, text)
            problem(research.get("/reports/acme/support.md"), 403, text)
            problem(research.get("/ledger/acme/support"), 403, text)
            # a budget that does not exist outside its reach is refused the same way
            problem(research.get("/budgets/zeta"), 403, "may not use budget 'zeta'")
            problem(research.post("/release", json={"budget_id": "acme/research"}), 403, "only an admin may close it")
            assert [n["budget_id"] for n in ok(research.get("/budgets"))] == ["acme/research"]
        with api(base, FOUNDER) as founder:
            problem(founder.post("/get_budget", json={"budget_id": "acme"}), 403, "'founder' may not use budget 'acme'")
        with api(base, ADMIN) as admin:  # only the research agent's own charge was written
            assert Decimal(ok(admin.get("/budgets/acme"))["spent_usd"]) == Decimal("0.5")
            entries = ok(admin.get("/ledger/acme"))["entries"]
            assert [(e["kind"], e["budget_id"]) for e in entries if e["kind"] == "charge"] == [
                ("charge", "acme/research")
            ]


async def test_an_ask_budget_is_denied_saying_approval_could_not_be_asked(settings: Settings, clock: FakeClock) -> None:
    with api_server(settings, clock) as base, api(base) as http:
        ok(http.post("/allocate", json={"budget_id": "acme", "limit_usd": "1", "enforcement": "ask"}))
        before = ledger_dump(settings.db_path)
        denied = ok(http.post("/check_budget", json={"budget_id": "acme", "estimated_cost_usd": "3", "reserve": True}))
        assert denied["allowed"] is False and "none could be asked" in denied["reason"]
        assert ledger_dump(settings.db_path) == before


async def test_openapi_document_is_valid_and_names_every_tool_and_resource(
    settings: Settings, clock: FakeClock
) -> None:
    with api_server(settings, clock) as base, api(base) as http:
        document = ok(http.get("/openapi.json"))
    validate(document)
    assert document["openapi"].startswith("3.1")
    server = build_server(settings)
    tools = {tool.name: tool for tool in await server.list_tools()}
    operations = [op for item in document["paths"].values() for op in item.values()]
    described = {op["x-mcp-tool"]: op for op in operations if "x-mcp-tool" in op}
    assert set(described) == set(tools)
    for name, tool in tools.items():
        assert f"/api/v1/{name}" in document["paths"]
        body = described[name]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == set(tool.input_schema["properties"])  # the tool's own input schema
        assert body["additionalProperties"] is False
    uris = {str(r.uri) for r in await server.list_resources()}
    uris |= {t.uri_template for t in await server.list_resource_templates()}
    assert uris <= {op["x-mcp-resource"] for op in operations if "x-mcp-resource" in op}
    charge = document["paths"]["/api/v1/charge"]["post"]
    assert [p["name"] for p in charge["parameters"]] == ["Idempotency-Key"]
    result = charge["responses"]["200"]["content"]["application/json"]["schema"]
    assert result == {"$ref": "#/components/schemas/ChargeResult"}
    assert "over_limit" in document["components"]["schemas"]["ChargeResult"]["properties"]


def test_a_failure_of_the_server_itself_is_a_500_without_its_details() -> None:
    def caused(error: ToolError, cause: BaseException) -> ToolError:
        error.__cause__ = cause
        return error

    crash = RuntimeError("secret at /srv/budget/ledger.db")
    for error in (
        caused(UnexpectedToolError("Error executing tool charge"), crash),  # the SDK's wrapper of a crash
        caused(ToolError("internal error (RuntimeError); the server logged it"), crash),  # tool_errors' own
    ):
        found = error_problem(error, "charge")
        body = json.loads(bytes(found.response().body))
        assert found.status == 500 and body["type"] == "urn:budget-mcp:problem:internal"
        assert "secret" not in body["detail"] and "Traceback" not in body["detail"]
    refused = error_problem(
        caused(ToolError("Error executing tool charge: the token 'x' may not"), AccessDeniedError())
    )
    assert refused.status == 403
