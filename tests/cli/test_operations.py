"""`check`, `charge`, `estimate`, `recommend` and `budgets close` from the command line: on the local ledger through
click's runner, and against a served server (real uvicorn on loopback) through its HTTP API."""

import json
from decimal import Decimal
from pathlib import Path

import click
import httpx2
import pytest
from click.testing import CliRunner

from budget_mcp.cli import main
from budget_mcp.cli.common import CliContext
from budget_mcp.config import Settings
from tests.conftest import FakeClock, ledger_dump
from tests.server.test_access import ADMIN, RESEARCH, TOKENS
from tests.server.test_api import api_server


def run(clock: FakeClock, *args: str) -> tuple[int, str]:
    """The command on the test's clock."""
    result = CliRunner().invoke(main, list(args), obj=CliContext(clock=clock))
    return result.exit_code, result.output


def test_each_operation_on_the_local_ledger(ledger_path: Path, clock: FakeClock) -> None:
    db = ["--db", str(ledger_path)]
    assert run(clock, "budgets", "set", "acme", "--limit-usd", "10", *db)[0] == 0
    assert run(clock, "budgets", "set", "acme/research", "--limit-usd", "4", *db)[0] == 0

    code, out = run(clock, "check", "acme/research", "--cost-usd", "1", "--reserve", *db)
    assert code == 0 and "allowed" in out and "reserved as res_" in out
    code, out = run(clock, "check", "acme/research", "--cost-usd", "9", *db)
    assert code == 3 and "denied" in out and "acme/research" in out  # a denial is its own exit code
    code, out = run(clock, "check", "acme", "--model", "gpt-4o", "--input-tokens", "1000",
                    "--max-output-tokens", "100", "--json", *db)  # fmt: skip
    checked = json.loads(out)
    assert code == 0 and checked["allowed"] is True and Decimal(checked["estimated_cost_usd"]) == Decimal("0.0035")

    charge = ["charge", "acme/research", "--model", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "100",
              "--idempotency-key", "call-1", "--metadata", '{"run": 7}']  # fmt: skip
    code, out = run(clock, *charge, *db)
    assert code == 0 and "charged $0.0035 to acme/research" in out
    code, out = run(clock, *charge, *db)
    assert code == 0 and "already recorded" in out and "nothing new was charged" in out
    code, out = run(clock, "charge", "acme/research", "--cost-usd", "0.5", "--json", *db)
    assert code == 0 and Decimal(json.loads(out)["spent_usd"]) == Decimal("0.5035")

    code, out = run(clock, "estimate", "gpt-4o", "--input-tokens", "1000", "--output-tokens", "100", *db)
    assert code == 0 and "openai/gpt-4o" in out and "0.0035" in out
    code, out = run(clock, "estimate", "gpt-4o", "--input-tokens", "1000", "--json", *db)
    assert code == 0 and Decimal(json.loads(out)["cost_usd"]) == Decimal("0.0025")

    code, out = run(clock, "recommend", "summarize a memo", "--budget", "acme/research", "--limit", "2", "--json", *db)
    found = json.loads(out)
    assert code == 0 and len(found["recommendations"]) == 2 and found["remaining_usd"] is not None
    code, out = run(clock, "recommend", "summarize a memo", "--limit", "3", *db)
    assert code == 0 and "model" in out and "why" in out

    code, out = run(clock, "budgets", "close", "acme/research", *db)
    assert code == 0 and "closed acme/research" in out
    code, out = run(clock, "budgets", "show", "acme/research", *db)
    assert json.loads(out)["closed"] is True


def test_mistakes_are_one_line_and_write_nothing(ledger_path: Path, clock: FakeClock) -> None:
    db = ["--db", str(ledger_path)]
    run(clock, "budgets", "set", "acme", "--limit-usd", "10", *db)
    before = ledger_dump(ledger_path)
    for args, text in [
        (["charge", "ghost", "--cost-usd", "1"], "Error: budget 'ghost' does not exist"),
        (["charge", "acme", "--cost-usd", "-1"], "Error: cost_usd"),
        (["charge", "acme", "--model", "gpt-4q", "--input-tokens", "5"], "gpt-4"),
        (["charge", "acme", "--cost-usd", "1", "--metadata", "[1]"], "a JSON object"),
        (["check", "acme"], "Error:"),
        (["estimate", "no-such-model-x"], "Error:"),
        (["charge", "acme", "--cost-usd", "1", "--token", "t"], "--token goes with --url"),
        (["charge", "acme", "--cost-usd", "1", "--url", "http://127.0.0.1:1/mcp"], "not both"),
    ]:
        code, out = run(clock, *args, *db)
        assert code in {1, 2} and text in out and "Traceback" not in out, (args, out)
    assert ledger_dump(ledger_path) == before


def test_each_operation_against_a_server(settings: Settings, clock: FakeClock, tmp_path: Path) -> None:
    (tmp_path / "tokens.toml").write_text(TOKENS)
    tokens = {"BUDGET_MCP_TOKEN": ADMIN, "BUDGET_MCP_TOKENS": str(tmp_path / "tokens.toml")}
    with api_server(settings, clock, **tokens) as base:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for budget, limit in (("acme", "10"), ("acme/research", "4"), ("acme/support", "2")):
            created = httpx2.post(f"{base}/api/v1/allocate", json={"budget_id": budget, "limit_usd": limit},
                                  headers=admin, timeout=30)  # fmt: skip
            assert created.status_code == 200, created.text
        remote = ["--url", f"{base}/mcp", "--token", RESEARCH]

        code, out = run(clock, "check", "acme/research", "--cost-usd", "1", "--reserve", "--json", *remote)
        assert code == 0, out
        held = json.loads(out)
        assert code == 0 and held["allowed"] is True and held["reservation_id"]
        charge = ["charge", "acme/research", "--cost-usd", "0.75", "--reservation-id", held["reservation_id"],
                  "--idempotency-key", "k1", *remote]  # fmt: skip
        code, out = run(clock, *charge)
        assert code == 0 and "charged $0.75 to acme/research" in out
        code, out = run(clock, *charge)
        assert code == 0 and "already recorded" in out
        code, out = run(clock, "charge", "acme/research", "--cost-usd", "0.5", "--idempotency-key", "k1", *remote)
        assert code == 1 and "Error:" in out and "k1" in out  # the same key for another charge
        code, out = run(clock, "check", "acme/research", "--cost-usd", "9", *remote)
        assert code == 3 and "denied" in out
        code, out = run(clock, "estimate", "gpt-4o", "--input-tokens", "1000", "--url", base, "--token", RESEARCH)
        assert code == 0 and "openai/gpt-4o" in out
        code, out = run(clock, "recommend", "summarize a memo", "--budget", "acme/research", "--json",
                        "--url", f"{base}/api/v1/", "--token", RESEARCH)  # fmt: skip
        assert code == 0 and json.loads(out)["recommendations"]

        # the server's refusals, as one line each
        code, out = run(clock, "charge", "acme/support", "--cost-usd", "1", *remote)
        assert code == 1 and "Error: the token 'research-agent' may not use budget 'acme/support'" in out
        code, out = run(clock, "budgets", "close", "acme/research", *remote)
        assert code == 1 and "only an admin may close it" in out
        code, out = run(clock, "charge", "acme/research", "--cost-usd", "1", "--url", base)
        assert code == 1 and "needs a token" in out
        code, out = run(clock, "charge", "acme/research", "--cost-usd", "1", "--url", "ftp://x")
        assert code == 2 and "not an http(s) URL" in out

        code, out = run(clock, "budgets", "close", "acme/research", "--url", base, "--token", ADMIN)
        assert code == 0 and "closed acme/research" in out
        status = httpx2.get(f"{base}/api/v1/budgets/acme", headers=admin, timeout=30).json()
        assert Decimal(status["spent_usd"]) == Decimal("0.75")


def test_an_unreachable_server_is_a_message(clock: FakeClock) -> None:
    code, out = run(clock, "estimate", "gpt-4o", "--url", "http://127.0.0.1:9/mcp")
    assert code == 1 and "cannot reach the server at http://127.0.0.1:9/mcp" in out


@pytest.fixture(autouse=True)
def _no_console_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps long lines at the runner's default width


def test_the_readme_shows_each_new_command() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in ["check", "charge", "estimate", "recommend"]:
        assert name in main.list_commands(click.Context(main)) and f"budget-mcp {name} " in readme
    assert "budget-mcp budgets close " in readme
