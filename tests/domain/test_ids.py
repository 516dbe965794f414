import re
import time

import pytest

from budget_mcp.domain.ids import new_entry_id, parent_of, path_of, validate_budget_id, validate_reservation_id
from budget_mcp.errors import InvalidInputError


@pytest.mark.parametrize("good", ["acme", "acme/research", "a/b/c/d/e/f/g/h", "x_1-2", "0" * 64])
def test_valid_ids_pass(good: str) -> None:
    assert validate_budget_id(good) == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "empty"),
        ("Acme", "invalid segment"),
        ("acme/", "invalid segment ''"),
        ("/acme", "invalid segment ''"),
        ("acme.md", "invalid segment"),
        ("-acme", "invalid segment"),
        ("a" * 65, "invalid segment"),
        ("a/b/c/d/e/f/g/h/i", "9 levels deep"),
        ("acme research", "invalid segment"),
    ],
)
def test_invalid_ids_are_refused_with_the_rule(bad: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_budget_id(bad)


def test_paths_and_parents() -> None:
    assert path_of("a/b/c") == ("a", "a/b", "a/b/c")
    assert parent_of("a/b/c") == "a/b"
    assert parent_of("a") is None


def test_malformed_reservation_ids_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="malformed"):
        validate_reservation_id("res_nothex")


def test_entry_ids_made_later_sort_later_and_never_repeat() -> None:
    made = []
    for _ in range(200):
        tick = time.time_ns() // 1000
        made.append(new_entry_id("chg"))
        while time.time_ns() // 1000 == tick:  # the next id in a later microsecond
            pass
    assert made == sorted(made)
    assert all(re.fullmatch(r"chg_[0-9a-f]{24}", found) for found in made)
    assert len({new_entry_id("chg") for _ in range(10_000)}) == 10_000
