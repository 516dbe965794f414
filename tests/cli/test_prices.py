"""`budget-mcp prices show|refresh|verify` through click's runner, with sources on a loopback HTTP server."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from budget_mcp.cli import main
from tests.loopback import loopback_server
from tests.price_files import openrouter_file


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200", **env})
    return result.exit_code, result.output


@pytest.fixture
def cache_env(tmp_path: Path) -> dict[str, str]:
    return {"BUDGET_MCP_PRICES_CACHE": str(tmp_path / "prices")}


def test_show_lists_the_recommendable_models_and_prices_named_ones(cache_env: dict[str, str]) -> None:
    code, listing = run(cache_env, "prices", "show")
    assert code == 0 and "sources (first hit wins): genai-prices 0.2.3" in listing
    assert "claude-haiku-4-5" in listing and "standard" in listing

    code, named = run(cache_env, "prices", "show", "openai/gpt-4o")
    row = next(line for line in named.splitlines() if "gpt-4o" in line)
    assert code == 0 and all(cell in row for cell in ("openai", "2.5", "10", "1.25", "128,000", "genai-prices"))

    code, unknown = run(cache_env, "prices", "show", "gpt-9000")
    assert code == 1 and "Error: no price known for model 'gpt-9000'" in unknown and "Traceback" not in unknown


def test_refresh_then_verify_flags_a_disagreement(cache_env: dict[str, str], litellm_bytes: bytes) -> None:
    with loopback_server() as server:
        server.serve("/models", openrouter_file(litellm_bytes, {"openai/gpt-4o": {"completion": "0.000012"}}))
        server.serve("/litellm.json", litellm_bytes)
        env = {
            **cache_env,
            "BUDGET_MCP_OPENROUTER_URL": f"{server.url}/models",
            "BUDGET_MCP_LITELLM_URL": f"{server.url}/litellm.json",
        }
        code, refreshed = run(env, "prices", "refresh", "--source", "openrouter", "--source", "litellm")
    assert code == 0 and "ok openrouter:" in refreshed and "ok litellm: 3475 models" in refreshed

    code, verified = run(env, "prices", "verify")
    row = next(line for line in verified.splitlines() if " gpt-4o " in line and "output" in line)
    assert code == 0 and "20.0%" in row  # $12 against $10 per million output tokens
    assert verified.strip().splitlines()[-1].endswith("differ by more than 5%")


def test_refresh_says_which_source_failed_and_exits_nonzero(cache_env: dict[str, str]) -> None:
    env = {**cache_env, "BUDGET_MCP_GENAI_PRICES_URL": "http://127.0.0.1:9/data.json"}
    code, out = run(env, "prices", "refresh", "--source", "genai-prices")
    assert code == 1 and "failed genai-prices: cannot fetch http://127.0.0.1:9/data.json" in out


def test_verify_with_one_source_says_to_refresh(cache_env: dict[str, str]) -> None:
    code, out = run(cache_env, "prices", "verify")
    assert code == 0 and "run `budget-mcp prices refresh` first" in out
