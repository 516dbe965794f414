from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget_mcp.domain.money import format_usd, from_nanos, human_usd, parse_usd, to_nanos
from budget_mcp.errors import InvalidInputError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.1", Decimal("0.1")),
        (0.1, Decimal("0.1")),
        (3, Decimal(3)),
        (" 2.50 ", Decimal("2.50")),
        (1e-9, Decimal("1e-9")),
    ],
)
def test_amounts_are_read_by_their_decimal_text(raw: object, expected: Decimal) -> None:
    assert parse_usd(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("NaN", "finite"),
        (float("nan"), "finite"),
        ("Infinity", "finite"),
        (float("-inf"), "finite"),
        ("-0.01", "must not be negative"),
        ("1e12", "too large"),
        ("abc", "is not a number"),
        (True, "not a boolean"),
        ([1], "decimal amount"),
    ],
)
def test_bad_amounts_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_usd(raw, "cost_usd")


def test_negative_amounts_pass_only_where_allowed() -> None:
    assert parse_usd("-1.25", allow_negative=True) == Decimal("-1.25")


def test_nanos_round_trip_exactly() -> None:
    assert to_nanos(Decimal("0.000001")) == 1_000
    assert to_nanos(Decimal("123.456789012")) == 123_456_789_012
    assert from_nanos(123_456_789_012) == Decimal("123.456789012")


def test_sub_nano_fractions_round_up_so_spend_is_never_undercounted() -> None:
    assert to_nanos(Decimal("0.0000000001")) == 1
    assert to_nanos(Decimal("1.0000000000001")) == 1_000_000_001
    assert to_nanos(Decimal("-0.0000000019")) == -1


def test_wire_format_keeps_six_places_and_more_when_needed() -> None:
    assert format_usd(3_150_000) == "0.003150"
    assert format_usd(1) == "0.000000001"
    assert format_usd(5_000_000_000) == "5.000000"
    assert format_usd(-250_000_000) == "-0.250000"


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_wire_form_reads_back_exactly_with_six_to_nine_places(nanos: int) -> None:
    text = format_usd(nanos)
    places = text.partition(".")[2]
    assert Decimal(text) == from_nanos(nanos)
    assert 6 <= len(places) <= 9 and (len(places) == 6 or not places.endswith("0"))


def test_summaries_show_cents_or_up_to_four_places_and_everything_under_a_cent() -> None:
    assert [human_usd(n) for n in (1_500_000_000, 996_500_000, -250_000_000, 0, 5, 1_000_000, 12_345_000_000)] == [
        "$1.50", "$0.9965", "-$0.25", "$0.00", "$0.000000005", "$0.001", "$12.345",
    ]  # fmt: skip


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_summaries_are_cut_never_rounded_up(nanos: int) -> None:
    text = human_usd(nanos)
    shown = Decimal(text.replace("$", ""))
    amount = from_nanos(nanos)
    assert abs(shown) <= abs(amount) and abs(amount) - abs(shown) < Decimal("0.0001")
    assert (shown < 0) == (amount < 0) or shown == 0
