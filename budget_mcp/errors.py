"""Every exception budget-mcp raises on purpose.

    BudgetMcpError                  base: the message says what is wrong and how to fix it
    ├── InvalidInputError           a value is malformed, out of range or inconsistent
    ├── BudgetNotFoundError         no budget with that id (or it was closed)
    ├── ReservationNotFoundError    no open hold with that id
    ├── ReservationExpiredError     the hold's TTL ran out before it was used
    ├── InsufficientFundsError      an allocation asks for more than the parent has
    ├── AccessDeniedError           the caller's token may not use that budget
    ├── IdempotencyConflictError    a key was reused with other arguments
    ├── UnknownModelError           no price for a model, and no cost_usd given
    ├── LedgerError                 the storage failed (sqlite3 / driver errors, translated)
    ├── PriceSourceError            a remote price source could not be used
    └── ConfigError                 settings or the budgets file are wrong

A refusal (`allowed: false`, `over_limit: true`) is an answer, not an error; the guard turns a refused
LLM call into BudgetExceededError, since there it must stop the caller.
"""

from datetime import datetime


class BudgetMcpError(Exception):
    """Base class: an expected failure whose message is safe to show to an agent or user."""


class InvalidInputError(BudgetMcpError):
    """A value is malformed, out of range or inconsistent with the others."""


class BudgetNotFoundError(BudgetMcpError):
    """No budget with that id exists (or it is closed)."""


class ReservationNotFoundError(BudgetMcpError):
    """No open reservation with that id."""


class ReservationExpiredError(BudgetMcpError):
    """The reservation's TTL ran out."""


class InsufficientFundsError(BudgetMcpError):
    """An allocation asks for more than the parent has available."""


class BudgetExceededError(BudgetMcpError):
    """A guarded LLM call was denied: the budget (or one above it) does not allow it. The call never went out."""

    def __init__(
        self,
        reason: str,
        *,
        budget_id: str,
        decided_by: str | None = None,
        decided_period: str | None = None,
        needed_usd: str | None = None,
        remaining_usd: str | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.budget_id = budget_id
        self.decided_by = decided_by
        self.decided_period = decided_period
        self.needed_usd = needed_usd
        self.remaining_usd = remaining_usd
        self.resets_at = resets_at


class AccessDeniedError(BudgetMcpError):
    """The caller's token is scoped to other budgets (or may not create root budgets)."""


class IdempotencyConflictError(BudgetMcpError):
    """An idempotency key was reused with different arguments."""


class UnknownModelError(BudgetMcpError):
    """The price catalog has no such model, and no cost was given."""


class LedgerError(BudgetMcpError):
    """The ledger storage failed."""


class PriceSourceError(BudgetMcpError):
    """A price source could not be fetched or parsed."""


class ConfigError(BudgetMcpError):
    """Settings or the budgets file are wrong."""
