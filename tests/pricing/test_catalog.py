"""Exact costs against hand-computed values from the providers' published per-million-token prices."""

from decimal import Decimal
from pathlib import Path

import pytest

from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import ConfigError, UnknownModelError
from budget_mcp.pricing import PriceCatalog

M = Decimal(1_000_000)


def usd(*priced: tuple[int, str]) -> Decimal:
    """Sum of tokens x USD-per-million rate, exactly."""
    return sum((tokens * Decimal(rate) for tokens, rate in priced), Decimal(0)) / M


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        # gpt-4o: $2.50 in, $10 out, $1.25 cached in.
        (
            "gpt-4o",
            TokenCounts(input=1_000, output=500, cache_read=2_000),
            usd((1_000, "2.5"), (500, "10"), (2_000, "1.25")),
        ),
        # gpt-5-mini: $0.25 in, $2 out, $0.025 cached; reasoning tokens bill as output.
        ("gpt-5-mini", TokenCounts(input=10_000, output=1_000, reasoning=3_000), usd((10_000, "0.25"), (4_000, "2"))),
        # claude-haiku-4-5: $1 in, $5 out, $0.10 cache read, $1.25 cache write (5 min).
        (
            "claude-haiku-4-5",
            TokenCounts(input=3_000, output=700, cache_read=40_000, cache_write=10_000),
            usd((3_000, "1"), (700, "5"), (40_000, "0.1"), (10_000, "1.25")),
        ),
        # claude-sonnet-4-5 up to 200k prompt tokens: $3 in, $15 out, $0.30 read, $3.75 write.
        (
            "claude-sonnet-4-5",
            TokenCounts(input=10_000, output=1_000, cache_read=50_000, cache_write=5_000),
            usd((10_000, "3"), (1_000, "15"), (50_000, "0.3"), (5_000, "3.75")),
        ),
        # claude-sonnet-4-5 above 200k prompt tokens (cache included): every token at $6 in, $22.50 out, $0.60 read.
        (
            "claude-sonnet-4-5",
            TokenCounts(input=150_000, output=2_000, cache_read=100_000),
            usd((150_000, "6"), (2_000, "22.5"), (100_000, "0.6")),
        ),
        # gemini-2.5-pro: $1.25 in / $10 out up to 200k; $2.50 / $15 above.
        ("gemini-2.5-pro", TokenCounts(input=200_000, output=1_000), usd((200_000, "1.25"), (1_000, "10"))),
        ("gemini-2.5-pro", TokenCounts(input=200_001, output=1_000), usd((200_001, "2.5"), (1_000, "15"))),
    ],
)
def test_cost_matches_the_published_prices(model: str, tokens: TokenCounts, expected: Decimal) -> None:
    priced = PriceCatalog().cost(model, None, tokens)

    assert priced.cost_usd == expected
    assert priced.source == "genai-prices 0.2.3"


def test_the_rates_reported_are_the_tier_that_applied() -> None:
    catalog = PriceCatalog()
    small = catalog.cost("claude-sonnet-4-5", "anthropic", TokenCounts(input=1_000))
    large = catalog.cost("claude-sonnet-4-5", "anthropic", TokenCounts(input=300_000))

    assert (small.input_mtok, small.output_mtok, small.cache_read_mtok) == (Decimal(3), Decimal(15), Decimal("0.3"))
    assert (large.input_mtok, large.output_mtok, large.cache_read_mtok) == (Decimal(6), Decimal("22.5"), Decimal("0.6"))


def test_a_provider_prefix_in_the_name_is_understood() -> None:
    catalog = PriceCatalog()
    tokens = TokenCounts(input=1_000, output=1_000)

    assert catalog.cost("openai/gpt-4o", None, tokens) == catalog.cost("gpt-4o", "openai", tokens)


def test_an_unknown_model_lists_close_names() -> None:
    with pytest.raises(UnknownModelError) as caught:
        PriceCatalog().cost("claude-sonet-4-5", None, TokenCounts(input=1))

    message = str(caught.value)
    assert message.startswith("no price known for model 'claude-sonet-4-5'; close names: claude-sonnet-4-5")
    assert message.endswith("pass cost_usd to record the cost directly")


def test_overrides_win_over_every_source(tmp_path: Path) -> None:
    overrides = tmp_path / "prices.toml"
    overrides.write_text(
        '[[price]]\nmodel = "gpt-4o"\nprovider = "openai"\ninput_mtok = "2.00"\noutput_mtok = "8.00"\n'
        '[[price]]\nmodel = "our-finetune"\ninput_mtok = "0.5"\noutput_mtok = "1"\ncache_read_mtok = "0.05"\n'
    )
    catalog = PriceCatalog(overrides_file=overrides)

    negotiated = catalog.cost("gpt-4o", None, TokenCounts(input=1_000_000, output=1_000_000, cache_read=1_000_000))
    private = catalog.cost("our-finetune", "house", TokenCounts(input=2_000_000, cache_read=1_000_000))

    # No cache rate in the override: cached tokens pay the override's input rate, not the catalog's.
    assert negotiated.cost_usd == Decimal("12") and negotiated.source.startswith("overrides ")
    assert private.cost_usd == Decimal("1.05") and private.provider == "house"
    assert catalog.cost("gpt-4o-mini", None, TokenCounts(input=1_000_000)).cost_usd == Decimal("0.15")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            '[[price]]\nmodel = "x"\ninput_mtok = 2.5\noutput_mtok = "1"\n',
            'input_mtok must be a decimal string such as "2.50"',
        ),
        ('[[price]]\nmodel = "x"\ninput_mtok = "-1"\noutput_mtok = "1"\n', "must be between 0 and 1000000"),
        ('[[price]]\nmodel = "x"\ninput_mtok = "1"\n', "needs input_mtok and output_mtok"),
        ('[[price]]\ninput_mtok = "1"\noutput_mtok = "1"\n', 'needs model = "<name>"'),
        ('[[price]]\nmodel = "x"\ninput = "1"\noutput_mtok = "1"\n', "unknown fields ['input']"),
        ("[[price]\n", "is not valid TOML"),
    ],
)
def test_a_wrong_overrides_file_is_a_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    overrides = tmp_path / "prices.toml"
    overrides.write_text(content)

    with pytest.raises(ConfigError) as caught:
        PriceCatalog(overrides_file=overrides)

    assert problem in str(caught.value) and str(overrides) in str(caught.value)
