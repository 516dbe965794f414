"""Exact money: Decimal USD at the edges, integer nano-USD (1e-9 USD) in storage.

One rounding rule, in `to_nanos`: amounts finer than a nano-USD round *up*, so a
guardrail never under-counts spend. Floats never become money directly: a JSON number
is read through its decimal text (`Decimal(str(x))`), so 0.1 is exactly 0.1.
"""

from decimal import ROUND_CEILING, Decimal, InvalidOperation

from budget_mcp.errors import InvalidInputError

NANOS_PER_USD = 1_000_000_000
MAX_USD = Decimal(1_000_000_000)  # a billion dollars: anything larger is a typo, not a budget
MAX_TOKENS = 10**15
_NANO = Decimal(1).scaleb(-9)


def parse_usd(value: object, field: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """Read a decimal string, int or float (by its decimal text) as exact USD, refusing NaN, inf and absurd sizes."""
    if isinstance(value, bool):
        raise InvalidInputError(f'{field} must be a decimal amount in USD such as "0.25", not a boolean')
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float | str):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise InvalidInputError(
                f'{field} {str(value)[:40]!r} is not a number; pass USD as a decimal string such as "0.25"'
            ) from None
    else:
        raise InvalidInputError(f'{field} must be a decimal amount in USD such as "0.25"')
    if not amount.is_finite():
        raise InvalidInputError(f"{field} must be a finite amount in USD, not {value}")
    if amount < 0 and not allow_negative:
        raise InvalidInputError(f"{field} must not be negative (got {amount}); pass an amount of 0 or more")
    if abs(amount) > MAX_USD:
        raise InvalidInputError(f"{field} {amount} is too large; the maximum is {MAX_USD} USD")
    return amount


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


def human_amount(text: str | None) -> str:
    """human_usd of a wire amount ('1.500000' -> '$1.50'); 'unlimited' for None."""
    return "unlimited" if text is None else human_usd(to_nanos(Decimal(text)))


def parse_tokens(value: object, field: str) -> int:
    """A non-negative integer token count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{field} must be a whole number of tokens")
    if value < 0:
        raise InvalidInputError(f"{field} must not be negative (got {value})")
    if value > MAX_TOKENS:
        raise InvalidInputError(f"{field} {value} is too large; the maximum is {MAX_TOKENS}")
    return value
