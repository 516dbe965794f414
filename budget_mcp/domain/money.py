"""Exact money: Decimal USD at the edges, integer nano-USD (1e-9 USD) in storage.

One rounding rule, in `to_nanos`: amounts finer than a nano-USD round *up*, so a
guardrail never under-counts spend. Floats never become money directly: a JSON number
is read through its decimal text (`Decimal(repr(x))`), so 0.1 is exactly 0.1. Text must be
plain ASCII decimal notation: Python's Decimal would also take "1_000" and non-ASCII digits.

Bounds: one amount is at most MAX_USD and one token count at most MAX_TOKENS, and every running
sum the ledger stores (nano-USD, tokens) stays within MAX_TOTAL, inside a signed 64-bit integer.
"""

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from budget_mcp.errors import InvalidInputError

NANOS_PER_USD = 1_000_000_000
MAX_USD = Decimal(1_000_000_000)  # a billion dollars: anything larger is a typo, not a budget
MAX_TOKENS = 10**15
MAX_TOTAL = 9 * 10**18  # any stored sum, in nano-USD or tokens: $9 billion, under 2^63 - 1
MAX_AMOUNT_TEXT = 64
_NANO = Decimal(1).scaleb(-9)
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_usd(value: object, field: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """Read a decimal string, int or float (by its decimal text) as exact USD, refusing NaN, inf and absurd sizes."""
    if isinstance(value, bool):
        raise InvalidInputError(f'{field} must be a decimal amount in USD such as "0.25", not a boolean')
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value)) if value == value and abs(value) != float("inf") else Decimal(str(value))
    elif isinstance(value, str):
        amount = _decimal_text(value.strip(" \t"), field)
    else:
        raise InvalidInputError(f'{field} must be a decimal amount in USD such as "0.25"')
    if not amount.is_finite():
        raise InvalidInputError(f"{field} must be a finite amount in USD, not {str(value)[:20]}")
    if amount < 0 and not allow_negative:
        raise InvalidInputError(f"{field} must not be negative (got {str(value)[:40]}); pass an amount of 0 or more")
    if abs(amount) > MAX_USD:
        raise InvalidInputError(f"{field} {str(value)[:40]} is too large; the maximum is {MAX_USD} USD")
    return amount


def _decimal_text(text: str, field: str) -> Decimal:
    if len(text) > MAX_AMOUNT_TEXT:
        raise InvalidInputError(f"{field} is {len(text)} characters long; an amount takes at most {MAX_AMOUNT_TEXT}")
    if text.lower() in {"nan", "-nan", "inf", "-inf", "infinity", "-infinity", "+inf", "+infinity"}:
        return Decimal(text)
    if not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidInputError(
            f'{field} {text[:40]!r} is not a number; pass USD as a decimal string of ASCII digits such as "0.25"'
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
        raise InvalidInputError(f"{field} {text[:40]!r} is not a number") from None


def to_nanos(usd: Decimal) -> int:
    """Exact USD to integer nano-USD, rounding sub-nano fractions up (towards +infinity)."""
    return int(usd.quantize(_NANO, rounding=ROUND_CEILING).scaleb(9))


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-USD to Decimal USD with 9 decimal places."""
    return Decimal(nanos).scaleb(-9).quantize(_NANO)


def format_usd(nanos: int) -> str:
    """Wire form: a decimal string with at least 6 places, more only when needed ('0.003150', '0.000000001')."""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)  # integers: every result carries a few of these
    return f"{'-' if nanos < 0 else ''}{whole}.{f'{frac:09d}'.rstrip('0').ljust(6, '0')}"


def human_usd(nanos: int) -> str:
    """Short form for summaries: '$1.50', '$0.9965', '-$0.25' (cut, never rounded up, at 4 places from a cent)."""
    sign, size = ("-" if nanos < 0 else ""), abs(nanos)
    if size == 0:
        return "$0.00"
    if size < NANOS_PER_USD // 100:  # under a cent: every digit there is
        return f"{sign}$0.{f'{size:09d}'.rstrip('0')}"
    whole, places = divmod(size // 100_000, 10_000)  # cut to 4 places, integers only: reasons are built per check
    shown = f"{places // 100:02d}" if places % 100 == 0 else f"{places:04d}".rstrip("0")
    return f"{sign}${whole}.{shown}"


def exact_usd(text: str) -> str:
    """A wire amount for people, every digit kept, trailing zeros dropped to two places: '$1.20', '$0.00315'."""
    nanos = to_nanos(Decimal(text))
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{'-' if nanos < 0 else ''}${whole:,}.{f'{frac:09d}'.rstrip('0').ljust(2, '0')}"


def human_amount(text: str | None) -> str:
    """human_usd of a wire amount ('1.500000' -> '$1.50'); 'unlimited' for None."""
    return "unlimited" if text is None else human_usd(to_nanos(Decimal(text)))


def parse_tokens(value: object, field: str) -> int:
    """A non-negative integer token count (a boolean is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field} must be a whole number of tokens")
    if value < 0:
        raise InvalidInputError(f"{field} must not be negative (got {value})")
    if value > MAX_TOKENS:
        raise InvalidInputError(f"{field} {str(value)[:40]} is too large; the maximum is {MAX_TOKENS}")
    return value


def check_total(total: int, what: str) -> None:
    """Refuse a running sum (nano-USD or tokens) that would leave what the ledger stores."""
    if abs(total) > MAX_TOTAL:
        raise InvalidInputError(
            f"this would take {what} past the ledger's bound of {MAX_TOTAL:,} (nano-USD or tokens); "
            "amounts that large are not real spend: check cost_usd and the token counts"
        )
