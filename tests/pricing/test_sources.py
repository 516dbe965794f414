"""Remote price sources against a real HTTP server on loopback: refresh, rejection, last good copy, verification."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

from budget_mcp.domain.records import TokenCounts
from budget_mcp.pricing import PriceCatalog, refresh_sources, remote_sources
from tests.loopback import Loopback
from tests.price_files import genai_published_file, openrouter_file

pytestmark = pytest.mark.anyio

BEDROCK_SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"  # in LiteLLM's file, not in genai-prices


def sources_at(server: Loopback) -> dict[str, str]:
    return {
        "litellm": f"{server.url}/litellm.json",
        "openrouter": f"{server.url}/api/v1/models",
        "genai-prices": f"{server.url}/genai.json",
    }


async def refresh(server: Loopback, cache: Path, *names: str) -> dict[str, str | None]:
    sources = [s for s in remote_sources(sources_at(server)) if s.name in names]
    outcomes = await refresh_sources(sources, cache)
    return {o.source: o.error for o in outcomes}


async def test_refresh_caches_each_source_and_the_catalog_uses_them(
    price_server: Loopback, litellm_bytes: bytes, tmp_path: Path
) -> None:
    price_server.serve("/litellm.json", litellm_bytes)
    price_server.serve("/api/v1/models", openrouter_file(litellm_bytes))
    price_server.serve("/genai.json", genai_published_file(60))

    errors = await refresh(price_server, tmp_path, "litellm", "openrouter", "genai-prices")

    assert errors == {"litellm": None, "openrouter": None, "genai-prices": None}
    catalog = PriceCatalog(cache_dir=tmp_path)
    assert [s.name for s in catalog.sources] == ["genai-prices", "genai-prices", "litellm", "openrouter"]
    assert catalog.sources[0].fetched_at is not None and catalog.sources[1].fetched_at is None
    # A model only the published genai-prices file knows, and one only LiteLLM knows.
    house = catalog.cost("house-model-7", None, TokenCounts(input=1_000_000, output=1_000_000))
    assert house.cost_usd == Decimal("7.5") and house.source.startswith("genai-prices data ")
    bedrock = catalog.cost(BEDROCK_SONNET, None, TokenCounts(input=1_000, output=1_000))
    assert bedrock.cost_usd == Decimal("0.018") and bedrock.source.startswith("litellm ")
    assert all("budget-mcp/" in r.headers.get("User-Agent", "") for r in price_server.requests)


async def test_a_broken_file_is_rejected_and_the_last_good_copy_stays(
    price_server: Loopback, litellm_bytes: bytes, tmp_path: Path
) -> None:
    price_server.serve("/litellm.json", litellm_bytes)
    assert await refresh(price_server, tmp_path, "litellm") == {"litellm": None}
    before = sorted(p.name for p in tmp_path.iterdir())

    price_server.serve("/litellm.json", litellm_bytes[: len(litellm_bytes) // 2])
    errors = await refresh(price_server, tmp_path, "litellm")

    assert errors["litellm"] is not None
    assert errors["litellm"].startswith("litellm: not JSON")
    assert "kept the copy fetched" in errors["litellm"] and "(3475 models)" in errors["litellm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (
        PriceCatalog(cache_dir=tmp_path).cost(BEDROCK_SONNET, None, TokenCounts(input=1)).source.startswith("litellm")
    )


async def test_a_file_that_shrank_by_more_than_half_is_rejected(
    price_server: Loopback, litellm_bytes: bytes, tmp_path: Path
) -> None:
    price_server.serve("/litellm.json", litellm_bytes)
    await refresh(price_server, tmp_path, "litellm")
    entries = json.loads(litellm_bytes)
    shrunk = dict(list(entries.items())[:1500])  # about 1,000 chat models of 3,475
    price_server.serve("/litellm.json", json.dumps(shrunk))

    errors = await refresh(price_server, tmp_path, "litellm")

    assert errors["litellm"] is not None and "shrank from 3475 to" in errors["litellm"]
    assert "kept the copy fetched" in errors["litellm"]
    assert PriceCatalog(cache_dir=tmp_path).sources[-1].models == 3475


async def test_a_file_with_fewer_than_50_models_is_rejected(price_server: Loopback, tmp_path: Path) -> None:
    price_server.serve("/genai.json", genai_published_file(49))

    errors = await refresh(price_server, tmp_path, "genai-prices")

    assert errors["genai-prices"] == (
        "genai-prices: the file holds only 49 models (at least 50 expected); "
        "no earlier copy is cached, so the bundled prices stay in use"
    )
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


async def test_an_http_error_or_an_unreachable_source_fails_cleanly(price_server: Loopback, tmp_path: Path) -> None:
    price_server.serve("/api/v1/models", b"upstream broke", status=500)
    errors = await refresh(price_server, tmp_path, "openrouter")
    assert errors["openrouter"] is not None and "answered HTTP 500" in errors["openrouter"]

    unreachable = [s for s in remote_sources({"litellm": "http://127.0.0.1:9/prices.json"}) if s.name == "litellm"]
    outcome = (await refresh_sources(unreachable, tmp_path))[0]
    assert outcome.copy is None and outcome.error is not None
    assert outcome.error.startswith("litellm: cannot fetch http://127.0.0.1:9/prices.json: ConnectError")
    assert PriceCatalog(cache_dir=tmp_path).sources[-1].name == "genai-prices"


async def test_a_local_file_works_as_a_mirror(litellm_bytes: bytes, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror.json"
    mirror.write_bytes(litellm_bytes)
    sources = [s for s in remote_sources({"litellm": str(mirror)}) if s.name == "litellm"]

    outcome = (await refresh_sources(sources, tmp_path / "cache"))[0]

    assert outcome.error is None and outcome.copy is not None and outcome.copy.models == 3475


async def test_verification_flags_a_rate_that_differs_by_more_than_five_percent(
    price_server: Loopback, litellm_bytes: bytes, tmp_path: Path
) -> None:
    # genai-prices and LiteLLM both say gpt-4o input is $2.50 per million; this OpenRouter copy says $2.75 (+10%).
    changed = openrouter_file(litellm_bytes, {"openai/gpt-4o": {"prompt": "0.00000275"}})
    price_server.serve("/api/v1/models", changed)
    price_server.serve("/litellm.json", litellm_bytes)
    await refresh(price_server, tmp_path, "litellm", "openrouter")

    catalog = PriceCatalog(cache_dir=tmp_path)

    flagged = catalog.flagged("gpt-4o", "openai")
    assert [(c.kind, c.values, c.spread) for c in flagged] == [
        (
            "input",
            {"genai-prices": Decimal("2.5"), "litellm": Decimal("2.5"), "openrouter": Decimal("2.75")},
            Decimal("0.1"),
        )
    ]
    assert catalog.flagged("gpt-4o-mini", "openai") == []
    listed = {m["model"]: m for m in catalog.describe()["models"]}
    assert listed["gpt-4o"]["flagged"] is True and listed["gpt-4o-mini"]["flagged"] is False
    assert listed["gpt-4o"]["disagreements"][0]["spread_percent"] == "10.0"
