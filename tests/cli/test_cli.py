"""The command line: each command through click's runner, and the console script once as a real process."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
from click.testing import CliRunner

from budget_mcp import BudgetEngine, PriceCatalog, open_ledger
from budget_mcp.cli import main
from budget_mcp.cli.common import CliContext
from tests.servers import free_port, server_env

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def run(*args: str) -> tuple[int, str]:
    """The command at NOW, whatever the machine's date."""
    result = CliRunner().invoke(main, list(args), obj=CliContext(clock=lambda: NOW))
    return result.exit_code, result.output


def test_budgets_set_list_show_and_adjust(ledger_path: Path) -> None:
    db = ["--db", str(ledger_path)]
    assert run("budgets", "set", "acme", "--limit-usd", "100", "--period", "monthly", *db)[0] == 0
    assert run("budgets", "set", "acme/research", "--limit-usd", "5", *db)[0] == 0
    code, listing = run("budgets", "list", *db)
    assert (
        code == 0
        and "acme/research" in listing
        and "acme/research: $0.00 spent of $5.00 (monthly), $5.00 available" in listing
    )
    code, out = run("adjust", "acme/research", "-1.25", "--reason", "provider refund", *db)
    assert code == 0 and "spent now -$1.25" in out
    code, shown = run("budgets", "show", "acme", *db)
    assert code == 0 and json.loads(shown)["spent_usd"] == "-1.250000"
    code, as_json = run("budgets", "list", "--json", *db)
    assert json.loads(as_json)[0]["children"][0]["budget_id"] == "acme/research"


def test_user_mistakes_are_messages_not_tracebacks(ledger_path: Path) -> None:
    db = ["--db", str(ledger_path)]
    code, out = run("budgets", "show", "ghost", *db)
    assert code == 1 and "Error: budget 'ghost' does not exist" in out and "Traceback" not in out
    run("budgets", "set", "acme", "--limit-usd", "10", *db)
    code, out = run("budgets", "set", "acme/big", "--limit-usd", "50", *db)
    assert code == 1 and "has only $10.00 available" in out
    code, out = run("adjust", "acme", "NaN", "--reason", "x", *db)
    assert code == 1 and "finite" in out


def test_env_var_chooses_the_ledger_and_a_flag_wins(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env.db", tmp_path / "flag.db"
    runner = CliRunner(env={"BUDGET_MCP_DB": str(from_env)})
    assert runner.invoke(main, ["budgets", "set", "one"]).exit_code == 0
    assert runner.invoke(main, ["budgets", "set", "two", "--db", str(from_flag)]).exit_code == 0
    assert "one" in runner.invoke(main, ["budgets", "list", "--json"]).output
    assert '"two"' not in runner.invoke(main, ["budgets", "list", "--json"]).output
    assert from_flag.exists()


def test_migrate_creates_the_ledger(ledger_path: Path) -> None:
    code, out = run("migrate", "--db", str(ledger_path))
    assert code == 0 and ledger_path.exists() and "current schema" in out


def test_console_script_runs_as_a_process(ledger_path: Path) -> None:
    exe = Path(sys.executable).with_name("budget-mcp")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("budget-mcp, version ")


def test_cli_works_on_a_postgresql_ledger(postgres_dsn: str) -> None:
    env = {"BUDGET_MCP_DATABASE_URL": postgres_dsn}
    migrated = CliRunner().invoke(main, ["migrate"], env=env)
    assert migrated.exit_code == 0 and "PostgreSQL ledger postgresql://postgres@/budget" in migrated.output
    assert CliRunner().invoke(main, ["budgets", "set", "pgroot", "--limit-usd", "7"], env=env).exit_code == 0
    shown = CliRunner().invoke(main, ["budgets", "show", "pgroot"], env=env)
    assert shown.exit_code == 0 and json.loads(shown.output)["limit_usd"] == "7.000000"


def test_a_database_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    code, out = run("migrate", "--database-url", "mysql://x@y/z")
    assert code == 1 and "must start with postgresql://" in out


def test_budgets_list_shows_token_limits_and_spend(ledger_path: Path) -> None:
    db = ["--db", str(ledger_path)]
    assert run("budgets", "set", "tok", "--limit-tokens", "10000", *db)[0] == 0

    async def spend() -> None:
        ledger = await open_ledger(ledger_path)
        try:
            await BudgetEngine(ledger, PriceCatalog(), lambda: NOW).charge("tok", cost_usd="0", input_tokens=1_234)
        finally:
            await ledger.close()

    anyio.run(spend)
    code, listing = run("budgets", "list", *db)
    assert code == 0 and "1,234 of 10,000 tokens, 8,766" in " ".join(listing.split())


def test_serve_names_the_postgresql_ledger_it_uses(postgres_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("budget-mcp")), "serve", "--transport", "http", "--port", str(port)],
        env=server_env(tmp_path / "unused.db", BUDGET_MCP_DATABASE_URL=postgres_dsn),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = next(line for line in process.stderr if line.startswith("budget-mcp: streamable HTTP"))
    finally:
        process.terminate()
        process.communicate(timeout=20)
    assert "ledger PostgreSQL postgresql://" in line and "unused.db" not in line


def test_an_unknown_enforcement_is_refused_naming_the_four(ledger_path: Path) -> None:
    code, out = run("budgets", "set", "acme", "--limit-usd", "5", "--enforcement", "pause", "--db", str(ledger_path))
    assert code != 0 and "'pause' is not one of 'block', 'warn', 'soft', 'ask'" in out
    assert run("budgets", "set", "acme", "--limit-usd", "5", "--enforcement", "ask", "--db", str(ledger_path))[0] == 0


def test_serve_with_a_missing_tokens_file_says_so_in_one_line(tmp_path: Path) -> None:
    served = subprocess.run(
        [str(Path(sys.executable).with_name("budget-mcp")), "serve", "--transport", "http", "--port", str(free_port())],
        env=server_env(tmp_path / "ledger.db", BUDGET_MCP_TOKENS=str(tmp_path / "missing.toml")),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    assert f"Error: cannot read the tokens file {tmp_path / 'missing.toml'}: No such file or directory" in served.stderr


def test_budgets_set_takes_a_call_limit_and_refuses_a_negative_one(ledger_path: Path) -> None:
    db = ["--db", str(ledger_path)]
    code, out = run("budgets", "set", "acme", "--limit-calls", "200", "--period", "daily", *db)
    assert code == 0 and "0 of 200 calls" in out
    assert json.loads(run("budgets", "show", "acme", *db)[1])["limits"][0]["limit_calls"] == 200
    code, out = run("budgets", "set", "acme", "--limit-calls", "-1", *db)
    assert code == 1 and "limit_calls must be a whole number of calls" in out and "Traceback" not in out
    assert json.loads(run("budgets", "show", "acme", *db)[1])["limit_calls"] == 200
