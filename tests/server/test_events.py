"""The live event stream, against a real uvicorn on loopback: SSE through httpx2 and /ws through the `websockets`
client, while other OS processes write to the same ledger; resuming, prefixes, scoped tokens, refusals."""

import json
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from budget_mcp import BudgetEngine, open_ledger
from budget_mcp.config import Settings
from budget_mcp.ledger.base import START
from budget_mcp.server import build_server
from budget_mcp.server.access import FULL_ACCESS
from budget_mcp.server.events import Event, EventHub, TooFarBehind, View
from budget_mcp.server.http import http_app
from tests.server.test_access import ADMIN, RESEARCH, TOKENS
from tests.servers import serving_app

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def events_server(settings: Settings, **env: str) -> Iterator[str]:
    """budget-mcp's streamable HTTP app under uvicorn on loopback, on the real clock; yields its base URL."""

    async def make(port: int) -> Any:
        served = Settings.load(env, **{**dict(settings), "transport": "http", "port": port})
        return await http_app(served, build_server(served))

    with serving_app(make) as base:
        yield base


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def sse(
    base: str, token: str | None = None, query: str = "", last_id: int | None = None
) -> AsyncGenerator[Any, None]:
    """The events of one SSE connection as dicts (`data` parsed); first the string 'connected' once subscribed."""
    sent = headers(token) | ({"Last-Event-ID": str(last_id)} if last_id is not None else {})
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30)) as client,
        client.stream("GET", f"{base}/api/v1/events{query}", headers=sent) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(": connected"):
                yield "connected"
            elif line.startswith((":", "retry:")):
                continue
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                data = json.loads(fields["data"])
                assert (str(data["id"]), data["event"]) == (fields["id"], fields["event"])
                yield data
                fields = {}


async def ws(base: str, token: str | None = None, query: str = "") -> AsyncGenerator[Any, None]:
    """The events of one /ws connection as dicts; first 'connected' once the socket is open."""
    url = base.replace("http://", "ws://") + "/ws" + query
    async with connect(url, additional_headers=headers(token)) as socket:
        yield "connected"
        async for message in socket:
            yield json.loads(message)


def writers(ledger: str, budget_id: str, processes: int, each: int, cost_usd: str) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tests.server.event_writer", ledger, budget_id, str(each), cost_usd]
    return [subprocess.Popen(command, cwd=ROOT) for _ in range(processes)]


def post(base: str, path: str, token: str | None = None, **body: Any) -> Any:
    response = httpx2.post(f"{base}/api/v1/{path}", json=body, headers=headers(token), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


async def commit_order(location: str) -> list[int]:
    """Every entry's seq in the ledger's commit order, read page by page."""
    ledger = await open_ledger(location)
    position, seqs = START, []
    try:
        while True:
            page = await ledger.entries_after(position, limit=300)
            seqs += [e.seq for e in page.entries]
            if page.end == position:
                return seqs
            position = page.end
    finally:
        await ledger.close()


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_live_reader_gets_every_entry_once_in_order_while_four_processes_charge_across_two_reconnects(
    settings: Settings, ledger_location: str, transport: str
) -> None:
    on_postgres = {"BUDGET_MCP_DATABASE_URL": ledger_location} if ledger_location.startswith("postgres") else {}
    with events_server(settings, **on_postgres) as base:
        post(base, "allocate", budget_id="acme", limit_usd="1.6")
        received: list[dict[str, Any]] = []
        started: list[subprocess.Popen[bytes]] = []
        connections = 0
        with anyio.fail_after(90):
            while sum(e["event"] == "charge" for e in received) < 1000:
                last = received[-1]["id"] if received else 0
                connections += 1
                stream = sse(base, last_id=last) if transport == "sse" else ws(base, query=f"?after={last}")
                try:
                    async with aclosing(stream):  # leaving the loop closes the connection at once
                        async for event in stream:
                            if event == "connected":
                                if not started:  # the reader is subscribed: now the other processes write
                                    started = writers(ledger_location, "acme", 4, 250, "0.001")
                                continue
                            received.append(event)
                            if len(received) in (300, 600):
                                break  # the client goes away; it comes back with the last id it saw
                            if sum(e["event"] == "charge" for e in received) == 1000:
                                break
                except ConnectionClosed:
                    pass  # the server ended it (too far behind): resume the same way
            for process in started:
                assert process.wait() == 0
    entries = [e for e in received if e["event"] != "alert"]
    assert connections >= 3
    assert [e["id"] for e in entries] == await commit_order(ledger_location)  # every entry, once, in commit order
    assert [e["event"] for e in entries] == ["allocate"] + ["charge"] * 1000
    assert len({e["entry"]["entry_id"] for e in entries}) == 1001
    assert all(e["entry"]["seq"] == e["id"] for e in entries)  # the entry's seq, as the ledger resource shows it
    if not on_postgres:
        assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    # 1000 charges of 0.001 on a limit of 1.6 cross 50% (the 800th) once: its alert follows its charge.
    alerts = [(n, e) for n, e in enumerate(received) if e["event"] == "alert"]
    assert [(e["alert"]["budget_id"], e["alert"]["threshold"]) for _, e in alerts] == [("acme", "0.5")]
    n, alert = alerts[0]
    assert received[n - 1]["event"] == "charge" and received[n - 1]["id"] == alert["id"]
    assert alert["entry_id"] == received[n - 1]["entry"]["entry_id"]
    final = entries[-1]["budgets"]
    assert [(b["budget_id"], b["spent_usd"]) for b in final] == [("acme", "1.000000")]
    assert entries[-1]["entry"]["cost_usd"] == "0.001000"


async def collect(stream: AsyncGenerator[Any, None], until_entry: str) -> list[dict[str, Any]]:
    """Events up to and including the entry with id `until_entry`."""
    found = []
    with anyio.fail_after(20):
        async with aclosing(stream):
            async for event in stream:
                if event == "connected":
                    continue
                found.append(event)
                if event.get("entry", {}).get("entry_id") == until_entry:
                    return found
    raise AssertionError("the stream ended first")


@pytest.fixture
def tokens_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    return {"BUDGET_MCP_TOKEN": ADMIN, "BUDGET_MCP_TOKENS": str(path)}


async def test_a_scoped_token_and_a_prefix_receive_only_their_budgets_events(
    settings: Settings, tokens_env: dict[str, str]
) -> None:
    with events_server(settings, **tokens_env) as base:
        for budget_id, limit in [("acme", "10"), ("acme/research", "4"), ("acme/other", "4"), ("globex", "4")]:
            post(base, "allocate", ADMIN, budget_id=budget_id, limit_usd=limit)
        for budget_id in ["acme/other", "acme/research", "globex", "acme", "acme/research"]:
            post(base, "charge", ADMIN, budget_id=budget_id, cost_usd="1")
        marker = post(base, "charge", ADMIN, budget_id="acme/research", cost_usd="0.5")["charge_id"]
        research = await collect(sse(base, RESEARCH, "?after=0"), marker)
        above = await collect(sse(base, RESEARCH, "?prefix=acme&after=0"), marker)
        by_socket = await collect(ws(base, RESEARCH, "?after=0"), marker)
        other_marker = post(base, "charge", ADMIN, budget_id="acme/other", cost_usd="0.5")["charge_id"]
        other = await collect(sse(base, ADMIN, "?prefix=acme/other&after=0"), other_marker)
    for events in (research, above, by_socket):
        # acme/research's allocation, two charges, its 50% alert, the marker: never acme's figures, nor others'
        assert [e["event"] for e in events] == ["allocate", "charge", "charge", "alert", "charge"]
        assert {(e.get("entry") or e["alert"])["budget_id"] for e in events} == {"acme/research"}
        assert {b["budget_id"] for e in events for b in e["budgets"]} == {"acme/research"}

    def without_figures(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "budgets"} for e in events]  # figures move with the clock

    assert without_figures(research) == without_figures(above) == without_figures(by_socket)
    assert [e["event"] for e in other] == ["allocate", "charge", "charge"]
    assert {e["entry"]["budget_id"] for e in other} == {"acme/other"}


def problem(response: httpx2.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert text in response.json()["detail"], response.json()


async def test_refused_streams_answer_problem_json_and_nothing_streams(
    settings: Settings, tokens_env: dict[str, str]
) -> None:
    with events_server(settings, **tokens_env) as base:
        url = f"{base}/api/v1/events"
        problem(httpx2.get(url, timeout=10), 401, "this server needs a token")
        refused = httpx2.get(f"{url}?prefix=globex", headers=headers(RESEARCH), timeout=10)
        problem(refused, 403, "may not use budget 'globex'")
        problem(httpx2.get(f"{url}?after=ten", headers=headers(ADMIN), timeout=10), 400, "must be an event id")
        bad_id = httpx2.get(url, headers={**headers(ADMIN), "Last-Event-ID": "-3"}, timeout=10)
        problem(bad_id, 400, "must be an event id")
        problem(httpx2.get(f"{url}?prefix=../x", headers=headers(ADMIN), timeout=10), 400, "prefix")
        problem(httpx2.get(f"{url}?since=3", headers=headers(ADMIN), timeout=10), 400, "unknown query parameter")
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
        for token, query, status, text in [
            (None, "", 401, "needs a token"), (RESEARCH, "?prefix=globex", 403, "may not use budget 'globex'"),
            (ADMIN, "?after=x", 400, "must be an event id"), (ADMIN, "?since=1", 400, "unknown query parameter"),
        ]:  # fmt: skip
            refused = httpx2.get(f"{base}/ws{query}", headers=upgrade | headers(token), timeout=10)
            problem(refused, status, text)  # the upgrade refused as the API refuses, before any event


async def test_a_subscriber_too_far_behind_is_ended_without_holding_up_the_others_and_resumes(
    engine: BudgetEngine,
) -> None:
    await engine.allocate("acme", limit_usd="100")
    hub = EventHub(engine, poll_seconds=0.01, queue_entries=5)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hub.run)
        slow, quick = await hub.subscribe(View(FULL_ACCESS), None), await hub.subscribe(View(FULL_ACCESS), None)
        assert await slow.receive(0.01) == [] and await quick.receive(0.01) == []  # both live now
        charged: list[str] = []
        got: list[Event] = []
        with anyio.fail_after(20):
            for _ in range(10):  # waves of 3, each read by the quick one before the next: the slow one reads nothing
                charged += [(await engine.charge("acme", cost_usd="1")).charge_id for _ in range(3)]
                while len(got) < len(charged):
                    got += await quick.receive(1)
        assert [json.loads(e.data)["entry"]["entry_id"] for e in got] == charged
        behind: list[Event] = []
        with anyio.fail_after(10), pytest.raises(TooFarBehind):
            while True:
                behind += await slow.receive(1)
        assert 0 < len(behind) <= 5 and [e.seq for e in behind] == [e.seq for e in got[: len(behind)]]
        slow.close()
        resumed = await hub.subscribe(View(FULL_ACCESS), behind[-1].seq)  # as its client reconnects
        rest: list[Event] = []
        with anyio.fail_after(10):
            while len(behind) + len(rest) < 30:
                rest += await resumed.receive(1)
        assert [e.seq for e in behind + rest] == [e.seq for e in got]
        resumed.close()
        quick.close()
        tasks.cancel_scope.cancel()
