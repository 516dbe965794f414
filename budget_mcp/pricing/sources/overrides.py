"""Local price overrides: a TOML file of negotiated or private prices that win over every other source.

[[price]]
model = "gpt-4o"
provider = "openai"        # optional: without it the price applies whichever provider is named
input_mtok = "2.00"        # USD per million tokens, as strings (or integers)
output_mtok = "8.00"
cache_read_mtok = "0.50"   # optional, like cache_write_mtok
"""

import hashlib
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path

from budget_mcp.errors import ConfigError
from budget_mcp.pricing.names import canonical_provider
from budget_mcp.pricing.types import ModelRates, Rates, SourceInfo

NAME = "overrides"
_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


def load(path: Path) -> tuple[list[ModelRates], SourceInfo]:
    """The prices in the file and a SourceInfo naming it; ConfigError says which entry is wrong and how."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode())
    except OSError as exc:
        raise ConfigError(f"cannot read the price overrides file {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the price overrides file {path} is not valid TOML: {exc}") from exc
    entries = data.get("price", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: write each price as a [[price]] table with model, input_mtok and output_mtok")
    found = [_entry(path, n, entry) for n, entry in enumerate(entries, start=1)]
    info = SourceInfo(NAME, hashlib.sha256(raw).hexdigest()[:12], origin=str(path), models=len(found))
    return found, info


def _entry(path: Path, number: int, entry: object) -> ModelRates:
    where = f"{path}: [[price]] number {number}"
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"].strip():
        raise ConfigError(f'{where} needs model = "<name>"')
    unknown = set(entry) - {"model", "provider", *_FIELDS}
    if unknown:
        raise ConfigError(
            f"{where} has unknown fields {sorted(unknown)}; allowed: model, provider, {', '.join(_FIELDS)}"
        )
    values = [_rate(where, field, entry.get(field)) for field in _FIELDS]
    if values[0] is None or values[1] is None:
        raise ConfigError(f"{where} needs input_mtok and output_mtok (USD per million tokens, as strings)")
    provider = canonical_provider(str(entry["provider"])) if entry.get("provider") else ""
    return ModelRates(provider, entry["model"].strip(), Rates(*values))


def _rate(where: str, field: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(f'{where}: {field} must be a decimal string such as "2.50" (floats are not exact)')
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"{where}: {field} = {value!r} is not a number") from None
    if not rate.is_finite() or rate < 0 or rate > 1_000_000:
        raise ConfigError(f"{where}: {field} = {value!r} must be between 0 and 1000000 USD per million tokens")
    return rate
