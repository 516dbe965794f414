"""Budget ids: paths of lowercase segments joined by '/', at most 8 deep."""

import functools
import re
import secrets
import time

from budget_mcp.errors import InvalidInputError

MAX_DEPTH = 8
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_RESERVATION = re.compile(r"res_[0-9a-f]{24}")


def validate_budget_id(value: str, field: str = "budget_id") -> str:
    """Return `value` if it is a valid budget id, else raise InvalidInputError saying why (naming `field`)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field} is empty; use a path such as 'acme' or 'acme/research'")
    try:
        return _valid_budget_id(value)
    except InvalidInputError as exc:
        if field == "budget_id":
            raise
        raise InvalidInputError(str(exc).replace("budget_id", field, 1)) from None


@functools.lru_cache(maxsize=4096)
def _valid_budget_id(value: str) -> str:
    """validate_budget_id for a non-empty string; valid answers are kept (a refusal raises, so it is not)."""
    segments = value.split("/")
    if len(segments) > MAX_DEPTH:
        raise InvalidInputError(
            f"budget_id {_shown(value)} is {len(segments)} levels deep; at most {MAX_DEPTH} allowed"
        )
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            where = "" if segment == value else f" {_shown(segment)}"
            raise InvalidInputError(
                f"budget_id {_shown(value)} has an invalid segment{where}; each segment is 1-64 characters "
                "of a-z, 0-9, '_' or '-', starting with a letter or digit (e.g. 'acme/research')"
            )
    return value


def _shown(text: str) -> str:
    """A value as an error quotes it: its repr, cut to a size that keeps the message short."""
    quoted = repr(text)
    return quoted if len(quoted) <= 60 else quoted[:57] + "...'"


def parent_of(budget_id: str) -> str | None:
    """The parent id ('a/b' for 'a/b/c'), or None for a root."""
    head, sep, _ = budget_id.rpartition("/")
    return head if sep else None


@functools.lru_cache(maxsize=4096)
def path_of(budget_id: str) -> tuple[str, ...]:
    """The ids from the root down to `budget_id`: ('a', 'a/b', 'a/b/c'). Every charge asks, so answers are kept."""
    segments = budget_id.split("/")
    return tuple("/".join(segments[: i + 1]) for i in range(len(segments)))


def is_within(budget_id: str, prefix: str) -> bool:
    """True when `budget_id` is `prefix` or one of its descendants."""
    return budget_id == prefix or budget_id.startswith(prefix + "/")


def new_reservation_id() -> str:
    """A fresh, unguessable reservation id."""
    return "res_" + secrets.token_hex(12)


def new_entry_id(prefix: str) -> str:
    """A fresh entry id such as 'chg_…': 13 hex digits of the microsecond, then 11 random ones. Ids sort roughly in
    the order they were made (by the wall clock), so the ledger's entry-id index grows at its end instead of
    rewriting a random page of it per entry; no result depends on that order (the log's order is its `seq`)."""
    return f"{prefix}_{time.time_ns() // 1000:013x}{secrets.randbits(44):011x}"


def validate_reservation_id(value: str) -> str:
    """Return `value` if it looks like a reservation id from check_budget(reserve=true)."""
    if not _RESERVATION.fullmatch(value):
        raise InvalidInputError(
            f"reservation_id {value[:80]!r} is malformed; "
            "pass the reservation_id returned by check_budget(reserve=true)"
        )
    return value
